"""Pipelines and the compiled sampling loop.

- diffusers parity: ``tests/golden/pipelines`` holds pipelines saved by diffusers' own
  ``DDIMPipeline`` / ``DDPMPipeline`` (small UNets with seeded weights) and their images, with
  diffusers' noise taped from a numpy stream (``tools/gen_pipeline_golden.py``); loaded here with
  ``from_pretrained`` and run with the same seed or the same latents.
- the loop against the schedulers' own ``step`` API, for every scheduler family, with a cheap
  analytic model (so PyNative loops cost milliseconds);
- PyNative / GRAPH_MODE / ``ms.jit`` agreement and compile-once caching;
- inversion round trip, file layout both ways, scheduler swapping, bad input.
"""
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn, ops

from mindscience_diffuser import (
    CMStochasticIterativeScheduler,
    ConsistencyModelPipeline,
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    DPMSolverPipeline,
    EulerDiscreteScheduler,
    ScoreSdeVePipeline,
    ScoreSdeVeScheduler,
)
from mindscience_diffuser.configuration import FrozenConfig
from mindscience_diffuser.models import UNet2DModel
from mindscience_diffuser.outputs import ImagePipelineOutput
from mindscience_diffuser.pipelines import SamplingLoop

GOLDEN = Path(__file__).parent / "golden" / "pipelines"
RUNS = json.loads((GOLDEN / "runs.json").read_text())
IO = np.load(GOLDEN / "io.npz")


class AnalyticModel(nn.Cell):
    """m(x, t) = 0.5·tanh(x) + 0.05·x·cos(0.003·t) (+ 0.01·label): smooth, cheap, with the
    config fields a pipeline reads from a UNet."""

    def __init__(self, sample_size=4, channels=3, num_class_embeds=None):
        super().__init__()
        self.config = FrozenConfig(sample_size=sample_size, in_channels=channels, out_channels=channels,
                                   num_class_embeds=num_class_embeds)

    def construct(self, x, t, class_labels=None):
        t = t.astype(ms.float32).reshape(-1, 1, 1, 1)
        out = 0.5 * ops.tanh(x) + 0.05 * x * ops.cos(0.003 * t)
        if class_labels is not None:
            out = out + 0.01 * class_labels.astype(ms.float32).reshape(-1, 1, 1, 1)
        return out


class GaussianDenoiser(nn.Cell):
    """The exact ε-predictor for data ~ N(0, s²·I): ε̂(x_t) = sqrt(1-ᾱ)·x_t/(ᾱ·s² + 1 - ᾱ), so the
    probability-flow ODE is the true one and inversion is well posed."""

    def __init__(self, alphas_cumprod, s=0.5, sample_size=8, channels=1):
        super().__init__()
        self.abar = Parameter(Tensor(np.asarray(alphas_cumprod, np.float32)), name="gaussian_abar",
                              requires_grad=False)
        self.s2 = s * s
        self.config = FrozenConfig(sample_size=sample_size, in_channels=channels, out_channels=channels,
                                   num_class_embeds=None)

    def construct(self, x, t):
        a = ops.gather(self.abar, t.astype(ms.int32), 0).reshape(-1, 1, 1, 1)
        return ops.sqrt(1 - a) * x / (a * self.s2 + 1 - a)


TINY_UNET = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                 down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                 layers_per_block=1, norm_num_groups=4, attention_head_dim=4)


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def images_of(sample: np.ndarray) -> np.ndarray:
    return np.clip(sample / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)


# ----------------------------------------------------------------------------- diffusers parity

def test_golden_folder_is_small_and_in_diffusers_layout():
    total = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file())
    assert total < 3 * 1024 * 1024
    for name in ("ddim", "ddpm"):
        index = json.loads((GOLDEN / name / "model_index.json").read_text())
        assert index["unet"] == ["diffusers", "UNet2DModel"] and index["_class_name"] == f"{name.upper()}Pipeline"
        assert (GOLDEN / name / "unet" / "diffusion_pytorch_model.safetensors").is_file()
        assert (GOLDEN / name / "scheduler" / "scheduler_config.json").is_file()


def test_diffusers_saved_pipelines_reproduce_diffusers_images(graph_mode):
    """Same seed (diffusers' noise taped from the same numpy stream) and same latents: max abs
    error in [0, 1] well inside the 1e-3 target (measured 4.5e-5 DDIM, 1.2e-6 DDPM)."""
    pipes = {"ddim": quiet(DDIMPipeline.from_pretrained(GOLDEN / "ddim")),
             "ddpm": quiet(DiffusionPipeline.from_pretrained(GOLDEN / "ddpm"))}
    assert isinstance(pipes["ddpm"], DDPMPipeline)
    for run, spec in RUNS.items():
        ref = IO[f"{run}__images"]
        pipe = pipes[spec["pipeline"]]
        out = pipe(generator=spec["seed"], output_type="np", **spec["kwargs"]).images
        assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-4, run
        if spec["kwargs"].get("eta", 0) == 0 and spec["pipeline"] == "ddim":
            # diffusers' DDIMPipeline has no latents argument: the taped latents play that role.
            out = pipe(latents=Tensor(IO[f"{run}__latents"]), output_type="np", **spec["kwargs"]).images
            assert np.abs(out - ref).max() < 1e-4
            # One graph per loop: the second call reused it.
            assert len(pipe.sampling_loop(use_clipped_model_output=False).compile_cache) == 1


def test_our_save_pretrained_matches_diffusers_files_and_diffusers_runs_it(tmp_path):
    pipe = DiffusionPipeline.from_pretrained(GOLDEN / "ddim")
    pipe.save_pretrained(tmp_path)
    ref_dir = GOLDEN / "ddim"
    index_file = "model_index.json"
    assert json.loads((tmp_path / index_file).read_text()) == json.loads((ref_dir / index_file).read_text())
    ours = json.loads((tmp_path / "scheduler" / "scheduler_config.json").read_text())
    theirs = json.loads((ref_dir / "scheduler" / "scheduler_config.json").read_text())
    def public(config):
        return {k: v for k, v in config.items() if not k.startswith("_")}

    assert public(ours) == public(theirs)
    from safetensors.numpy import load_file

    weights = Path("unet") / "diffusion_pytorch_model.safetensors"
    a, b = load_file(tmp_path / weights), load_file(ref_dir / weights)
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    # tools/gen_pipeline_golden.py loaded our save_pretrained output in diffusers and ran it.
    assert max(json.loads((GOLDEN / "roundtrip.json").read_text()).values()) < 1e-5


def test_components_and_from_pretrained_overrides(tmp_path):
    pipe = DDIMPipeline.from_pretrained(GOLDEN / "ddim", scheduler=DDPMScheduler())
    assert isinstance(pipe.scheduler, DDIMScheduler)  # converted, as diffusers' DDIMPipeline does
    assert set(pipe.components) == {"unet", "scheduler"} and isinstance(pipe.unet, UNet2DModel)
    other = DDPMPipeline(**pipe.components)
    assert other.unet is pipe.unet and other.config["scheduler"] == ["diffusers", "DDIMScheduler"]
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DDIMPipeline",
                                                           "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ValueError, match="UNet2DConditionModel"):
        DiffusionPipeline.from_pretrained(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="StableDiffusionPipeline"):
        DiffusionPipeline.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="no such pipeline directory"):
        DiffusionPipeline.from_pretrained(tmp_path / "missing")


# ----------------------------------------------------------------------------- the loop against step()

def manual_loop(model, scheduler, shape, seed, steps, stochastic=True, scale=False, sde=False, labels=None,
                **schedule):
    """The diffusers-style Python loop over ``scheduler.step``, drawing from the generator in the
    order the pipelines do: latents, (labels,) then one noise per model call."""
    rng = np.random.default_rng(seed)
    if isinstance(scheduler, CMStochasticIterativeScheduler) and schedule:
        scheduler.set_timesteps(**schedule)
    else:
        scheduler.set_timesteps(steps)
    if sde:
        scheduler.set_sigmas(steps)
    x = Tensor(rng.standard_normal(shape).astype(np.float32) * scheduler.init_noise_sigma)
    if labels == "draw":
        labels = Tensor(rng.integers(0, model.config.num_class_embeds, size=shape[0]).astype(np.int32))
    noise = lambda: Tensor(rng.standard_normal(shape).astype(np.float32)) if stochastic else None  # noqa: E731
    mean = x
    for i, t in enumerate(scheduler.timesteps):
        if sde:
            sigma = Tensor(np.full(shape[0], scheduler.sigmas[i], np.float32))
            for _ in range(scheduler.config.correct_steps):
                x = scheduler.step_correct(model(x, sigma), x, variance_noise=noise())
            x, mean = scheduler.step_pred(model(x, sigma), x, float(t), variance_noise=noise())
            continue
        model_in = scheduler.scale_model_input(x, t) if scale else x
        tt = Tensor(np.full(shape[0], t, np.float32 if scale else np.int32))
        out = model(model_in, tt, labels) if labels is not None else model(model_in, tt)
        z = noise()
        x = scheduler.step(out, x, t if scale else int(t), **({"variance_noise": z} if z is not None else {}))
    return (mean if sde else x).asnumpy()


@pytest.mark.parametrize("case", ["ddpm", "ddim", "dpm_sde", "dpm_o3", "euler_karras"])
def test_unconditional_loop_matches_scheduler_step(case):
    make, stochastic, scale = {
        "ddpm": (lambda: DDPMScheduler(num_train_timesteps=100), True, False),
        "ddim": (lambda: DDIMScheduler(), False, False),
        "dpm_sde": (lambda: DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++"), True, False),
        "dpm_o3": (lambda: DPMSolverMultistepScheduler(solver_order=3, lower_order_final=False), False, False),
        "euler_karras": (lambda: EulerDiscreteScheduler(use_karras_sigmas=True), False, True),
    }[case]
    model = AnalyticModel()
    pipe = quiet(DDPMPipeline(model, make()))
    out = pipe(batch_size=2, generator=3, num_inference_steps=5, output_type="np").images
    ref = images_of(manual_loop(model, make(), (2, 3, 4, 4), 3, 5, stochastic=stochastic, scale=scale))
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_ddim_eta_and_clipped_output_match_scheduler_step():
    model = AnalyticModel()
    pipe = quiet(DDIMPipeline(model, DDIMScheduler(clip_sample=True)))
    out = pipe(batch_size=2, generator=4, num_inference_steps=4, eta=0.7, use_clipped_model_output=True,
               output_type="np").images
    sched = DDIMScheduler(clip_sample=True)
    rng = np.random.default_rng(4)
    sched.set_timesteps(4)
    x = Tensor(rng.standard_normal((2, 3, 4, 4)).astype(np.float32))
    for t in sched.timesteps:
        out_t = model(x, Tensor(np.full(2, t, np.int32)))
        x = sched.step(out_t, x, int(t), eta=0.7, use_clipped_model_output=True,
                       variance_noise=Tensor(rng.standard_normal((2, 3, 4, 4)).astype(np.float32)))
    np.testing.assert_allclose(out, images_of(x.asnumpy()), atol=1e-5)


def test_euler_churn_through_the_loop():
    model, sched = AnalyticModel(), EulerDiscreteScheduler()
    pipe = DDPMPipeline(model, sched)
    loop = pipe.sampling_loop(s_noise=1.0)
    ts, gammas, stochastic = loop.schedule(4, s_churn=2.0)
    assert stochastic and np.all(gammas > 0)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((1, 3, 4, 4)).astype(np.float32) * sched.init_noise_sigma
    noise = rng.standard_normal((4, 1, 3, 4, 4)).astype(np.float32)
    out, _ = loop.run(Tensor(x0), ts, gammas, Tensor(noise))
    ref = EulerDiscreteScheduler()
    ref.set_timesteps(4)
    x = Tensor(x0)
    for i, t in enumerate(ref.timesteps):
        m = model(ref.scale_model_input(x, t), Tensor(np.full(1, t, np.float32)))
        x = ref.step(m, x, t, s_churn=2.0, variance_noise=Tensor(noise[i]))
    np.testing.assert_allclose(out.asnumpy(), x.asnumpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("schedule",
                         [dict(num_inference_steps=1), dict(timesteps=[22, 0]), dict(num_inference_steps=3)])
def test_consistency_pipeline_one_and_multistep_with_class_labels(schedule):
    model = AnalyticModel(num_class_embeds=10)
    pipe = quiet(ConsistencyModelPipeline(model, CMStochasticIterativeScheduler()))
    out = pipe(batch_size=2, generator=5, output_type="np", **schedule).images
    steps = schedule.get("num_inference_steps")
    custom = {"timesteps": schedule["timesteps"]} if "timesteps" in schedule else {}
    ref = manual_loop(model, CMStochasticIterativeScheduler(), (2, 3, 4, 4), 5, steps, stochastic=(steps or 2) > 1,
                      scale=True, labels="draw", **custom)
    np.testing.assert_allclose(out, images_of(ref), atol=1e-5)
    given = pipe(batch_size=2, class_labels=[1, 7], generator=5, output_type="np", **schedule).images
    assert given.shape == (2, 4, 4, 3)
    with pytest.raises(ValueError, match="class_labels must lie in"):
        pipe(batch_size=2, class_labels=[1, 10], **schedule)
    with pytest.raises(ValueError, match="batch_size 1"):
        pipe(batch_size=2, class_labels=3, **schedule)


@pytest.mark.parametrize("correct_steps", [0, 2])
def test_score_sde_ve_pipeline_returns_the_predictor_mean(correct_steps):
    model = AnalyticModel()
    make = lambda: ScoreSdeVeScheduler(correct_steps=correct_steps, sigma_max=50.0)  # noqa: E731
    pipe = quiet(ScoreSdeVePipeline(model, make()))
    out = pipe(batch_size=2, generator=6, num_inference_steps=4, output_type="np").images
    ref = manual_loop(model, make(), (2, 3, 4, 4), 6, 4, sde=True)
    np.testing.assert_allclose(out, np.clip(ref, 0, 1).transpose(0, 2, 3, 1), atol=1e-5)


# ----------------------------------------------------------------------------- execution modes

def tiny_unet(seed=0):
    ms.set_seed(seed)
    unet = UNet2DModel(**TINY_UNET)
    unet.set_train(False)
    return unet


def test_pynative_graph_and_jit_give_the_same_images():
    """A stochastic scheduler, a real (tiny) UNet, one seed: PyNative, GRAPH_MODE and ms.jit agree."""
    pipe = quiet(DDPMPipeline(tiny_unet(), DDPMScheduler(num_train_timesteps=100)))
    kwargs = dict(batch_size=2, generator=7, num_inference_steps=3, output_type="np")
    eager = pipe(**kwargs).images
    pipe.use_jit = True
    jitted = pipe(**kwargs).images
    pipe.use_jit = False
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        graph = pipe(**kwargs).images
        loop = pipe.sampling_loop()
        assert len(loop.compile_cache) == 1
        pipe(**kwargs)
        assert len(loop.compile_cache) == 1  # reused, not recompiled
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    np.testing.assert_allclose(graph, eager, atol=1e-5)
    np.testing.assert_allclose(jitted, eager, atol=1e-5)
    assert eager.shape == (2, 8, 8, 1)


ONE_LOOP_CASES = {
    "ddim-eta-clipped": (lambda: DDIMPipeline(AnalyticModel(), DDIMScheduler()),
                         dict(eta=0.6, use_clipped_model_output=True)),
    "ddpm": (lambda: DDPMPipeline(AnalyticModel(), DDPMScheduler(num_train_timesteps=100)), {}),
    "dpm-sde-o2": (lambda: DPMSolverPipeline(AnalyticModel(),
                                             DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")), {}),
    "dpm-o3": (lambda: DPMSolverPipeline(AnalyticModel(),
                                         DPMSolverMultistepScheduler(solver_order=3, lower_order_final=False)), {}),
    "euler-karras": (lambda: DDPMPipeline(AnalyticModel(), EulerDiscreteScheduler(use_karras_sigmas=True)), {}),
    "consistency": (lambda: ConsistencyModelPipeline(AnalyticModel(num_class_embeds=4),
                                                     CMStochasticIterativeScheduler()), dict(class_labels=[1, 3])),
    "sde-ve-pc": (lambda: ScoreSdeVePipeline(AnalyticModel(), ScoreSdeVeScheduler(sigma_max=50.0, correct_steps=1)),
                  {}),
}


@pytest.mark.parametrize("case", sorted(ONE_LOOP_CASES))
def test_every_scheduler_runs_the_one_loop_alike_in_every_mode(case):
    """The same seed through the one SamplingLoop: PyNative, GRAPH_MODE and ms.jit agree for every
    scheduler family (stochastic ones included), and the graph compiles once."""
    make, kwargs = ONE_LOOP_CASES[case]
    pipe = quiet(make())
    call = dict(batch_size=2, generator=11, num_inference_steps=4, output_type="latent", **kwargs)
    eager = pipe(**call).images.asnumpy()
    pipe.use_jit = True
    jitted = pipe(**call).images.asnumpy()
    pipe.use_jit = False
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        graph = pipe(**call).images.asnumpy()
        pipe(**call)
        assert [len(loop.compile_cache) for loop in pipe._loops.values()] == [1]
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert np.all(np.isfinite(eager)) and eager.shape[0] == 2
    np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5)


def test_progress_bar_in_pynative_and_its_switch(capsys):
    pipe = DDIMPipeline(AnalyticModel(), DDIMScheduler())
    pipe(num_inference_steps=3, output_type="np")
    assert "3/3" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    pipe(num_inference_steps=3, output_type="np")
    assert "3/3" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- inversion

def round_trip_error(pipe, images, steps):
    latents = pipe.invert(images, num_inference_steps=steps)
    return float(np.abs(pipe(batch_size=images.shape[0], latents=latents, num_inference_steps=steps,
                             output_type="np").images - images).max())


def test_dpm_solver_inversion_reconstructs_and_the_error_shrinks_with_steps(graph_mode):
    sched = DPMSolverMultistepScheduler()
    pipe = quiet(DPMSolverPipeline(GaussianDenoiser(sched.alphas_cumprod), sched))
    images = np.random.default_rng(1).uniform(0.1, 0.9, (2, 8, 8, 1)).astype(np.float32)
    coarse, fine = round_trip_error(pipe, images, 8), round_trip_error(pipe, images, 24)
    # Second order: 3x the steps should cut the error ~5x (measured 10 steps 0.137, 20: 0.047, 40: 0.012).
    assert fine < coarse / 3 and fine < 0.06, (coarse, fine)
    latents = pipe.invert(Tensor(images.transpose(0, 3, 1, 2) * 2 - 1), num_inference_steps=10)
    assert latents.shape == (2, 1, 8, 8)


def test_invert_bad_input():
    sched = DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")
    pipe = quiet(DPMSolverPipeline(GaussianDenoiser(sched.alphas_cumprod), sched))
    with pytest.raises(ValueError, match="deterministic"):
        pipe.invert(np.zeros((1, 8, 8, 1), np.float32), 5)
    pipe.scheduler = DPMSolverMultistepScheduler()
    with pytest.raises(ValueError, match="shape"):
        pipe.invert(np.zeros((1, 4, 4, 1), np.float32), 5)
    with pytest.raises(ValueError, match="num_inference_steps"):
        pipe.invert(np.zeros((1, 8, 8, 1), np.float32), 0)
    with pytest.raises(TypeError, match="images"):
        pipe.invert("image.png", 5)


# ----------------------------------------------------------------------------- outputs, swaps, errors

def test_output_types_and_one_channel_fields():
    pipe = quiet(DDIMPipeline(AnalyticModel(channels=1), DDIMScheduler()))
    out = pipe(batch_size=2, num_inference_steps=2, generator=0)
    assert isinstance(out, ImagePipelineOutput) and len(out.images) == 2 and out.images[0].mode == "L"
    (arr,) = pipe(batch_size=2, num_inference_steps=2, generator=0, output_type="np", return_dict=False)
    assert arr.shape == (2, 4, 4, 1) and arr.dtype == np.float32 and 0 <= arr.min() and arr.max() <= 1
    tensor = pipe(batch_size=2, num_inference_steps=2, generator=0, output_type="ms").images
    np.testing.assert_allclose(tensor.asnumpy().transpose(0, 2, 3, 1), arr)
    # "latent": the same samples in model space, neither rescaled nor clipped.
    raw = pipe(batch_size=2, num_inference_steps=2, generator=0, output_type="latent").images
    assert isinstance(raw, ms.Tensor) and raw.dtype == ms.float32 and raw.shape == (2, 1, 4, 4)
    np.testing.assert_allclose(np.clip(raw.asnumpy() / 2 + 0.5, 0, 1), tensor.asnumpy(), rtol=0, atol=1e-7)
    unclipped = quiet(DDIMPipeline(AnalyticModel(channels=1), DDIMScheduler(clip_sample=False)))
    wide = unclipped(batch_size=2, num_inference_steps=2, generator=0, output_type="latent",
                     latents=np.full((2, 1, 4, 4), 40.0, np.float32)).images.asnumpy()
    narrow = unclipped(batch_size=2, num_inference_steps=2, generator=0, output_type="ms",
                       latents=np.full((2, 1, 4, 4), 40.0, np.float32)).images.asnumpy()
    assert np.abs(wide).max() > 1 and narrow.max() <= 1
    np.testing.assert_allclose(np.asarray(out.images[1], np.float32) / 255, arr[1, ..., 0], atol=1 / 255)
    two = quiet(DDIMPipeline(AnalyticModel(channels=2), DDIMScheduler()))
    assert two(num_inference_steps=2, output_type="np").images.shape == (1, 4, 4, 2)
    # The default makes images only where PIL can show them; 2 channels come back as the sample.
    assert tuple(two(num_inference_steps=2).images.shape) == (1, 2, 4, 4)
    with pytest.raises(ValueError, match="output_type='np'"):
        two(num_inference_steps=2, output_type="pil")


def test_swapping_schedulers():
    pipe = quiet(DDIMPipeline(AnalyticModel(), DDIMScheduler()))
    for cls in (DPMSolverMultistepScheduler, EulerDiscreteScheduler, DDPMScheduler, DDIMScheduler):
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
        images = pipe(num_inference_steps=3, generator=1, output_type="np").images
        assert images.shape == (1, 4, 4, 3) and np.all(np.isfinite(images))
    pipe.scheduler = ScoreSdeVeScheduler()
    with pytest.raises(TypeError, match="cannot drive a ScoreSdeVeScheduler"):
        pipe(num_inference_steps=3)
    with pytest.raises(TypeError, match="cannot convert"):
        DDIMPipeline(AnalyticModel(), CMStochasticIterativeScheduler())
    with pytest.raises(TypeError, match="ScoreSdeVeScheduler"):
        ScoreSdeVePipeline(AnalyticModel(), DDIMScheduler())
    with pytest.raises(TypeError, match="drives a scheduler.*got dict"):
        SamplingLoop(AnalyticModel(), {})


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(num_inference_steps=0), ValueError, "num_inference_steps"),
        (dict(num_inference_steps=-3), ValueError, "num_inference_steps"),
        (dict(num_inference_steps=2.5), TypeError, "num_inference_steps"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(batch_size=-1), ValueError, "batch_size"),
        (dict(output_type="jpg"), ValueError, "output_type must be one of"),
        (dict(latents=np.zeros((1, 3, 8, 8), np.float32)), ValueError, r"latents must have shape \(1, 3, 4, 4\)"),
        (dict(batch_size=2, latents=np.zeros((1, 3, 4, 4), np.float32)), ValueError, "latents must have shape"),
        (dict(latents=[0.0]), TypeError, "latents"),
        (dict(eta=1.5), ValueError, "eta"),
        (dict(generator="seed"), TypeError, "generator"),
    ],
)
def test_bad_input_is_rejected_before_sampling(kwargs, error, match):
    pipe = quiet(DDIMPipeline(AnalyticModel(), DDIMScheduler()))
    with pytest.raises(error, match=match):
        pipe(**{"num_inference_steps": 2, **kwargs})
