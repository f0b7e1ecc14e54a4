"""Synthetic scientific fields for training and testing: Gaussian random fields with a chosen
power spectrum and Darcy-flow-style thresholded permeability fields.

Everything here is host-side numpy (float64 internally, float32 out) and reproducible from a
``numpy.random.Generator`` or an int seed. Fields come out shaped ``(n, 1, size, size)``, the
(B, C, H, W) layout the UNet and the trainer use.
"""
from __future__ import annotations

from typing import Callable, Union

import numpy as np

from ..utils import GeneratorLike, as_numpy_generator, check_positive

SpectrumLike = Union[float, Callable[[np.ndarray], np.ndarray]]


def wavenumber_grid(size: int) -> np.ndarray:
    """|k| on the ``size``×``size`` FFT grid, in cycles per box (integer units, k=0 at [0, 0])."""
    k = np.fft.fftfreq(size, d=1.0 / size)
    return np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)


def power_law_spectrum(exponent: float) -> Callable[[np.ndarray], np.ndarray]:
    """P(k) = k^(-exponent) for k > 0 and P(0) = 0 (zero-mean fields)."""
    def spectrum(k: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.where(k > 0, np.power(np.maximum(k, 1e-12), -float(exponent)), 0.0)
    return spectrum


def _power_on_grid(size: int, spectrum: SpectrumLike) -> np.ndarray:
    """P(|k|) on the ``size``×``size`` FFT grid (float64), checked finite, non-negative and not all zero."""
    if callable(spectrum):
        power_fn = spectrum
    elif isinstance(spectrum, (int, float)) and not isinstance(spectrum, bool):
        power_fn = power_law_spectrum(spectrum)
    else:
        raise TypeError("spectrum must be a power-law exponent (float) or a callable P(k), got "
                        f"{type(spectrum).__name__}")
    power = np.asarray(power_fn(wavenumber_grid(size)), dtype=np.float64)
    if power.shape != (size, size) or np.any(power < 0) or not np.all(np.isfinite(power)):
        raise ValueError("spectrum must return finite, non-negative values on the |k| grid")
    if not power.any():
        raise ValueError("spectrum is zero everywhere: the fields would be constant")
    return power


def grf_mode_variance(size: int = 32, spectrum: SpectrumLike = 2.5, std: float = 0.3) -> np.ndarray:
    r"""The variance S(k) of each orthonormal Fourier coefficient of :func:`gaussian_random_field`'s
    fields, on the ``size``×``size`` FFT grid (float64, k = 0 at [0, 0]).

    The fields are stationary, so their covariance is circulant and diagonal in the Fourier basis:
    with f̂ = FFT(f)/size (the orthonormal DFT), E|f̂(k)|² = S(k) = P(k)·std²·size²/Σ_k P(k), and
    the pixel variance is Σ_k S(k)/size² = std². This is the prior of the exact Wiener denoiser
    (:class:`~mindscience_diffuser.models.GaussianFieldDenoiser`) and of the exact posterior
    (:mod:`~mindscience_diffuser.training.posterior`).

    >>> s = grf_mode_variance(8, 2.5, 0.3)
    >>> round(float(s.sum() / 8 ** 2), 6), float(s[0, 0])
    (0.09, 0.0)
    """
    size = check_positive("size", size, integer=True, minimum=2)
    std = check_positive("std", std)
    power = _power_on_grid(size, spectrum)
    return power * (std ** 2 * size ** 2 / power.sum())


def gaussian_random_field(
    n: int,
    size: int = 32,
    spectrum: SpectrumLike = 2.5,
    std: float = 0.3,
    generator: GeneratorLike = None,
) -> np.ndarray:
    r"""``n`` periodic 2-D Gaussian random fields with power spectrum P(|k|), shape (n, 1, size, size).

    f = IFFT(sqrt(P(|k|)) · FFT(w)) for white noise w: colouring white noise keeps f exactly
    Gaussian and Hermitian-symmetric (real), with E|f̂(k)|² ∝ P(|k|). ``spectrum`` is a
    power-law exponent α (P = k^-α, the default 2.5) or a callable P(k) on the array of |k|.
    The result is scaled by the ensemble standard deviation (known analytically from P), so
    single fields keep their natural variance fluctuations; ``std=0.3`` puts 99.9% of values in
    [-1, 1] (3.3 σ), the range a diffusion model is trained on and image pipelines clip to.
    :func:`grf_mode_variance` gives the covariance of these fields in the Fourier basis.
    """
    n = check_positive("n", n, integer=True)
    size = check_positive("size", size, integer=True, minimum=2)
    check_positive("std", std)
    rng = as_numpy_generator(generator)
    power = _power_on_grid(size, spectrum)
    # Var(f) = sum_k P(k) / size² for unit white noise under numpy's FFT normalisation.
    ensemble_std = np.sqrt(power.sum()) / size
    noise = rng.standard_normal((n, size, size))
    fields = np.fft.ifft2(np.fft.fft2(noise) * np.sqrt(power)).real
    return (fields * (std / ensemble_std)).astype(np.float32)[:, None]


def matern_like_spectrum(alpha: float = 2.0, tau: float = 3.0) -> Callable[[np.ndarray], np.ndarray]:
    """P(k) ∝ (4π²|k|² + τ²)^(-α): the spectrum of the Gaussian measure N(0, (-Δ + τ²)^(-α))
    used to draw the permeability of the Darcy-flow benchmark (Li et al. 2021, FNO, §5.2)."""
    def spectrum(k: np.ndarray) -> np.ndarray:
        return np.where(k > 0, (4 * np.pi ** 2 * k ** 2 + tau ** 2) ** (-alpha), 0.0)
    return spectrum


def darcy_permeability(
    n: int,
    size: int = 32,
    alpha: float = 2.0,
    tau: float = 3.0,
    low: float = -1.0,
    high: float = 1.0,
    generator: GeneratorLike = None,
) -> np.ndarray:
    """Binary permeability fields a(x) = ``high`` where a GRF with spectrum
    (4π²k² + τ²)^-α is ≥ 0, else ``low`` (FNO's Darcy data uses 12 and 3; ±1 here so a
    diffusion model sees the usual [-1, 1] range). Shape (n, 1, size, size)."""
    if not low < high:
        raise ValueError(f"low must be < high, got low={low!r}, high={high!r}")
    grf = gaussian_random_field(n, size, matern_like_spectrum(alpha, tau), std=1.0, generator=generator)
    return np.where(grf >= 0, np.float32(high), np.float32(low)).astype(np.float32)


FIELD_KINDS = {"grf": gaussian_random_field, "darcy": darcy_permeability}


def generate_fields(kind: str, n: int, size: int = 32, generator: GeneratorLike = None, **kwargs) -> np.ndarray:
    """Dispatch by name: ``kind`` in ``FIELD_KINDS`` (``"grf"``, ``"darcy"``); ``kwargs`` go to the generator."""
    if kind not in FIELD_KINDS:
        raise ValueError(f"kind must be one of {sorted(FIELD_KINDS)}, got {kind!r}")
    return FIELD_KINDS[kind](n, size, generator=generator, **kwargs)
