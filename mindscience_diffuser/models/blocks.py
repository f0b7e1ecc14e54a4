"""UNet levels: the down, mid and up blocks of diffusers' ``UNet2DModel``.

Every down (up) block type is one configuration of :class:`DownBlock` (:class:`UpBlock`):
``layers`` residual blocks, optionally each followed by spatial attention, then a resampler
("conv": strided / nearest+conv, "resnet": a residual block with ``down``/``up``, "fir_skip":
the NCSN++ FIR residual block plus the image-resolution skip path, or none). The diffusers
names (``DownBlock2D``, ``AttnSkipUpBlock2D``, ...) are thin subclasses fixing that
configuration, and their attribute names (``resnets``, ``attentions``, ``downsamplers``,
``resnet_down``, ``skip_conv``, ``upsamplers``, ``resnet_up``, ``skip_norm``) give the
diffusers state-dict keys.

Down blocks return ``(hidden, res_states, skip_sample)`` and up blocks ``(hidden, skip_sample)``;
blocks without a skip path pass ``skip_sample`` through untouched, so the UNet calls every
block the same way.
"""
from __future__ import annotations

import math
from typing import Optional

import mindspore as ms
from mindspore import Tensor, nn, ops

from .attention import SpatialSelfAttention
from .layers import Conv2d, GroupNorm
from .resampling import Downsample2D, FirDownsample2D, FirUpsample2D, Upsample2D
from .resnet import ResnetBlock2D

DOWN_BLOCK_TYPES = (
    "DownBlock2D",
    "AttnDownBlock2D",
    "SkipDownBlock2D",
    "AttnSkipDownBlock2D",
    "ResnetDownsampleBlock2D",
)
UP_BLOCK_TYPES = (
    "UpBlock2D",
    "AttnUpBlock2D",
    "SkipUpBlock2D",
    "AttnSkipUpBlock2D",
    "ResnetUpsampleBlock2D",
)
MID_BLOCK_TYPES = ("UNetMidBlock2D", None)
RESAMPLE_TYPES = ("conv", "resnet")

#: NCSN++ blocks divide each residual sum by sqrt(2) to keep the variance constant.
SKIP_SCALE = math.sqrt(2.0)


def quarter_groups(channels: int) -> int:
    """Group count of the NCSN++ blocks and of ``norm_num_groups=None``: min(C // 4, 32)."""
    return min(channels // 4, 32)


def _resnet_options(temb_channels, eps, dropout, act_fn, time_scale_shift, output_scale, dtype) -> dict:
    """The ResnetBlock2D keywords every resnet of a down, mid or up block shares."""
    return dict(
        temb_channels=temb_channels,
        eps=eps,
        dropout=dropout,
        non_linearity=act_fn,
        time_embedding_norm=time_scale_shift,
        output_scale_factor=output_scale,
        dtype=dtype,
    )


def _block_attention(channels, head_dim, skip_style, groups, eps, output_scale, dtype) -> "SpatialSelfAttention":
    """A block's self-attention: one head of all channels unless ``head_dim`` is set; NCSN++
    skip blocks normalise with 32 groups whatever the block's own group count."""
    return SpatialSelfAttention(
        channels,
        head_dim if head_dim is not None else channels,
        norm_num_groups=32 if skip_style else groups,
        eps=eps,
        rescale_output_factor=output_scale,
        dtype=dtype,
    )


class DownBlock(nn.Cell):
    """One encoder level: ``layers`` × [ResnetBlock2D (→ attention)], then ``downsample``.

    ``skip_style`` selects the NCSN++ variant: per-resnet groups min(C//4, 32), attention
    groups 32, output scale sqrt(2), and (``downsample="fir_skip"``) a FIR residual
    downsampling block with the image-resolution skip: skip ← FIR↓(skip),
    h ← resnet_down(h) + skip_conv(skip).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: Optional[int],
        num_layers: int,
        *,
        eps: float,
        act_fn: str,
        dropout: float,
        time_scale_shift: str,
        groups: Optional[int],
        attention: bool = False,
        attention_head_dim: Optional[int] = None,
        downsample: Optional[str] = None,
        downsample_padding: int = 1,
        skip_style: bool = False,
        skip_channels: int = 3,
        dtype=ms.float32,
    ):
        super().__init__()
        scale = SKIP_SCALE if skip_style else 1.0
        common = _resnet_options(temb_channels, eps, dropout, act_fn, time_scale_shift, scale, dtype)
        resnets, attentions = [], []
        for i in range(num_layers):
            c_in = in_channels if i == 0 else out_channels
            if skip_style:
                g, g_out = quarter_groups(c_in), quarter_groups(out_channels)
            else:
                g, g_out = groups, groups
            resnets.append(ResnetBlock2D(c_in, out_channels, groups=g, groups_out=g_out, **common))
            if attention:
                attentions.append(_block_attention(out_channels, attention_head_dim, skip_style, groups, eps, scale,
                                                   dtype))
        self.resnets = nn.CellList(resnets)
        self.has_attention = attention
        if attention:
            self.attentions = nn.CellList(attentions)

        self.downsample = downsample
        if downsample == "conv":
            self.downsamplers = nn.CellList(
                [Downsample2D(out_channels, use_conv=True, out_channels=out_channels, padding=downsample_padding,
                              dtype=dtype)]
            )
        elif downsample == "resnet":
            self.downsamplers = nn.CellList(
                [ResnetBlock2D(out_channels, out_channels, groups=groups, down=True, **common)]
            )
        elif downsample == "fir_skip":
            self.resnet_down = ResnetBlock2D(
                out_channels,
                out_channels,
                groups=quarter_groups(out_channels),
                use_in_shortcut=True,
                down=True,
                kernel="fir",
                **common,
            )
            self.fir_down = FirDownsample2D(dtype=dtype)
            self.skip_conv = Conv2d(skip_channels, out_channels, 1, dtype=dtype)
        elif downsample is not None:
            raise ValueError(f"downsample must be one of [None, 'conv', 'resnet', 'fir_skip'], got {downsample!r}")

    def construct(self, hidden: Tensor, temb: Optional[Tensor] = None, skip_sample: Optional[Tensor] = None):
        states = ()
        for i in range(len(self.resnets)):
            hidden = self.resnets[i](hidden, temb)
            if self.has_attention:
                hidden = self.attentions[i](hidden)
            states += (hidden,)

        if self.downsample == "conv":
            hidden = self.downsamplers[0](hidden)
        elif self.downsample == "resnet":
            hidden = self.downsamplers[0](hidden, temb)
        elif self.downsample == "fir_skip":
            hidden = self.resnet_down(hidden, temb)
            skip_sample = self.fir_down(skip_sample)
            hidden = self.skip_conv(skip_sample) + hidden
        if self.downsample is not None:
            states += (hidden,)
        return hidden, states, skip_sample


class UpBlock(nn.Cell):
    """One decoder level: ``layers`` × [concat(h, skip state) → ResnetBlock2D (→ attention)],
    then ``upsample``.

    The last resnet receives the state of the level below (``in_channels``), the others the
    states of this level (``out_channels``); the first takes ``prev_output_channel`` from the
    level below. ``attention="once"`` (NCSN++) attends once after all resnets instead of after
    each. With ``upsample="fir_skip"`` the image-resolution skip is updated as
    skip ← FIR↑(skip) + skip_conv(SiLU(skip_norm(h))) before h ← resnet_up(h).
    """

    def __init__(
        self,
        in_channels: int,
        prev_output_channel: int,
        out_channels: int,
        temb_channels: int,
        num_layers: int,
        *,
        eps: float,
        act_fn: str,
        dropout: float,
        time_scale_shift: str,
        groups: Optional[int],
        attention: Optional[str] = None,
        attention_head_dim: Optional[int] = None,
        upsample: Optional[str] = None,
        skip_style: bool = False,
        skip_groups_quirk: bool = False,
        skip_channels: int = 3,
        receives_skip: bool = False,
        dtype=ms.float32,
    ):
        super().__init__()
        scale = SKIP_SCALE if skip_style else 1.0
        common = _resnet_options(temb_channels, eps, dropout, act_fn, time_scale_shift, scale, dtype)

        def make_attention():
            return _block_attention(out_channels, attention_head_dim, skip_style, groups, eps, scale, dtype)

        resnets = []
        for i in range(num_layers):
            res_channels = in_channels if i == num_layers - 1 else out_channels
            c_in = prev_output_channel if i == 0 else out_channels
            if skip_style:
                # diffusers' AttnSkipUpBlock2D computes min(c_in + res // 4, 32) (operator
                # precedence); the checkpoints were trained with it, so it is reproduced.
                g = min(c_in + res_channels // 4, 32) if skip_groups_quirk else quarter_groups(c_in + res_channels)
                g_out = quarter_groups(out_channels)
            else:
                g, g_out = groups, groups
            resnets.append(ResnetBlock2D(c_in + res_channels, out_channels, groups=g, groups_out=g_out, **common))
        self.resnets = nn.CellList(resnets)

        if attention not in (None, "each", "once"):
            raise ValueError(f"attention must be one of [None, 'each', 'once'], got {attention!r}")
        self.attention = attention
        if attention == "each":
            self.attentions = nn.CellList([make_attention() for _ in range(num_layers)])
        elif attention == "once":
            self.attentions = nn.CellList([make_attention()])

        self.upsample = upsample
        self.receives_skip = bool(receives_skip)
        if upsample == "conv":
            self.upsamplers = nn.CellList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels,
                                                      dtype=dtype)])
        elif upsample == "resnet":
            self.upsamplers = nn.CellList([ResnetBlock2D(out_channels, out_channels, groups=groups, up=True,
                                                         **common)])
        elif upsample == "fir_skip":
            q = quarter_groups(out_channels)
            self.resnet_up = ResnetBlock2D(
                out_channels, out_channels, groups=q, groups_out=q, use_in_shortcut=True, up=True, kernel="fir",
                **common
            )
            self.skip_conv = Conv2d(out_channels, skip_channels, 3, padding=1, dtype=dtype)
            self.skip_norm = GroupNorm(q, out_channels, eps, dtype=dtype, name="skip_norm", act_fn="silu")
        elif upsample is not None:
            raise ValueError(f"upsample must be one of [None, 'conv', 'resnet', 'fir_skip'], got {upsample!r}")
        if skip_style:
            self.fir_up = FirUpsample2D(dtype=dtype)
        self.skip_style = skip_style

    def construct(self, hidden: Tensor, res_states: tuple, temb: Optional[Tensor] = None,
                  skip_sample: Optional[Tensor] = None):
        n = len(self.resnets)
        for i in range(n):
            hidden = ops.cat((hidden, res_states[n - 1 - i]), axis=1)
            hidden = self.resnets[i](hidden, temb)
            if self.attention == "each":
                hidden = self.attentions[i](hidden)
        if self.attention == "once":
            hidden = self.attentions[0](hidden)

        if self.skip_style:
            # The skip image arrives from the level below (None at the first skip level).
            if self.receives_skip:
                skip_sample = self.fir_up(skip_sample)
            if self.upsample == "fir_skip":
                states = self.skip_conv(self.skip_norm(hidden))  # SiLU fused into skip_norm
                skip_sample = skip_sample + states if self.receives_skip else states
                hidden = self.resnet_up(hidden, temb)
        elif self.upsample == "conv":
            hidden = self.upsamplers[0](hidden)
        elif self.upsample == "resnet":
            hidden = self.upsamplers[0](hidden, temb)
        return hidden, skip_sample


class UNetMidBlock2D(nn.Cell):
    """The bottleneck: resnet → [attention → resnet] (attention omitted without ``add_attention``).

    ``attn_groups=None`` gives the attention a group norm of ``resnet_groups`` groups with the
    "default" time shift and no norm with "scale_shift", as diffusers decides.
    """

    def __init__(
        self,
        in_channels: int,
        temb_channels: int,
        *,
        eps: float,
        act_fn: str,
        dropout: float,
        time_scale_shift: str,
        resnet_groups: Optional[int],
        attn_groups: Optional[int],
        attention_head_dim: Optional[int],
        output_scale_factor: float,
        add_attention: bool = True,
        dtype=ms.float32,
    ):
        super().__init__()
        resnet_groups = resnet_groups if resnet_groups is not None else quarter_groups(in_channels)
        if attn_groups is None:
            attn_groups = resnet_groups if time_scale_shift == "default" else None
        common = _resnet_options(temb_channels, eps, dropout, act_fn, time_scale_shift, output_scale_factor, dtype)
        self.resnets = nn.CellList([ResnetBlock2D(in_channels, in_channels, groups=resnet_groups, **common)
                                    for _ in range(2)])
        self.add_attention = bool(add_attention)
        if self.add_attention:
            self.attentions = nn.CellList(
                [
                    SpatialSelfAttention(
                        in_channels,
                        attention_head_dim if attention_head_dim is not None else in_channels,
                        norm_num_groups=attn_groups,
                        eps=eps,
                        rescale_output_factor=output_scale_factor,
                        dtype=dtype,
                    )
                ]
            )

    def construct(self, hidden: Tensor, temb: Optional[Tensor] = None) -> Tensor:
        hidden = self.resnets[0](hidden, temb)
        if self.add_attention:
            hidden = self.attentions[0](hidden)
        return self.resnets[1](hidden, temb)


# ---- diffusers' block names -------------------------------------------------------------


def _level_kwargs(kw):
    """Map diffusers' block keyword names onto :class:`DownBlock` / :class:`UpBlock`'s."""
    return dict(
        eps=kw.get("resnet_eps", 1e-6),
        act_fn=kw.get("resnet_act_fn", "swish"),
        dropout=kw.get("dropout", 0.0),
        time_scale_shift=kw.get("resnet_time_scale_shift", "default"),
        groups=kw.get("resnet_groups", 32),
        dtype=kw.get("dtype", ms.float32),
    )


class DownBlock2D(DownBlock):
    """Resnets, then a strided-conv downsampler (``add_downsample``)."""

    def __init__(self, in_channels, out_channels, temb_channels, num_layers=1, add_downsample=True,
                 downsample_padding=1, **kw):
        super().__init__(in_channels, out_channels, temb_channels, num_layers,
                         downsample="conv" if add_downsample else None,
                         downsample_padding=downsample_padding, **_level_kwargs(kw))


class AttnDownBlock2D(DownBlock):
    """Resnet → attention pairs, then a "conv" or "resnet" downsampler (``downsample_type``)."""

    def __init__(self, in_channels, out_channels, temb_channels, num_layers=1, add_downsample=True,
                 downsample_padding=1, attention_head_dim=None, downsample_type="conv", **kw):
        super().__init__(in_channels, out_channels, temb_channels, num_layers, attention=True,
                         attention_head_dim=attention_head_dim,
                         downsample=(downsample_type or "conv") if add_downsample else None,
                         downsample_padding=downsample_padding, **_level_kwargs(kw))


class ResnetDownsampleBlock2D(DownBlock):
    """Resnets, then a residual block with average-pool downsampling."""

    def __init__(self, in_channels, out_channels, temb_channels, num_layers=1, add_downsample=True, **kw):
        super().__init__(in_channels, out_channels, temb_channels, num_layers,
                         downsample="resnet" if add_downsample else None, **_level_kwargs(kw))


class SkipDownBlock2D(DownBlock):
    """NCSN++ resnets, then the FIR residual downsampler and the image skip path."""

    def __init__(self, in_channels, out_channels, temb_channels, num_layers=1, add_downsample=True, **kw):
        super().__init__(in_channels, out_channels, temb_channels, num_layers,
                         downsample="fir_skip" if add_downsample else None, skip_style=True, **_level_kwargs(kw))


class AttnSkipDownBlock2D(DownBlock):
    """NCSN++ resnet → attention pairs, then the FIR residual downsampler and the image skip path."""

    def __init__(self, in_channels, out_channels, temb_channels, num_layers=1, add_downsample=True,
                 attention_head_dim=None, **kw):
        super().__init__(in_channels, out_channels, temb_channels, num_layers, attention=True,
                         attention_head_dim=attention_head_dim,
                         downsample="fir_skip" if add_downsample else None, skip_style=True, **_level_kwargs(kw))


class AttnDownEncoderBlock2D(DownBlock):
    """A VAE-encoder level: time-free resnet → attention pairs, then a strided conv.

    Unlike the UNet levels it returns only the hidden state (diffusers' contract), so
    ``UNet2DModel`` does not accept it as a down block.
    """

    def __init__(self, in_channels, out_channels, num_layers=1, add_downsample=True, downsample_padding=1,
                 attention_head_dim=None, **kw):
        super().__init__(in_channels, out_channels, None, num_layers, attention=True,
                         attention_head_dim=attention_head_dim,
                         downsample="conv" if add_downsample else None, downsample_padding=downsample_padding,
                         **_level_kwargs(kw))

    def construct(self, hidden: Tensor, temb: Optional[Tensor] = None, skip_sample: Optional[Tensor] = None) -> Tensor:
        return super().construct(hidden, None, None)[0]


class UpBlock2D(UpBlock):
    """Concat-resnets, then nearest ×2 + conv (``add_upsample``)."""

    def __init__(self, in_channels, prev_output_channel, out_channels, temb_channels, num_layers=1, add_upsample=True,
                 **kw):
        super().__init__(in_channels, prev_output_channel, out_channels, temb_channels, num_layers,
                         upsample="conv" if add_upsample else None, **_level_kwargs(kw))


class AttnUpBlock2D(UpBlock):
    """Concat-resnet → attention pairs, then a "conv" or "resnet" upsampler (``upsample_type``)."""

    def __init__(self, in_channels, prev_output_channel, out_channels, temb_channels, num_layers=1, add_upsample=True,
                 attention_head_dim=None, upsample_type="conv", **kw):
        super().__init__(in_channels, prev_output_channel, out_channels, temb_channels, num_layers, attention="each",
                         attention_head_dim=attention_head_dim,
                         upsample=(upsample_type or "conv") if add_upsample else None, **_level_kwargs(kw))


class ResnetUpsampleBlock2D(UpBlock):
    """Concat-resnets, then a residual block with nearest ×2 upsampling."""

    def __init__(self, in_channels, prev_output_channel, out_channels, temb_channels, num_layers=1, add_upsample=True,
                 **kw):
        super().__init__(in_channels, prev_output_channel, out_channels, temb_channels, num_layers,
                         upsample="resnet" if add_upsample else None, **_level_kwargs(kw))


class SkipUpBlock2D(UpBlock):
    """NCSN++ concat-resnets, then the image-skip update and the FIR residual upsampler."""

    def __init__(self, in_channels, prev_output_channel, out_channels, temb_channels, num_layers=1, add_upsample=True,
                 receives_skip=False, **kw):
        super().__init__(in_channels, prev_output_channel, out_channels, temb_channels, num_layers,
                         upsample="fir_skip" if add_upsample else None, skip_style=True, receives_skip=receives_skip,
                         **_level_kwargs(kw))


class AttnSkipUpBlock2D(UpBlock):
    """NCSN++ concat-resnets, one attention, then the image-skip update and the FIR residual upsampler."""

    def __init__(self, in_channels, prev_output_channel, out_channels, temb_channels, num_layers=1, add_upsample=True,
                 attention_head_dim=None, receives_skip=False, **kw):
        super().__init__(in_channels, prev_output_channel, out_channels, temb_channels, num_layers, attention="once",
                         attention_head_dim=attention_head_dim, upsample="fir_skip" if add_upsample else None,
                         skip_style=True, skip_groups_quirk=True, receives_skip=receives_skip, **_level_kwargs(kw))


DOWN_BLOCKS = {cls.__name__: cls
               for cls in (DownBlock2D, AttnDownBlock2D, SkipDownBlock2D, AttnSkipDownBlock2D,
                           ResnetDownsampleBlock2D)}
UP_BLOCKS = {cls.__name__: cls
             for cls in (UpBlock2D, AttnUpBlock2D, SkipUpBlock2D, AttnSkipUpBlock2D, ResnetUpsampleBlock2D)}


def strip_unetres(block_type):
    """diffusers accepts a ``UNetRes`` prefix on block names (``UNetResDownBlock2D``)."""
    if isinstance(block_type, str) and block_type.startswith("UNetRes"):
        return block_type[len("UNetRes"):]
    return block_type
