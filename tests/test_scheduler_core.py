"""The scheduler core: configs both ways, outputs, add_noise/get_velocity, spacing tables,
calling conventions and bad input (diffusers 0.42.1 values from tests/golden)."""
import json
import logging
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import mindscience_diffuser as msd
from mindscience_diffuser.outputs import ImagePipelineOutput, SchedulerOutput, SdeVeOutput

GOLDEN = Path(__file__).resolve().parent / "golden"
CORE = dict(np.load(GOLDEN / "core.npz"))
CLASSES = ["DDIMScheduler", "DDPMScheduler"]


# ----------------------------------------------------------------------------- configs

@pytest.mark.parametrize("name", CLASSES)
def test_loads_a_config_written_by_diffusers(name):
    folder = GOLDEN / "configs" / "diffusers" / name
    written = json.loads((folder / "scheduler_config.json").read_text())
    sched = getattr(msd, name).from_pretrained(folder)
    for key, value in written.items():
        if not key.startswith("_"):
            assert sched.config[key] == value, key


@pytest.mark.parametrize("name", CLASSES)
def test_writes_the_config_diffusers_read_back(name, tmp_path):
    stored = GOLDEN / "configs" / "ours" / name
    diffusers_view = json.loads((stored / "loaded_by_diffusers.json").read_text())
    ours = getattr(msd, name).from_pretrained(stored)
    path = ours.save_config(tmp_path)
    assert path.name == "scheduler_config.json"
    assert path.read_text() == (stored / "scheduler_config.json").read_text()
    written = json.loads(path.read_text())
    assert written["_class_name"] == name
    for key, value in diffusers_view.items():
        assert written[key] == value, key


def test_unknown_keys_warn_and_missing_keys_default(caplog):
    with caplog.at_level(logging.WARNING, logger="mindscience_diffuser"):
        sched = msd.DDIMScheduler.from_config({"beta_schedule": "linear", "not_an_option": 3, "_class_name": "X"})
    assert "not_an_option" in caplog.text and "_class_name" not in caplog.text
    assert sched.config.beta_schedule == "linear" and sched.config.num_train_timesteps == 1000


def test_swap_scheduler_through_config():
    ddim = msd.DDIMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction")
    ddpm = msd.DDPMScheduler.from_config(ddim.config)
    assert ddpm.config.beta_schedule == "scaled_linear" and ddpm.config.prediction_type == "v_prediction"
    np.testing.assert_array_equal(ddpm.alphas_cumprod, ddim.alphas_cumprod)


def test_config_is_read_only_and_override_needs_a_known_name():
    sched = msd.DDIMScheduler()
    with pytest.raises(TypeError):
        sched.config["beta_schedule"] = "linear"
    with pytest.raises(TypeError, match="no argument"):
        msd.DDIMScheduler.from_config(sched.config, not_an_option=1)
    assert msd.DDIMScheduler.from_config(sched.config, compute_dtype=ms.float16).compute_dtype == ms.float16


def test_from_pretrained_missing_or_broken_file(tmp_path):
    with pytest.raises(OSError, match="scheduler_config.json"):
        msd.DDIMScheduler.from_pretrained(tmp_path)
    (tmp_path / "scheduler_config.json").write_text("{not json")
    with pytest.raises(OSError, match="not valid JSON"):
        msd.DDIMScheduler.from_pretrained(tmp_path)


def test_from_pretrained_subfolder(tmp_path):
    msd.DDPMScheduler(num_train_timesteps=77).save_config(tmp_path / "scheduler")
    assert msd.DDPMScheduler.from_pretrained(tmp_path, subfolder="scheduler").config.num_train_timesteps == 77


# ----------------------------------------------------------------------------- outputs

def test_output_classes_support_attribute_key_index_and_tuple():
    out = SchedulerOutput(prev_sample=1, pred_original_sample=2)
    assert out.prev_sample == out["prev_sample"] == out[0] == 1
    assert out.to_tuple() == (1, 2) and list(out.keys()) == ["prev_sample", "pred_original_sample"]
    assert SchedulerOutput(prev_sample=1).to_tuple() == (1,)
    assert SdeVeOutput(3, 4)[1] == 4
    with pytest.raises(KeyError):
        ImagePipelineOutput(images=[])["sample"]


# ----------------------------------------------------------------------------- shared math

@pytest.mark.parametrize("name,method", [(c, m) for c in CLASSES for m in ("add_noise", "get_velocity")])
def test_add_noise_and_velocity_match_diffusers(name, method):
    schedule = "squaredcos_cap_v2" if name == "DDIMScheduler" else "linear"
    sched = getattr(msd, name)(beta_schedule=schedule)
    out = getattr(sched, method)(Tensor(CORE["x0"]), Tensor(CORE["noise"]), Tensor(CORE["t"]))
    expected = CORE[f"{name}/{method}"]
    assert np.max(np.abs(out.asnumpy() - expected)) <= 1e-5 * np.max(np.abs(expected))


def test_add_noise_rejects_out_of_range_timesteps():
    with pytest.raises(ValueError, match="timesteps"):
        msd.DDPMScheduler().add_noise(Tensor(CORE["x0"]), Tensor(CORE["noise"]), np.array([0, 1, 1000]))


@pytest.mark.parametrize("key", [k for k in CORE if "/timesteps/" in k])
def test_timestep_spacing_matches_diffusers(key):
    name, _, spacing, n, offset = key.split("/")
    sched = getattr(msd, name)(timestep_spacing=spacing, steps_offset=int(offset))
    if CORE[key].max() >= 1000:
        # diffusers accepts a timestep past the training range here and fails at its first step.
        with pytest.raises(ValueError, match="steps_offset"):
            sched.set_timesteps(int(n))
        return
    sched.set_timesteps(int(n))
    np.testing.assert_array_equal(sched.timesteps, CORE[key])


def test_ddim_previous_timestep_is_t_minus_ratio_for_every_spacing():
    sched = msd.DDIMScheduler(timestep_spacing="trailing")
    sched.set_timesteps(3)  # 999, 666, 332: the step from 999 lands on 999 - 333
    assert sched.previous_timestep(999) == 666 and sched.previous_timestep(332) == -1


# ----------------------------------------------------------------------------- conventions and bad input

@pytest.fixture
def ddim():
    sched = msd.DDIMScheduler()
    sched.set_timesteps(10)
    return sched


X = Tensor(np.ones((2, 3, 4, 4), np.float32))


def test_return_conventions(ddim):
    t = int(ddim.timesteps[0])
    assert isinstance(ddim.step(X, X, t), Tensor)
    out = ddim.step(X, X, t, return_dict=True)
    assert isinstance(out, SchedulerOutput) and out.pred_original_sample.shape == X.shape
    prev, x0 = ddim.step(X, X, t, return_dict=False)
    np.testing.assert_array_equal(prev.asnumpy(), out.prev_sample.asnumpy())


def test_diffusers_positional_order_is_explained(ddim):
    with pytest.raises(TypeError, match="step\\(model_output, sample, timestep"):
        ddim.step(X, 901, X)


def test_keyword_call_in_diffusers_names(ddim):
    out = ddim.step(model_output=X, timestep=901, sample=X, eta=0.0)
    assert out.shape == X.shape


def test_timestep_forms_agree(ddim):
    a = ddim.step(X, X, 901).asnumpy()
    b = ddim.step(X, X, Tensor(901, ms.int32)).asnumpy()
    c = ddim.step(X, X, Tensor(np.array([901, 901]), ms.int64)).asnumpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_same_seed_same_noise(ddim):
    a = ddim.step(X, X, 901, eta=1.0, generator=5).asnumpy()
    b = ddim.step(X, X, 901, eta=1.0, generator=np.random.default_rng(5)).asnumpy()
    c = ddim.step(X, X, 901, eta=1.0, generator=6).asnumpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize(
    "build,error,match",
    [
        (lambda: msd.DDIMScheduler(beta_schedule="cubic"), ValueError, "beta_schedule"),
        (lambda: msd.DDIMScheduler(prediction_type="flow"), ValueError, "prediction_type"),
        (lambda: msd.DDIMScheduler(timestep_spacing="even"), ValueError, "timestep_spacing"),
        (lambda: msd.DDPMScheduler(variance_type="fixed"), ValueError, "variance_type"),
        (lambda: msd.DDIMScheduler(compute_dtype=ms.float64), TypeError, "compute_dtype"),
        (lambda: msd.DDIMScheduler(compute_dtype="float16"), TypeError, "compute_dtype"),
        (lambda: msd.DDIMScheduler(num_train_timesteps=0), ValueError, "num_train_timesteps"),
        (lambda: msd.DDPMScheduler(num_train_timesteps=5, trained_betas=[0.1, 0.2]), ValueError, "trained_betas"),
        (lambda: msd.DDPMScheduler(trained_betas=[0.1, 1.5]), ValueError, "trained_betas"),
    ],
)
def test_invalid_options(build, error, match):
    with pytest.raises(error, match=match):
        build()


@pytest.mark.parametrize("name", [name for name in CLASSES if not getattr(msd, name).steps_on_training_schedule])
def test_step_before_set_timesteps(name):
    """Where diffusers raises; test_diffusers_compat covers the classes that walk their training schedule."""
    with pytest.raises(ValueError, match="set_timesteps"):
        getattr(msd, name)().step(X, X, 10)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"num_inference_steps": 0}, ValueError, "at least 1"),
        ({"num_inference_steps": 1001}, ValueError, "cannot exceed"),
        ({"num_inference_steps": 2.5}, TypeError, "int"),
        ({}, ValueError, "exactly one"),
        ({"num_inference_steps": 5, "timesteps": [3, 2]}, ValueError, "exactly one"),
        ({"timesteps": [10, 20]}, ValueError, "descending"),
        ({"timesteps": [1000, 20]}, ValueError, "lie in"),
    ],
)
@pytest.mark.parametrize("name", CLASSES)
def test_bad_set_timesteps(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        getattr(msd, name)().set_timesteps(**kwargs)


@pytest.mark.parametrize(
    "args,kwargs,error,match",
    [
        ((X[:, :2], X, 901), {}, ValueError, "does not match"),
        ((X.astype(ms.int32), X, 901), {}, TypeError, "float32 or float16"),
        ((X.asnumpy(), X, 901), {}, TypeError, "model_output"),
        ((X, X, 901), {"eta": 1.5}, ValueError, "eta"),
        ((X, X, 901), {"eta": -0.1}, ValueError, "eta"),
        ((X, X, 901), {"eta": "0.5"}, TypeError, "eta"),
        ((X, X, 1000), {}, ValueError, "timestep"),
        ((X, X, Tensor(np.array([1, 2, 3]))), {}, ValueError, "shape"),
        ((X, X, 901), {"eta": 1.0, "generator": 1, "variance_noise": X}, ValueError,
         "either generator or variance_noise"),
        ((X, X, 901), {"eta": 1.0, "variance_noise": X[:1]}, ValueError, "variance_noise shape"),
        ((X, X, 901), {"eta": 1.0, "generator": "seed"}, TypeError, "generator"),
        ((Tensor(np.ones((2,), np.float32)), Tensor(np.ones((2,), np.float32)), 901), {}, ValueError, "rank 2 to 5"),
    ],
)
def test_bad_step_arguments(ddim, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        ddim.step(*args, **kwargs)


def test_ddpm_rejects_timestep_outside_schedule_and_learned_needs_2c():
    sched = msd.DDPMScheduler(variance_type="learned_range")
    sched.set_timesteps(10)
    with pytest.raises(ValueError, match="not in the schedule"):
        sched.step(ms.ops.concat([X, X], axis=1), X, 123)
    with pytest.raises(ValueError, match="2C-channel"):
        sched.step(X, X, int(sched.timesteps[0]))


# ----------------------------------------------------------------------------- the diffusers option surface

DIFFUSERS_OPTIONS = json.loads((GOLDEN / "diffusers_options.json").read_text())
# Where a MindScience seed signature sets a different default, the seed wins (DESIGN.md).
SEED_DEFAULTS = {("DDIMScheduler", "beta_schedule"): "'squaredcos_cap_v2'"}


@pytest.mark.parametrize("name", sorted(DIFFUSERS_OPTIONS))
def test_every_diffusers_option_exists_with_its_default(name):
    import inspect

    params = inspect.signature(getattr(msd, name).__init__).parameters
    missing = [k for k in DIFFUSERS_OPTIONS[name] if k not in params]
    assert not missing, f"{name} lacks diffusers options {missing}"
    assert "compute_dtype" in params
    differ = {k: (v, repr(params[k].default))
              for k, v in DIFFUSERS_OPTIONS[name].items()
              if SEED_DEFAULTS.get((name, k), v) != repr(params[k].default)}
    assert not differ, f"{name} defaults differ from diffusers: {differ}"
