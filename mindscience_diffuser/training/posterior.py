r"""The exact posterior of a Gaussian random field given linear-Gaussian observations, and the
calibration metrics that check a posterior sampler against it.

Prior and observations
    x ~ N(μ, Σ) a periodic stationary field (:class:`GaussianFieldPrior`: Σ is circulant, diagonal
    in the Fourier basis with eigenvalues S(k)), and y = A x + σ_y η with a linear operator A (an
    (m, n) matrix, :meth:`~mindscience_diffuser.observations.LinearOperator.as_matrix`).

Exact posterior (Gaussian conditioning, e.g. Rasmussen & Williams 2006, eq. A.6)
    K = A Σ Aᵀ + σ_y² I,   G = Σ Aᵀ K⁺,
    E[x | y] = μ + G (y − A μ),   Cov[x | y] = Σ − G A Σ.
    K⁺ is the pseudo-inverse: with σ_y = 0, or for block averages of zero-mean fields (their sum
    is 0 for every field of the prior), K is singular, and y lies in its range, so K⁺ gives the
    exact conditional. Everything is dense float64 (n = 1024 for 32×32 fields).

Exact samples (Matheron's rule, the pathwise form of the same conditioning; Wilson et al. 2020,
"Efficiently sampling functions from Gaussian process posteriors")
    x | y = x' + G (y − A x' − σ_y η'),   x' ~ N(μ, Σ), η' ~ N(0, I),
    exact for any prior draw x', and cheap: prior draws are coloured FFT noise.

Calibration of N samples against the exact posterior (:func:`calibration_metrics`), per pixel
where the posterior is uncertain (exact std above ``determined_tol`` times the prior std; pixels
the data determine, such as noise-free observed pixels, have std 0):

- ``mean_error``: RMS over pixels of (sample mean − exact mean) / exact std. Sampling noise alone
  gives about 1/√N (0.0625 for N = 256): the floor, measured by :func:`calibration_floor`;
- ``variance_ratio``: mean over pixels of sample variance / exact variance (1 if calibrated);
- ``interval_coverage``: the exact posterior probability of the samples' central 90% interval,
  averaged over pixels (0.9 if calibrated, slightly less for finite N; below: too narrow or
  off-centre; above: too wide);
- ``samples_in_exact_interval``: the converse, the fraction of samples inside the exact central
  90% interval (0.9 if calibrated). The two read together: samples that ignore the data (prior
  samples) have wide intervals that still hold about 90% of the exact mass, but few of them fall
  inside the exact interval; samples that are too narrow fail the first and pass the second;
- ``truth_coverage``: the fraction of pixels where the true field lies in the samples' 90%
  interval (one truth, correlated pixels: a noisier check of the same thing).

These are the figures of issue 12, for the guidance methods of the sampling loop: DPS (Chung et al.
2023), ΠGDM (Song et al. 2023), score-based data assimilation (Rozet & Louppe 2023).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Tuple

import numpy as np

from ..utils import GeneratorLike, as_numpy_generator, check_positive
from .fields import SpectrumLike, grf_mode_variance

#: Eigenvalues of K below this fraction of the largest are treated as zero (the pseudo-inverse's cut).
PSEUDO_INVERSE_RCOND = 1e-10
#: A pixel whose exact posterior std is at most this fraction of the prior std is determined by the data.
DETERMINED_TOL = 1e-3


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianFieldPrior:
    """A periodic stationary Gaussian prior on (num_channels, H, W) samples: independent channels,
    each with mean ``mean`` and Fourier-mode variances ``mode_variance`` S(k) on the (H, W) FFT grid
    (the variance of each orthonormal Fourier coefficient; see :func:`~.fields.grf_mode_variance`).

    Example:
        >>> prior = GaussianFieldPrior.from_spectrum(size=8, spectrum=2.5, std=0.3)
        >>> prior.sample_shape, round(float(prior.covariance().diagonal().mean()), 6)
        ((1, 8, 8), 0.09)
    """

    mode_variance: np.ndarray
    mean: float = 0.0
    num_channels: int = 1

    def __post_init__(self):
        variance = np.asarray(self.mode_variance, dtype=np.float64)
        if variance.ndim != 2 or min(variance.shape) < 2:
            raise ValueError(f"mode_variance must be an (H, W) array on the FFT grid, got shape {variance.shape}")
        if not np.all(np.isfinite(variance)) or np.any(variance < 0):
            raise ValueError("mode_variance must be finite and >= 0")
        check_positive("num_channels", self.num_channels, integer=True)
        if not math.isfinite(self.mean):
            raise ValueError(f"mean must be finite, got {self.mean!r}")
        object.__setattr__(self, "mode_variance", variance)

    @classmethod
    def from_spectrum(cls, size: int = 32, spectrum: SpectrumLike = 2.5, std: float = 0.3,
                      data_normalization=None) -> "GaussianFieldPrior":
        """The prior of :func:`~.fields.gaussian_random_field` (``size``, ``spectrum``, ``std``),
        in the model's units when the model was trained on normalised data: with a one-channel
        :class:`~mindscience_diffuser.normalization.DataNormalization` (m, s), x_model = (x − m)/s
        has mean −m/s and mode variances S(k)/s²."""
        variance = grf_mode_variance(size, spectrum, std)
        if data_normalization is None:
            return cls(variance)
        if data_normalization.num_channels != 1:
            raise ValueError(f"data_normalization must have one channel for a one-channel field prior, got "
                             f"{data_normalization.num_channels}")
        (m,), (s,) = data_normalization.mean, data_normalization.std
        return cls(variance / s ** 2, mean=-m / s)

    @property
    def sample_shape(self) -> Tuple[int, int, int]:
        return (self.num_channels,) + tuple(self.mode_variance.shape)

    @property
    def size(self) -> int:
        """n, the number of entries of one sample."""
        return math.prod(self.sample_shape)

    def pixel_std(self) -> float:
        """The prior standard deviation of every pixel, sqrt(Σ_k S(k) / (H·W))."""
        return float(np.sqrt(self.mode_variance.mean()))

    def covariance(self) -> np.ndarray:
        """Σ, the dense (n, n) prior covariance (float64): Σ_pq = c(p − q) with c the inverse DFT of S
        (circulant in each channel, channels independent)."""
        height, width = self.mode_variance.shape
        autocovariance = np.fft.ifft2(self.mode_variance).real  # c(Δ) for lags Δ on the grid
        rows, cols = np.divmod(np.arange(height * width), width)
        block = autocovariance[(rows[:, None] - rows[None]) % height, (cols[:, None] - cols[None]) % width]
        return np.kron(np.eye(self.num_channels), block)

    def sample(self, num_samples: int, generator: GeneratorLike = None) -> np.ndarray:
        """``num_samples`` prior draws (N, C, H, W), float64: white noise coloured by √S in Fourier space."""
        num_samples = check_positive("num_samples", num_samples, integer=True)
        noise = as_numpy_generator(generator).standard_normal((num_samples,) + self.sample_shape)
        return self.mean + np.fft.ifft2(np.fft.fft2(noise) * np.sqrt(self.mode_variance)).real

    def denoiser(self, scheduler, compute_dtype=None):
        """The exact denoiser E[x₀ | x_t] of this prior
        (:class:`~mindscience_diffuser.models.GaussianFieldDenoiser`) for ``scheduler``'s ᾱ table."""
        from ..models.gaussian_field_denoiser import GaussianFieldDenoiser

        kwargs = {} if compute_dtype is None else {"compute_dtype": compute_dtype}
        return GaussianFieldDenoiser.from_scheduler(self.mode_variance, scheduler, in_channels=self.num_channels,
                                                    mean=self.mean, **kwargs)


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianPosterior:
    """The exact Gaussian posterior of one observation: ``mean`` (C, H, W) and dense
    ``covariance`` (n, n), float64, plus what :meth:`sample` needs (Matheron's rule)."""

    mean: np.ndarray
    covariance: np.ndarray
    prior: GaussianFieldPrior
    gain: np.ndarray  # G = Σ Aᵀ K⁺, (n, m)
    matrix: np.ndarray  # A, (m, n)
    values: np.ndarray  # y, (m,)
    noise_std: float

    @property
    def std(self) -> np.ndarray:
        """Exact posterior standard deviation per pixel (C, H, W) (negative rounding clipped to 0)."""
        return np.sqrt(np.clip(self.covariance.diagonal(), 0.0, None)).reshape(self.mean.shape)

    def central_interval(self, level: float = 0.9) -> Tuple[np.ndarray, np.ndarray]:
        """(low, high) of the exact central ``level`` interval per pixel."""
        half = _normal_quantile(0.5 + level / 2.0) * self.std
        return self.mean - half, self.mean + half

    def sample(self, num_samples: int, generator: GeneratorLike = None) -> np.ndarray:
        """``num_samples`` exact posterior draws (N, C, H, W), float64, by Matheron's rule."""
        rng = as_numpy_generator(generator)
        prior_draws = self.prior.sample(num_samples, rng).reshape(num_samples, -1)
        simulated = prior_draws @ self.matrix.T + self.noise_std * rng.standard_normal((num_samples,
                                                                                        self.matrix.shape[0]))
        draws = prior_draws + (self.values[None] - simulated) @ self.gain.T
        return draws.reshape((num_samples,) + self.mean.shape)


def linear_gaussian_posterior(prior: GaussianFieldPrior, observation) -> GaussianPosterior:
    """The exact posterior of ``prior`` given an :class:`~mindscience_diffuser.observations.Observation`
    with a linear operator and one observation (values (1, ...)); see the module docstring."""
    if not observation.is_linear:
        raise ValueError(f"the exact posterior needs a linear operator, got {type(observation.operator).__name__}")
    observation.check(prior.sample_shape)
    matrix = observation.operator.as_matrix(prior.sample_shape)
    return posterior_from_matrix(prior, matrix, observation.values_array[0].reshape(-1), observation.noise_std)


def posterior_from_matrix(prior: GaussianFieldPrior, matrix: np.ndarray, values: np.ndarray,
                          noise_std: float) -> GaussianPosterior:
    """The exact posterior for y = A x + σ_y η with a dense (m, n) ``matrix`` A and ``values`` y (m,)."""
    matrix = np.asarray(matrix, np.float64)
    values = np.asarray(values, np.float64).reshape(-1)
    if matrix.ndim != 2 or matrix.shape[1] != prior.size or values.shape != (matrix.shape[0],):
        raise ValueError(f"matrix must be (m, {prior.size}) and values (m,), got {matrix.shape} and {values.shape}")
    # Rows of zeros (a mask's unobserved pixels) carry no information: drop them before the solve.
    informative = np.any(matrix != 0, axis=1)
    matrix, values = matrix[informative], values[informative]
    sigma = prior.covariance()
    prior_mean = np.full(prior.size, prior.mean)
    cross = sigma @ matrix.T  # Σ Aᵀ, (n, m)
    k = matrix @ cross + noise_std ** 2 * np.eye(matrix.shape[0])
    eigenvalues, eigenvectors = np.linalg.eigh((k + k.T) / 2)
    keep = eigenvalues > PSEUDO_INVERSE_RCOND * eigenvalues.max()
    k_pinv = (eigenvectors[:, keep] / eigenvalues[keep]) @ eigenvectors[:, keep].T
    gain = cross @ k_pinv
    mean = prior_mean + gain @ (values - matrix @ prior_mean)
    covariance = sigma - gain @ cross.T
    covariance = (covariance + covariance.T) / 2
    return GaussianPosterior(mean.reshape(prior.sample_shape), covariance, prior, gain, matrix, values,
                             float(noise_std))


def _normal_quantile(p: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(p))


def uncertain_pixels(posterior: GaussianPosterior, determined_tol: float = DETERMINED_TOL) -> np.ndarray:
    """Boolean (C, H, W): where the exact std exceeds ``determined_tol`` × the prior pixel std."""
    return posterior.std > determined_tol * posterior.prior.pixel_std()


def calibration_metrics(samples, posterior: GaussianPosterior, truth=None, level: float = 0.9,
                        determined_tol: float = DETERMINED_TOL) -> Dict[str, float]:
    """How well ``samples`` (N, C, H, W) match the exact ``posterior``; see the module docstring.

    Pixels with exact std ≤ ``determined_tol`` × the prior pixel std are determined by the data:
    they are left out of the σ-normalised figures and reported as ``determined_rmse`` (RMS of
    samples − exact mean there, in field units; NaN when there are none). ``truth`` (C, H, W) or
    (1, C, H, W) adds ``truth_coverage``.
    """
    from scipy.special import ndtr

    samples = np.asarray(samples, np.float64)
    if samples.ndim != 1 + len(posterior.mean.shape) or samples.shape[1:] != posterior.mean.shape:
        raise ValueError(f"samples must have shape (N, {', '.join(map(str, posterior.mean.shape))}), got "
                         f"{samples.shape}")
    if samples.shape[0] < 2:
        raise ValueError(f"samples must hold at least 2 samples for a spread, got {samples.shape[0]}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    exact_mean, exact_std = posterior.mean, posterior.std
    uncertain = uncertain_pixels(posterior, determined_tol)
    if not uncertain.any():
        raise ValueError("the observation determines every pixel: nothing to calibrate")
    mu, sd = exact_mean[uncertain], exact_std[uncertain]
    z = (samples.mean(axis=0)[uncertain] - mu) / sd
    ratio = samples.var(axis=0, ddof=1)[uncertain] / sd ** 2
    low, high = np.quantile(samples, [0.5 - level / 2, 0.5 + level / 2], axis=0)
    mass = ndtr((high[uncertain] - mu) / sd) - ndtr((low[uncertain] - mu) / sd)
    exact_low, exact_high = posterior.central_interval(level)
    inside_exact = (samples >= exact_low) & (samples <= exact_high)
    determined = ~uncertain
    result = {
        "mean_error": float(np.sqrt(np.mean(z ** 2))),
        "variance_ratio": float(np.mean(ratio)),
        "interval_coverage": float(np.mean(mass)),
        "samples_in_exact_interval": float(np.mean(inside_exact[:, uncertain])),
        "determined_rmse": (float(np.sqrt(np.mean((samples[:, determined] - exact_mean[determined]) ** 2)))
                            if determined.any() else float("nan")),
        "num_uncertain": int(uncertain.sum()),
        "num_samples": int(samples.shape[0]),
    }
    if truth is not None:
        truth = np.asarray(truth, np.float64).reshape(posterior.mean.shape)
        inside = (low <= truth) & (truth <= high)
        result["truth_coverage"] = float(np.mean(inside[uncertain]))
    return result


def calibration_floor(posterior: GaussianPosterior, num_samples: int, generator: GeneratorLike = None,
                      truth=None, level: float = 0.9) -> Dict[str, float]:
    """What sampling noise alone gives for ``num_samples`` samples: the metrics of exact posterior
    samples, plus ``two_set_mean_error``, the RMS over uncertain pixels of the difference between
    the means of two independent sets of ``num_samples`` exact samples in units of the exact std
    (about √(2/N): the floor for comparing one method's mean with another's)."""
    rng = as_numpy_generator(generator)
    first, second = posterior.sample(num_samples, rng), posterior.sample(num_samples, rng)
    result = calibration_metrics(first, posterior, truth=truth, level=level)
    uncertain = uncertain_pixels(posterior)
    difference = (first.mean(axis=0) - second.mean(axis=0))[uncertain] / posterior.std[uncertain]
    result["two_set_mean_error"] = float(np.sqrt(np.mean(difference ** 2)))
    return result

