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
        raise ValueError(f"generated and reference fields must have the same spatial size, got spectra of {a.size} and {b.size} shells")


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
        raise ValueError(f"generated and reference fields must have the same (C, H, W), got {gen.shape[1:]} and {ref.shape[1:]}")
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


def plot_spectra(*args, title: str = "Radially averaged power spectrum") -> None:
    """Save a log-log plot of the two radially averaged spectra as a PNG:
    ``plot_spectra(result, path)`` with ``result = evaluate(...)``, or
    ``plot_spectra(generated, reference, path)``. Needs matplotlib, which is not a dependency of
    the package: ``pip install matplotlib``."""
    if len(args) == 2:
        result, path = args
    elif len(args) == 3:
        result, path = evaluate(args[0], args[1]), args[2]
    else:
        raise TypeError("plot_spectra takes (result, path) or (generated, reference, path)")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plot_spectra needs matplotlib (pip install matplotlib); it is not a package dependency") from err
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=110)
    ax.loglog(result["k"], result["spectrum_reference"], "k-o", ms=3, label="reference (held out)")
    ax.loglog(result["k"], result["spectrum_generated"], "C3--s", ms=3, label="generated")
    ax.set_xlabel("wavenumber k (cycles per box)")
    ax.set_ylabel("P(k)")
    ax.set_title(f"{title}\nmean relative error {100 * result['spectrum_rel_error']:.1f}%", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")  # the format, not the name: a temporary file may carry another suffix
    plt.close(fig)
