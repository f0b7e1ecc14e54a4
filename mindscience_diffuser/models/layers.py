"""Primitive layers whose parameter names equal PyTorch's (``weight`` / ``bias``).

MindSpore's own ``nn.GroupNorm`` calls its affine parameters ``gamma``/``beta`` and
``nn.Embedding`` calls its table ``embedding_table``; the layers here use diffusers'
names instead, so a UNet's ``parameters_and_names()`` *is* the diffusers state-dict key set
and weight loading needs no renaming table.

Every layer keeps its parameters in the model's ``compute_dtype``. The numerically fragile
reductions (group-norm statistics, softmax) are computed in float32 whatever that dtype is.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from ..utils import check_choice
from .cpu_kernels import WINOGRAD_MIN_PIXELS, WinogradConv3x3, group_norm_op, use_cpu_kernels

#: Activation names diffusers' ``get_activation`` accepts (case-insensitive).
ACTIVATIONS = ("swish", "silu", "mish", "gelu", "relu")


def get_activation(act_fn: str) -> nn.Cell:
    """The activation Cell for a diffusers ``act_fn`` name.

    ``swish`` and ``silu`` are both x·σ(x); ``gelu`` is the exact (erf) form, as torch's default.
    """
    name = act_fn.lower() if isinstance(act_fn, str) else act_fn
    check_choice("act_fn", name, ACTIVATIONS)
    if name in ("swish", "silu"):
        return nn.SiLU()
    if name == "mish":
        return nn.Mish()
    if name == "gelu":
        return nn.GELU(approximate=False)
    return nn.ReLU()


def check_groups(name: str, num_channels: int, num_groups: int) -> None:
    """Raise ``ValueError`` unless ``num_channels`` splits into ``num_groups`` equal groups."""
    if not isinstance(num_groups, int) or num_groups < 1 or num_channels % num_groups != 0:
        raise ValueError(
            f"{name}: {num_channels} channels cannot be split into {num_groups} groups "
            f"(the channel count must be a positive multiple of the group count)"
        )


class GroupNorm(nn.Cell):
    """Group normalisation over (C, spatial...) of an NC... tensor, optionally followed by an activation.

    y = act((x − mean_g) / sqrt(var_g + eps) · weight_c + bias_c), with the biased variance of
    each of ``num_groups`` channel groups and ``act`` the diffusers ``act_fn`` (identity when
    ``None``). Statistics are always taken in float32: with float16 parameters the input and the
    affine parameters are upcast first and the result cast back.

    Two implementations, fixed at construction by ``kernel`` (default: the process-wide
    :func:`~mindscience_diffuser.models.cpu_kernels.cpu_kernels_choice`, ``"auto"``): on the CPU
    backend a C++ kernel (:mod:`~mindscience_diffuser.models.cpu_kernels`) that normalises in one
    pass and applies SiLU in the same pass, 5–20× faster than MindSpore 2.8's CPU kernel; elsewhere,
    or with ``kernel="plain"``, the fused ``ops.group_norm`` kernel followed by the activation Cell.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, dtype=ms.float32,
                 name: str = "GroupNorm", act_fn: Optional[str] = None, kernel: Optional[str] = None):
        super().__init__()
        check_groups(name, num_channels, num_groups)
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = float(eps)
        self.upcast = dtype != ms.float32
        self.weight = Parameter(initializer("ones", (num_channels,), dtype), name="weight")
        self.bias = Parameter(initializer("zeros", (num_channels,), dtype), name="bias")
        self.has_act = act_fn is not None
        if self.has_act:
            self.act = get_activation(act_fn)
        self.use_cpu_kernel = use_cpu_kernels(kernel)
        # Only the C++ kernel fuses, and only SiLU (x·σ(x)); any other activation runs after it.
        self.fuses_act = self.use_cpu_kernel and self.has_act and act_fn.lower() in ("silu", "swish")
        if self.use_cpu_kernel:
            self.cpu_op = group_norm_op(self.fuses_act)
            self.eps_tensor = Tensor([self.eps], ms.float32)

    def _cpu_kernel(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        # The kernel reads the group layout from the shape: (B, G, C/G, spatial) and (G, C/G).
        shape = x.shape
        group_channels = self.num_channels // self.num_groups
        grouped = x.reshape(shape[0], self.num_groups, group_channels, -1)
        y = self.cpu_op(grouped, weight.reshape(self.num_groups, group_channels),
                        bias.reshape(self.num_groups, group_channels), self.eps_tensor)
        return y.reshape(shape)

    def construct(self, x: Tensor) -> Tensor:
        weight, bias, x32 = self.weight, self.bias, x
        if self.upcast:
            weight, bias, x32 = weight.astype(ms.float32), bias.astype(ms.float32), x.astype(ms.float32)
        if self.use_cpu_kernel:
            y = self._cpu_kernel(x32, weight, bias)
        else:
            y = ops.group_norm(x32, self.num_groups, weight, bias, self.eps)
        if self.upcast:
            y = y.astype(x.dtype)
        if self.has_act and not self.fuses_act:
            y = self.act(y)
        return y


class Embedding(nn.Cell):
    """A lookup table ``weight[index]`` (``weight``: (num_embeddings, dim)), as ``torch.nn.Embedding``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype=ms.float32):
        super().__init__()
        self.weight = Parameter(initializer(Normal(sigma=1.0), (num_embeddings, embedding_dim), dtype), name="weight")

    def construct(self, index: Tensor) -> Tensor:
        return ops.gather(self.weight, index.astype(ms.int32), 0)


class WinogradConv2d(nn.Conv2d):
    """A biased 3×3, stride-1, zero-padding-1 ``nn.Conv2d`` (same parameters) for the CPU backend.

    Maps of at least ``WINOGRAD_MIN_PIXELS`` pixels go through Winograd's F(2×2, 3×3)
    (:class:`~mindscience_diffuser.models.cpu_kernels.WinogradConv3x3`), smaller ones through
    ``nn.Conv2d`` itself; both give conv2d(x, weight) + bias up to float32 rounding.
    """

    def __init__(self, in_channels: int, out_channels: int, dtype=ms.float32):
        super().__init__(in_channels, out_channels, 3, stride=1, pad_mode="pad", padding=1, has_bias=True,
                         dtype=dtype)
        self.winograd = WinogradConv3x3(out_channels)

    def construct(self, x: Tensor) -> Tensor:
        # The shape is a compile-time constant in GRAPH_MODE, so this picks one path per graph.
        if x.shape[-2] * x.shape[-1] < WINOGRAD_MIN_PIXELS:
            return super().construct(x)
        return self.winograd(x, self.weight, self.bias)


#: Below this many input channels the Winograd products are too thin to beat the direct kernel.
WINOGRAD_MIN_CHANNELS = 16


def Conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: Union[int, Tuple[int, int, int, int]] = 0,
    dtype=ms.float32,
    kernel: Optional[str] = None,
) -> nn.Cell:
    """A biased ``nn.Conv2d`` with explicit zero padding (torch's ``padding=``).

    ``padding`` is an int or (top, bottom, left, right). Parameters ``weight`` (O, I, kH, kW)
    and ``bias`` (O,) have torch's layout. A float32 3×3, stride-1, padding-1 convolution of at
    least ``WINOGRAD_MIN_CHANNELS`` input channels is a :class:`WinogradConv2d` when the CPU
    kernels are chosen (``kernel``, default the process-wide
    :func:`~mindscience_diffuser.models.cpu_kernels.cpu_kernels_choice`).
    """
    winograd_shaped = (kernel_size == 3 and stride == 1 and padding in (1, (1, 1, 1, 1)) and dtype == ms.float32
                       and in_channels >= WINOGRAD_MIN_CHANNELS)
    if winograd_shaped and use_cpu_kernels(kernel):
        return WinogradConv2d(in_channels, out_channels, dtype=dtype)
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        pad_mode="pad",
        padding=padding,
        has_bias=True,
        dtype=dtype,
    )


def Linear(in_features: int, out_features: int, dtype=ms.float32) -> nn.Cell:
    """A biased ``nn.Dense``: y = x Wᵀ + b with ``weight`` (out, in), torch's layout."""
    return nn.Dense(in_features, out_features, has_bias=True, dtype=dtype)


def fir_kernel_2d(taps=(1, 3, 3, 1), gain: float = 1.0) -> np.ndarray:
    """The separable FIR filter k kᵀ / (Σk)², scaled by ``gain``, shaped (1, 1, kH, kW)."""
    k = np.asarray(taps, dtype=np.float64)
    k2 = np.outer(k, k)
    k2 = k2 / k2.sum() * gain
    return k2[None, None].astype(np.float32)
