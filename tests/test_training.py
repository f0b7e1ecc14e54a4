"""DiffusionTrainer: loss targets and weights against a numpy re-derivation, the compiled step,
checkpoints (layout, atomicity, bit-exact resume), export, datasets and bad input."""
import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from mindscience_diffuser import DDIMScheduler, DDPMScheduler
from mindscience_diffuser.models import UNet2DModel
from mindscience_diffuser.training import (
    ArrayDataset,
    BatchOrder,
    DiffusionLoss,
    DiffusionTrainer,
    FieldDataset,
    ImageFolderDataset,
    SyntheticFieldDataset,
    TrainerConfig,
    as_dataset,
    latest_checkpoint,
    learning_rate_at,
    load_fields,
    snr_weights,
)


def tiny_unet():
    ms.set_seed(0)
    return UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",), mid_block_type=None, layers_per_block=1, norm_num_groups=4,
    )


class HalfModel(nn.Cell):
    """model(x, t) = 0.5·x + 0.001·t: a parameterised stand-in whose output numpy can recompute."""

    def __init__(self):
        super().__init__()
        self.scale = ms.Parameter(Tensor(np.array([0.5], np.float32)), name="scale")

    def construct(self, x, t):
        return self.scale * x + 0.001 * t.astype(ms.float32).reshape(-1, 1, 1, 1)


@pytest.fixture(scope="module")
def fields():
    return SyntheticFieldDataset("grf", num_samples=24, size=8, seed=3)


# ---- loss targets and weights -------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("loss,weighting", [("mse", None), ("l1", "min_snr"), ("mse", "p2")])
def test_loss_matches_numpy(prediction_type, loss, weighting):
    sched = DDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((3, 1, 4, 4)).astype(np.float32)
    eps = rng.standard_normal((3, 1, 4, 4)).astype(np.float32)
    t = np.array([0, 41, 99], np.int32)
    weights = snr_weights(sched.alphas_cumprod, prediction_type, weighting, min_snr_gamma=2.0, p2_gamma=0.5, p2_k=1.0)
    got = DiffusionLoss(HalfModel(), sched, loss, weights)(Tensor(x0), Tensor(eps), Tensor(t)).asnumpy()

    abar = sched.alphas_cumprod.astype(np.float64)[t].reshape(-1, 1, 1, 1)
    a, s = np.sqrt(abar), np.sqrt(1 - abar)
    xt = a * x0 + s * eps
    target = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - s * x0}[prediction_type]
    err = 0.5 * xt + 0.001 * t.reshape(-1, 1, 1, 1) - target
    per = (np.abs(err) if loss == "l1" else err ** 2).reshape(3, -1).mean(1)
    snr = (abar / (1 - abar)).ravel()
    if weighting is None:
        w = np.ones(3)
    elif weighting == "p2":
        w = 1 / np.sqrt(1 + snr)
    else:
        w = {"epsilon": np.minimum(snr, 2) / snr, "sample": np.minimum(snr, 2),
             "v_prediction": np.minimum(snr, 2) / (snr + 1)}[prediction_type]
    np.testing.assert_allclose(got, (w * per).mean(), rtol=2e-5)


def test_snr_weights_zero_terminal_snr_is_finite():
    sched = DDIMScheduler(rescale_betas_zero_snr=True, prediction_type="v_prediction")
    for pred in ("epsilon", "sample", "v_prediction"):
        for weighting in (None, "min_snr", "p2"):
            w = snr_weights(sched.alphas_cumprod, pred, weighting)
            assert np.all(np.isfinite(w)) and np.all(w >= 0), (pred, weighting)
    assert snr_weights(sched.alphas_cumprod, "epsilon", "min_snr")[-1] == 1.0


# ---- compiled step, checkpoints, resume -----------------------------------------------------

def make_trainer(output_dir=None, **kwargs):
    opts = dict(batch_size=4, learning_rate=1e-3, weighting="min_snr", ema_decay=0.9, output_dir=output_dir,
                checkpoint_every=2)
    opts.update(kwargs)
    return DiffusionTrainer(tiny_unet(), DDIMScheduler(num_train_timesteps=100, prediction_type="v_prediction"),
                            **opts)


def params(cell):
    return {name: p.asnumpy() for name, p in cell.parameters_and_names()}


def test_resume_after_interruption_is_bit_exact(tmp_path, fields):
    """N steps straight == k steps, interruption, a fresh process-like restart from the
    checkpoint, N - k more: identical model, EMA and optimizer state."""
    straight = make_trainer(tmp_path / "a")
    straight.train(fields, 5)

    first = make_trainer(tmp_path / "b")
    first.train(fields, 5, stop_after=3)  # "crash" after step 3 (a checkpoint of step 3 is written on the way out)
    assert latest_checkpoint(tmp_path / "b").name == "checkpoint-3"
    resumed = make_trainer(tmp_path / "b")
    resumed.train(fields, 5, resume_from="latest")
    assert resumed.step == straight.step == 5

    a, b = params(straight.model), params(resumed.model)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    ea, eb = straight.ema_state(), resumed.ema_state()
    assert all(np.array_equal(ea[k], eb[k]) for k in ea)
    oa, ob = straight._optimizer_state(), resumed._optimizer_state()
    assert all(np.array_equal(oa[k], ob[k]) for k in oa)
    # The EMA moved away from the live weights, and the losses were finite.
    assert any(not np.array_equal(ea[k], a[k]) for k in ea)
    assert all(np.isfinite(v) for _, v in straight.history)

    # Checkpoint layout (diffusers' model layout for both weight sets), pruning, no temp dirs.
    ckpt = tmp_path / "a" / "checkpoint-5"
    for rel in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet_ema/config.json",
                "unet_ema/diffusion_pytorch_model.safetensors", "optimizer.safetensors", "trainer_state.json"):
        assert (ckpt / rel).is_file(), rel
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["checkpoint-4", "checkpoint-5"]
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 5 and state["hparams"]["weighting"] == "min_snr"
    ema_unet = UNet2DModel.from_pretrained(ckpt, subfolder="unet_ema")
    assert np.array_equal(params(ema_unet)["conv_in.weight"], ea["conv_in.weight"])

    # Export: a pipeline folder that the package's DDIMPipeline loads.
    from mindscience_diffuser.pipelines import DDIMPipeline

    out = straight.save_pretrained(tmp_path / "pipe")
    index = json.loads((out / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"] == ["diffusers", "DDIMScheduler"]
    pipe = DDIMPipeline.from_pretrained(out)
    assert np.array_equal(params(pipe.unet)["conv_in.weight"], ea["conv_in.weight"])
    assert pipe.scheduler.config.prediction_type == "v_prediction"

    # Shipping another sampler for the same noise schedule: the folder names it and loads it.
    from mindscience_diffuser import DiffusionPipeline, DPMSolverMultistepScheduler, DPMSolverPipeline

    sampler = DPMSolverMultistepScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                                          prediction_type="v_prediction", use_lu_lambdas=True)
    out = straight.save_pretrained(tmp_path / "dpm", pipeline_class="DPMSolverPipeline", scheduler=sampler)
    pipe = DiffusionPipeline.from_pretrained(out)
    # diffusers has no DPMSolverPipeline: the folder is a DDPMPipeline, which drives the scheduler as stored
    assert type(pipe).__name__ == "DDPMPipeline" and isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.use_lu_lambdas
    assert type(DPMSolverPipeline.from_pretrained(out)).__name__ == "DPMSolverPipeline"
    with pytest.raises(ValueError, match="training noise schedule and prediction_type"):
        straight.save_pretrained(tmp_path / "bad", scheduler=DPMSolverMultistepScheduler(num_train_timesteps=100))


SIGNAL_SCRIPT = """
import os, signal, sys
import numpy as np
import mindspore as ms
from mindscience_diffuser import DDPMScheduler, UNet2DModel
from mindscience_diffuser.training import DiffusionTrainer

ms.set_seed(0)
unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1,
                   down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), mid_block_type=None,
                   norm_num_groups=4)
trainer = DiffusionTrainer(unet, DDPMScheduler(num_train_timesteps=100), batch_size=2, output_dir=sys.argv[1],
                           checkpoint_every=1000)

def interrupt_at_step_3(trainer, loss):
    print("finished step", trainer.step, flush=True)
    if trainer.step == 3:
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))

trainer.train(np.zeros((4, 1, 8, 8), np.float32), 1000, callback=interrupt_at_step_3)
"""


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_after_the_step_in_flight_and_checkpoints_it(tmp_path, signal_name):
    """Ctrl-C or a scheduler's SIGTERM mid-run: the step finishes, checkpoint-3 is written, the
    process exits non-zero and no later step runs (before, MindSpore's runtime ended the process
    on the spot and every step since the last periodic checkpoint was lost)."""
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(SIGNAL_SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), signal_name], capture_output=True,
                         text=True, timeout=300)
    steps = [int(line.split()[-1]) for line in run.stdout.splitlines() if line.startswith("finished step")]
    assert run.returncode != 0 and steps == [1, 2, 3], (run.returncode, run.stdout, run.stderr[-2000:])
    checkpoint = latest_checkpoint(tmp_path / "run")
    assert checkpoint is not None and checkpoint.name == "checkpoint-3"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == 3


SIGNAL_IN_STEP_SCRIPT = SIGNAL_SCRIPT.replace("trainer.train(", """
compiled = trainer._compiled_step

def signal_inside_step_3(*args):
    loss = compiled(*args)
    if trainer.step == 2:  # step 3 in flight, with MindSpore's own SIGINT handler installed
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))
    return loss

trainer._compiled_step = signal_inside_step_3
trainer.train(""")


@pytest.mark.parametrize("when", ["between steps", "inside a step"])
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_ctrl_c_raises_keyboard_interrupt_and_sigterm_system_exit(tmp_path, signal_name, when):
    """MindSpore's runtime turns a SIGINT into a SIGTERM to the process (and leaves its handler
    installed after a compiled step): Ctrl-C still ends train() with the KeyboardInterrupt the
    docs promise, wherever it lands; a SIGTERM between steps stays SystemExit(143)."""
    import subprocess
    import sys

    if signal_name == "SIGTERM" and when == "inside a step":
        pytest.skip("a SIGTERM inside a step cannot be told from MindSpore's converted SIGINT")
    script = tmp_path / "train.py"
    script.write_text(SIGNAL_SCRIPT if when == "between steps" else SIGNAL_IN_STEP_SCRIPT)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), signal_name],
                         capture_output=True, text=True, timeout=300)
    steps = [int(line.split()[-1]) for line in run.stdout.splitlines() if line.startswith("finished step")]
    assert steps == [1, 2, 3], (run.returncode, run.stdout, run.stderr[-2000:])
    if signal_name == "SIGINT":
        # An uncaught KeyboardInterrupt ends Python by SIGINT, as a shell expects of Ctrl-C.
        assert run.returncode == -2, run.stderr[-2000:]
        assert "KeyboardInterrupt: training stopped by SIGINT after step 3" in run.stderr, run.stderr[-2000:]
    else:
        assert run.returncode == 128 + 15 and "KeyboardInterrupt" not in run.stderr
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint-3"


def test_train_step_and_warmup(fields):
    model = HalfModel()
    model.config = {"in_channels": 1}
    trainer = DiffusionTrainer(model, DDPMScheduler(num_train_timesteps=100), batch_size=4, weighting=None,
                               ema_decay=None, warmup_steps=4, learning_rate=3e-3, loss="l1")
    assert trainer.current_learning_rate() == pytest.approx(3e-3 / 4)
    batch = fields.data[:4]
    losses = [trainer.train_step(batch) for _ in range(6)]
    assert trainer.current_learning_rate() == pytest.approx(3e-3)
    assert np.all(np.isfinite(losses))
    # Without EMA, ema_state is the live weights.
    live = params(trainer.model)["scale"]
    assert np.array_equal(trainer.ema_state()["scale"], live) and live[0] != 0.5
    with pytest.raises(ValueError, match="batch"):
        trainer.train_step(batch[0])
    with pytest.raises(ValueError, match="channels"):
        trainer.train(np.zeros((8, 2, 8, 8), np.float32), 1)
    with pytest.raises(ValueError, match="resume_from='latest' needs output_dir"):
        trainer.train(fields, 1, resume_from="latest")


def diffusers_lambda_lr(schedule, step, warmup, total):
    """diffusers.optimization.get_{linear,cosine}_schedule_with_warmup after the warm-up, written
    out independently: the multiplier of the peak learning rate at ``step``."""
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + np.cos(np.pi * progress)))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_learning_rate_decay_matches_diffusers_schedules(schedule):
    peak, warmup, total = 2e-3, 10, 110
    for step in range(warmup, total + 1):
        expected = peak * diffusers_lambda_lr(schedule, step, warmup, total)
        assert learning_rate_at(step, peak, warmup, schedule, total) == pytest.approx(expected, abs=1e-15)
    # Warm-up: linear from peak/warmup at step 0 (a first step that learns) to peak.
    assert learning_rate_at(0, peak, warmup, schedule, total) == pytest.approx(peak / warmup)
    assert learning_rate_at(warmup - 1, peak, warmup, schedule, total) == pytest.approx(peak)


def test_warmup_stable_decay_holds_then_decays_over_the_last_steps():
    peak, total, decay = 1.0, 100, 40
    lrs = [learning_rate_at(s, peak, 5, "cosine", total, decay) for s in range(total)]
    assert lrs[5:61] == [peak] * 56
    assert all(a > b for a, b in zip(lrs[60:], lrs[61:]))
    assert lrs[80] == pytest.approx(0.5) and lrs[99] == pytest.approx(0.5 * (1 + np.cos(np.pi * 39 / 40)))
    assert learning_rate_at(150, peak, 5, "linear", total, decay) == 0.0
    assert learning_rate_at(10**6, peak, 5, "constant") == peak


def test_trainer_follows_its_schedule_and_stops_at_its_end(fields):
    trainer = DiffusionTrainer(HalfModel(), DDPMScheduler(num_train_timesteps=100), batch_size=4, weighting=None,
                               ema_decay=None, learning_rate=1e-2, lr_schedule="linear", num_training_steps=4,
                               lr_decay_steps=2)
    seen = []
    trainer.train(fields, 4, callback=lambda t, loss: seen.append(float(t.optimizer.learning_rate.asnumpy())))
    np.testing.assert_allclose(seen, [1e-2, 1e-2, 1e-2, 5e-3], rtol=1e-6)
    with pytest.raises(ValueError, match="num_steps=5 runs past num_training_steps=4"):
        trainer.train(fields, 5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(loss="huber"), "loss must be one of"),
    (dict(lr_schedule="step"), "lr_schedule must be one of"),
    (dict(lr_schedule="cosine"), "needs num_training_steps"),
    (dict(lr_schedule="cosine", num_training_steps=10, warmup_steps=4, lr_decay_steps=7),
     "at most num_training_steps - warmup_steps = 6"),
    (dict(lr_decay_steps=5), "lr_decay_steps needs lr_schedule"),
    (dict(lr_schedule="linear", num_training_steps=0), "num_training_steps"),
    (dict(weighting="snr"), "weighting must be one of"),
    (dict(learning_rate=0), "learning_rate"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(max_grad_norm=-1), "max_grad_norm"),
    (dict(checkpoint_every=0), "checkpoint_every"),
    (dict(seed=-1), "seed"),
])
def test_bad_trainer_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffusionTrainer(HalfModel(), DDPMScheduler(), **kwargs)


def test_options_are_one_frozen_validated_config(tmp_path, fields):
    """The constructor's keywords are TrainerConfig's fields (same names, same defaults); the
    trainer keeps them once, as ``trainer.config``, and checkpoints store its hparams."""
    import dataclasses
    import inspect

    keywords = {name: p.default for name, p in inspect.signature(DiffusionTrainer).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert keywords == {f.name: f.default for f in dataclasses.fields(TrainerConfig)}

    trainer = DiffusionTrainer(tiny_unet(), DDPMScheduler(num_train_timesteps=100), batch_size=np.int64(4),
                               ema_decay=None, learning_rate=1, output_dir=str(tmp_path / "run"), seed=7)
    config = trainer.config
    assert isinstance(config, TrainerConfig)
    assert (config.batch_size, config.learning_rate, config.output_dir) == (4, 1.0, tmp_path / "run")
    assert type(config.batch_size) is int and type(config.learning_rate) is float
    for copy in ("hparams", "batch_size", "seed", "learning_rate", "warmup_steps", "ema_decay", "output_dir",
                 "checkpoint_every", "keep_checkpoints", "data_parallel"):
        assert not hasattr(trainer, copy), copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 8
    with pytest.raises(ValueError, match="batch_size"):
        dataclasses.replace(config, batch_size=0)

    trainer.train(fields, 2)
    state = json.loads((latest_checkpoint(tmp_path / "run") / "trainer_state.json").read_text())
    assert state["hparams"] == dict(config.hparams(), prediction_type="epsilon")
    assert set(state["hparams"]) == {f.name for f in dataclasses.fields(TrainerConfig)} - {
        "output_dir", "checkpoint_every", "keep_checkpoints", "data_parallel"} | {"prediction_type"}
    assert TrainerConfig.from_hparams(state["hparams"], output_dir=tmp_path / "run") == config


def test_a_checkpoint_with_mismatched_ema_weights_is_rejected_before_anything_is_restored(tmp_path, fields):
    """The EMA weights go through the same strict check as the model's: every missing or
    unexpected key is named, and neither the model nor the step changes."""
    from safetensors.numpy import load_file, save_file

    trainer = DiffusionTrainer(tiny_unet(), DDPMScheduler(num_train_timesteps=100), batch_size=4, output_dir=tmp_path)
    trainer.train(fields, 1)
    ema_file = latest_checkpoint(tmp_path) / "unet_ema" / "diffusion_pytorch_model.safetensors"
    arrays = load_file(str(ema_file))
    del arrays["conv_in.bias"]
    arrays["extra.weight"] = np.zeros(2, np.float32)
    save_file(arrays, str(ema_file))
    fresh = DiffusionTrainer(tiny_unet(), DDPMScheduler(num_train_timesteps=100), batch_size=4)
    before = params(fresh.model)
    with pytest.raises(ValueError, match="EMA weights in .*missing keys.*conv_in.bias.*unexpected keys.*extra.weight"):
        fresh.load_checkpoint(latest_checkpoint(tmp_path))
    after = params(fresh.model)
    assert fresh.step == 0 and all(np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size="16"), "batch_size must be a positive int, got str"),
    (dict(learning_rate=None), "learning_rate must be a positive number, got NoneType"),
    (dict(seed=1.5), "seed must be a non-negative int"),
    (dict(ema_decay="0.9"), "ema_decay"),
    (dict(num_training_steps=True), "num_training_steps"),
    (dict(output_dir=3), "output_dir must be None or a path"),
    (dict(data_parallel="no"), "data_parallel must be True or False"),
])
def test_trainer_options_of_a_wrong_type_raise_type_error(kwargs, match):
    with pytest.raises(TypeError, match=match):
        DiffusionTrainer(HalfModel(), DDPMScheduler(), **kwargs)


def test_bad_model_and_scheduler(tmp_path):
    with pytest.raises(TypeError, match="model must be"):
        DiffusionTrainer(lambda x, t: x, DDPMScheduler())
    with pytest.raises(TypeError, match="scheduler must be a VP scheduler"):
        DiffusionTrainer(HalfModel(), object())
    (tmp_path / "f").write_text("x")
    with pytest.raises(OSError, match="output_dir"):
        DiffusionTrainer(HalfModel(), DDPMScheduler(), output_dir=tmp_path / "f")
    trainer = DiffusionTrainer(HalfModel(), DDPMScheduler())
    with pytest.raises(OSError, match="not a checkpoint directory"):
        trainer.load_checkpoint(tmp_path)


# ---- datasets ------------------------------------------------------------------------------

def test_array_sources(tmp_path):
    arr = np.random.default_rng(0).standard_normal((6, 2, 4, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", arr)
    np.savez(tmp_path / "b.npz", first=arr, second=arr[:, :1])
    assert np.array_equal(ArrayDataset(tmp_path / "a.npy").data, arr)
    assert np.array_equal(ArrayDataset(tmp_path / "b.npz").data, arr)
    assert ArrayDataset(tmp_path / "b.npz", key="second").sample_shape == (1, 4, 4)
    assert load_fields(tmp_path / "a.npy").shape == (6, 2, 4, 4)
    assert ArrayDataset(arr[:, 0]).sample_shape == (1, 4, 4)  # (N, H, W) -> one channel
    assert as_dataset(str(tmp_path / "a.npy")).data.shape == (6, 2, 4, 4)
    train, held = FieldDataset(arr).split(2)
    assert len(train) == 4 and len(held) == 2

    with pytest.raises(OSError, match="not found"):
        ArrayDataset(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match=r"\.npy or \.npz"):
        ArrayDataset(tmp_path / "a.txt")
    with pytest.raises(ValueError, match="key must be one of"):
        ArrayDataset(tmp_path / "b.npz", key="third")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ArrayDataset(arr[0, 0])
    with pytest.raises(ValueError, match="NaN"):
        FieldDataset(np.full((2, 1, 2, 2), np.nan))
    with pytest.raises(TypeError, match="numbers"):
        FieldDataset(np.array([["a"]]))
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(OSError, match="cannot read"):
        ArrayDataset(tmp_path / "bad.npy")
    with pytest.raises(TypeError, match="dataset must be"):
        as_dataset([1, 2, 3])


def test_image_folder(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((6, 5), 40 * i, np.uint8), mode="L").save(tmp_path / f"{i}.png")
    rgb = ImageFolderDataset(tmp_path)
    assert rgb.data.shape == (3, 3, 6, 5) and rgb.data.min() == -1.0
    gray = ImageFolderDataset(tmp_path, size=4, mode="L")
    assert gray.data.shape == (3, 1, 4, 4)
    assert load_fields(tmp_path).shape == (3, 1, 6, 5)  # all-grayscale folder -> one channel
    assert load_fields(tmp_path / "2.png").shape == (1, 1, 6, 5)
    with pytest.raises(OSError, match="image folder not found"):
        ImageFolderDataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="mode must be one of"):
        ImageFolderDataset(tmp_path, mode="CMYK")
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match="different sizes"):
        ImageFolderDataset(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OSError, match="no image files"):
        ImageFolderDataset(empty)


def test_batch_order_resumes_and_shards():
    order = BatchOrder(10, 3, seed=5)
    first = [order.next_indices() for _ in range(7)]  # crosses two epoch boundaries (3 batches per epoch)
    again = BatchOrder(10, 3, seed=5)
    for _ in range(4):
        again.next_indices()
    state = again.state_dict()
    restored = BatchOrder(10, 3, seed=5)
    restored.load_state_dict(state)
    assert all(np.array_equal(a, b) for a, b in zip(first[4:], [restored.next_indices() for _ in range(3)]))
    assert len(set(np.concatenate(first[:3]).tolist())) == 9  # no repeats within an epoch
    # Two shards split each global batch of 6 without overlap.
    r0, r1 = BatchOrder(12, 3, seed=1, shard=0, num_shards=2), BatchOrder(12, 3, seed=1, shard=1, num_shards=2)
    a, b = r0.next_indices(), r1.next_indices()
    assert not set(a.tolist()) & set(b.tolist())
    with pytest.raises(ValueError, match="exceeds the dataset size"):
        BatchOrder(4, 3, num_shards=2)
    with pytest.raises(ValueError, match="seed"):
        BatchOrder(10, 3, seed=6).load_state_dict(state)


# ---- conditional training ------------------------------------------------------------------

def tiny_conditional_unet(vector=None, field=None, num_class_embeds=None):
    """The tiny UNet conditioned on a (B, vector) projection, a (B, field, H, W) field or labels."""
    ms.set_seed(0)
    extra = {}
    if vector is not None:
        extra = dict(class_embed_type="projection", projection_class_embeddings_input_dim=vector)
    return UNet2DModel(
        sample_size=8, in_channels=1 + (field or 0), out_channels=1, block_out_channels=(8,),
        down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), mid_block_type=None, layers_per_block=1,
        norm_num_groups=4, num_class_embeds=num_class_embeds, **extra,
    )


class ConditionedHalfModel(nn.Cell):
    """model(x, t, c) = 0.5·x + 0.001·t + c_0: an open (spec-less) conditional Cell numpy can recompute."""

    def __init__(self):
        super().__init__()
        self.scale = ms.Parameter(Tensor(np.array([0.5], np.float32)), name="scale")

    def construct(self, x, t, c):
        return self.scale * x + 0.001 * t.astype(ms.float32).reshape(-1, 1, 1, 1) + c[:, :1].reshape(-1, 1, 1, 1)


def test_the_condition_reaches_the_model_in_the_loss():
    """DiffusionLoss(x0, ε, t, condition) is the loss of model(x_t, t, condition), by numpy."""
    sched = DDPMScheduler(num_train_timesteps=100)
    rng = np.random.default_rng(0)
    x0, eps = rng.standard_normal((2, 3, 1, 4, 4)).astype(np.float32)
    cond = rng.standard_normal((3, 2)).astype(np.float32)
    t = np.array([3, 50, 99], np.int32)
    loss_net = DiffusionLoss(ConditionedHalfModel(), sched, "mse", np.ones(100, np.float32))
    got = loss_net(Tensor(x0), Tensor(eps), Tensor(t), Tensor(cond)).asnumpy()
    abar = sched.alphas_cumprod.astype(np.float64)[t].reshape(-1, 1, 1, 1)
    xt = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps
    out = 0.5 * xt + 0.001 * t.reshape(-1, 1, 1, 1) + cond[:, :1].reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(got, ((out - eps) ** 2).mean(), rtol=1e-5)


def conditional_fields(n=24, seed=3):
    """GRFs whose spectral slope, drawn per field, is their (N, 1) condition."""
    return SyntheticFieldDataset("grf", num_samples=n, size=8, seed=seed, vary={"spectrum": (1.5, 3.5)})


def test_synthetic_fields_return_their_drawn_parameters_as_the_condition():
    data = conditional_fields()
    assert data.condition.shape == (24, 1) and data.condition.dtype == np.float32
    assert 1.5 <= data.condition.min() and data.condition.max() <= 3.5
    again = conditional_fields()
    assert np.array_equal(data.data, again.data) and np.array_equal(data.condition, again.condition)
    # steep spectra put more power at large scales: the fields of the steepest slopes are smoother
    order = np.argsort(data.condition[:, 0])
    roughness = np.abs(np.diff(data.data, axis=-1)).mean(axis=(1, 2, 3)) / data.data.std(axis=(1, 2, 3))
    assert roughness[order[:6]].mean() > roughness[order[-6:]].mean()
    with pytest.raises(ValueError, match="vary"):
        SyntheticFieldDataset("grf", num_samples=4, size=8, vary={"spectrum": (3.0, 2.0)})
    with pytest.raises(ValueError, match="spectrum"):
        SyntheticFieldDataset("grf", num_samples=4, size=8, spectrum=2.0, vary={"spectrum": (1.0, 2.0)})


@pytest.mark.parametrize("source", ["dataset", "arrays", "npz"])
def test_trains_on_paired_data_from_every_source(tmp_path, source):
    """A dataset carrying its condition, in-memory arrays, and an .npz with fields + condition
    train the same model to the same weights."""
    data = conditional_fields()
    trainer = DiffusionTrainer(tiny_conditional_unet(vector=1), DDPMScheduler(num_train_timesteps=100), batch_size=4,
                               ema_decay=None, learning_rate=1e-3)
    if source == "dataset":
        trainer.train(data, 2)
    elif source == "arrays":
        trainer.train(data.data, 2, condition=data.condition[:, 0])  # (N,): one scalar per field
    else:
        np.savez(tmp_path / "paired.npz", fields=data.data, condition=data.condition)
        trainer.train(str(tmp_path / "paired.npz"), 2)
    reference = DiffusionTrainer(tiny_conditional_unet(vector=1), DDPMScheduler(num_train_timesteps=100),
                                 batch_size=4, ema_decay=None, learning_rate=1e-3)
    reference.train(data, 2)
    a, b = params(trainer.model), params(reference.model)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["class_embedding.linear_1.weight"],
                              params(tiny_conditional_unet(vector=1))["class_embedding.linear_1.weight"])


def test_field_and_label_conditions_train(tmp_path):
    """A field condition goes in as extra input channels; labels (from an .npz) through the embedding."""
    data = conditional_fields()
    coarse = data.data.reshape(24, 1, 4, 2, 4, 2).mean(axis=(3, 5)).repeat(2, axis=2).repeat(2, axis=3)
    trainer = DiffusionTrainer(tiny_conditional_unet(field=1), DDPMScheduler(num_train_timesteps=100), batch_size=4)
    trainer.train(data.data, 2, condition=coarse)
    assert all(np.isfinite(v) for _, v in trainer.history)
    labels = (data.condition[:, 0] > 2.5).astype(np.int64)
    np.savez(tmp_path / "labelled.npz", fields=data.data, labels=labels)
    trainer = DiffusionTrainer(tiny_conditional_unet(num_class_embeds=3), DDPMScheduler(num_train_timesteps=100),
                               batch_size=4, condition_dropout=0.5)
    trainer.train(tmp_path / "labelled.npz", 2)
    assert trainer.null_condition == 2  # the last row, which the labels 0/1 leave free
    with pytest.raises(ValueError, match="sample channels"):
        DiffusionTrainer(tiny_conditional_unet(field=1), DDPMScheduler()).train(coarse.repeat(2, axis=1), 1,
                                                                                 condition=coarse)


def test_condition_dropout_nulls_a_seeded_fraction_and_resumes_exactly(tmp_path):
    """Each sample's condition becomes the null condition (zeros) with probability p, drawn from
    (seed, rank, step): the same rows on every run, and a resumed run equals an uninterrupted one."""
    def make(run):
        return DiffusionTrainer(tiny_conditional_unet(vector=2), DDPMScheduler(num_train_timesteps=100),
                                batch_size=4, condition_dropout=0.25, output_dir=run, seed=5)

    trainer = make(None)
    cond = np.arange(1, 4001, dtype=np.float32).reshape(2000, 2)
    got, _ = trainer._conditioning(cond, None, (2000, 1, 8, 8))
    got = got.asnumpy()
    dropped = np.all(got == 0, axis=1)
    assert np.array_equal(got[~dropped], cond[~dropped])
    assert abs(dropped.mean() - 0.25) < 0.03
    again, _ = make(None)._conditioning(cond, None, (2000, 1, 8, 8))
    assert np.array_equal(again.asnumpy(), got)

    data = conditional_fields()
    condition = np.concatenate([data.condition, -data.condition], axis=1)
    straight = make(tmp_path / "a")
    straight.train(data.data, 4, condition=condition)
    first = make(tmp_path / "b")
    first.train(data.data, 4, condition=condition, stop_after=2)
    resumed = make(tmp_path / "b")
    resumed.train(data.data, 4, condition=condition, resume_from="latest")
    a, b = params(straight.model), params(resumed.model)
    assert all(np.array_equal(a[k], b[k]) for k in a)

    folder = straight.save_pretrained(tmp_path / "pipe")
    assert json.loads((folder / "model_index.json").read_text())["_null_condition"] == "zeros"
    plain = DiffusionTrainer(tiny_conditional_unet(vector=2), DDPMScheduler(num_train_timesteps=100), batch_size=4)
    plain.train(data.data, 1, condition=condition)
    index = json.loads((plain.save_pretrained(tmp_path / "p2") / "model_index.json").read_text())
    assert "_null_condition" not in index


@pytest.mark.parametrize("model,kwargs,train_kwargs,match", [
    ("plain", {}, {"condition": np.ones((24, 1))}, "condition given, but UNet2DModel takes no condition"),
    ("vector", {}, {}, r"condition must be given: this model needs a vector condition of shape \(24, 1\)"),
    ("vector", {}, {"condition": np.ones((23, 1))}, r"condition must have one row per field \(24\)"),
    ("vector", {}, {"condition": np.ones((24, 3))}, r"condition must have shape \(1, 1\)"),
    ("vector", {}, {"condition": np.full((24, 1), np.nan)}, "condition contains NaN"),
    ("labels", {}, {}, "class_labels must be given"),
    ("labels", {"condition_dropout": 0.1}, {"class_labels": np.arange(24) % 3}, "null class label"),
    ("labels", {}, {"class_labels": np.arange(24)}, r"class_labels must lie in \[0, 2\]"),
])
def test_bad_conditional_input_is_named_before_any_step(model, kwargs, train_kwargs, match):
    unet = {"plain": tiny_unet, "vector": lambda: tiny_conditional_unet(vector=1),
            "labels": lambda: tiny_conditional_unet(num_class_embeds=3)}[model]()
    trainer = DiffusionTrainer(unet, DDPMScheduler(num_train_timesteps=100), batch_size=4, **kwargs)
    with pytest.raises(ValueError, match=match):
        trainer.train(conditional_fields().data, 1, **train_kwargs)
    assert trainer.step == 0


@pytest.mark.parametrize("model,kwargs,match", [
    ("vector", {"condition_dropout": 1.0}, r"condition_dropout must be a probability in \[0, 1\)"),
    ("vector", {"condition_dropout": -0.1}, "condition_dropout"),
    ("plain", {"condition_dropout": 0.1}, "condition_dropout=0.1 needs a conditional model"),
    ("labels", {"null_class_label": 1}, "null_class_label is the label condition_dropout substitutes"),
    ("labels", {"condition_dropout": 0.1, "null_class_label": 3}, r"null_class_label must be a row"),
    ("vector", {"condition_dropout": 0.1, "null_class_label": 0}, "null condition is zeros"),
])
def test_bad_condition_dropout_options(model, kwargs, match):
    unet = {"plain": tiny_unet, "vector": lambda: tiny_conditional_unet(vector=1),
            "labels": lambda: tiny_conditional_unet(num_class_embeds=3)}[model]()
    with pytest.raises(ValueError, match=match):
        DiffusionTrainer(unet, DDPMScheduler(num_train_timesteps=100), **kwargs)


def test_paired_data_take_one_source_of_conditions(tmp_path):
    data = conditional_fields()
    with pytest.raises(ValueError, match="already carries its own condition"):
        as_dataset(data, condition=data.condition)
    np.savez(tmp_path / "no_fields.npz", images=data.data, condition=data.condition)
    with pytest.raises(ValueError, match="no 'fields' array"):
        as_dataset(tmp_path / "no_fields.npz")
    half, held = data.split(4)
    assert np.array_equal(held.condition, data.condition[-4:]) and len(half.condition) == 20
