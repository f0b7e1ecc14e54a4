"""Spatial multi-head self-attention over the H·W positions of a feature map
(diffusers' ``Attention`` as built by its UNet blocks with ``_from_deprecated_attn_block``)."""
from __future__ import annotations

from typing import Optional

import mindspore as ms
from mindspore import Tensor, nn, ops

from .layers import GroupNorm, Linear


class SpatialSelfAttention(nn.Cell):
    """out = (x + W_o · MHA(GN(x))) / rescale_output_factor on x of shape (B, C, H, W).

    With n = H·W positions, ``heads`` = C // dim_head heads of width ``dim_head``,
    Q, K, V = W_{q,k,v} h + b over the channel axis and per head
    A = softmax(QᵀK / sqrt(dim_head)) (softmax over keys, computed in float32), O = V Aᵀ.

    The projections run on the channel-first (B, C, n) map as one fused matmul of the
    concatenated q/k/v weights, and both attention products are batched matmuls with
    transposed operands, so no (B, n, C) copy of the activations is ever made.
    Parameters keep diffusers' names: ``group_norm``, ``to_q``, ``to_k``, ``to_v``, ``to_out.0``.
    """

    def __init__(
        self,
        channels: int,
        dim_head: int,
        norm_num_groups: Optional[int],
        eps: float,
        rescale_output_factor: float = 1.0,
        dtype=ms.float32,
    ):
        super().__init__()
        if not isinstance(dim_head, int) or dim_head < 1 or channels // dim_head < 1:
            raise ValueError(
                f"attention_head_dim must be a positive int no larger than the block's channel count {channels}, got "
                f"{dim_head!r}"
            )
        self.heads = channels // dim_head
        self.dim_head = dim_head
        self.inner_dim = self.heads * dim_head
        self.scale = float(dim_head) ** -0.5
        self.rescale_output_factor = float(rescale_output_factor)
        self.has_norm = norm_num_groups is not None
        if self.has_norm:
            self.group_norm = GroupNorm(norm_num_groups, channels, eps, dtype=dtype, name="attention group_norm")
        self.to_q = Linear(channels, self.inner_dim, dtype=dtype)
        self.to_k = Linear(channels, self.inner_dim, dtype=dtype)
        self.to_v = Linear(channels, self.inner_dim, dtype=dtype)
        self.to_out = nn.CellList([Linear(self.inner_dim, channels, dtype=dtype)])
        self.scores_matmul = ops.BatchMatMul(transpose_a=True)
        self.values_matmul = ops.BatchMatMul(transpose_b=True)

    def construct(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n = h * w
        hidden = self.group_norm(x) if self.has_norm else x
        hidden = hidden.reshape(b, c, n)

        w_qkv = ops.cat((self.to_q.weight, self.to_k.weight, self.to_v.weight), axis=0)
        b_qkv = ops.cat((self.to_q.bias, self.to_k.bias, self.to_v.bias), axis=0)
        qkv = ops.matmul(w_qkv, hidden) + b_qkv.reshape(-1, 1)
        # Split rather than index: indexing lowers to StridedSlice, a slow copy kernel on CPU
        # (it was 16% of a small UNet's forward time).
        q, k, v = ops.split(qkv, self.inner_dim, axis=1)
        q = q.reshape(b, self.heads, self.dim_head, n) * self.scale
        k = k.reshape(b, self.heads, self.dim_head, n)
        v = v.reshape(b, self.heads, self.dim_head, n)

        scores = self.scores_matmul(q, k)  # (b, heads, n_query, n_key)
        probs = ops.softmax(scores.astype(ms.float32), axis=-1).astype(x.dtype)
        out = self.values_matmul(v, probs).reshape(b, self.inner_dim, n)  # (b, inner, n_query)

        proj = self.to_out[0]
        out = ops.matmul(proj.weight, out) + proj.bias.reshape(-1, 1)
        out = out.reshape(b, c, h, w) + x
        if self.rescale_output_factor != 1.0:
            out = out / self.rescale_output_factor
        return out
