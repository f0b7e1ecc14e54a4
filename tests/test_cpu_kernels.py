"""The C++ CPU kernels (models/cpu_kernels.py: group norm, Winograd 3×3 convolution) against
MindSpore's own ops.

Each test forces both implementations (``kernel="cpu"`` / ``"plain"`` or ``set_cpu_kernels``),
compares them with each other and, for whole UNets, with the stored diffusers goldens. No timings
here: speed is measured by benchmarks/bench_groupnorm.py and benchmarks/bench_unet.py.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from mindscience_diffuser.models import UNet2DModel, cpu_kernels
from mindscience_diffuser.models.cpu_kernels import WINOGRAD_MIN_PIXELS, set_cpu_kernels, use_cpu_kernels
from mindscience_diffuser.models.layers import Conv2d, GroupNorm, WinogradConv2d
from test_unet import GOLDEN, PARITY_RTOL, STORED, io_of, rel_err, run

FLOAT32_RTOL = 1e-5
FLOAT16_RTOL = 3e-2
# (shape, groups): 4-D maps, a 3-D sequence, an odd spatial size, one group, one channel per group.
SHAPES = [((2, 8, 5, 7), 4), ((3, 12, 17), 3), ((1, 6, 3, 3), 1), ((2, 4, 6, 6), 4)]


@pytest.fixture(autouse=True)
def forget_kernel_choice():
    yield
    set_cpu_kernels(None)


def pair(num_groups, num_channels, act_fn=None, dtype=ms.float32, eps=1e-6, seed=0):
    """The same random-affine GroupNorm built with the C++ kernel and with the plain op."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal(num_channels).astype(np.float32)
    bias = rng.standard_normal(num_channels).astype(np.float32)
    norms = []
    for kernel in ("cpu", "plain"):
        norm = GroupNorm(num_groups, num_channels, eps, dtype=dtype, act_fn=act_fn, kernel=kernel)
        norm.weight.set_data(ms.Tensor(weight, dtype))
        norm.bias.set_data(ms.Tensor(bias, dtype))
        norms.append(norm)
    assert norms[0].use_cpu_kernel and not norms[1].use_cpu_kernel
    return norms


def sample(shape, seed=1, offset=3.0):
    """A non-centred input (mean 3, std 2), so the one-pass variance is tested against cancellation."""
    return (np.random.default_rng(seed).standard_normal(shape) * 2.0 + offset).astype(np.float32)


@pytest.mark.parametrize("act_fn", [None, "silu", "swish", "mish"])
@pytest.mark.parametrize("shape,groups", SHAPES)
def test_kernel_matches_plain_float32(shape, groups, act_fn):
    fast, plain = pair(groups, shape[1], act_fn)
    x = ms.Tensor(sample(shape))
    expected = plain(x).asnumpy()
    out = fast(x)
    assert out.shape == shape and out.dtype == ms.float32
    assert rel_err(out, expected) < FLOAT32_RTOL


def test_kernel_matches_plain_in_graph_mode(graph_mode):
    fast, plain = pair(4, 8, "silu")
    x = ms.Tensor(sample((2, 8, 6, 6)))
    assert rel_err(fast(x), plain(x).asnumpy()) < FLOAT32_RTOL


def test_kernel_float16_statistics_in_float32():
    """A float16 norm upcasts to the float32 kernel: finite (x² of |x|~300 would overflow float16) and close."""
    fast, plain = pair(4, 8, "silu", dtype=ms.float16)
    x = ms.Tensor(sample((2, 8, 6, 6), offset=300.0), ms.float16)
    out, expected = fast(x), plain(x)
    assert out.dtype == ms.float16
    out = out.asnumpy().astype(np.float32)
    assert np.isfinite(out).all()
    assert rel_err(out, expected.asnumpy().astype(np.float64)) < FLOAT16_RTOL


class WeightedSum(nn.Cell):
    """Σ r·layer(x): a loss whose gradient reaches every output element with a different weight."""

    def __init__(self, layer, r):
        super().__init__()
        self.layer, self.r = layer, r

    def construct(self, x):
        return (self.layer(x) * self.r).sum()


@pytest.mark.parametrize("compiled", [False, True], ids=["pynative", "jit"])
@pytest.mark.parametrize("act_fn", [None, "silu"])
def test_kernel_gradient_matches_plain(act_fn, compiled):
    """Training through the kernel (the trainer's step is an ms.jit of value_and_grad):
    d/dx, d/dweight, d/dbias of Σ r·GN(x) equal the plain op's."""
    shape = (2, 8, 5, 5)
    r = ms.Tensor(np.random.default_rng(3).standard_normal(shape).astype(np.float32))
    x = ms.Tensor(sample(shape))
    grads = []
    for norm in pair(4, 8, act_fn):
        grad_fn = ms.grad(WeightedSum(norm, r), grad_position=0, weights=norm.trainable_params())
        grads.append((ms.jit(grad_fn) if compiled else grad_fn)(x))
    (dx_fast, (dw_fast, db_fast)), (dx_plain, (dw_plain, db_plain)) = grads
    for fast, plain in ((dx_fast, dx_plain), (dw_fast, dw_plain), (db_fast, db_plain)):
        assert rel_err(fast, plain.asnumpy().astype(np.float64)) < 1e-4


def conv_pair(in_channels, out_channels, seed=0):
    """The same random 3×3 convolution as a WinogradConv2d and as a plain nn.Conv2d."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((out_channels, in_channels, 3, 3)).astype(np.float32) / np.sqrt(9 * in_channels)
    bias = rng.standard_normal(out_channels).astype(np.float32)
    convs = [Conv2d(in_channels, out_channels, 3, padding=1, kernel=kernel) for kernel in ("cpu", "plain")]
    for conv in convs:
        conv.weight.set_data(ms.Tensor(weight))
        conv.bias.set_data(ms.Tensor(bias))
    assert isinstance(convs[0], WinogradConv2d) and not isinstance(convs[1], WinogradConv2d)
    return convs


# Even and odd sizes (a partial last tile), non-square, batch 1 and 3, more and fewer outputs than inputs.
@pytest.mark.parametrize("shape,out_channels", [((2, 16, 16, 16), 24), ((1, 32, 17, 19), 16), ((3, 16, 20, 16), 8)])
def test_winograd_matches_plain_float32(shape, out_channels):
    assert shape[2] * shape[3] >= WINOGRAD_MIN_PIXELS  # really the Winograd path
    fast, plain = conv_pair(shape[1], out_channels)
    x = ms.Tensor(sample(shape))
    out = fast(x)
    assert out.shape == (shape[0], out_channels) + shape[2:] and out.dtype == ms.float32
    assert rel_err(out, plain(x).asnumpy().astype(np.float64)) < FLOAT32_RTOL


def test_winograd_small_maps_and_graph_mode(graph_mode):
    """In one graph: a map below WINOGRAD_MIN_PIXELS (the direct path) and one above it."""
    fast, plain = conv_pair(16, 16)
    for shape in ((2, 16, 8, 8), (2, 16, 16, 16)):
        x = ms.Tensor(sample(shape))
        assert rel_err(fast(x), plain(x).asnumpy().astype(np.float64)) < FLOAT32_RTOL


def test_winograd_only_where_it_applies():
    for args in (dict(kernel_size=1), dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, padding=0)):
        assert not isinstance(Conv2d(16, 16, kernel="cpu", **args), WinogradConv2d)
    assert not isinstance(Conv2d(3, 16, 3, padding=1, kernel="cpu"), WinogradConv2d)  # too few input channels
    assert not isinstance(Conv2d(16, 16, 3, padding=1, dtype=ms.float16, kernel="cpu"), WinogradConv2d)
    assert isinstance(Conv2d(16, 16, 3, padding=(1, 1, 1, 1), kernel="cpu"), WinogradConv2d)


@pytest.mark.parametrize("compiled", [False, True], ids=["pynative", "jit"])
def test_winograd_gradient_matches_plain(compiled):
    shape = (2, 16, 16, 16)
    r = ms.Tensor(np.random.default_rng(3).standard_normal(shape).astype(np.float32))
    x = ms.Tensor(sample(shape))
    grads = []
    for conv in conv_pair(16, 16):
        grad_fn = ms.grad(WeightedSum(conv, r), grad_position=0, weights=conv.trainable_params())
        grads.append((ms.jit(grad_fn) if compiled else grad_fn)(x))
    (dx_fast, (dw_fast, db_fast)), (dx_plain, (dw_plain, db_plain)) = grads
    for fast, plain in ((dx_fast, dx_plain), (dw_fast, dw_plain), (db_fast, db_plain)):
        assert rel_err(fast, plain.asnumpy().astype(np.float64)) < 1e-4


def _unet(case, kernel, compute_dtype=ms.float32):
    set_cpu_kernels(kernel)
    model = UNet2DModel.from_pretrained(GOLDEN / case, compute_dtype=compute_dtype)
    set_cpu_kernels(None)
    return model


@pytest.mark.parametrize("case", STORED)
def test_unet_kernel_matches_plain_and_diffusers(case):
    """Every stored layout (every block type, act_fn, scale_shift, skip norms) in PyNative. Their
    maps are 8×8 to 32×32, so both convolution paths run."""
    io = io_of(case)
    fast = run(_unet(case, "cpu"), io).asnumpy()
    plain = run(_unet(case, "plain"), io).asnumpy()
    assert rel_err(fast, plain.astype(np.float64)) < FLOAT32_RTOL
    assert rel_err(fast, io["out"]) < PARITY_RTOL
    assert rel_err(plain, io["out"]) < PARITY_RTOL


def test_unet_kernel_matches_plain_in_graph_mode(graph_mode):
    case = "ddpm_cifar10_small"
    io = io_of(case)
    fast = run(_unet(case, "cpu"), io).asnumpy()
    plain = run(_unet(case, "plain"), io).asnumpy()
    assert rel_err(fast, plain.astype(np.float64)) < FLOAT32_RTOL
    assert rel_err(fast, io["out"]) < PARITY_RTOL


def test_unet_float16_kernel_matches_plain():
    case = "ddpm_cifar10_small"
    io = io_of(case)
    fast = run(_unet(case, "cpu", ms.float16), io)
    plain = run(_unet(case, "plain", ms.float16), io)
    assert fast.dtype == plain.dtype == ms.float16
    fast = fast.asnumpy().astype(np.float32)
    assert np.isfinite(fast).all()
    assert rel_err(fast, plain.asnumpy().astype(np.float64)) < FLOAT16_RTOL
    assert rel_err(fast, io["out"]) < FLOAT16_RTOL


def test_sampling_loops_through_the_kernels_compile_and_match_plain(graph_mode):
    """The shipped model's whole sampling loop (one rolled ``while`` graph), unconditional and
    with DPS guidance (a gradient through both kernels inside the loop), built with the kernels and
    with the plain ops. Before the Winograd gradient moved from a Cell ``bprop`` to a primitive
    bprop, the kernel loop of this three-level UNet did not finish compiling."""
    from mindscience_diffuser import DEFAULT_MODEL_PATH, DiffusionPipeline
    from mindscience_diffuser.observations import MaskOperator, Observation

    rng = np.random.default_rng(0)
    mask = (rng.random((1, 32, 32)) < 0.05).astype(np.float32)
    observation = Observation(0.3 * rng.standard_normal((1, 1, 32, 32)).astype(np.float32) * mask,
                              MaskOperator(mask), 0.05)
    outputs = {}
    for kernel in ("cpu", "plain"):
        set_cpu_kernels(kernel)
        pipe = DiffusionPipeline.from_pretrained(DEFAULT_MODEL_PATH)
        pipe.set_progress_bar_config(disable=True)
        winograd = [cell for _, cell in pipe.unet.cells_and_names() if isinstance(cell, WinogradConv2d)]
        assert bool(winograd) == (kernel == "cpu")
        for guidance in (None, "dps"):
            extra = {"observation": observation, "guidance": guidance} if guidance else {}
            outputs[kernel, guidance] = pipe(batch_size=2, num_inference_steps=3, generator=0,
                                             output_type="latent", **extra).images.asnumpy()
    for guidance in (None, "dps"):
        fast, plain = outputs["cpu", guidance], outputs["plain", guidance]
        assert np.isfinite(fast).all()
        np.testing.assert_allclose(fast, plain, atol=2e-4, rtol=2e-4)
    assert np.abs(outputs["cpu", "dps"] - outputs["cpu", None]).max() > 1e-3  # the guidance acted


# ---- choosing the implementation ------------------------------------------------------------


def test_the_default_is_the_plain_ops(monkeypatch):
    """Opt-in: the shipped models, golden runs and documented training runs were made with
    MindSpore's own ops, which every backend has."""
    monkeypatch.delenv(cpu_kernels.ENV_CHOICE, raising=False)
    set_cpu_kernels(None)
    assert cpu_kernels.cpu_kernels_choice() == "plain" and not GroupNorm(2, 4).use_cpu_kernel


def test_auto_picks_the_kernel_on_cpu_only(monkeypatch):
    monkeypatch.setenv(cpu_kernels.ENV_CHOICE, "auto")
    assert ms.get_context("device_target") == "CPU"
    assert use_cpu_kernels("auto") and GroupNorm(2, 4).use_cpu_kernel
    monkeypatch.setattr(cpu_kernels, "_device_target", lambda: "GPU")
    assert not use_cpu_kernels("auto") and not GroupNorm(2, 4).use_cpu_kernel
    with pytest.raises(ValueError, match="device_target 'CPU'"):
        use_cpu_kernels("cpu")


def test_failed_build_falls_back_under_auto(monkeypatch):
    def no_compiler(source):
        raise OSError(f"the CPU kernels need g++ on PATH to compile kernels/{source}")

    monkeypatch.setattr(cpu_kernels, "compiled_library", no_compiler)
    monkeypatch.setattr(cpu_kernels, "_warned", False)
    with pytest.warns(RuntimeWarning, match="falling back to MindSpore's own CPU kernels"):
        assert not use_cpu_kernels("auto")
    with pytest.raises(OSError, match="g\\+\\+"):
        use_cpu_kernels("cpu")


def test_choice_from_setter_and_environment(monkeypatch):
    monkeypatch.setenv(cpu_kernels.ENV_CHOICE, "plain")
    assert cpu_kernels.cpu_kernels_choice() == "plain" and not GroupNorm(2, 4).use_cpu_kernel
    set_cpu_kernels("cpu")
    assert GroupNorm(2, 4).use_cpu_kernel
    with pytest.raises(ValueError, match="cpu_kernels must be one of"):
        set_cpu_kernels("fast")
    monkeypatch.setenv(cpu_kernels.ENV_CHOICE, "fast")
    set_cpu_kernels(None)
    with pytest.raises(ValueError, match=cpu_kernels.ENV_CHOICE):
        GroupNorm(2, 4)


def test_library_is_cached_per_source(tmp_path, monkeypatch):
    """A fresh cache folder gets one library; a second lookup reuses it without compiling."""
    monkeypatch.setenv(cpu_kernels.ENV_CACHE, str(tmp_path))
    cpu_kernels.compiled_library.cache_clear()
    try:
        first = cpu_kernels.compiled_library(cpu_kernels.GROUP_NORM_SOURCE)
        assert first.parent == tmp_path and first.is_file()
        cpu_kernels.compiled_library.cache_clear()
        mtime = first.stat().st_mtime_ns
        assert cpu_kernels.compiled_library(cpu_kernels.GROUP_NORM_SOURCE) == first
        assert first.stat().st_mtime_ns == mtime
        assert [p.name for p in tmp_path.iterdir()] == [first.name]
    finally:
        cpu_kernels.compiled_library.cache_clear()
