"""Host-side schedule tables, built once in ``__init__`` / ``set_timesteps``, never inside a
compiled step.

What the tables really are: β and ᾱ are float32, computed in torch's operation order
(``torch.linspace`` in float32, the cumulative product accumulated as torch does), because that is
what reproduces diffusers' numbers; timestep spacings and σ schedules are numpy float64, as
diffusers computes them, and callers round them to float32 where diffusers does.

Notation: β_t the per-step noise variance, ᾱ_t = Π_{s<=t}(1-β_s), and for the
variance-exploding view σ_t = sqrt((1-ᾱ_t)/ᾱ_t) (Karras et al. 2022, eq. 5 with s(t)=1/sqrt(1+σ²)).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from ..utils import check_choice, check_positive

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
ALPHA_TRANSFORMS = ("cosine", "exp", "laplace")


# ----------------------------------------------------------------------------- betas

def _alpha_bar_fn(kind: str) -> Callable[[float], float]:
    if kind == "cosine":
        # Nichol & Dhariwal 2021, eq. 17, with s = 0.008.
        return lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    if kind == "exp":
        return lambda t: math.exp(t * -12.0)

    def laplace(t: float) -> float:
        lmb = -0.5 * math.copysign(1, 0.5 - t) * math.log(1 - 2 * math.fabs(0.5 - t) + 1e-6)
        snr = math.exp(lmb)
        return math.sqrt(snr / (1 + snr))

    return laplace


def betas_for_alpha_bar(num_train_timesteps: int, max_beta: float = 0.999,
                        alpha_transform_type: str = "cosine") -> np.ndarray:
    """β_i = min(1 - ᾱ((i+1)/T) / ᾱ(i/T), max_beta) for a continuous ᾱ(t) on [0, 1]."""
    check_choice("alpha_transform_type", alpha_transform_type, ALPHA_TRANSFORMS)
    alpha_bar = _alpha_bar_fn(alpha_transform_type)
    steps = np.arange(num_train_timesteps, dtype=np.float64)
    return np.array(
        [min(1.0 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), max_beta)
         for i in steps],
        dtype=np.float64,
    )


# ----------------------------------------------------------------------------- timesteps

def spaced_timesteps(
    timestep_spacing: str,
    num_train_timesteps: int,
    num_inference_steps: int,
    steps_offset: int = 0,
    *,
    last_timestep: Optional[int] = None,
    extra_point: bool = False,
    round_linspace: bool = True,
) -> np.ndarray:
    """Descending inference timesteps (float64; callers cast) for the three spacings of
    Lin et al. 2023, Table 2.

    - linspace: N points evenly from 0 to T-1 (rounded unless ``round_linspace=False``);
    - leading: multiples of floor(T/N), plus ``steps_offset``;
    - trailing: round(arange(T, 0, -T/N)) - 1, a true-division ratio.

    DPM-Solver places N+1 points and drops the last one (``extra_point=True``) and may stop
    short of T at ``last_timestep`` (``lambda_min_clipped``).
    """
    check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
    last = num_train_timesteps if last_timestep is None else last_timestep
    points = num_inference_steps + 1 if extra_point else num_inference_steps
    if timestep_spacing == "linspace":
        ts = np.linspace(0, last - 1, points)
        if round_linspace:
            ts = ts.round()
        ts = ts[::-1]
        return ts[:-1].copy() if extra_point else ts.copy()
    if timestep_spacing == "leading":
        ratio = last // points
        ts = (np.arange(0, points) * ratio).round()[::-1].astype(np.float64)
        ts = ts[:-1] if extra_point else ts
        return ts + steps_offset
    ratio = num_train_timesteps / num_inference_steps
    return np.round(np.arange(last, 0, -ratio)) - 1.0


# ----------------------------------------------------------------------------- sigmas

def sigma_to_alpha_sigma_t(sigma: np.ndarray, flow: bool = False):
    """(α_t, σ_t) of a noise level: α_t = 1/sqrt(σ²+1), σ_t = σ·α_t; for flow matching α_t = 1-σ, σ_t = σ."""
    sigma = np.asarray(sigma, dtype=np.float64)
    if flow:
        return 1.0 - sigma, sigma
    alpha_t = 1.0 / np.sqrt(sigma**2 + 1.0)
    return alpha_t, sigma * alpha_t


def karras_sigmas(sigma_min: float, sigma_max: float, num_inference_steps: int, rho: float = 7.0) -> np.ndarray:
    """σ_i = (σ_max^{1/ρ} + i/(N-1)·(σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ (Karras et al. 2022, eq. 5)."""
    return karras_ramp_sigmas(np.linspace(0, 1, num_inference_steps), sigma_min, sigma_max, rho)


def exponential_sigmas(sigma_min: float, sigma_max: float, num_inference_steps: int) -> np.ndarray:
    """σ evenly spaced in log σ from σ_max down to σ_min."""
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), num_inference_steps))


def beta_sigmas(sigma_min: float, sigma_max: float, num_inference_steps: int, alpha: float = 0.6,
                beta: float = 0.6) -> np.ndarray:
    """σ_i = σ_min + F⁻¹_{Beta(α,β)}(1 - i/(N-1))·(σ_max - σ_min)
    (Lee et al. 2024, "Beta Sampling is All You Need")."""
    import scipy.stats

    ppf = scipy.stats.beta.ppf(1 - np.linspace(0, 1, num_inference_steps), alpha, beta)
    return sigma_min + ppf * (sigma_max - sigma_min)


def flow_sigmas(num_train_timesteps: int, num_inference_steps: int, flow_shift: float) -> np.ndarray:
    """Descending flow-matching σ = s·u/(1+(s-1)·u) on N points of u ∈ (0, 1] (N+1 placed, last dropped)."""
    u = 1.0 - np.linspace(1, 1 / num_train_timesteps, num_inference_steps + 1)
    shifted = flow_shift * u / (1 + (flow_shift - 1) * u)
    return np.flip(shifted)[:-1].copy()


def sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional training timestep of each σ: linear interpolation of log σ between the two
    neighbouring entries of the ascending table ``log_sigmas``."""
    sigma = np.asarray(sigma, dtype=np.float64)
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return ((1 - w) * low + w * (low + 1)).reshape(sigma.shape)


SIGMA_SCHEDULES = {"karras": karras_sigmas, "exponential": exponential_sigmas, "beta": beta_sigmas}


def chosen_sigma_schedule(use_karras_sigmas: bool = False, use_exponential_sigmas: bool = False,
                          use_beta_sigmas: bool = False) -> Optional[str]:
    """The one sigma schedule a config asks for, or None; more than one is a ``ValueError``."""
    chosen = [name
              for name, on in (("karras", use_karras_sigmas), ("exponential", use_exponential_sigmas),
                               ("beta", use_beta_sigmas)) if on]
    if len(chosen) > 1:
        raise ValueError(
            "only one of use_karras_sigmas, use_exponential_sigmas and use_beta_sigmas may be True, got "
            + ", ".join(f"use_{c}_sigmas" for c in chosen)
        )
    return chosen[0] if chosen else None


# ------------------------------------------------------------------ float32 tables as diffusers' torch builds them

def torch_linspace_float32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps, dtype=torch.float32)`` on CPU, bit for bit.

    torch rounds start/end to float32, takes a float32 step (end-start)/(steps-1) and fills the
    first half as fma(step, i, start) and the second as fma(-step, steps-1-i, end) (one rounding
    each); the fused multiply-add is reproduced exactly in float64.
    """
    s, e = np.float32(start), np.float32(end)
    if steps == 1:
        return np.array([s], np.float32)
    step = np.float64((e - s) / np.float32(steps - 1))
    i = np.arange(steps, dtype=np.float64)
    low = (np.float64(s) + step * i).astype(np.float32)
    high = (np.float64(e) - step * (steps - 1 - i)).astype(np.float32)
    return np.where(np.arange(steps) < steps // 2, low, high)


def float32_cumprod(values: np.ndarray) -> np.ndarray:
    """torch's CPU ``cumprod`` of a float32 vector (accumulated in float64, stored as float32)."""
    return np.cumprod(np.asarray(values, np.float32).astype(np.float64)).astype(np.float32)


def float32_betas(
    beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float, trained_betas=None,
    allowed=BETA_SCHEDULES,
) -> np.ndarray:
    """The training noise schedule β_0..β_{T-1} as diffusers' torch schedulers hold it (float32).

    - ``trained_betas``: the given values (each in (0, 1)), overriding the named schedule;
    - linear: ``torch.linspace(beta_start, beta_end)`` in float32 (Ho et al. 2020, §4);
    - scaled_linear: ``torch.linspace`` of sqrt(β) in float32, squared in float32 (latent diffusion);
    - squaredcos_cap_v2: the cosine ᾱ of Nichol & Dhariwal 2021 (eq. 17), β capped at 0.999, in float64, cast;
    - sigmoid: β = sigmoid(linspace(-6, 6)) rescaled to [beta_start, beta_end] (GeoDiff), in float64, cast.
    """
    check_positive("num_train_timesteps", num_train_timesteps, integer=True)
    if trained_betas is not None:
        betas = np.asarray(trained_betas, dtype=np.float64).reshape(-1)
        if betas.size < 1 or not np.all((betas > 0) & (betas < 1)):
            raise ValueError("trained_betas must be a non-empty sequence of values in (0, 1)")
        return betas.astype(np.float32)
    check_choice("beta_schedule", beta_schedule, allowed)
    if beta_schedule == "linear":
        return torch_linspace_float32(beta_start, beta_end, num_train_timesteps)
    if beta_schedule == "scaled_linear":
        return torch_linspace_float32(beta_start**0.5, beta_end**0.5, num_train_timesteps) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return betas_for_alpha_bar(num_train_timesteps).astype(np.float32)
    ramp = np.linspace(-6.0, 6.0, num_train_timesteps, dtype=np.float64)
    return (1.0 / (1.0 + np.exp(-ramp)) * (beta_end - beta_start) + beta_start).astype(np.float32)


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Shift and scale sqrt(ᾱ) so that ᾱ_T = 0 while ᾱ_0 is kept (Lin et al. 2023, Algorithm 1), in
    diffusers' float32 arithmetic operation by operation (ᾱ near T comes from a float32
    cancellation, so float64 would not reproduce it)."""
    one = np.float32(1.0)
    sqrt_abar = np.sqrt(float32_cumprod(one - np.asarray(betas, np.float32)))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar**2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return one - alphas


def karras_ramp_sigmas(ramp: np.ndarray, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022, eq. 5 at arbitrary ramp positions u ∈ [0, 1]:
    (σ_max^{1/ρ} + u·(σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ (the consistency-model sampler places u at its own
    training steps)."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + np.asarray(ramp, np.float64) * (lo - hi)) ** rho


def vp_alphas_cumprod(
    beta_schedule: str,
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    trained_betas=None,
    rescale_betas_zero_snr: bool = False,
    allowed=BETA_SCHEDULES,
):
    """(β, ᾱ) of a discrete VP schedule exactly as diffusers' torch schedulers build them:
    float32 β (:func:`float32_betas`), the optional zero-terminal-SNR rescale in float32, and
    ᾱ = cumprod(1 - β) as torch accumulates it."""
    betas = float32_betas(beta_schedule, num_train_timesteps, beta_start, beta_end, trained_betas, allowed)
    if trained_betas is not None and betas.size != num_train_timesteps:
        raise ValueError(f"trained_betas has {betas.size} entries but num_train_timesteps is {num_train_timesteps}")
    if rescale_betas_zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    return betas, float32_cumprod(np.float32(1.0) - betas)
