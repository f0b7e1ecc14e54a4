"""Conditions, classifier-free guidance, samples of any rank and GRAPH_MODE progress, all through
the one sampling loop.

Every comparison is against a diffusers-style Python loop over ``scheduler.step`` with the model
called by hand (the reference semantics of conditioning and of Ho & Salimans' guidance), so the
compiled loop is checked against the algorithm, not against itself.
"""
from __future__ import annotations

import json

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from mindscience_diffuser import (
    ConditionDiffusionTransformer,
    DDIMPipeline,
    DDIMScheduler,
    DiffusionPipeline,
    DiffusionTransformer,
    DPMSolverMultistepScheduler,
    DPMSolverPipeline,
    ScoreSdeVePipeline,
    ScoreSdeVeScheduler,
    UNet2DModel,
)
from mindscience_diffuser.models.conditioning import ConditionSpec, condition_spec
from mindscience_diffuser.pipelines.sampling_loop import chunk_bounds


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def small_unet(seed=0, **kw):
    ms.set_seed(seed)
    config = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                  down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                  layers_per_block=1, norm_num_groups=4)
    config.update(kw)
    unet = UNet2DModel(**config)
    # Random (not zero-initialised) output weights, so the condition visibly matters.
    rng = np.random.default_rng(seed)
    for p in unet.get_parameters():
        p.set_data(Tensor((rng.standard_normal(p.shape) * 0.2).astype(np.float32)))
    return unet


def transformer(seed=0, conditional=True):
    ms.set_seed(seed)
    if conditional:
        net = ConditionDiffusionTransformer(in_channels=4, out_channels=4, cond_channels=3, hidden_channels=16,
                                            layers=1, heads=2, sample_size=6)
    else:
        net = DiffusionTransformer(in_channels=4, out_channels=4, hidden_channels=16, layers=1, heads=2,
                                   sample_size=6)
    rng = np.random.default_rng(seed)
    for p in net.get_parameters():
        p.set_data(Tensor((rng.standard_normal(p.shape) * 0.2).astype(np.float32)))
    return net


def reference_loop(model, scheduler, shape, seed, steps, call, eta=None):
    """diffusers' loop: latents from the generator, then ``call(model, x, t)`` and ``step``."""
    rng = np.random.default_rng(seed)
    scheduler.set_timesteps(steps)
    x = Tensor(rng.standard_normal(shape).astype(np.float32) * scheduler.init_noise_sigma)
    for t in scheduler.timesteps:
        out = call(model, x, Tensor(np.full(shape[0], int(t), np.int32)))
        x = scheduler.step(out, x, int(t), **({"eta": eta} if eta is not None else {}))
    return x.asnumpy()


# ----------------------------------------------------------------------------- conditions


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_vector_condition_reaches_the_transformer_as_in_a_hand_written_loop(mode):
    net = transformer()
    cond = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    ref = reference_loop(net, DDIMScheduler(), (2, 6, 4), 3, 4, lambda m, x, t: m(x, t, Tensor(cond)))
    pipe = quiet(DDIMPipeline(net, DDIMScheduler()))
    ms.set_context(mode=mode)
    try:
        out = pipe(batch_size=2, generator=3, num_inference_steps=4, condition=cond).images
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    # (B, L, C) samples come back as the sample itself: output_type None is "latent" for them.
    assert out.shape == (2, 6, 4)
    np.testing.assert_allclose(out.asnumpy(), ref, rtol=1e-5, atol=1e-5)
    other = pipe(batch_size=2, generator=3, num_inference_steps=4, condition=cond + 1).images.asnumpy()
    assert np.abs(other - ref).max() > 1e-4  # the condition changes the samples


def test_one_vector_condition_is_repeated_over_the_batch():
    pipe = quiet(DDIMPipeline(transformer(), DDIMScheduler()))
    cond = np.array([0.3, -1.0, 2.0], np.float32)
    one = pipe(batch_size=2, generator=0, num_inference_steps=2, condition=cond).images.asnumpy()
    both = pipe(batch_size=2, generator=0, num_inference_steps=2, condition=np.stack([cond, cond])).images.asnumpy()
    np.testing.assert_array_equal(one, both)


def test_projection_vector_condition_and_class_labels_on_the_unet():
    unet = small_unet(class_embed_type="projection", projection_class_embeddings_input_dim=2)
    assert condition_spec(unet) == ConditionSpec(vector=2)
    cond = np.array([[0.5, -0.5], [2.0, 1.0]], np.float32)
    ref = reference_loop(unet, DDIMScheduler(num_train_timesteps=50), (2, 1, 8, 8), 4, 3,
                         lambda m, x, t: m(x, t, Tensor(cond)))
    pipe = quiet(DDIMPipeline(unet, DDIMScheduler(num_train_timesteps=50)))
    out = pipe(batch_size=2, generator=4, num_inference_steps=3, condition=cond, output_type="latent").images
    np.testing.assert_allclose(out.asnumpy(), ref, rtol=1e-5, atol=1e-5)

    labelled = small_unet(num_class_embeds=5)
    assert condition_spec(labelled) == ConditionSpec(num_classes=5)
    labels = np.array([1, 4])
    ref = reference_loop(labelled, DDIMScheduler(), (2, 1, 8, 8), 2, 3, lambda m, x, t: m(x, t, Tensor(labels)))
    out = quiet(DDIMPipeline(labelled, DDIMScheduler()))(batch_size=2, generator=2, num_inference_steps=3,
                                                           class_labels=labels, output_type="latent").images
    np.testing.assert_allclose(out.asnumpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_field_condition_is_concatenated_to_the_sample_channels(mode):
    """SR3-style: the UNet sees [x_t, y] on its channels and denoises x_t (out_channels = 1)."""
    unet = small_unet(in_channels=3, out_channels=1)
    assert unet.sample_shape(2) == (2, 1, 8, 8) and condition_spec(unet).field == 2
    field = np.random.default_rng(5).standard_normal((2, 2, 8, 8)).astype(np.float32)
    ref = reference_loop(unet, DDIMScheduler(), (2, 1, 8, 8), 6, 3,
                         lambda m, x, t: m(ops.concat((x, Tensor(field)), 1), t))
    pipe = quiet(DDIMPipeline(unet, DDIMScheduler()))
    ms.set_context(mode=mode)
    try:
        out = pipe(batch_size=2, generator=6, num_inference_steps=3, condition=field, output_type="latent").images
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    np.testing.assert_allclose(out.asnumpy(), ref, rtol=1e-5, atol=1e-5)


class FiveDimensional(nn.Cell):
    """A user's denoiser of (B, C, D, H, W) volumes with a vector condition, without a config."""

    def construct(self, x, t, condition):
        return 0.3 * ops.tanh(x) + 0.01 * condition.sum(axis=1).reshape(-1, 1, 1, 1, 1) + 0.0 * t.reshape(
            -1, 1, 1, 1, 1).astype(x.dtype)


def test_any_denoiser_cell_and_five_dimensional_samples():
    model = FiveDimensional()
    cond = np.ones((2, 2), np.float32)
    ref = reference_loop(model, DDIMScheduler(), (2, 1, 3, 4, 4), 8, 3, lambda m, x, t: m(x, t, Tensor(cond)))
    pipe = quiet(DDIMPipeline(model, DDIMScheduler()))
    out = pipe(batch_size=2, generator=8, num_inference_steps=3, condition=cond, sample_shape=(1, 3, 4, 4)).images
    assert out.shape == (2, 1, 3, 4, 4)
    np.testing.assert_allclose(out.asnumpy(), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot tell the sample shape.*sample_shape="):
        pipe(batch_size=2, num_inference_steps=2, condition=cond)
    with pytest.raises(ValueError, match="output_type='np' makes images from \\(B, C, H, W\\)"):
        pipe(batch_size=2, num_inference_steps=2, condition=cond, sample_shape=(1, 3, 4, 4), output_type="np")


def test_unconditional_transformer_under_dpm_solver_and_its_inversion():
    net = transformer(conditional=False)
    pipe = quiet(DPMSolverPipeline(net, DPMSolverMultistepScheduler()))
    x = pipe(batch_size=2, generator=0, num_inference_steps=5).images
    assert x.shape == (2, 6, 4)
    latents = pipe.invert(x, num_inference_steps=5)
    assert latents.shape == (2, 6, 4) and np.all(np.isfinite(latents.asnumpy()))


# ----------------------------------------------------------------------------- guidance


def guided_reference(model, null, w, cond, shape, seed, steps):
    """Ho & Salimans 2022, eq. 6, with two separate model calls per step."""
    def call(m, x, t):
        conditional = m(x, t, Tensor(cond))
        unconditional = m(x, t, Tensor(np.broadcast_to(null, cond.shape).copy()))
        return unconditional + w * (conditional - unconditional)
    return reference_loop(model, DDIMScheduler(), shape, seed, steps, call)


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_classifier_free_guidance_matches_two_model_calls(mode):
    net = transformer()
    cond = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)
    pipe = quiet(DDIMPipeline(net, DDIMScheduler()))
    pipe.null_condition = "zeros"
    ref = guided_reference(net, np.zeros(3, np.float32), 3.0, cond, (2, 6, 4), 9, 4)
    ms.set_context(mode=mode)
    try:
        out = pipe(batch_size=2, generator=9, num_inference_steps=4, condition=cond, guidance_scale=3.0).images
        pipe(batch_size=2, generator=9, num_inference_steps=4, condition=cond, guidance_scale=5.0)
        guided = pipe.sampling_loop(guided=True)
        if mode == ms.GRAPH_MODE:
            assert len(guided.compile_cache) == 1  # a new scale is an input, not a recompile
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    np.testing.assert_allclose(out.asnumpy(), ref, rtol=1e-5, atol=1e-5)


def test_guidance_scale_one_is_exactly_the_conditional_model_and_zero_the_unconditional():
    net = transformer()
    cond = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)
    pipe = quiet(DDIMPipeline(net, DDIMScheduler()))
    pipe.null_condition = [0.5, 0.5, 0.5]
    kw = dict(batch_size=2, generator=1, num_inference_steps=3)
    plain = pipe(condition=cond, **kw).images.asnumpy()
    np.testing.assert_array_equal(pipe(condition=cond, guidance_scale=1.0, **kw).images.asnumpy(), plain)
    unconditional = pipe(condition=np.full((2, 3), 0.5, np.float32), **kw).images.asnumpy()
    np.testing.assert_allclose(pipe(condition=cond, guidance_scale=0.0, **kw).images.asnumpy(), unconditional,
                               rtol=1e-5, atol=1e-5)


def test_guidance_with_class_labels_uses_the_null_label():
    unet = small_unet(num_class_embeds=4)
    pipe = quiet(DDIMPipeline(unet, DDIMScheduler()))
    pipe.null_condition = 3
    labels = np.array([0, 2])

    def call(m, x, t):
        c, u = m(x, t, Tensor(labels)), m(x, t, Tensor(np.array([3, 3])))
        return u + 2.0 * (c - u)
    ref = reference_loop(unet, DDIMScheduler(), (2, 1, 8, 8), 5, 3, call)
    out = pipe(batch_size=2, generator=5, num_inference_steps=3, class_labels=labels, guidance_scale=2.0,
               output_type="latent").images
    np.testing.assert_allclose(out.asnumpy(), ref, rtol=1e-5, atol=1e-5)
    pipe.null_condition = 4
    with pytest.raises(ValueError, match="not a class of this model"):
        pipe(batch_size=2, num_inference_steps=2, class_labels=labels, guidance_scale=2.0)


def test_null_condition_is_saved_and_loaded_with_the_pipeline(tmp_path):
    pipe = DDIMPipeline(transformer(), DDIMScheduler())
    pipe.null_condition = "zeros"
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["_null_condition"] == "zeros"
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    assert loaded.null_condition == "zeros"
    with pytest.raises(ValueError, match="null_condition"):
        pipe.null_condition = [float("nan")]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "model, kwargs, error, match",
    [
        ("uncond", dict(condition=np.ones((2, 3))), ValueError, "takes no condition"),
        ("cond", {}, ValueError, r"condition must be given.*\(2, 3\)"),
        ("cond", dict(condition=np.ones((2, 4))), ValueError, r"condition must have shape \(2, 3\)"),
        ("cond", dict(condition=np.ones((3, 3))), ValueError, r"condition must have shape \(2, 3\)"),
        ("cond", dict(condition=np.array([[np.nan, 0, 0]] * 2)), ValueError, "NaN"),
        ("cond", dict(condition="abc"), TypeError, "condition must be"),
        ("cond", dict(condition=np.ones((2, 3)), guidance_scale=2.0), ValueError, "needs the null condition"),
        ("cond", dict(condition=np.ones((2, 3)), guidance_scale=-1.0), ValueError, "guidance_scale"),
        ("uncond", dict(guidance_scale=2.0), ValueError, "needs a conditional model"),
        ("uncond", dict(class_labels=[1, 2]), ValueError, "not class-conditional"),
        ("uncond", dict(sample_shape=6), TypeError, "sample_shape must be a tuple"),
        ("uncond", dict(sample_shape=(6, 0)), ValueError, "sample_shape"),
        ("uncond", dict(output_type="pil"), ValueError, "makes images"),
        ("uncond", dict(latents=np.zeros((2, 5, 4), np.float32)), ValueError, r"latents must have shape \(2, 6, 4\)"),
    ],
)
def test_bad_conditioning_input_is_named(model, kwargs, error, match):
    net = transformer(conditional=model == "cond")
    pipe = quiet(DDIMPipeline(net, DDIMScheduler()))
    with pytest.raises(error, match=match):
        pipe(batch_size=2, num_inference_steps=2, **kwargs)


def test_field_condition_of_the_wrong_grid_is_named():
    pipe = quiet(DDIMPipeline(small_unet(in_channels=2, out_channels=1), DDIMScheduler()))
    with pytest.raises(ValueError, match=r"condition must be a field of shape \(2, 1, 8, 8\)"):
        pipe(batch_size=2, num_inference_steps=2, condition=np.zeros((2, 1, 4, 4), np.float32))


# ----------------------------------------------------------------------------- progress


class CountingBar:
    def __init__(self):
        self.updates = []

    def update(self, n=1):
        self.updates.append(n)

    def close(self):
        pass


@pytest.mark.parametrize("make", [
    lambda: DDIMPipeline(small_unet(), DDIMScheduler()),
    lambda: DPMSolverPipeline(small_unet(), DPMSolverMultistepScheduler(solver_order=3)),
    lambda: ScoreSdeVePipeline(small_unet(), ScoreSdeVeScheduler(sigma_max=20.0, correct_steps=1)),
], ids=["ddim-stateless", "dpm-history", "sde-ve-mean"])
def test_graph_mode_progress_runs_the_loop_in_chunks_with_one_graph(make):
    """The bar advances chunk by chunk under GRAPH_MODE; the chunks reuse one graph, carry the
    scheduler's state (DPM-Solver's history, score-SDE's mean) and give the same samples."""
    pipe = make()
    bars = []
    pipe.progress_bar = lambda total: bars.append(CountingBar()) or bars[-1]
    kw = dict(batch_size=2, generator=3, num_inference_steps=12, output_type="latent")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        chunked = pipe(**kw).images.asnumpy()
        loop = next(iter(pipe._loops.values()))
        assert len(loop.compile_cache) == 1
        pipe.set_progress_bar_config(disable=True)
        whole = pipe(**kw).images.asnumpy()
        assert len(loop.compile_cache) == 1
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    iterations = sum(bars[0].updates)
    assert len(bars) == 1 and len(bars[0].updates) == loop.progress_chunks and iterations >= 12
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)


def test_jit_progress_in_a_pynative_process_runs_in_chunks_too():
    pipe = DPMSolverPipeline(small_unet(), DPMSolverMultistepScheduler(solver_order=3))
    pipe.use_jit = True
    bar = CountingBar()
    pipe.progress_bar = lambda total: bar
    kw = dict(batch_size=2, generator=3, num_inference_steps=12, output_type="latent")
    chunked = pipe(**kw).images.asnumpy()
    pipe.set_progress_bar_config(disable=True)
    pipe.use_jit = False
    eager = pipe(**kw).images.asnumpy()
    assert len(bar.updates) == 10 and sum(bar.updates) == 12
    np.testing.assert_allclose(chunked, eager, rtol=1e-5, atol=1e-5)


def test_chunk_bounds_cover_every_iteration_once():
    for n in (1, 3, 10, 25, 1000):
        for k in (1, 4, 10):
            bounds = chunk_bounds(n, k)
            assert bounds[0][0] == 0 and bounds[-1][1] == n and len(bounds) == min(n, k)
            assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(bounds, bounds[1:]))
