"""The MindScience transformer port against MindScience itself (golden checkpoints and outputs made
by tools/gen_mindscience_golden.py with mindflow-ascend 0.3.0): strict checkpoint load, equal output
in PyNative and GRAPH_MODE, the folder layout round trip, input errors, float16, and get_loss."""
import json
import warnings
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from mindscience_diffuser import ConditionDiffusionTransformer, DDPMScheduler, DiffusionTransformer
from mindscience_diffuser.pipelines.pipeline_utils import _component_classes, model_index
from mindscience_diffuser.training.losses import (
    OBJECTIVE_TO_PREDICTION_TYPE,
    MindScienceTrainer,
    mindscience_loss,
    p2_loss_weights,
)

GOLDEN = Path(__file__).parent / "golden" / "mindscience"
CONFIGS = json.loads((GOLDEN / "configs.json").read_text())
CLASSES = {cls.__name__: cls for cls in (DiffusionTransformer, ConditionDiffusionTransformer)}


def build(name, **overrides):
    spec = CONFIGS[name]
    return CLASSES[spec["class"]](**spec["config"], **overrides)


def load_golden(name):
    net = build(name)
    unloaded = ms.load_param_into_net(net, ms.load_checkpoint(str(GOLDEN / f"{name}.ckpt")), strict_load=True)
    assert unloaded == ([], []), unloaded
    return net


def golden_args(name, data=None):
    data = np.load(GOLDEN / f"{name}.npz") if data is None else data
    args = [ms.Tensor(data["x"]), ms.Tensor(data["timestep"])]
    if "condition" in data:
        args.append(ms.Tensor(data["condition"]))
    return args, data["out"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_checkpoint_loads_strictly_and_matches_mindscience(name):
    net = load_golden(name)
    args, expected = golden_args(name)
    out = net(*args)
    assert out.dtype == ms.float32 and out.shape == expected.shape
    np.testing.assert_allclose(out.asnumpy(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["dt_token", "dt_add_odd", "cdt_mixed", "cdt_added"])
def test_graph_mode_matches_mindscience(name, graph_mode):
    net = load_golden(name)
    args, expected = golden_args(name)
    np.testing.assert_allclose(net(*args).asnumpy(), expected, atol=1e-5, rtol=1e-5)


def test_parameter_names_are_mindscience_names():
    names = {n for n, _ in build("cdt_tokens").parameters_and_names()}
    for key in ("time_embed.fc1.weight", "ln_pre.gamma", "backbone.blocks.1.attention.qkv.weight",
                "backbone.blocks.0.ffn.fc2.bias", "backbone.blocks.0.attention_norm.beta", "ln_post.beta",
                "input_proj.weight", "output_proj.bias", "cond_embed.weight"):
        assert key in names


def test_timestep_forms_broadcast():
    net = load_golden("dt_token")
    data = np.load(GOLDEN / "dt_token.npz")
    x = ms.Tensor(data["x"])
    t = int(data["timestep"][1])
    per_sample = net(x, ms.Tensor(np.full(3, t), ms.int32)).asnumpy()
    for form in (t, ms.Tensor(t, ms.int64), ms.Tensor([t], ms.int32), ms.Tensor(np.full(3, t), ms.int64),
                 ms.Tensor(np.full((3, 1), t), ms.int32), float(t)):
        np.testing.assert_allclose(net(x, form).asnumpy(), per_sample, atol=1e-6)


@pytest.mark.parametrize("name", ["dt_token", "cdt_mixed"])
def test_save_pretrained_round_trip(name, tmp_path):
    net = load_golden(name)
    folder = tmp_path / "pipe"
    (folder / "model").mkdir(parents=True)
    build(name, sample_size=10)  # the extension key is accepted
    net.save_pretrained(folder / "model")
    config = json.loads((folder / "model" / "config.json").read_text())
    assert config["_class_name"] == CONFIGS[name]["class"] and config["sample_size"] is None
    assert "compute_dtype" not in config
    loaded = type(net).from_pretrained(folder, subfolder="model")
    assert dict(loaded.config) == dict(net.config)
    args, expected = golden_args(name)
    np.testing.assert_allclose(loaded(*args).asnumpy(), expected, atol=1e-5, rtol=1e-5)
    half = type(net).from_pretrained(folder / "model", compute_dtype=ms.float16)
    assert half.compute_dtype == ms.float16


def test_sample_size_config_and_model_index():
    net = DiffusionTransformer(4, 4, 16, 1, 2, sample_size=12)
    assert net.config.sample_size == 12 and net.sample_shape(2) == (2, 12, 4)
    assert net.config.in_channels == 4 and net.config.out_channels == 4
    with pytest.raises(ValueError, match="sample_size"):
        DiffusionTransformer(4, 4, 16, 1, 2).sample_shape(2)
    index = model_index("P", {"unet": net, "scheduler": DDPMScheduler()})
    assert index["unet"] == ["mindscience_diffuser", "DiffusionTransformer"]
    assert index["scheduler"] == ["diffusers", "DDPMScheduler"]
    classes = _component_classes()
    assert classes["DiffusionTransformer"] is DiffusionTransformer
    assert classes["ConditionDiffusionTransformer"] is ConditionDiffusionTransformer


def test_mindscience_positional_order():
    net = ConditionDiffusionTransformer(2, 3, 5, 8, 1, 2, False, True, ms.float16)
    assert (net.config.cond_channels, net.config.hidden_channels, net.config.heads) == (5, 8, 2)
    assert net.config.time_token_cond is False and net.compute_dtype == ms.float16


def _errors(graph):
    if graph:
        ms.set_context(mode=ms.GRAPH_MODE)
    try:
        net = build("cdt_added")
        x = ms.Tensor(np.zeros((2, 5, 2), np.float32))
        t = ms.Tensor([1, 2], ms.int32)
        c = ms.Tensor(np.zeros((2, 5), np.float32))
        cases = [
            ((ms.Tensor(np.zeros((2, 5), np.float32)), t, c), ValueError, "x must have shape"),
            ((ms.Tensor(np.zeros((2, 5, 3), np.float32)), t, c), ValueError, "in_channels=2"),
            ((x, t, ms.Tensor(np.zeros((2, 4), np.float32))), ValueError, "cond_channels=5"),
            ((x, t, ms.Tensor(np.zeros((3, 5), np.float32))), ValueError, "condition must have shape"),
            ((x, t, None), ValueError, "condition must be given"),
            ((x, ms.Tensor([1, 2, 3], ms.int32), c), ValueError, "timestep must be"),
            ((x, ms.Tensor([True, False]), c), TypeError, "timestep"),
            ((np.zeros((2, 5, 2)), t, c), TypeError, "x must be a mindspore Tensor"),
        ]
        for args, error, match in cases:
            with pytest.raises(error, match=match):
                net(*args)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.mark.parametrize("graph", [False, True], ids=["pynative", "graph"])
def test_bad_inputs_raise_clear_errors(graph):
    _errors(graph)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="divisible by heads"):
        DiffusionTransformer(4, 4, 10, 1, 3)
    with pytest.raises(TypeError, match="layers"):
        DiffusionTransformer(4, 4, 16, 1.5, 2)
    with pytest.raises(TypeError, match="time_token_cond"):
        DiffusionTransformer(4, 4, 16, 1, 2, time_token_cond="yes")
    with pytest.raises(TypeError, match="compute_dtype"):
        DiffusionTransformer(4, 4, 16, 1, 2, compute_dtype=ms.int32)


@pytest.mark.parametrize("name", ["dt_token", "cdt_tokens"])
def test_float16_is_finite_and_close(name, tmp_path):
    net = load_golden(name)
    net.save_pretrained(tmp_path)
    half = type(net).from_pretrained(tmp_path, compute_dtype=ms.float16)
    args, expected = golden_args(name)
    out = half(*args)
    assert out.dtype == ms.float16
    out = out.asnumpy().astype(np.float32)
    assert np.isfinite(out).all()
    assert np.abs(out - expected).max() <= 3e-2 * max(1.0, np.abs(expected).max())


LOSS = json.loads((GOLDEN / "loss.json").read_text())
LOSS_DATA = np.load(GOLDEN / "loss.npz")
LOSS_CASES = [(s, key) for s in sorted(LOSS) for key in sorted(LOSS[s]["losses"])]


@pytest.mark.parametrize("schedule,key", LOSS_CASES, ids=[f"{s}-{k}" for s, k in LOSS_CASES])
def test_loss_matches_mindscience_get_loss(schedule, key):
    d = {k.split("/", 1)[1]: LOSS_DATA[k] for k in LOSS_DATA.files if k.startswith(schedule + "/")}
    objective, loss_type, gamma, k = key.split("/")
    scheduler = DDPMScheduler(**LOSS[schedule]["scheduler"])
    loss = mindscience_loss(ms.Tensor(d["model_output"]), ms.Tensor(d["x0"]), ms.Tensor(d["noise"]),
                            ms.Tensor(d["timestep"]), scheduler, objective=objective,
                            p2_loss_weight_gamma=float(gamma), p2_loss_weight_k=float(k), loss_type=loss_type)
    assert loss.shape == () and loss.dtype == ms.float32
    np.testing.assert_allclose(float(loss.asnumpy()), LOSS[schedule]["losses"][key], rtol=1e-5)


@pytest.mark.parametrize("schedule", sorted(LOSS))
def test_loss_chain_scheduler_and_model_match_mindscience(schedule):
    d = {k.split("/", 1)[1]: LOSS_DATA[k] for k in LOSS_DATA.files if k.startswith(schedule + "/")}
    scheduler = DDPMScheduler(**LOSS[schedule]["scheduler"])
    np.testing.assert_allclose(scheduler.alphas_cumprod, d["alphas_cumprod"], rtol=1e-6, atol=1e-6)
    noised = scheduler.add_noise(ms.Tensor(d["x0"]), ms.Tensor(d["noise"]), ms.Tensor(d["timestep"]))
    # sqrt(ᾱ) of a float32 ᾱ here, of a float64 ᾱ in MindScience: a few ulps apart
    np.testing.assert_allclose(noised.asnumpy(), d["model_input"], atol=5e-6)
    net = load_golden(LOSS[schedule]["model"])
    args = [ms.Tensor(d["model_input"]), ms.Tensor(d["timestep"])]
    args += [ms.Tensor(d["condition"])] if "condition" in d else []
    np.testing.assert_allclose(net(*args).asnumpy(), d["model_output"], atol=1e-5, rtol=1e-5)


def test_loss_options_are_checked_and_mapped():
    assert OBJECTIVE_TO_PREDICTION_TYPE == {"pred_noise": "epsilon", "pred_x0": "sample", "pred_v": "v_prediction"}
    x = ms.Tensor(np.zeros((2, 3, 1), np.float32))
    t = ms.Tensor([0, 1], ms.int32)
    table = np.array([0.9, 0.5], np.float32)
    with pytest.raises(ValueError, match="objective"):
        mindscience_loss(x, x, x, t, table, objective="pred_eps")
    with pytest.raises(ValueError, match="loss_type"):
        mindscience_loss(x, x, x, t, table, loss_type="huber")
    np.testing.assert_allclose(p2_loss_weights(table, 0.0), [1.0, 1.0])


def _case_data(data, prefix):
    return {k[len(prefix) + 1:]: data[k] for k in data.files if k.startswith(prefix + "/")}


@pytest.mark.parametrize("schedule", sorted(LOSS))
def test_trainer_get_loss_matches_mindscience_for_every_option(schedule):
    """``MindScienceTrainer(model, scheduler, ...).get_loss(x0, noise, t, condition)``, the
    whole chain (noising, model call, target, weights), gives MindScience's number for every
    objective, loss type and P2 weighting, with (B,) and MindScience's (B, 1) timesteps."""
    d = _case_data(LOSS_DATA, schedule)
    net, scheduler = load_golden(LOSS[schedule]["model"]), DDPMScheduler(**LOSS[schedule]["scheduler"])
    cond = ms.Tensor(d["condition"]) if "condition" in d else None
    for key, expected in sorted(LOSS[schedule]["losses"].items()):
        objective, loss_type, gamma, k = key.split("/")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer = MindScienceTrainer(net, scheduler, objective=objective, p2_loss_weight_gamma=float(gamma),
                                         p2_loss_weight_k=float(k), loss_type=loss_type)
        # the scheduler is an epsilon one: the other objectives are told it would misread them
        assert [str(w.message).count("prediction_type") for w in caught] == ([] if objective == "pred_noise" else [1])
        for t in (d["timestep"], d["timestep"][:, None]):
            loss = trainer.get_loss(ms.Tensor(d["x0"]), ms.Tensor(d["noise"]), ms.Tensor(t), cond)
            # the noised input differs by a few ulps (sqrt of float32 ᾱ here, float64 there)
            np.testing.assert_allclose(float(loss.asnumpy()), expected, rtol=2e-5, err_msg=key)


GRAD = json.loads((GOLDEN / "loss_grad.json").read_text())
GRAD_DATA = np.load(GOLDEN / "loss_grad.npz")


@pytest.mark.parametrize("case", sorted(GRAD))
def test_get_loss_gradients_match_mindscience(case):
    """A MindScience training step ports: ``ms.value_and_grad(trainer.get_loss, None, params)``
    gives MindScience's loss and the gradient of every parameter."""
    spec, d = GRAD[case], _case_data(GRAD_DATA, case)
    net = load_golden(spec["model"])
    scheduler = DDPMScheduler(**spec["scheduler"], prediction_type=OBJECTIVE_TO_PREDICTION_TYPE[spec["objective"]])
    trainer = MindScienceTrainer(net, scheduler, spec["objective"], spec["p2_loss_weight_gamma"],
                                 spec["p2_loss_weight_k"], spec["loss_type"])
    args = [ms.Tensor(d["x0"]), ms.Tensor(d["noise"]), ms.Tensor(d["timestep"])]
    args += [ms.Tensor(d["condition"])] if "condition" in d else []
    params = net.trainable_params()
    loss, grads = ms.value_and_grad(trainer.get_loss, None, params)(*args)
    np.testing.assert_allclose(float(loss.asnumpy()), spec["loss"], rtol=2e-5)
    assert len(params) == len([k for k in d if k.startswith("grad/")])
    for p, g in zip(params, grads):
        expected = d[f"grad/{p.name}"]
        np.testing.assert_allclose(g.asnumpy(), expected, rtol=1e-3, atol=1e-5 * max(1.0, np.abs(expected).max()),
                                   err_msg=p.name)


def test_trainer_get_loss_checks_its_options():
    net = load_golden("dt_token")
    with pytest.raises(ValueError, match="objective"):
        MindScienceTrainer(net, DDPMScheduler(), objective="pred_eps")
    with pytest.raises(ValueError, match="loss_type"):
        MindScienceTrainer(net, DDPMScheduler(), loss_type="huber")
    with pytest.raises(TypeError, match="scheduler"):
        MindScienceTrainer(net, object())
    trainer = MindScienceTrainer(net, DDPMScheduler())
    x = ms.Tensor(np.zeros((2, 10, 4), np.float32))
    with pytest.raises(ValueError, match="timesteps"):
        trainer.get_loss(x, x, ms.Tensor([1, 2, 3], ms.int32))
