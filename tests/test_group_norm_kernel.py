"""The CPU group-norm kernel (models/cpu_kernels.py) against the plain ``ops.group_norm`` path.

Each test forces both implementations (``kernel="cpu"`` / ``"plain"`` or
``set_group_norm_kernel``), compares them with each other and, for whole UNets, with the stored
diffusers goldens. No timings here: speed is measured by benchmarks/bench_groupnorm.py.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from mindscience_diffuser.models import UNet2DModel, cpu_kernels
from mindscience_diffuser.models.cpu_kernels import set_group_norm_kernel, use_cpu_group_norm
from mindscience_diffuser.models.layers import GroupNorm
from test_unet import GOLDEN, PARITY_RTOL, STORED, io_of, rel_err, run

FLOAT32_RTOL = 1e-5
FLOAT16_RTOL = 3e-2
# (shape, groups): 4-D maps, a 3-D sequence, an odd spatial size, one group, one channel per group.
SHAPES = [((2, 8, 5, 7), 4), ((3, 12, 17), 3), ((1, 6, 3, 3), 1), ((2, 4, 6, 6), 4)]


@pytest.fixture(autouse=True)
def forget_kernel_choice():
    yield
    set_group_norm_kernel(None)


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
    """Σ r·norm(x): a loss whose gradient reaches every output element with a different weight."""

    def __init__(self, norm, r):
        super().__init__()
        self.norm, self.r = norm, r

    def construct(self, x):
        return (self.norm(x) * self.r).sum()


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


def _unet(case, kernel, compute_dtype=ms.float32):
    set_group_norm_kernel(kernel)
    model = UNet2DModel.from_pretrained(GOLDEN / case, compute_dtype=compute_dtype)
    set_group_norm_kernel(None)
    return model


@pytest.mark.parametrize("case", STORED)
def test_unet_kernel_matches_plain_and_diffusers(case):
    """Every stored layout (every block type, act_fn, scale_shift, skip norms) in PyNative."""
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


# ---- choosing the implementation ------------------------------------------------------------


def test_auto_picks_the_kernel_on_cpu_only(monkeypatch):
    assert ms.get_context("device_target") == "CPU"
    assert use_cpu_group_norm("auto") and GroupNorm(2, 4).use_cpu_kernel
    monkeypatch.setattr(cpu_kernels, "_device_target", lambda: "GPU")
    assert not use_cpu_group_norm("auto") and not GroupNorm(2, 4).use_cpu_kernel
    with pytest.raises(ValueError, match="device_target 'CPU'"):
        use_cpu_group_norm("cpu")


def test_failed_build_falls_back_under_auto(monkeypatch):
    def no_compiler():
        raise OSError("the CPU group-norm kernel needs g++ on PATH")

    monkeypatch.setattr(cpu_kernels, "compiled_library", no_compiler)
    monkeypatch.setattr(cpu_kernels, "_warned", False)
    with pytest.warns(RuntimeWarning, match="falling back to ops.group_norm"):
        assert not use_cpu_group_norm("auto")
    with pytest.raises(OSError, match="g\\+\\+"):
        use_cpu_group_norm("cpu")


def test_choice_from_setter_and_environment(monkeypatch):
    monkeypatch.setenv(cpu_kernels.ENV_CHOICE, "plain")
    assert cpu_kernels.group_norm_kernel() == "plain" and not GroupNorm(2, 4).use_cpu_kernel
    set_group_norm_kernel("cpu")
    assert GroupNorm(2, 4).use_cpu_kernel
    with pytest.raises(ValueError, match="group_norm_kernel must be one of"):
        set_group_norm_kernel("fast")
    monkeypatch.setenv(cpu_kernels.ENV_CHOICE, "fast")
    set_group_norm_kernel(None)
    with pytest.raises(ValueError, match=cpu_kernels.ENV_CHOICE):
        GroupNorm(2, 4)


def test_library_is_cached_per_source(tmp_path, monkeypatch):
    """A fresh cache folder gets one library; a second lookup reuses it without compiling."""
    monkeypatch.setenv(cpu_kernels.ENV_CACHE, str(tmp_path))
    cpu_kernels.compiled_library.cache_clear()
    try:
        first = cpu_kernels.compiled_library()
        assert first.parent == tmp_path and first.is_file()
        cpu_kernels.compiled_library.cache_clear()
        mtime = first.stat().st_mtime_ns
        assert cpu_kernels.compiled_library() == first and first.stat().st_mtime_ns == mtime
        assert [p.name for p in tmp_path.iterdir()] == [first.name]
    finally:
        cpu_kernels.compiled_library.cache_clear()
