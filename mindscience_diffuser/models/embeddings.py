"""Timestep (noise-level) embeddings: sinusoidal, Gaussian Fourier, learned, and the MLP after them."""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, initializer

from .layers import Embedding, Linear


def sinusoidal_frequencies(half_dim: int, downscale_freq_shift: float, max_period: float = 10000.0) -> np.ndarray:
    """ω_i = max_period^(−i / (half_dim − shift)), i = 0 … half_dim−1 (float32, as diffusers builds them)."""
    exponent = -math.log(max_period) * np.arange(half_dim, dtype=np.float32)
    return np.exp(exponent / np.float32(half_dim - downscale_freq_shift)).astype(np.float32)


_TIMESTEP_DTYPES = (ms.int8, ms.int16, ms.int32, ms.int64, ms.uint8, ms.float16, ms.float32, ms.float64, ms.bfloat16)


def timestep_tensor(timestep, dtype=None) -> Tensor:
    """A denoiser's timestep argument as a Tensor, on the host before compilation (a Python
    scalar left as is would be baked into a compiled graph as a constant, one graph per value).

    Python and numpy numbers and numpy arrays become Tensors of ``dtype`` (default: int32 for
    integers, float32 otherwise, so 50.5 stays fractional); Tensors pass as they are. Anything
    else, bools included, is a ``TypeError``. Shapes are the model's to check.
    """
    if isinstance(timestep, (bool, np.bool_)):
        raise TypeError("timestep must be a number, a numpy array or a mindspore Tensor, got a bool")
    if isinstance(timestep, (int, float, np.number, np.ndarray)):
        value = np.asarray(timestep)
        if dtype is None:
            dtype = ms.int32 if np.issubdtype(value.dtype, np.integer) else ms.float32
        return Tensor(value.astype(ms.dtype_to_nptype(dtype)), dtype)
    if not isinstance(timestep, Tensor):
        raise TypeError("timestep must be a number, a numpy array or a mindspore Tensor, got "
                        f"{type(timestep).__name__}")
    if timestep.dtype not in _TIMESTEP_DTYPES:
        raise TypeError(f"timestep must be an integer or float Tensor, got dtype {timestep.dtype}")
    return timestep


class Timesteps(nn.Cell):
    """Sinusoidal embedding of (possibly fractional) timesteps t, shape (B,) -> (B, num_channels).

    e(t) = [sin(t ω), cos(t ω)] with ω from :func:`sinusoidal_frequencies`; ``flip_sin_to_cos``
    puts the cosines first; an odd ``num_channels`` gets one trailing zero. Always float32.
    """

    def __init__(self, num_channels: int, flip_sin_to_cos: bool, downscale_freq_shift: float, scale: float = 1.0):
        super().__init__()
        self.num_channels = num_channels
        self.half_dim = num_channels // 2
        self.flip_sin_to_cos = bool(flip_sin_to_cos)
        self.scale = float(scale)
        self.freqs = Tensor(sinusoidal_frequencies(self.half_dim, downscale_freq_shift)[None, :], ms.float32)

    def construct(self, timesteps: Tensor) -> Tensor:
        arg = timesteps.astype(ms.float32).reshape(-1, 1) * self.freqs
        if self.scale != 1.0:
            arg = arg * self.scale
        if self.flip_sin_to_cos:
            emb = ops.cat((ops.cos(arg), ops.sin(arg)), axis=-1)
        else:
            emb = ops.cat((ops.sin(arg), ops.cos(arg)), axis=-1)
        if self.num_channels % 2 == 1:
            emb = ops.pad(emb, (0, 1))
        return emb


class GaussianFourierProjection(nn.Cell):
    """Random Fourier features of the noise level σ (score-SDE / NCSN++).

    e(σ) = [sin(2π log σ · w), cos(2π log σ · w)] (``log``: use log σ, else σ; ``flip_sin_to_cos``:
    cosines first), with the fixed random frequencies ``weight`` (embedding_size,) ~ N(0, scale²).
    Output (B, 2·embedding_size), float32.
    """

    def __init__(self, embedding_size: int = 256, scale: float = 1.0, log: bool = True, flip_sin_to_cos: bool = False,
                 dtype=ms.float32):
        super().__init__()
        self.weight = Parameter(initializer(Normal(sigma=scale), (embedding_size,), dtype), name="weight",
                                requires_grad=False)
        self.log = bool(log)
        self.flip_sin_to_cos = bool(flip_sin_to_cos)

    def construct(self, x: Tensor) -> Tensor:
        x = x.astype(ms.float32)
        if self.log:
            x = ops.log(x)
        proj = x.reshape(-1, 1) * self.weight.astype(ms.float32).reshape(1, -1) * (2.0 * math.pi)
        if self.flip_sin_to_cos:
            return ops.cat((ops.cos(proj), ops.sin(proj)), axis=-1)
        return ops.cat((ops.sin(proj), ops.cos(proj)), axis=-1)


class LearnedTimesteps(Embedding):
    """A learned table, one row per integer timestep (``time_embedding_type="learned"``); float32 out."""

    def construct(self, timesteps: Tensor) -> Tensor:
        return ops.gather(self.weight, timesteps.astype(ms.int32).reshape(-1), 0).astype(ms.float32)


class TimestepEmbedding(nn.Cell):
    """The two-layer MLP on a time (or class) projection: linear_2(SiLU(linear_1(e)))."""

    def __init__(self, in_channels: int, time_embed_dim: int, dtype=ms.float32):
        super().__init__()
        self.linear_1 = Linear(in_channels, time_embed_dim, dtype=dtype)
        self.act = nn.SiLU()
        self.linear_2 = Linear(time_embed_dim, time_embed_dim, dtype=dtype)

    def construct(self, sample: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(sample)))
