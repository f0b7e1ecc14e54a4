"""The residual block of every UNet level (diffusers' ``ResnetBlock2D``)."""
from __future__ import annotations

from typing import Optional

import mindspore as ms
from mindspore import Tensor, nn, ops

from ..utils import check_choice
from .layers import Conv2d, GroupNorm, Linear, get_activation
from .resampling import FirDownsample2D, FirUpsample2D, avg_pool_2x, nearest_upsample_2x

TIME_SCALE_SHIFTS = ("default", "scale_shift")


class ResnetBlock2D(nn.Cell):
    """out = (shortcut(x) + conv2(drop(act(N₂(conv1(act(N₁ x)) [+ t])))) / output_scale_factor.

    The time embedding t = time_emb_proj(act(temb)) enters either as a per-channel shift before
    norm2 (``time_embedding_norm="default"``) or as N₂(h)·(1 + s) + b with (s, b) = split(t)
    (``"scale_shift"``). ``up`` / ``down`` resample both branches after the first activation
    (nearest / mean, or the FIR filter with ``kernel="fir"``). The shortcut is a 1×1 convolution
    when the channel count changes or ``use_in_shortcut`` asks for one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: Optional[int] = None,
        temb_channels: Optional[int] = 512,
        groups: int = 32,
        groups_out: Optional[int] = None,
        eps: float = 1e-6,
        dropout: float = 0.0,
        non_linearity: str = "swish",
        time_embedding_norm: str = "default",
        kernel: Optional[str] = None,
        output_scale_factor: float = 1.0,
        use_in_shortcut: Optional[bool] = None,
        up: bool = False,
        down: bool = False,
        dtype=ms.float32,
    ):
        super().__init__()
        check_choice("resnet_time_scale_shift", time_embedding_norm, TIME_SCALE_SHIFTS)
        out_channels = in_channels if out_channels is None else out_channels
        groups_out = groups if groups_out is None else groups_out
        self.time_embedding_norm = time_embedding_norm
        self.output_scale_factor = float(output_scale_factor)

        # act(norm(.)) pairs are one GroupNorm with act_fn, so the CPU kernel can fuse them; with
        # scale_shift the activation comes after the time modulation, outside norm2.
        self.norm1 = GroupNorm(groups, in_channels, eps, dtype=dtype, name="resnet norm1", act_fn=non_linearity)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1, dtype=dtype)
        self.has_temb = temb_channels is not None
        if self.has_temb:
            proj_channels = 2 * out_channels if time_embedding_norm == "scale_shift" else out_channels
            self.time_emb_proj = Linear(temb_channels, proj_channels, dtype=dtype)
        norm2_act = None if self.has_temb and time_embedding_norm == "scale_shift" else non_linearity
        self.norm2 = GroupNorm(groups_out, out_channels, eps, dtype=dtype, name="resnet norm2", act_fn=norm2_act)
        self.dropout = nn.Dropout(p=dropout)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, dtype=dtype)
        self.nonlinearity = get_activation(non_linearity)

        # "none" / "up" / "down" / "fir_up" / "fir_down": a Python constant the graph branches on.
        self.resample = "none"
        if up:
            self.resample = "fir_up" if kernel == "fir" else "up"
            if kernel == "fir":
                self.fir = FirUpsample2D(dtype=dtype)
        elif down:
            self.resample = "fir_down" if kernel == "fir" else "down"
            if kernel == "fir":
                self.fir = FirDownsample2D(dtype=dtype)

        self.use_in_shortcut = in_channels != out_channels if use_in_shortcut is None else bool(use_in_shortcut)
        if self.use_in_shortcut:
            self.conv_shortcut = Conv2d(in_channels, out_channels, 1, dtype=dtype)

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "up":
            return nearest_upsample_2x(x)
        if self.resample == "down":
            return avg_pool_2x(x)
        if self.resample == "none":
            return x
        return self.fir(x)

    def construct(self, input_tensor: Tensor, temb: Optional[Tensor] = None) -> Tensor:
        h = self.norm1(input_tensor)  # act(N₁ x)
        h = self._resample(h)
        x = self._resample(input_tensor)
        h = self.conv1(h)

        if self.has_temb:
            t = self.time_emb_proj(self.nonlinearity(temb))
            t = t.reshape(t.shape[0], t.shape[1], 1, 1)
            if self.time_embedding_norm == "scale_shift":
                scale, shift = ops.chunk(t, 2, axis=1)
                h = self.nonlinearity(self.norm2(h) * (1 + scale) + shift)
            else:
                h = self.norm2(h + t)  # act(N₂(h + t))
        else:
            h = self.norm2(h)  # act(N₂ h)

        h = self.conv2(self.dropout(h))
        if self.use_in_shortcut:
            x = self.conv_shortcut(x)
        out = x + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out
