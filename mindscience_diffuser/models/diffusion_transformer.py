"""Sequence denoisers with a transformer backbone: MindScience's ``DiffusionTransformer`` and
``ConditionDiffusionTransformer`` (``mindflow.cell``), ported with the same constructor, the same
parameter names and shapes, and the same math, so a MindScience checkpoint loads strictly and gives
the same output.

Parameter names (L = layer index):
``time_embed.fc1/fc2``, ``ln_pre``, ``backbone.blocks.L.{attention_norm, attention.qkv,
attention.proj, ffn_norm, ffn.fc1, ffn.fc2}``, ``ln_post``, ``input_proj``, ``output_proj`` and,
conditional only, ``cond_embed``; layer norms hold ``gamma``/``beta``, linear layers
``weight`` (out, in) / ``bias``.
"""
from __future__ import annotations

import math
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import initializer

from ..configuration import ConfigMixin, register_to_config
from ..utils import check_compute_dtype, check_positive
from .conditioning import ConditionSpec
from .embeddings import timestep_tensor
from .weights import PretrainedWeightsMixin


class SinusoidalTimestepEmbedding(nn.Cell):
    """e(t) = [cos(t ω₀), …, cos(t ω_{h−1}), sin(t ω₀), …, sin(t ω_{h−1})] with h = dim // 2 and
    ω_i = max_period^(−i/h); a zero column is appended when ``dim`` is odd. (B,) -> (B, dim),
    always computed in float32 (t·ω reaches ~1000 rad, which float16 cannot resolve)."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        half = dim // 2
        self.pad_zero = dim % 2 == 1
        self.freqs = Tensor(np.exp(-math.log(max_period) * np.arange(half) / half).astype(np.float32))

    def construct(self, t: Tensor) -> Tensor:
        angles = t.astype(ms.float32).reshape(-1, 1) * self.freqs.reshape(1, -1)
        emb = ops.concat((ops.cos(angles), ops.sin(angles)), axis=-1)
        if self.pad_zero:
            emb = ops.concat((emb, ops.zeros_like(emb[:, :1])), axis=-1)
        return emb


class LayerNorm(nn.Cell):
    """y = (x − mean) / sqrt(var + eps) · gamma + beta over the last axis, computed and returned in
    float32 whatever the parameters' dtype (MindScience runs its layer norms in float32 too)."""

    def __init__(self, dim: int, eps: float, dtype=ms.float32):
        super().__init__()
        self.eps = float(eps)
        self.gamma = Parameter(initializer("ones", (dim,), dtype), name="gamma")
        self.beta = Parameter(initializer("zeros", (dim,), dtype), name="beta")
        self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=self.eps)

    def construct(self, x: Tensor) -> Tensor:
        y, _, _ = self.norm(x.astype(ms.float32), self.gamma.astype(ms.float32), self.beta.astype(ms.float32))
        return y


class FeedForward(nn.Cell):
    """fc2(GELU(fc1(x))) with a 4× wider hidden layer; GELU is the tanh approximation
    0.5·x·(1 + tanh(sqrt(2/π)(x + 0.044715x³))), as MindSpore's ``nn.GELU()`` default."""

    def __init__(self, in_channels: int, out_channels: int, dtype=ms.float32, weight_init=None):
        super().__init__()
        kw = {} if weight_init is None else {"weight_init": weight_init}
        self.dtype = dtype
        self.fc1 = nn.Dense(in_channels, 4 * in_channels, dtype=dtype, **kw)
        self.fc2 = nn.Dense(4 * in_channels, out_channels, dtype=dtype, **kw)
        self.act = nn.GELU(approximate=True)

    def construct(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x.astype(self.dtype))))


class SelfAttention(nn.Cell):
    """Multi-head self-attention over the L positions of (B, L, C):
    [Q, K, V] = qkv(x) split into ``heads`` heads of width d = C / heads,
    out = proj(concat_h softmax(Q_h K_hᵀ / sqrt(d)) V_h), softmax in float32."""

    def __init__(self, channels: int, heads: int, dtype=ms.float32):
        super().__init__()
        self.heads = heads
        self.dtype = dtype
        self.scale = (channels // heads) ** -0.5
        self.qkv = nn.Dense(channels, 3 * channels, weight_init="XavierUniform", dtype=dtype)
        self.proj = nn.Dense(channels, channels, weight_init="XavierUniform", dtype=dtype)
        self.matmul = ops.BatchMatMul()
        self.matmul_t = ops.BatchMatMul(transpose_b=True)

    def construct(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x.astype(self.dtype)).reshape(b, n, 3, self.heads, -1).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = self.matmul_t(q, k) * self.scale
        probs = ops.softmax(scores.astype(ms.float32), axis=-1).astype(self.dtype)
        out = self.matmul(probs, v).transpose(0, 2, 1, 3).reshape(b, n, -1)
        return self.proj(out)


class TransformerBlock(nn.Cell):
    """MindScience's ``AttentionBlock``, residuals as MindScience writes them:

        y = x + A(N₁ x),   out = x + F(N₂ y)

    (both residuals add the block *input* x, so the attention output reaches the stream only
    through the feed-forward branch; reproduced for checkpoint parity). N₁, N₂ are float32 layer
    norms (eps 1e-6), A :class:`SelfAttention`, F :class:`FeedForward`; the stream stays float32.
    """

    def __init__(self, channels: int, heads: int, dtype=ms.float32):
        super().__init__()
        self.attention_norm = LayerNorm(channels, 1e-6, dtype)
        self.ffn_norm = LayerNorm(channels, 1e-6, dtype)
        self.ffn = FeedForward(channels, channels, dtype, weight_init="XavierUniform")
        self.attention = SelfAttention(channels, heads, dtype)

    def construct(self, x: Tensor) -> Tensor:
        y = x + self.attention(self.attention_norm(x)).astype(ms.float32)
        return x + self.ffn(self.ffn_norm(y)).astype(ms.float32)


class TransformerBackbone(nn.Cell):
    """``layers`` :class:`TransformerBlock` in sequence (``blocks.0`` … ``blocks.{layers-1}``)."""

    def __init__(self, channels: int, layers: int, heads: int, dtype=ms.float32):
        super().__init__()
        self.blocks = nn.CellList([TransformerBlock(channels, heads, dtype) for _ in range(layers)])

    def construct(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _check_config(in_channels, out_channels, hidden_channels, layers, heads, sample_size):
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("hidden_channels", hidden_channels), ("layers", layers), ("heads", heads)):
        check_positive(name, value, integer=True)
    if hidden_channels % heads:
        raise ValueError(f"hidden_channels ({hidden_channels}) must be divisible by heads ({heads})")
    if sample_size is not None:
        check_positive("sample_size", sample_size, integer=True)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


class DiffusionTransformer(PretrainedWeightsMixin, nn.Cell, ConfigMixin):
    r"""A transformer ε/x₀/v-predictor for sequences: ``model(x, timestep)`` with x of shape
    (B, L, ``in_channels``) -> (B, L, ``out_channels``). MindScience's ``mindflow.cell.DiffusionTransformer``.

    With H = ``hidden_channels`` and e(t) the sinusoidal embedding of the integer DDPM timestep t
    (:class:`SinusoidalTimestepEmbedding`, [cos, sin] halves):

    1. τ = time_embed(e(t)) (a 4H-wide GELU MLP), h = input_proj(x) of shape (B, L, H);
    2. ``time_token_cond=True``: τ is prepended as an extra token, h ← [τ; h] (B, L+1, H);
       ``False``: it is added to every position, h ← h + τ;
    3. h ← ln_post(backbone(ln_pre(h))) (``layers`` :class:`TransformerBlock`, ``heads`` heads),
       the extra token is dropped, output = output_proj(h).

    ``compute_dtype`` is the dtype of the parameters and of the linear layers; layer norms, the
    softmax, the residual stream and the timestep embedding are float32; the output is
    ``compute_dtype``. ``output_proj`` starts at zero, as in MindScience.

    Inputs: ``x`` (B, L, in_channels); ``timestep``: a Python int/float, a 0-d or (1,) Tensor
    (broadcast over the batch) or a (B,) Tensor, integer or float (MindScience's trainer's (B, 1) is
    accepted too).

    Args:
        in_channels: channels C of the input sequence (B, L, C).
        out_channels: channels of the output sequence.
        hidden_channels: width H of the transformer; must be divisible by ``heads``.
        layers: number of transformer blocks.
        heads: number of attention heads.
        time_token_cond: feed the time embedding as an extra token (True) or add it to every position (False).
        compute_dtype: ``mindspore.float32`` or ``mindspore.float16``.
        sample_size: keyword-only, sequence length L the model was trained on (this package's extension, so a
            pipeline knows the sample shape); ``None`` leaves it unrecorded.

    Example:
        >>> import numpy as np, mindspore as ms
        >>> from mindscience_diffuser import DiffusionTransformer
        >>> net = DiffusionTransformer(in_channels=4, out_channels=4, hidden_channels=16, layers=1, heads=2)
        >>> x = ms.Tensor(np.zeros((2, 8, 4), np.float32))
        >>> net(x, ms.Tensor([10, 500], ms.int32)).shape
        (2, 8, 4)
    """

    config_name = "config.json"
    _library_name = "mindscience_diffuser"
    conditional = False

    @register_to_config
    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, layers: int, heads: int,
                 time_token_cond: bool = True, compute_dtype=ms.float32, *, sample_size: Optional[int] = None):
        super().__init__()
        self._build(in_channels, out_channels, hidden_channels, layers, heads, time_token_cond, compute_dtype,
                    sample_size)

    def _build(self, in_channels, out_channels, hidden_channels, layers, heads, time_token_cond, compute_dtype,
               sample_size):
        dtype = check_compute_dtype(compute_dtype)
        _check_config(in_channels, out_channels, hidden_channels, layers, heads, sample_size)
        _check_bool("time_token_cond", time_token_cond)
        self.compute_dtype = dtype
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.sample_size = sample_size
        self.time_token_cond = bool(time_token_cond)
        self.timestep_emb = SinusoidalTimestepEmbedding(hidden_channels)
        self.time_embed = FeedForward(hidden_channels, hidden_channels, dtype)
        self.ln_pre = LayerNorm(hidden_channels, 1e-5, dtype)
        self.backbone = TransformerBackbone(hidden_channels, layers, heads, dtype)
        self.ln_post = LayerNorm(hidden_channels, 1e-5, dtype)
        self.input_proj = nn.Dense(in_channels, hidden_channels, dtype=dtype)
        self.output_proj = nn.Dense(hidden_channels, out_channels, weight_init="zeros", bias_init="zeros",
                                    dtype=dtype)

    def condition_spec(self) -> ConditionSpec:
        """Unconditional: no condition, no labels."""
        return ConditionSpec()

    def sample_shape(self, batch_size: int):
        """(batch_size, sample_size, in_channels): the shape of the noise a sampler starts from."""
        if self.sample_size is None:
            raise ValueError(f"{type(self).__name__} config has no sample_size: pass latents of shape "
                             f"(batch_size, L, {self.in_channels})")
        return (batch_size, self.sample_size, self.in_channels)

    # ---- forward ---------------------------------------------------------------------

    def _check_x(self, x):
        if x.ndim != 3:
            raise ValueError(f"x must have shape (batch, seq_len, in_channels={self.in_channels}), got {x.shape}")
        if x.shape[2] != self.in_channels:
            raise ValueError(f"x must have in_channels={self.in_channels} channels on its last axis, got shape "
                             f"{x.shape}")

    def _timesteps(self, timestep: Tensor, batch: int) -> Tensor:
        if timestep.ndim > 2 or (timestep.ndim == 2 and timestep.shape[1] != 1) or (
                timestep.size != 1 and timestep.size != batch):
            raise ValueError(f"timestep must be a 0-d, (1,) or (batch={batch},) Tensor, got shape {timestep.shape}")
        return ops.broadcast_to(timestep.reshape(-1), (batch,))

    def _encode(self, x: Tensor, t_emb: Tensor, cond_emb: Optional[Tensor], cond_as_token: bool) -> Tensor:
        h = self.input_proj(x.astype(self.compute_dtype))
        tokens = []
        if self.time_token_cond:
            tokens.append(t_emb.expand_dims(1))
        else:
            h = h + t_emb.expand_dims(1)
        if cond_emb is not None:
            if cond_as_token:
                tokens.append(cond_emb.expand_dims(1))
            else:
                h = h + cond_emb.expand_dims(1)
        n_extra = len(tokens)
        if n_extra:
            h = ops.concat(tokens + [h], axis=1)
        h = self.ln_post(self.backbone(self.ln_pre(h)))
        if n_extra:
            h = h[:, n_extra:]
        return self.output_proj(h.astype(self.compute_dtype))

    def _time_embedding(self, timestep, batch):
        return self.time_embed(self.timestep_emb(self._timesteps(timestep, batch)).astype(self.compute_dtype))

    def construct(self, x: Tensor, timestep: Tensor) -> Tensor:
        """(B, L, in_channels), timestep -> (B, L, out_channels) in ``compute_dtype``."""
        self._check_x(x)
        t_emb = self._time_embedding(timestep, x.shape[0])
        return self._encode(x, t_emb, None, False)

    def __call__(self, x, timestep, *args):
        # Python checks before compilation; a scalar becomes a Tensor so a compiled graph is not
        # rebuilt for every new timestep.
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a mindspore Tensor of shape (batch, seq_len, {self.in_channels}), got "
                            f"{type(x).__name__}")
        return super().__call__(x, timestep_tensor(timestep), *args)


class ConditionDiffusionTransformer(DiffusionTransformer):
    r""":class:`DiffusionTransformer` with a condition vector: ``model(x, timestep, condition)``,
    ``condition`` of shape (B, ``cond_channels``). MindScience's ``mindflow.cell.ConditionDiffusionTransformer``.

    The condition is embedded by one linear layer, c = cond_embed(condition) (B, H), and enters
    like the time embedding: as a token after the time token (``cond_as_token=True``, so the
    backbone sees [τ; c; h]) or added to every position (``False``). Unlike MindScience, which then
    silently runs unconditioned, a missing ``condition`` is a ``ValueError``.

    Args:
        in_channels: channels C of the input sequence (B, L, C).
        out_channels: channels of the output sequence.
        cond_channels: size of the condition vector (B, cond_channels).
        hidden_channels: width H of the transformer; must be divisible by ``heads``.
        layers: number of transformer blocks.
        heads: number of attention heads.
        time_token_cond: feed the time embedding as an extra token (True) or add it to every position (False).
        cond_as_token: feed the condition embedding as an extra token (True) or add it to every position (False).
        compute_dtype: ``mindspore.float32`` or ``mindspore.float16``.
        sample_size: keyword-only, sequence length L the model was trained on (this package's extension);
            ``None`` leaves it unrecorded.

    Example:
        >>> import numpy as np, mindspore as ms
        >>> from mindscience_diffuser import ConditionDiffusionTransformer
        >>> net = ConditionDiffusionTransformer(in_channels=4, out_channels=4, cond_channels=3, hidden_channels=16,
        ...                                     layers=1, heads=2)
        >>> x, cond = ms.Tensor(np.zeros((2, 8, 4), np.float32)), ms.Tensor(np.ones((2, 3), np.float32))
        >>> net(x, ms.Tensor([10, 500], ms.int32), cond).shape
        (2, 8, 4)
    """

    conditional = True

    @register_to_config
    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, hidden_channels: int, layers: int,
                 heads: int, time_token_cond: bool = True, cond_as_token: bool = True, compute_dtype=ms.float32, *,
                 sample_size: Optional[int] = None):
        nn.Cell.__init__(self)
        self._build(in_channels, out_channels, hidden_channels, layers, heads, time_token_cond, compute_dtype,
                    sample_size)
        check_positive("cond_channels", cond_channels, integer=True)
        _check_bool("cond_as_token", cond_as_token)
        self.cond_channels = int(cond_channels)
        self.cond_as_token = bool(cond_as_token)
        self.cond_embed = nn.Dense(cond_channels, hidden_channels, dtype=self.compute_dtype)

    def condition_spec(self) -> ConditionSpec:
        """A (B, ``cond_channels``) condition vector."""
        return ConditionSpec(vector=self.cond_channels)

    def construct(self, x: Tensor, timestep: Tensor, condition: Optional[Tensor] = None) -> Tensor:
        """(B, L, in_channels), timestep, (B, cond_channels) -> (B, L, out_channels) in ``compute_dtype``."""
        self._check_x(x)
        if condition is None:
            raise ValueError(f"condition must be given: a Tensor of shape (batch, cond_channels={self.cond_channels})")
        if condition.ndim != 2 or condition.shape[0] != x.shape[0] or condition.shape[1] != self.cond_channels:
            raise ValueError(f"condition must have shape (batch={x.shape[0]}, cond_channels={self.cond_channels}), "
                             f"got {condition.shape}")
        t_emb = self._time_embedding(timestep, x.shape[0])
        cond_emb = self.cond_embed(condition.astype(self.compute_dtype))
        return self._encode(x, t_emb, cond_emb, self.cond_as_token)

    def __call__(self, x, timestep, condition=None):
        if condition is not None and not isinstance(condition, Tensor):
            raise TypeError(f"condition must be a mindspore Tensor of shape (batch, {self.cond_channels}), got "
                            f"{type(condition).__name__}")
        if condition is None:
            raise ValueError(f"condition must be given: a Tensor of shape (batch, cond_channels={self.cond_channels})")
        return super().__call__(x, timestep, condition)
