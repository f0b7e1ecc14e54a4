"""Quantitative quality of generated fields against held-out reference fields.

Two statistics a scientist checks first: the radially averaged power spectrum (second-order
structure, scale by scale) and the one-point distribution of values. Host-side numpy.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import numpy as np

from .datasets import as_field_array


def _as_fields(fields, name: str) -> np.ndarray:
    """(N, C, H, W) float64 from a (N, C, H, W) / (N, H, W) array or a MindSpore Tensor."""
    if hasattr(fields, "asnumpy"):
        fields = fields.asnumpy()
    return as_field_array(fields, name, np.float64)


def radial_power_spectrum(fields, subtract_mean: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    r"""(k, P(k)): |FFT(f)|²/(H·W), averaged over fields, channels and the shell
    k - 1/2 ≤ |k| < k + 1/2 (integer wavenumbers in cycles per box, k = 1 .. min(H, W)//2).

    ``subtract_mean`` removes each field's mean first (it only changes k = 0, which is not
    reported anyway). Shells beyond min(H, W)//2 are corners of the square FFT grid, incomplete
    in angle, and are left out.
    """
    arr = _as_fields(fields, "fields")
    if subtract_mean:
        arr = arr - arr.mean(axis=(-2, -1), keepdims=True)
    h, w = arr.shape[-2:]
    power = (np.abs(np.fft.fft2(arr)) ** 2).mean(axis=(0, 1)) / (h * w)
    ky, kx = np.fft.fftfreq(h, 1.0 / h), np.fft.fftfreq(w, 1.0 / w)
    shell = np.rint(np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)).astype(np.int64)
    k = np.arange(1, min(h, w) // 2 + 1)
    sums = np.bincount(shell.ravel(), weights=power.ravel(), minlength=k[-1] + 1)
    counts = np.bincount(shell.ravel(), minlength=k[-1] + 1)
    return k, sums[k] / counts[k]


def spectrum_relative_error(generated, reference, reduce: str = "mean") -> float:
    """Relative spectrum error |P_gen(k) - P_ref(k)| / P_ref(k), reduced over k by ``mean`` or ``max``."""
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce must be one of ['mean', 'max'], got {reduce!r}")
    _, p_gen = radial_power_spectrum(generated)
    _, p_ref = radial_power_spectrum(reference)
    _check_same_grid(p_gen, p_ref)
    rel = np.abs(p_gen - p_ref) / p_ref
    return float(rel.mean() if reduce == "mean" else rel.max())


def _check_same_grid(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"generated and reference fields must have the same spatial size, got spectra of {a.size} "
                         f"and {b.size} shells")


def wasserstein1(generated, reference, num_quantiles: int = 1000) -> float:
    r"""Wasserstein-1 distance between the value distributions: ∫₀¹ |F⁻¹_gen(q) − F⁻¹_ref(q)| dq,
    evaluated at ``num_quantiles`` midpoint quantiles (exact for equal-size samples as it grows)."""
    a = _as_fields(generated, "generated").ravel()
    b = _as_fields(reference, "reference").ravel()
    q = (np.arange(num_quantiles) + 0.5) / num_quantiles
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def histogram_l1(generated, reference, bins: int = 64, value_range: Optional[Tuple[float, float]] = None) -> float:
    """L1 distance between the normalised value histograms (0: identical, 2: disjoint), over
    ``value_range`` (default: the reference's min..max) with ``bins`` bins; values outside the
    range are counted in the edge bins so no mass is dropped."""
    a = _as_fields(generated, "generated").ravel()
    b = _as_fields(reference, "reference").ravel()
    lo, hi = value_range if value_range is not None else (b.min(), b.max())
    if not hi > lo:
        raise ValueError(f"value_range must have max > min, got ({lo}, {hi})")
    edges = np.linspace(lo, hi, bins + 1)
    ha = np.histogram(np.clip(a, lo, hi), edges)[0] / a.size
    hb = np.histogram(np.clip(b, lo, hi), edges)[0] / b.size
    return float(np.abs(ha - hb).sum())


def evaluate(generated, reference) -> Dict[str, Union[float, np.ndarray]]:
    """Compare generated fields with reference fields (both (N, C, H, W) or (N, H, W); N may differ).

    Returns a dict with ``spectrum_rel_error`` (mean over k of |ΔP|/P_ref, the headline
    figure), ``spectrum_max_rel_error``, ``wasserstein1``, ``histogram_l1``, the first two
    moments of both sets (``mean_generated``, ``std_generated``, ``mean_reference``,
    ``std_reference``) and the spectra themselves (``k``, ``spectrum_generated``,
    ``spectrum_reference``, as lists so the dict is JSON-serialisable) for plotting.
    """
    gen = _as_fields(generated, "generated")
    ref = _as_fields(reference, "reference")
    if gen.shape[1:] != ref.shape[1:]:
        raise ValueError(f"generated and reference fields must have the same (C, H, W), got {gen.shape[1:]} and "
                         f"{ref.shape[1:]}")
    k, p_gen = radial_power_spectrum(gen)
    _, p_ref = radial_power_spectrum(ref)
    rel = np.abs(p_gen - p_ref) / p_ref
    return {
        "spectrum_rel_error": float(rel.mean()),
        "spectrum_max_rel_error": float(rel.max()),
        "wasserstein1": wasserstein1(gen, ref),
        "histogram_l1": histogram_l1(gen, ref),
        "mean_generated": float(gen.mean()),
        "std_generated": float(gen.std()),
        "mean_reference": float(ref.mean()),
        "std_reference": float(ref.std()),
        "k": k.tolist(),
        "spectrum_generated": p_gen.tolist(),
        "spectrum_reference": p_ref.tolist(),
    }


def power_law_grf_spectrum(exponent: float, size: int = 32, std: float = 0.3) -> np.ndarray:
    r"""The exact expected radial spectrum E[P̂(k)], k = 1 .. size//2, of
    :func:`~mindscience_diffuser.training.fields.gaussian_random_field` fields with P(k) ∝ k^−exponent
    and ensemble standard deviation ``std``, shell-averaged exactly as :func:`radial_power_spectrum`
    bins a measured one: a reference without sampling error.

    On every grid point the expected periodogram E|FFT f(k)|²/size² is the mode variance S(k)
    (:func:`~mindscience_diffuser.training.fields.grf_mode_variance`); the deterministic field whose
    FFT is sqrt(S)·size has exactly that periodogram, and its radial spectrum is the answer.
    """
    from .fields import grf_mode_variance

    field = np.fft.ifft2(np.sqrt(grf_mode_variance(size, float(exponent), std)) * size).real
    return radial_power_spectrum(field[None, None])[1]


def fit_power_law_exponent(fields, std: float = 0.3, low: float = 0.5, high: float = 5.0,
                           resolution: float = 1e-3) -> float:
    r"""The spectral slope α̂ of ``fields`` (N, C, H, W) (or of a radial spectrum, a 1-D array):
    argmin_α Var_k(log P̂(k) − log E_α[P̂(k)]) over a grid of step ``resolution`` in [low, high],
    with E_α from :func:`power_law_grf_spectrum` (the amplitude is free: the variance of the log
    ratio ignores a constant factor).

    A plain least-squares line through log P̂ on log k reads even the exact spectrum of slope α as
    α − 0.04 … α − 0.09 on a 32² grid (the shells at small k and the square grid's corners bend it);
    fitting the exact shell-averaged law instead is unbiased: the exact spectrum of α fits as α.

    >>> round(fit_power_law_exponent(power_law_grf_spectrum(2.7, size=16)), 3)
    2.7
    """
    spectrum = np.asarray(fields, np.float64)
    if spectrum.ndim != 1:
        spectrum = radial_power_spectrum(fields)[1]
    size = 2 * len(spectrum)
    if not low < high or resolution <= 0:
        raise ValueError(f"need low < high and resolution > 0, got low={low}, high={high}, resolution={resolution}")
    if np.any(spectrum <= 0) or not np.all(np.isfinite(spectrum)):
        raise ValueError("the spectrum must be positive and finite to fit its slope")
    log_measured = np.log(spectrum)

    def best(grid: np.ndarray) -> float:
        log_exact = np.log(np.stack([power_law_grf_spectrum(a, size, std) for a in grid]))
        return float(grid[np.argmin((log_measured[None] - log_exact).var(axis=1))])

    # A coarse pass over [low, high], then the grid of step `resolution` around its best point:
    # the misfit is smooth in α, and this evaluates a few hundred exact spectra, not thousands.
    coarse = 50 * resolution
    guess = best(np.append(np.arange(low, high, coarse), high))
    fine = np.arange(max(low, guess - coarse), min(high, guess + coarse) + resolution / 2, resolution)
    return round(best(fine), 10)


_PLOT_SIZE = (560, 400)
_MARGINS = (70, 20, 52, 46)  # left, right, top, bottom, in pixels
_REFERENCE_COLOUR, _GENERATED_COLOUR = (0, 0, 0), (214, 39, 40)


def plot_spectra(*args, title: str = "Radially averaged power spectrum") -> None:
    """Save a log-log plot of the two radially averaged spectra as a PNG:
    ``plot_spectra(result, path)`` with ``result = evaluate(...)``, or
    ``plot_spectra(generated, reference, path)``. Drawn with pillow, a dependency of the
    package, so ``evaluate --plot`` works after the plain install."""
    if len(args) == 2:
        result, path = args
    elif len(args) == 3:
        result, path = evaluate(args[0], args[1]), args[2]
    else:
        raise TypeError("plot_spectra takes (result, path) or (generated, reference, path)")
    from PIL import Image, ImageDraw

    k = np.asarray(result["k"], np.float64)
    series = [("reference (held out)", np.asarray(result["spectrum_reference"], np.float64), _REFERENCE_COLOUR),
              ("generated", np.asarray(result["spectrum_generated"], np.float64), _GENERATED_COLOUR)]
    keep = k > 0
    for _, values, _ in series:
        keep &= np.isfinite(values) & (values > 0)  # a log-log plot shows the positive points
    log_k = np.log10(k[keep])
    log_p = [np.log10(values[keep]) for _, values, _ in series]
    width, height = _PLOT_SIZE
    left, right, top, bottom = _MARGINS
    image = Image.new("RGB", _PLOT_SIZE, "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 6), title, fill="black")
    draw.text((left, 22), f"mean relative error {100 * result['spectrum_rel_error']:.1f}%", fill="black")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    draw.text(((left + width - right) // 2 - 80, height - 18), "wavenumber k (cycles per box)", fill="black")
    draw.text((6, top - 14), "P(k)", fill="black")
    if log_k.size:
        def span(values):
            low, high = float(np.min(values)), float(np.max(values))
            pad = 0.5 if high - low < 1e-9 else 0.05 * (high - low)  # points off the frame
            return low - pad, high + pad

        (x0, x1), (y0, y1) = span(log_k), span(np.concatenate(log_p))

        def to_pixel(x, y):
            return (left + (x - x0) / (x1 - x0) * (width - right - left),
                    height - bottom - (y - y0) / (y1 - y0) * (height - bottom - top))

        for decade in range(int(np.ceil(x0)), int(np.floor(x1)) + 1):
            x, _ = to_pixel(decade, y0)
            draw.line([x, height - bottom, x, height - bottom + 4], fill="black")
            draw.text((x - 10, height - bottom + 6), f"1e{decade}", fill="black")
        for decade in range(int(np.ceil(y0)), int(np.floor(y1)) + 1):
            _, y = to_pixel(x0, decade)
            draw.line([left - 4, y, left, y], fill="black")
            draw.text((8, y - 6), f"1e{decade}", fill="black")
        for row, ((label, _, colour), values) in enumerate(zip(series, log_p)):
            points = [to_pixel(x, y) for x, y in zip(log_k, values)]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
            for x, y in points:
                draw.rectangle([x - 2, y - 2, x + 2, y + 2], fill=colour)
            legend_y = top + 8 + 16 * row
            draw.line([width - right - 170, legend_y + 6, width - right - 150, legend_y + 6], fill=colour, width=2)
            draw.text((width - right - 144, legend_y), label, fill="black")
    else:
        draw.text((left + 10, top + 10), "no positive spectrum values to plot", fill="black")
    image.save(path, format="PNG")  # the format, not the name: a temporary file may carry another suffix
