"""C++ kernels for MindSpore's CPU backend, each beside the plain MindSpore op it replaces.

Measured in GRAPH_MODE on the project's 2-core machine (benchmarks/bench_groupnorm.py,
docs/benchmarks.md), MindSpore 2.8's CPU kernels leave two costs that these remove:

- **GroupNorm**: 2.2 ms on a (4, 64, 32, 32) tensor where torch takes 0.05 ms; at batch >= 4 a
  UNet's normalisations cost about as much as its convolutions. ``kernels/group_norm_cpu.cc``
  does the same math in one pass per group (0.16 ms there) and can apply SiLU in that pass.
- **3×3 convolution**: MindSpore hands oneDNN 2.2 plain NCHW tensors, which selects its
  im2col + GEMM implementation (``gemm:jit``), about 70 GFLOP/s. ``kernels/winograd_cpu.cc``
  holds the transforms of Winograd's F(2×2, 3×3) algorithm; the product in between is
  MindSpore's BatchMatMul (about 90 GFLOP/s) on 2.25× fewer multiplications.

Both run through ``ops.Custom(func_type="aot")``: each source is compiled once per machine with
``g++`` into a cache folder and loaded by path. Which implementation a layer uses is fixed when it
is built, from :func:`cpu_kernels_choice` (``"plain"`` unless set):

- ``"auto"``: the C++ kernels when ``mindspore.get_context("device_target") == "CPU"`` and they
  compile, else the plain ops (a failed build warns once and falls back);
- ``"plain"``: MindSpore's ops everywhere (GPU and Ascend always use them under ``"auto"``);
- ``"cpu"``: the C++ kernels, or an error saying why they cannot be used.

Set it with :func:`set_cpu_kernels` or the ``MINDSCIENCE_DIFFUSER_CPU_KERNELS`` environment
variable before building a model. ``MINDSCIENCE_DIFFUSER_KERNEL_CACHE`` overrides the cache folder
(default ``~/.cache/mindscience_diffuser/kernels``).

The kernels take float32 only: a float16 model's norms upcast to them (statistics stay float32,
as on the plain path) and its convolutions stay plain. Their gradients are written with plain
ops, so training through them works in both execution modes.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.ops.operations import _grad_ops

from ..utils import check_choice

CHOICES = ("auto", "plain", "cpu")
ENV_CHOICE = "MINDSCIENCE_DIFFUSER_CPU_KERNELS"
ENV_CACHE = "MINDSCIENCE_DIFFUSER_KERNEL_CACHE"
SOURCES = Path(__file__).resolve().parent / "kernels"
GROUP_NORM_SOURCE = "group_norm_cpu.cc"
WINOGRAD_SOURCE = "winograd_cpu.cc"
# -march=native: each library is built on the machine that runs it, and its file name carries the
# CPU's feature flags, so a cache folder shared between different machines keeps one per CPU.
# -fno-trapping-math lets the SiLU loop's clamps vectorise; it changes no result.
# -pthread: the kernels split their loops over the cores themselves (kernels/parallel.h; threads per
# call from $MINDSCIENCE_DIFFUSER_KERNEL_THREADS, else the hardware's, at most 8).
COMPILE_FLAGS = ("-std=c++17", "-O3", "-march=native", "-fopenmp-simd", "-fno-trapping-math", "-pthread", "-shared",
                 "-fPIC")

_choice: Optional[str] = None
_warned = False


def set_cpu_kernels(choice: Optional[str]) -> None:
    """Choose the implementation of layers built from now on: ``"auto"``, ``"plain"`` or ``"cpu"``.

    ``None`` forgets the choice (back to the environment variable, else ``"plain"``). Models
    already built keep theirs.
    """
    global _choice
    if choice is not None:
        check_choice("cpu_kernels", choice, CHOICES)
    _choice = choice


def cpu_kernels_choice() -> str:
    """The current choice: :func:`set_cpu_kernels`'s, else ``$MINDSCIENCE_DIFFUSER_CPU_KERNELS``, else "plain"."""
    if _choice is not None:
        return _choice
    choice = os.environ.get(ENV_CHOICE, "plain")
    check_choice(ENV_CHOICE, choice, CHOICES)
    return choice


def _cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    home_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mindscience_diffuser" / "kernels"
    try:
        home_cache.mkdir(parents=True, exist_ok=True)
        if os.access(home_cache, os.W_OK):
            return home_cache
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"mindscience_diffuser_kernels_{os.getuid()}"


def _cpu_features() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            return next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return ""


@functools.lru_cache(maxsize=None)
def compiled_library(source: str) -> Path:
    """The path of ``kernels/<source>`` compiled, built on first use (``OSError`` when it cannot be).

    The file name hashes the source and the headers beside it, the flags, the compiler's version
    and the CPU's features, so an edit or another machine builds anew; the build goes to a
    temporary name first and is renamed into place, so concurrent processes (msrun workers) never
    load a half-written file.
    """
    compiler = shutil.which("g++")
    if compiler is None:
        raise OSError(f"the CPU kernels need g++ on PATH to compile kernels/{source}")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    path = SOURCES / source
    texts = [path.read_text()] + [header.read_text() for header in sorted(SOURCES.glob("*.h"))]
    key = hashlib.sha256(
        b"\0".join(s.encode() for s in (*texts, " ".join(COMPILE_FLAGS), version, platform.machine(),
                                         _cpu_features()))
    ).hexdigest()[:16]
    folder = _cache_dir()
    library = folder / f"{path.stem}_{key}.so"
    if library.is_file():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{library.name}.{os.getpid()}.tmp"
    build = subprocess.run([compiler, *COMPILE_FLAGS, "-o", str(partial), str(path)],
                           capture_output=True, text=True, check=False)
    if build.returncode != 0:
        partial.unlink(missing_ok=True)
        raise OSError(f"g++ could not compile {path}:\n{build.stderr.strip()}")
    os.replace(partial, library)
    return library


def _device_target() -> str:
    return ms.get_context("device_target")


def use_cpu_kernels(choice: Optional[str] = None) -> bool:
    """Whether a layer built now runs the C++ kernels, for ``choice`` (default :func:`cpu_kernels_choice`)."""
    global _warned
    choice = cpu_kernels_choice() if choice is None else choice
    check_choice("cpu_kernels", choice, CHOICES)
    if choice == "plain":
        return False
    target = _device_target()
    if target != "CPU":
        if choice == "cpu":
            raise ValueError(f"cpu_kernels='cpu' needs device_target 'CPU', but it is {target!r}")
        return False
    try:
        for source in (GROUP_NORM_SOURCE, WINOGRAD_SOURCE):
            compiled_library(source)
    except OSError as err:
        if choice == "cpu":
            raise
        if not _warned:
            warnings.warn(f"{err}\nfalling back to MindSpore's own CPU kernels", RuntimeWarning, stacklevel=3)
            _warned = True
        return False
    return True


def _same_as_input(x, *_):
    return x


def _grouped_mean(t: Tensor) -> Tensor:
    return t.mean(axis=(2, 3), keep_dims=True)


def _group_norm_bprop(fused_silu: bool):
    """The kernel's gradient, in plain ops, on the grouped view x (B, G, Cg, S), w and b (G, Cg).

    With x̂ = (x − mean)·rstd and y = x̂·w + b (z = y·σ(y) when SiLU is fused, so
    dy = dz·σ(y)·(1 + y·(1 − σ(y)))):
    dw = Σ_{B,S} dy·x̂, db = Σ_{B,S} dy and, with g = dy·w and means over each group's (Cg, S),
    dx = rstd·(g − mean(g) − x̂·mean(g·x̂)). eps gets a zero gradient.
    """

    def bprop(x, weight, bias, eps, out, dout):
        mean = _grouped_mean(x)
        centred = x - mean
        rstd = ops.rsqrt(_grouped_mean(centred * centred) + eps)
        x_hat = centred * rstd
        w, b = weight.expand_dims(-1), bias.expand_dims(-1)
        dy = dout
        if fused_silu:
            y = x_hat * w + b
            gate = ops.sigmoid(y)
            dy = dout * gate * (1 + y * (1 - gate))
        g = dy * w
        dx = rstd * (g - _grouped_mean(g) - x_hat * _grouped_mean(g * x_hat))
        return dx, (dy * x_hat).sum(axis=(0, 3)), dy.sum(axis=(0, 3)), ops.zeros_like(eps)

    return bprop


@functools.lru_cache(maxsize=None)
def group_norm_op(fused_silu: bool) -> ops.Custom:
    """The aot primitive: (x (B, G, Cg, S), weight (G, Cg), bias (G, Cg), eps (1,)) -> y, float32."""
    name = "GroupNormSiLU" if fused_silu else "GroupNorm"
    return ops.Custom(f"{compiled_library(GROUP_NORM_SOURCE)}:{name}", _same_as_input, _same_as_input, "aot",
                      bprop=_group_norm_bprop(fused_silu))


# ---- Winograd F(2x2, 3x3) convolution ---------------------------------------------------------------

#: Below this many output pixels per image the transforms cost more than they save (measured: a
#: 256-channel 8x8 map ran 1.1x slower than MindSpore's convolution, 16x16 and larger ran faster).
WINOGRAD_MIN_PIXELS = 16 * 16


def _tiles(size: int) -> int:
    return (size + 1) // 2


@functools.lru_cache(maxsize=None)
def winograd_transforms():
    """The filter and input transforms of kernels/winograd_cpu.cc (aot, float32, no gradient):

    filter (O, C, 3, 3) -> U (16, O, C); input (B, C, H, W) -> V (16, C, T) with T = B·⌈H/2⌉·⌈W/2⌉
    tiles.
    """
    library = compiled_library(WINOGRAD_SOURCE)
    filter_op = ops.Custom(f"{library}:WinogradFilter", lambda g: [16, g[0], g[1]], _same_as_input, "aot")
    input_op = ops.Custom(f"{library}:WinogradInput", lambda x: [16, x[1], x[0] * _tiles(x[2]) * _tiles(x[3])],
                          _same_as_input, "aot")
    return filter_op, input_op


def winograd_output_op(out_channels: int) -> ops.Custom:
    """The output transform (M (16, O, T), bias (O,), x, weight) -> y (B, O, H, W), carrying the
    whole convolution's gradient as the primitive's bprop: x (read for its shape) and weight (not
    read) are inputs so that the bprop can return dx and dweight with the plain convolution's
    backward kernels. M gets a zero gradient: the transforms before it are under ``stop_gradient``.

    The gradient sits on a primitive, not on a Cell's ``bprop``, because MindSpore 2.8 keeps a
    Cell with ``bprop`` as a graph of its own, and inside the sampling loop's ``while`` its
    backend then walks the model recursively without finishing (the shipped three-level UNet did
    not compile in 5 minutes); with the primitive bprop the loop compiles in seconds.
    """
    input_grad = ops.Conv2DBackpropInput(out_channels, 3, pad_mode="pad", pad=1)
    # pad_list too: this primitive's default (0, 0, 0, 0) overrides pad and breaks the descriptor.
    filter_grad = _grad_ops.Conv2DBackpropFilter(out_channels, 3, pad_mode="pad", pad=1, pad_list=(1, 1, 1, 1))

    def bprop(products, bias, x, weight, out, dout):
        return (ops.zeros_like(products), dout.sum(axis=(0, 2, 3)), input_grad(dout, weight, x.shape),
                filter_grad(dout, x, weight.shape))

    return ops.Custom(f"{compiled_library(WINOGRAD_SOURCE)}:WinogradOutput",
                      lambda m, b, x, w: [x[0], m[1], x[2], x[3]], _same_as_input, "aot", bprop=bprop)


class WinogradConv3x3(nn.Cell):
    """y = conv2d(x, weight, padding 1) + bias for a 3×3 filter, by Winograd's F(2×2, 3×3).

    With U = G g Gᵀ per filter and V = Bᵀ d B per 4×4 input tile (kernels/winograd_cpu.cc), each
    2×2 output tile is Aᵀ [Σ_c U ⊙ V] A: the channel sums are 16 matrix products, one BatchMatMul.
    The backward pass is the plain convolution's (:func:`winograd_output_op`), so gradients equal
    the plain layer's up to rounding.
    """

    def __init__(self, out_channels: int):
        super().__init__()
        self.filter_transform, self.input_transform = winograd_transforms()
        self.batch_matmul = ops.BatchMatMul()
        self.output_transform = winograd_output_op(out_channels)

    def construct(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        products = self.batch_matmul(self.filter_transform(weight), self.input_transform(x))
        return self.output_transform(ops.stop_gradient(products), bias, x, weight)
