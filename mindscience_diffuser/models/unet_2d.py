"""``UNet2DModel``: diffusers' unconditional / class-conditional image UNet in MindSpore."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..configuration import ConfigMixin, register_to_config
from ..outputs import UNet2DOutput
from ..utils import check_choice, check_compute_dtype, check_positive
from .blocks import (
    DOWN_BLOCKS,
    MID_BLOCK_TYPES,
    RESAMPLE_TYPES,
    UP_BLOCKS,
    UNetMidBlock2D,
    quarter_groups,
    strip_unetres,
)
from .conditioning import ConditionSpec
from .embeddings import GaussianFourierProjection, LearnedTimesteps, TimestepEmbedding, Timesteps, timestep_tensor
from .layers import ACTIVATIONS, Conv2d, Embedding, GroupNorm
from .resnet import TIME_SCALE_SHIFTS
from .weights import PretrainedWeightsMixin

TIME_EMBEDDING_TYPES = ("positional", "fourier", "learned")
CLASS_EMBED_TYPES = (None, "timestep", "identity", "projection")
SKIP_BLOCKS = ("SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D")


class UNet2DModel(PretrainedWeightsMixin, nn.Cell, ConfigMixin):
    r"""A 2D UNet ε/x₀/v-predictor: ``unet(sample, timestep, class_labels=None)`` -> a Tensor shaped
    like ``sample`` with ``out_channels`` channels.

    Takes every constructor option of diffusers' ``UNet2DModel`` under the same name and with the
    same math, so a diffusers ``config.json`` + ``diffusion_pytorch_model.safetensors`` pair loads
    with :meth:`from_pretrained` and reproduces diffusers' output.

    Forward pass, with C₀ = block_out_channels[0] and D = ``time_embedding_dim`` or 4·C₀:

    1. x ← 2x − 1 if ``center_input_sample``.
    2. temb = MLP(proj(t)) with proj sinusoidal (``positional``: [sin tω, cos tω]),
       ``fourier`` ([sin 2π log(t) w, cos 2π log(t) w], t a noise level σ) or ``learned``
       (a table row per integer t); plus a class embedding when ``num_class_embeds`` /
       ``class_embed_type`` is set.
    3. conv_in, the down levels (residual blocks, optional attention, downsampling), the
       mid block, the up levels (concatenating the stored down states), then
       conv_out(SiLU(GroupNorm(h))).
    4. NCSN++ layouts add the image-resolution skip path; ``fourier`` divides the output by t.

    ``compute_dtype`` (float32 or float16) is the dtype of the parameters and activations;
    group norms and softmax are computed in float32 regardless.

    Timesteps: a Python int/float, a 0-d Tensor or a (B,) Tensor. Unlike diffusers, a Python
    float is kept fractional (diffusers truncates it to an integer) so a noise level σ or a
    consistency-model timestep can be passed as a plain number.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        sample_size: Optional[Union[int, Sequence[int]]] = None,
        in_channels: int = 3,
        out_channels: int = 3,
        center_input_sample: bool = False,
        time_embedding_type: str = "positional",
        time_embedding_dim: Optional[int] = None,
        freq_shift: int = 0,
        flip_sin_to_cos: bool = True,
        down_block_types: Sequence[str] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        mid_block_type: Optional[str] = "UNetMidBlock2D",
        up_block_types: Sequence[str] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        block_out_channels: Sequence[int] = (224, 448, 672, 896),
        layers_per_block: int = 2,
        mid_block_scale_factor: float = 1,
        downsample_padding: int = 1,
        downsample_type: str = "conv",
        upsample_type: str = "conv",
        dropout: float = 0.0,
        act_fn: str = "silu",
        attention_head_dim: Optional[int] = 8,
        norm_num_groups: Optional[int] = 32,
        attn_norm_num_groups: Optional[int] = None,
        norm_eps: float = 1e-5,
        resnet_time_scale_shift: str = "default",
        add_attention: bool = True,
        class_embed_type: Optional[str] = None,
        num_class_embeds: Optional[int] = None,
        num_train_timesteps: Optional[int] = None,
        projection_class_embeddings_input_dim: Optional[int] = None,
        compute_dtype=ms.float32,
    ):
        super().__init__()
        dtype = check_compute_dtype(compute_dtype)
        self.compute_dtype = dtype

        down_block_types = [strip_unetres(t) for t in down_block_types]
        up_block_types = [strip_unetres(t) for t in up_block_types]
        block_out_channels = list(block_out_channels)
        self._validate(
            sample_size, down_block_types, up_block_types, block_out_channels, mid_block_type, layers_per_block,
            time_embedding_type, num_train_timesteps, class_embed_type, num_class_embeds, act_fn,
            resnet_time_scale_shift, downsample_type, upsample_type, in_channels, out_channels, downsample_padding,
            projection_class_embeddings_input_dim,
        )
        self.sample_size = sample_size
        self.center_input_sample = bool(center_input_sample)
        self.time_embedding_type = time_embedding_type
        c0 = block_out_channels[0]
        time_embed_dim = time_embedding_dim or c0 * 4
        self.time_embed_dim = time_embed_dim

        self.conv_in = Conv2d(in_channels, c0, 3, padding=1, dtype=dtype)

        if time_embedding_type == "fourier":
            self.time_proj = GaussianFourierProjection(embedding_size=c0, scale=16, dtype=dtype)
            timestep_input_dim = 2 * c0
        elif time_embedding_type == "positional":
            self.time_proj = Timesteps(c0, flip_sin_to_cos, freq_shift)
            timestep_input_dim = c0
        else:
            self.time_proj = LearnedTimesteps(num_train_timesteps, c0, dtype=dtype)
            timestep_input_dim = c0
        self.time_embedding = TimestepEmbedding(timestep_input_dim, time_embed_dim, dtype=dtype)

        # "embedding" / "timestep" / "identity" / "none": a constant the graph branches on.
        if class_embed_type is None and num_class_embeds is not None:
            self.class_mode = "embedding"
            self.class_embedding = Embedding(num_class_embeds, time_embed_dim, dtype=dtype)
        elif class_embed_type == "timestep":
            self.class_mode = "timestep"
            self.class_embedding = TimestepEmbedding(timestep_input_dim, time_embed_dim, dtype=dtype)
        elif class_embed_type == "identity":
            self.class_mode = "identity"
        elif class_embed_type == "projection":
            # UNet2DConditionModel's vector conditioning: the vector goes through the same two-layer
            # MLP as a timestep embedding, without the sinusoidal projection.
            self.class_mode = "projection"
            self.class_embedding = TimestepEmbedding(projection_class_embeddings_input_dim, time_embed_dim,
                                                     dtype=dtype)
        else:
            self.class_mode = "none"

        level = dict(
            resnet_eps=norm_eps,
            resnet_act_fn=act_fn,
            resnet_groups=norm_num_groups,
            resnet_time_scale_shift=resnet_time_scale_shift,
            dropout=dropout,
            dtype=dtype,
        )
        n_levels = len(block_out_channels)

        down_blocks = []
        out_ch = c0
        for i, block_type in enumerate(down_block_types):
            in_ch, out_ch = out_ch, block_out_channels[i]
            kwargs = dict(level, num_layers=layers_per_block, add_downsample=i < n_levels - 1)
            if block_type in ("DownBlock2D", "AttnDownBlock2D"):
                kwargs["downsample_padding"] = downsample_padding
            if block_type.startswith("Attn"):
                kwargs["attention_head_dim"] = attention_head_dim if attention_head_dim is not None else out_ch
            if block_type == "AttnDownBlock2D":
                kwargs["downsample_type"] = downsample_type
            down_blocks.append(DOWN_BLOCKS[block_type](in_ch, out_ch, time_embed_dim, **kwargs))
        self.down_blocks = nn.CellList(down_blocks)

        self.has_mid_block = mid_block_type is not None
        if self.has_mid_block:
            self.mid_block = UNetMidBlock2D(
                block_out_channels[-1],
                time_embed_dim,
                eps=norm_eps,
                act_fn=act_fn,
                dropout=dropout,
                time_scale_shift=resnet_time_scale_shift,
                resnet_groups=norm_num_groups,
                attn_groups=attn_norm_num_groups,
                attention_head_dim=attention_head_dim if attention_head_dim is not None else block_out_channels[-1],
                output_scale_factor=mid_block_scale_factor,
                add_attention=add_attention,
                dtype=dtype,
            )

        up_blocks = []
        reversed_channels = block_out_channels[::-1]
        out_ch = reversed_channels[0]
        skip_present = False
        for i, block_type in enumerate(up_block_types):
            prev_ch, out_ch = out_ch, reversed_channels[i]
            in_ch = reversed_channels[min(i + 1, n_levels - 1)]
            add_upsample = i < n_levels - 1
            kwargs = dict(level, num_layers=layers_per_block + 1, add_upsample=add_upsample)
            if block_type.startswith("Attn"):
                kwargs["attention_head_dim"] = attention_head_dim if attention_head_dim is not None else out_ch
            if block_type == "AttnUpBlock2D":
                kwargs["upsample_type"] = upsample_type
            if block_type in SKIP_BLOCKS:
                kwargs["receives_skip"] = skip_present
                skip_present = skip_present or add_upsample
            up_blocks.append(UP_BLOCKS[block_type](in_ch, prev_ch, out_ch, time_embed_dim, **kwargs))
        self.up_blocks = nn.CellList(up_blocks)
        self.has_skip_output = skip_present

        groups_out = norm_num_groups if norm_num_groups is not None else quarter_groups(c0)
        self.conv_norm_out = GroupNorm(groups_out, c0, norm_eps, dtype=dtype, name="conv_norm_out")
        self.conv_act = nn.SiLU()
        self.conv_out = Conv2d(c0, out_channels, 3, padding=1, dtype=dtype)

    @staticmethod
    def _validate(sample_size, down_block_types, up_block_types, block_out_channels, mid_block_type, layers_per_block,
                  time_embedding_type, num_train_timesteps, class_embed_type, num_class_embeds, act_fn,
                  resnet_time_scale_shift, downsample_type, upsample_type, in_channels, out_channels,
                  downsample_padding, projection_class_embeddings_input_dim=None):
        if sample_size is not None:
            ok = isinstance(sample_size, int) and not isinstance(sample_size, bool) and sample_size > 0
            if isinstance(sample_size, (list, tuple)):
                ok = len(sample_size) == 2 and all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                                   for s in sample_size)
            if not ok:
                raise ValueError(f"sample_size must be None, a positive int or (height, width), got {sample_size!r}")
        if "AttnDownEncoderBlock2D" in down_block_types:
            raise ValueError(
                "down_block_types: AttnDownEncoderBlock2D is a VAE-encoder block that returns no skip states, so "
                f"UNet2DModel cannot use it (diffusers' UNet2DModel fails on it too); use one of {list(DOWN_BLOCKS)}"
            )
        for t in down_block_types:
            check_choice("down_block_types entries", t, list(DOWN_BLOCKS))
        for t in up_block_types:
            check_choice("up_block_types entries", t, list(UP_BLOCKS))
        if len(down_block_types) != len(up_block_types):
            raise ValueError(
                f"down_block_types and up_block_types must have the same length, got {len(down_block_types)} and "
                f"{len(up_block_types)}"
            )
        if len(block_out_channels) != len(down_block_types):
            raise ValueError(
                f"block_out_channels must have one entry per down block ({len(down_block_types)}), got "
                f"{len(block_out_channels)}"
            )
        if not block_out_channels:
            raise ValueError("block_out_channels must not be empty")
        for c in block_out_channels:
            check_positive("block_out_channels entries", c, integer=True)
        check_positive("layers_per_block", layers_per_block, integer=True)
        check_positive("in_channels", in_channels, integer=True)
        check_positive("out_channels", out_channels, integer=True)
        check_positive("downsample_padding", downsample_padding, integer=True, allow_zero=True)
        check_choice("mid_block_type", mid_block_type, MID_BLOCK_TYPES)
        check_choice("time_embedding_type", time_embedding_type, TIME_EMBEDDING_TYPES)
        if time_embedding_type == "learned":
            check_positive("num_train_timesteps (required by time_embedding_type='learned')", num_train_timesteps,
                           integer=True)
        check_choice("class_embed_type", class_embed_type, CLASS_EMBED_TYPES)
        if num_class_embeds is not None:
            check_positive("num_class_embeds", num_class_embeds, integer=True)
        if class_embed_type == "projection":
            check_positive("projection_class_embeddings_input_dim (required by class_embed_type='projection')",
                           projection_class_embeddings_input_dim, integer=True)
        check_choice("act_fn", act_fn.lower() if isinstance(act_fn, str) else act_fn, ACTIVATIONS)
        check_choice("resnet_time_scale_shift", resnet_time_scale_shift, TIME_SCALE_SHIFTS)
        check_choice("downsample_type", downsample_type, RESAMPLE_TYPES)
        check_choice("upsample_type", upsample_type, RESAMPLE_TYPES)
        if any(t in SKIP_BLOCKS for t in down_block_types) and in_channels != 3:
            raise ValueError("Skip down blocks read a 3-channel image skip path, so in_channels must be 3, got "
                             f"{in_channels}")
        if any(t in SKIP_BLOCKS for t in up_block_types) and out_channels != 3:
            raise ValueError("Skip up blocks write a 3-channel image skip path, so out_channels must be 3, got "
                             f"{out_channels}")

    # ---- forward ---------------------------------------------------------------------

    def _timesteps(self, timestep, batch: int) -> Tensor:
        """Timesteps as a (batch,) Tensor: a scalar is repeated, a (B,) Tensor kept."""
        if isinstance(timestep, (int, float)):
            dtype = ms.int32 if self.time_embedding_type == "learned" else ms.float32
            return ops.fill(dtype, (batch,), timestep)
        return ops.broadcast_to(timestep.reshape(-1), (batch,))

    def construct(self, sample: Tensor, timestep, class_labels: Optional[Tensor] = None,
                  return_dict: Optional[bool] = None):
        """``sample`` (B, in_channels, H, W), ``timestep`` scalar / 0-d / (B,) -> (B, out_channels, H, W).

        ``return_dict=None``: the Tensor; ``False``: the 1-tuple ``(sample,)``; ``True``:
        :class:`UNet2DOutput` (outside a compiled graph; see ``__call__``).
        """
        sample = sample.astype(self.compute_dtype)
        if self.center_input_sample:
            sample = 2 * sample - 1.0
        timesteps = self._timesteps(timestep, sample.shape[0])

        emb = self.time_embedding(self.time_proj(timesteps).astype(self.compute_dtype))
        if self.class_mode != "none":
            if class_labels is None:
                raise ValueError("class_labels must be given: this UNet is class-conditional")
            if self.class_mode in ("embedding", "projection"):
                class_emb = self.class_embedding(class_labels.astype(self.compute_dtype)
                                                 if self.class_mode == "projection" else class_labels)
            elif self.class_mode == "timestep":
                class_emb = self.class_embedding(self.time_proj(class_labels).astype(self.compute_dtype))
            else:
                class_emb = class_labels
            emb = emb + class_emb.astype(self.compute_dtype)
        elif class_labels is not None:
            raise ValueError("class_labels given, but this UNet has no class embedding (set num_class_embeds or "
                             "class_embed_type)")

        skip_sample = sample
        sample = self.conv_in(sample)
        states = (sample,)
        for block in self.down_blocks:
            sample, res, skip_sample = block(sample, emb, skip_sample)
            states += res

        if self.has_mid_block:
            sample = self.mid_block(sample, emb)

        skip_sample = None
        for block in self.up_blocks:
            n = len(block.resnets)
            res = states[-n:]
            states = states[:-n]
            sample, skip_sample = block(sample, res, emb, skip_sample)

        sample = self.conv_out(self.conv_act(self.conv_norm_out(sample)))
        if self.has_skip_output:
            sample = sample + skip_sample
        if self.time_embedding_type == "fourier":
            sample = sample / timesteps.astype(sample.dtype).reshape(-1, 1, 1, 1)

        if return_dict is None:
            return sample
        if return_dict:
            return UNet2DOutput(sample=sample)
        return (sample,)

    def __call__(self, sample, timestep, class_labels=None, return_dict=None):
        # A Python or numpy scalar becomes a Tensor here, before compilation: a compiled graph
        # would otherwise bake it in as a constant and recompile for every new timestep. The
        # output dataclass is built outside the graph too.
        self._check_sample(sample)
        timestep = self._timestep_tensor(timestep, sample.shape[0])
        if isinstance(class_labels, np.ndarray):
            class_labels = Tensor(class_labels.astype(np.float32) if self.class_mode == "projection" else class_labels)
        out = super().__call__(sample, timestep, class_labels)
        if return_dict is None:
            return out
        if return_dict:
            return UNet2DOutput(sample=out)
        return (out,)

    def _config_with_metadata(self):
        data = super()._config_with_metadata()
        # diffusers' UNet2DModel has no vector projection: its size is written only when used,
        # so a plain UNet's config.json stays diffusers' own.
        if data.get("projection_class_embeddings_input_dim") is None:
            data.pop("projection_class_embeddings_input_dim", None)
        return data

    def condition_spec(self) -> ConditionSpec:
        """What this UNet is conditioned on (see :mod:`.conditioning`): integer labels
        (``num_class_embeds``), float labels (``class_embed_type="timestep"``), a vector
        (``"identity"``: time_embed_dim; ``"projection"``: ``projection_class_embeddings_input_dim``),
        and a field concatenated to the sample when ``in_channels`` exceeds ``out_channels``
        (the sample has ``out_channels`` channels, the field the rest: diffusers' super-resolution
        UNets take the low-resolution image this way)."""
        mode, config = self.class_mode, self.config
        field = config["in_channels"] - config["out_channels"]
        return ConditionSpec(
            num_classes=config["num_class_embeds"] if mode == "embedding" else None,
            float_labels=mode == "timestep",
            vector={"identity": self.time_embed_dim,
                    "projection": config.get("projection_class_embeddings_input_dim")}.get(mode),
            field=field if field > 0 else None,
        )

    @property
    def sample_channels(self) -> int:
        """Channels of the samples this UNet denoises: ``in_channels`` less any field-condition channels."""
        return min(self.config["in_channels"], self.config["out_channels"])

    def sample_shape(self, batch_size: int) -> Tuple[int, ...]:
        """(batch_size, sample channels, H, W) from ``sample_size``: the noise a sampler starts from."""
        size = self.config["sample_size"]
        if size is None:
            raise ValueError(f"the UNet config has no sample_size: pass latents of shape (batch_size, "
                             f"{self.sample_channels}, H, W) or sample_shape=({self.sample_channels}, H, W)")
        hw = (size, size) if isinstance(size, int) else tuple(size)
        return (batch_size, self.sample_channels) + hw

    @property
    def spatial_multiple(self) -> int:
        """What H and W must be multiples of: 2 to the number of down blocks that halve the size."""
        return 2 ** (len(self.config["down_block_types"]) - 1)

    def _check_sample(self, sample) -> None:
        """Shape checks on the host, so a wrong input is named before a kernel fails on it."""
        channels = self.config["in_channels"]
        expected = f"(batch, {channels}, H, W) with H and W multiples of {self.spatial_multiple}"
        if not isinstance(sample, Tensor):
            hint = ": wrap it with mindspore.Tensor(...)" if isinstance(sample, np.ndarray) else ""
            raise TypeError(f"sample must be a mindspore Tensor {expected}, got {type(sample).__name__}{hint}")
        shape = tuple(sample.shape)
        if len(shape) != 4 or shape[1] != channels:
            raise ValueError(f"sample must have shape {expected}, got {shape}")
        if any(size % self.spatial_multiple for size in shape[2:]):
            raise ValueError(f"sample must have shape {expected}: the down path halves H and W "
                             f"{len(self.config['down_block_types']) - 1} times and the up path must meet its skip "
                             f"connections; got {shape}")

    def _timestep_tensor(self, timestep, batch: int) -> Tensor:
        """``timestep`` as a Tensor (:func:`timestep_tensor`) of shape (), (1,) or (batch,)."""
        timestep = timestep_tensor(timestep, ms.int32 if self.time_embedding_type == "learned" else ms.float32)
        if timestep.ndim > 1 or (timestep.ndim == 1 and timestep.shape[0] not in (1, batch)):
            raise ValueError(f"timestep must be a scalar or have shape (1,) or ({batch},) for a batch of {batch}, "
                             f"got shape {tuple(timestep.shape)}")
        return timestep
