"""A C++ group-norm kernel for MindSpore's CPU backend, beside the plain ``ops.group_norm``.

MindSpore 2.8's CPU ``GroupNorm`` kernel takes 3.1 ms on a (4, 64, 32, 32) tensor in GRAPH_MODE
where torch takes 0.05 ms; at batch >= 4 a UNet's normalisations cost about as much as its
convolutions. ``kernels/group_norm_cpu.cc`` does the same math in one pass per group (0.16 ms
there) and can apply SiLU in the same pass. It runs through ``ops.Custom(func_type="aot")``: the
source is compiled once per machine with ``g++`` into a cache folder and loaded by path.

Which implementation a :class:`~mindscience_diffuser.models.layers.GroupNorm` uses is fixed when
it is built, from :func:`group_norm_kernel` (``"auto"`` unless set):

- ``"auto"``: the C++ kernel when ``mindspore.get_context("device_target") == "CPU"`` and it
  compiles, else the plain op (a failed build warns once and falls back);
- ``"plain"``: ``ops.group_norm`` everywhere (GPU and Ascend always use it under ``"auto"``);
- ``"cpu"``: the C++ kernel, or an error saying why it cannot be used.

Set it with :func:`set_group_norm_kernel` or the ``MINDSCIENCE_DIFFUSER_GROUP_NORM`` environment
variable before building a model. ``MINDSCIENCE_DIFFUSER_KERNEL_CACHE`` overrides the cache folder
(default ``~/.cache/mindscience_diffuser/kernels``).

The kernel takes float32 only; a float16 model's norms upcast to it, so statistics stay float32
(as the plain path). Its gradient (:func:`_group_norm_bprop`) is written with plain ops, so
training through it works in both execution modes.
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
from mindspore import Tensor, ops

from ..utils import check_choice

GROUP_NORM_KERNELS = ("auto", "plain", "cpu")
ENV_CHOICE = "MINDSCIENCE_DIFFUSER_GROUP_NORM"
ENV_CACHE = "MINDSCIENCE_DIFFUSER_KERNEL_CACHE"
SOURCE = Path(__file__).resolve().parent / "kernels" / "group_norm_cpu.cc"
# -march=native: the library is built on the machine that runs it, and its file name carries the
# CPU's feature flags, so a cache folder shared between different machines keeps one per CPU.
# -fno-trapping-math lets the SiLU loop's clamps vectorise; it changes no result.
COMPILE_FLAGS = ("-std=c++17", "-O3", "-march=native", "-fopenmp-simd", "-fno-trapping-math", "-shared", "-fPIC")

_choice: Optional[str] = None
_warned = False


def set_group_norm_kernel(choice: Optional[str]) -> None:
    """Choose the group-norm implementation of models built from now on: ``"auto"``, ``"plain"`` or ``"cpu"``.

    ``None`` forgets the choice (back to the environment variable, else ``"auto"``). Models
    already built keep theirs.
    """
    global _choice
    if choice is not None:
        check_choice("group_norm_kernel", choice, GROUP_NORM_KERNELS)
    _choice = choice


def group_norm_kernel() -> str:
    """The current choice: :func:`set_group_norm_kernel`'s, else ``$MINDSCIENCE_DIFFUSER_GROUP_NORM``, else "auto"."""
    if _choice is not None:
        return _choice
    choice = os.environ.get(ENV_CHOICE, "auto")
    check_choice(ENV_CHOICE, choice, GROUP_NORM_KERNELS)
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
def compiled_library() -> Path:
    """The kernel library's path, compiled on first use (``OSError`` when it cannot be built).

    The file name hashes the source, the flags, the compiler's version and the CPU's features,
    so an edit or another machine builds anew; the build goes to a temporary name first and is
    renamed into place, so concurrent processes (msrun workers) never load a half-written file.
    """
    compiler = shutil.which("g++")
    if compiler is None:
        raise OSError("the CPU group-norm kernel needs g++ on PATH to compile kernels/group_norm_cpu.cc")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(
        b"\0".join(s.encode() for s in (SOURCE.read_text(), " ".join(COMPILE_FLAGS), version,
                                         platform.machine(), _cpu_features()))
    ).hexdigest()[:16]
    folder = _cache_dir()
    library = folder / f"group_norm_cpu_{key}.so"
    if library.is_file():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{library.name}.{os.getpid()}.tmp"
    build = subprocess.run([compiler, *COMPILE_FLAGS, "-o", str(partial), str(SOURCE)],
                           capture_output=True, text=True, check=False)
    if build.returncode != 0:
        partial.unlink(missing_ok=True)
        raise OSError(f"g++ could not compile {SOURCE}:\n{build.stderr.strip()}")
    os.replace(partial, library)
    return library


def _device_target() -> str:
    return ms.get_context("device_target")


def use_cpu_group_norm(choice: Optional[str] = None) -> bool:
    """Whether a GroupNorm built now runs the C++ kernel, for ``choice`` (default :func:`group_norm_kernel`)."""
    global _warned
    choice = group_norm_kernel() if choice is None else choice
    check_choice("group_norm_kernel", choice, GROUP_NORM_KERNELS)
    if choice == "plain":
        return False
    target = _device_target()
    if target != "CPU":
        if choice == "cpu":
            raise ValueError(f"group_norm_kernel='cpu' needs device_target 'CPU', but it is {target!r}")
        return False
    try:
        compiled_library()
    except OSError as err:
        if choice == "cpu":
            raise
        if not _warned:
            warnings.warn(f"{err}\nfalling back to ops.group_norm", RuntimeWarning, stacklevel=3)
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
    return ops.Custom(f"{compiled_library()}:{name}", _same_as_input, _same_as_input, "aot",
                      bprop=_group_norm_bprop(fused_silu))
