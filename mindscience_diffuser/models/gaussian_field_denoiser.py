r"""The exact denoiser of a stationary Gaussian prior: E[x₀ | x_t] in closed form, as a Cell.

For a periodic stationary Gaussian field x₀ on an (H, W) grid with mean μ and power spectrum
S(k) (the variance of each orthonormal Fourier coefficient, :func:`~mindscience_diffuser.
training.fields.grf_mode_variance`), the covariance is circulant and diagonal in the Fourier
basis. Each Fourier mode of x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε is then an independent Gaussian scalar
problem, and the posterior mean is the Wiener filter

    E[x₀ | x_t](k) = μ(k) + √ᾱ_t·S(k) / (ᾱ_t·S(k) + 1 − ᾱ_t) · (x_t(k) − √ᾱ_t·μ(k)).

This is what a perfectly trained x₀-predicting model outputs for these fields. Driving a
scheduler with it (``prediction_type="sample"``) isolates a sampler's own error
(``tools/sampler_floor.py``), and a guidance method's error against the exact posterior
(``tools/posterior_check.py``): DPS (Chung et al. 2023) backpropagates through it, ΠGDM (Song
et al. 2023) and score-based data assimilation (Rozet & Louppe 2023) use its Jacobian, which here
is the (symmetric) filter itself.

The 2-D DFT is applied as real matrix products with the separable DFT matrices
F = C − iS (C_jk = cos 2πjk/N, S_jk = sin 2πjk/N), not with ``ops.fft2``: real float32 matmuls
compile in GRAPH_MODE on every backend, run in float16 too, and ``ms.grad`` differentiates them.
For 32×32 fields that is twelve 32×32 matmuls per call.
"""
from __future__ import annotations

from typing import Mapping, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..configuration import FrozenConfig
from ..schedulers import schedules
from ..utils import check_compute_dtype
from .embeddings import timestep_tensor


def dft_matrices(n: int):
    """(C, S) with C_jk = cos(2πjk/n), S_jk = sin(2πjk/n) (float64): the DFT is C − iS."""
    phase = 2.0 * np.pi * np.outer(np.arange(n), np.arange(n)) / n
    return np.cos(phase), np.sin(phase)


class GaussianFieldDenoiser(nn.Cell):
    r"""x̂₀ = E[x₀ | x_t] for a periodic stationary Gaussian prior (the Wiener filter; see the
    module docstring), called like a UNet: ``denoiser(sample, timestep)``.

    ``sample`` is (B, C, H, W) with every channel an independent field of the same prior;
    ``timestep`` an integer DDPM timestep (scalar, 0-d or (B,) Tensor; fractional values are
    rounded, as the table ᾱ_t is indexed by integers). The output is x̂₀, so drive it with a
    scheduler configured with ``prediction_type="sample"``. ``config`` has ``sample_size``,
    ``in_channels`` and ``out_channels`` like a UNet's, so a pipeline builds samples from it.

    Args:
        mode_variance: S(k) on the (H, W) FFT grid (k = 0 at [0, 0]), the variance of each
            orthonormal Fourier coefficient, in the model's units; finite, ≥ 0.
        alphas_cumprod: the scheduler's ᾱ table (num_train_timesteps values in [0, 1]).
        in_channels: channels C of the samples (each one a field of this prior).
        mean: the prior mean μ (a constant field), in the model's units.
        compute_dtype: ``mindspore.float32`` or ``mindspore.float16``.

    Example:
        >>> import numpy as np, mindspore as ms
        >>> from mindscience_diffuser import DDIMScheduler
        >>> from mindscience_diffuser.training.fields import grf_mode_variance
        >>> scheduler = DDIMScheduler(prediction_type="sample")
        >>> denoiser = GaussianFieldDenoiser.from_scheduler(grf_mode_variance(16, 2.5, 0.3), scheduler)
        >>> x_t = ms.Tensor(np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32))
        >>> denoiser(x_t, 999).shape, dict(denoiser.config)
        ((2, 1, 16, 16), {'sample_size': 16, 'in_channels': 1, 'out_channels': 1})
    """

    def __init__(self, mode_variance, alphas_cumprod, in_channels: int = 1, mean: float = 0.0,
                 compute_dtype=ms.float32):
        super().__init__()
        variance = np.asarray(mode_variance, dtype=np.float64)
        if variance.ndim != 2 or min(variance.shape) < 2:
            raise ValueError(f"mode_variance must be an (H, W) array on the FFT grid, H, W >= 2, got shape "
                             f"{variance.shape}")
        if not np.all(np.isfinite(variance)) or np.any(variance < 0):
            raise ValueError("mode_variance must be finite and >= 0 (a variance per Fourier mode)")
        abar = np.asarray(alphas_cumprod, dtype=np.float64)
        if abar.ndim != 1 or abar.size == 0 or np.any(abar < 0) or np.any(abar > 1) or not np.all(np.isfinite(abar)):
            raise ValueError("alphas_cumprod must be a 1-D table of values in [0, 1] (the scheduler's ᾱ_t)")
        if isinstance(in_channels, bool) or not isinstance(in_channels, (int, np.integer)) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if not np.isfinite(mean):
            raise ValueError(f"mean must be finite, got {mean!r}")
        self.compute_dtype = check_compute_dtype(compute_dtype)
        height, width = variance.shape
        self.mode_variance_array = variance
        self.alphas_cumprod = abar
        self.prior_mean = float(mean)
        self.num_train_timesteps = abar.size
        self.config = FrozenConfig(sample_size=height if height == width else (height, width),
                                   in_channels=int(in_channels), out_channels=int(in_channels))

        # The filter gain per (timestep, mode) in float64 on the host: 1 − ᾱ near t = 0 is
        # 4e-5 and would lose digits in float32; ᾱ = 1 with S = 0 is 0/0 and means gain 0.
        denominator = abar[:, None, None] * variance[None] + (1.0 - abar)[:, None, None]
        numerator = np.sqrt(abar)[:, None, None] * variance[None]
        gain = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
        # Fold the inverse DFT's 1/(H·W) into the gain: one scaling instead of two.
        self.gain = Tensor((gain / (height * width)).astype(np.float32), compute_dtype)
        self.sqrt_alphas_cumprod = Tensor(np.sqrt(abar).astype(np.float32), compute_dtype)
        cos_h, sin_h = dft_matrices(height)
        cos_w, sin_w = dft_matrices(width)
        self.cos_h, self.sin_h = Tensor(cos_h, compute_dtype), Tensor(sin_h, compute_dtype)
        self.cos_w, self.sin_w = Tensor(cos_w, compute_dtype), Tensor(sin_w, compute_dtype)

    @classmethod
    def from_scheduler(cls, mode_variance, scheduler: Union[Mapping, object], **kwargs) -> "GaussianFieldDenoiser":
        """The denoiser for the ᾱ table of ``scheduler``: a scheduler instance (its
        ``alphas_cumprod``) or a VP scheduler config mapping (``num_train_timesteps``,
        ``beta_schedule``, ``beta_start``, ``beta_end``, ``trained_betas``,
        ``rescale_betas_zero_snr``, diffusers' defaults where absent)."""
        if isinstance(scheduler, Mapping):
            _, abar = schedules.vp_alphas_cumprod(
                scheduler.get("beta_schedule", "linear"), int(scheduler.get("num_train_timesteps", 1000)),
                float(scheduler.get("beta_start", 0.0001)), float(scheduler.get("beta_end", 0.02)),
                scheduler.get("trained_betas"), bool(scheduler.get("rescale_betas_zero_snr", False)))
        elif hasattr(scheduler, "alphas_cumprod"):
            abar = scheduler.alphas_cumprod
        else:
            raise TypeError(f"scheduler must be a VP scheduler (with alphas_cumprod) or its config mapping, got "
                            f"{type(scheduler).__name__}")
        return cls(mode_variance, np.asarray(abar, np.float64), **kwargs)

    # -- the filter ---------------------------------------------------------------------------
    def _forward_dft(self, x: Tensor):
        """(Re, Im) of F_H x F_Wᵀ for x (..., H, W); C and S are symmetric, so F_Wᵀ = F_W."""
        cx, sx = ops.matmul(self.cos_h, x), ops.matmul(self.sin_h, x)
        real = ops.matmul(cx, self.cos_w) - ops.matmul(sx, self.sin_w)
        imag = -(ops.matmul(cx, self.sin_w) + ops.matmul(sx, self.cos_w))
        return real, imag

    def _inverse_dft_real(self, real: Tensor, imag: Tensor) -> Tensor:
        """Re[(C_H + iS_H)(real + i·imag)(C_W + iS_W)] (the unnormalised inverse DFT's real part)."""
        c_re, s_re = ops.matmul(self.cos_h, real), ops.matmul(self.sin_h, real)
        c_im, s_im = ops.matmul(self.cos_h, imag), ops.matmul(self.sin_h, imag)
        return (ops.matmul(c_re, self.cos_w) - ops.matmul(s_re, self.sin_w)
                - ops.matmul(c_im, self.sin_w) - ops.matmul(s_im, self.cos_w))

    def construct(self, sample: Tensor, timestep: Tensor) -> Tensor:
        sample = sample.astype(self.compute_dtype)
        batch = sample.shape[0]
        # The loop passes float timesteps; ᾱ is tabulated at integers.
        index = ops.clamp(ops.round(timestep.astype(ms.float32)), 0.0, self.num_train_timesteps - 1.0)
        index = ops.broadcast_to(index.astype(ms.int32).reshape(-1), (batch,))
        gain = ops.gather(self.gain, index, 0).reshape((batch, 1) + self.gain.shape[1:])
        signal_scale = ops.gather(self.sqrt_alphas_cumprod, index, 0).reshape((batch, 1, 1, 1))
        centred = sample - signal_scale * self.prior_mean
        real, imag = self._forward_dft(centred)
        return self.prior_mean + self._inverse_dft_real(real * gain, imag * gain)

    def __call__(self, sample, timestep, *args, **kwargs):
        # Host-side checks and the timestep as a Tensor (a Python scalar would be baked into a
        # compiled graph as a constant), as the UNet does.
        if not isinstance(sample, Tensor):
            raise TypeError(f"sample must be a mindspore Tensor (B, C, H, W), got {type(sample).__name__}")
        expected = (self.config.in_channels,) + tuple(self.mode_variance_array.shape)
        if sample.ndim != 4 or tuple(sample.shape[1:]) != expected:
            raise ValueError(f"sample must have shape (B, {', '.join(map(str, expected))}), got {tuple(sample.shape)}")
        timestep = timestep_tensor(timestep)
        if timestep.ndim > 1 or (timestep.ndim == 1 and timestep.shape[0] not in (1, sample.shape[0])):
            raise ValueError(f"timestep must be a scalar or have shape (1,) or ({sample.shape[0]},), got shape "
                             f"{tuple(timestep.shape)}")
        return super().__call__(sample, timestep, *args, **kwargs)

    def filter_gain(self, timestep: int) -> np.ndarray:
        """The Wiener gain √ᾱ·S / (ᾱ·S + 1 − ᾱ) per mode at integer ``timestep`` (float64, host)."""
        abar = self.alphas_cumprod[int(timestep)]
        variance = self.mode_variance_array
        denominator = abar * variance + 1.0 - abar
        return np.divide(np.sqrt(abar) * variance, denominator, out=np.zeros_like(variance), where=denominator > 0)

