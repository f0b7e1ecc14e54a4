"""Resolution changes by a factor of 2: strided convolution, average pooling, nearest-neighbour
upsampling and the FIR (1, 3, 3, 1) filters of score-SDE / NCSN++.

The parameter-free resamplers are written with reshape / broadcast / mean so they run the same
on every backend and need no pooling or resize kernel.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import Tensor, nn, ops

from .layers import Conv2d, fir_kernel_2d


def nearest_upsample_2x(x: Tensor) -> Tensor:
    """Nearest-neighbour ×2: out[..., i, j] = x[..., i // 2, j // 2]."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h, 1, w, 1)
    x = ops.broadcast_to(x, (b, c, h, 2, w, 2))
    return x.reshape(b, c, 2 * h, 2 * w)


def avg_pool_2x(x: Tensor) -> Tensor:
    """2×2 average pooling with stride 2 (H and W even)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


class Downsample2D(nn.Cell):
    """Halve H and W: a 3×3 stride-2 convolution ``conv`` (``use_conv``), else 2×2 mean.

    With ``padding=0`` the input is zero-padded by one row at the bottom and one column at the
    right before the convolution (the DDPM-TF layout); otherwise ``padding`` pads every side.
    """

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int = None, padding: int = 1,
                 dtype=ms.float32):
        super().__init__()
        out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            pad = (0, 1, 0, 1) if padding == 0 else padding
            self.conv = Conv2d(channels, out_channels, 3, stride=2, padding=pad, dtype=dtype)
        elif out_channels != channels:
            raise ValueError(f"average-pool downsampling keeps the channel count; got {channels} -> {out_channels}")

    def construct(self, x: Tensor) -> Tensor:
        if self.use_conv:
            return self.conv(x)
        return avg_pool_2x(x)


class Upsample2D(nn.Cell):
    """Double H and W by nearest-neighbour repetition, then (``use_conv``) a 3×3 convolution ``conv``."""

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int = None, dtype=ms.float32):
        super().__init__()
        out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = Conv2d(channels, out_channels, 3, padding=1, dtype=dtype)

    def construct(self, x: Tensor) -> Tensor:
        x = nearest_upsample_2x(x)
        if self.use_conv:
            x = self.conv(x)
        return x


class FirDownsample2D(nn.Cell):
    """FIR downsampling ×½ without weights (diffusers' ``FirDownsample2D`` / ``downsample_2d``).

    Each channel is convolved with k kᵀ/(Σk)², k = (1, 3, 3, 1), after one zero row/column of
    padding on every side, keeping every second output: out = (pad₁(x) ⋆ K)[::2, ::2].
    """

    def __init__(self, dtype=ms.float32):
        super().__init__()
        self.kernel = Tensor(fir_kernel_2d(gain=1.0), dtype)

    def construct(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = x.reshape(b * c, 1, h, w)
        y = ops.conv2d(y, self.kernel.astype(x.dtype), stride=2, pad_mode="pad", padding=1)
        return y.reshape(b, c, h // 2, w // 2)


class FirUpsample2D(nn.Cell):
    """FIR upsampling ×2 without weights (diffusers' ``FirUpsample2D`` / ``upsample_2d``).

    Zeros are interleaved after every sample (x ↑ 2), the result is padded by 2 before and 1
    after along H and W, and convolved per channel with 4·k kᵀ/(Σk)² (the gain 4 = factor²
    keeps a constant image constant).
    """

    def __init__(self, dtype=ms.float32):
        super().__init__()
        self.kernel = Tensor(fir_kernel_2d(gain=4.0), dtype)

    def construct(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = x.reshape(b * c, 1, h, 1, w, 1)
        y = ops.pad(y, (0, 1, 0, 0, 0, 1))  # zeros after each column and each row
        y = y.reshape(b * c, 1, 2 * h, 2 * w)
        y = ops.pad(y, (2, 1, 2, 1))
        y = ops.conv2d(y, self.kernel.astype(x.dtype))
        return y.reshape(b, c, 2 * h, 2 * w)
