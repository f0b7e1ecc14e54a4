"""Euler sampling of the probability-flow ODE, with optional churn (Karras et al. 2022, Algorithm 2)."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from ..configuration import register_to_config
from ..outputs import SchedulerOutput
from ..utils import GeneratorLike, check_choice, check_positive
from . import schedules
from .base import PREDICTION_TYPES, LoopPlan, ScaledInputMixin, StepIndexMixin, VPSchedulerBase, as_float32, gather

EULER_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
INTERPOLATION_TYPES = ("linear", "log_linear")
TIMESTEP_TYPES = ("discrete", "continuous")
FINAL_SIGMAS_TYPES = ("zero", "sigma_min")
MAX_GAMMA = 2**0.5 - 1


def denoise_ve(prediction_type: str, model_output: Tensor, sample: Tensor, sigma: Tensor, sigma_hat: Tensor) -> Tensor:
    """x̂0 from a model output on the variance-exploding sample x = x0 + σ·ε (the model sees
    x/sqrt(σ²+1)):

    epsilon: x̂0 = x - σ̂·ε̂;  sample: x̂0 = m;
    v_prediction: x̂0 = -σ/sqrt(σ²+1)·v̂ + x/(σ²+1) (Salimans & Ho 2022 in the VE scaling).
    """
    if prediction_type == "epsilon":
        return sample - sigma_hat * model_output
    if prediction_type == "sample":
        return model_output
    variance = sigma * sigma + 1.0
    return model_output * (-sigma / ops.sqrt(variance)) + sample / variance


def euler_update(sample: Tensor, denoised: Tensor, sigma_hat: Tensor, sigma_next: Tensor) -> Tensor:
    """One Euler step of dx/dσ = (x - x̂0)/σ from σ̂ to σ_next (Karras et al. 2022, eq. 3 and Algorithm 2)."""
    derivative = (sample - denoised) / sigma_hat
    return sample + derivative * (sigma_next - sigma_hat)


def _check_churn(s_churn, s_tmin, s_tmax, s_noise) -> None:
    for name, value in (("s_churn", s_churn), ("s_tmin", s_tmin), ("s_tmax", s_tmax), ("s_noise", s_noise)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise TypeError(f"{name} must be a number, got {value!r}")
    if s_churn < 0 or s_noise < 0:
        raise ValueError(f"s_churn and s_noise must be non-negative, got s_churn={s_churn}, s_noise={s_noise}")


class EulerDiscreteScheduler(ScaledInputMixin, StepIndexMixin, VPSchedulerBase):
    """Euler sampler over the σ of a discrete VP schedule (Karras et al. 2022, Algorithm 2).

    With σ_i = sqrt((1-ᾱ)/ᾱ) at the inference timesteps, each step optionally "churns" the
    sample up to σ̂ = σ_i·(1+γ), γ = min(s_churn/N, √2-1) inside [s_tmin, s_tmax]
    (x ← x + s_noise·z·sqrt(σ̂² - σ_i²)), then takes an Euler step of the probability-flow ODE
    to σ_{i+1}. The model sees x/sqrt(σ²+1).

    The σ table follows diffusers exactly, including its float32 β/ᾱ arithmetic: linear or
    log-linear interpolation, or Karras / exponential / beta sigmas re-mapped to fractional
    timesteps, and a final σ of 0 or σ_min.

    Example:
        >>> import mindspore as ms, numpy as np
        >>> from mindscience_diffuser import EulerDiscreteScheduler
        >>> scheduler = EulerDiscreteScheduler(use_karras_sigmas=True)
        >>> scheduler.set_timesteps(10)
        >>> noise = np.random.default_rng(0).standard_normal((1, 3, 8, 8))
        >>> x = ms.Tensor(noise, ms.float32) * scheduler.init_noise_sigma
        >>> for t in scheduler.timesteps:
        ...     eps = 0.1 * scheduler.scale_model_input(x, t)  # stands in for a trained model
        ...     x = scheduler.step(eps, x, t)
        >>> x.shape
        (1, 3, 8, 8)
    """

    order = 1
    beta_schedules = EULER_BETA_SCHEDULES
    pins_terminal_snr = True  # σ_T ≈ 4096 instead of infinite

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Sequence[float]] = None,
        prediction_type: str = "epsilon",
        interpolation_type: str = "linear",
        use_karras_sigmas: Optional[bool] = False,
        use_exponential_sigmas: Optional[bool] = False,
        use_beta_sigmas: Optional[bool] = False,
        sigma_min: Optional[float] = None,
        sigma_max: Optional[float] = None,
        timestep_spacing: str = "linspace",
        timestep_type: str = "discrete",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        final_sigmas_type: str = "zero",
        compute_dtype=ms.float32,
    ):
        super().__init__(compute_dtype)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("interpolation_type", interpolation_type, INTERPOLATION_TYPES)
        check_choice("timestep_spacing", timestep_spacing, schedules.TIMESTEP_SPACINGS)
        check_choice("timestep_type", timestep_type, TIMESTEP_TYPES)
        check_choice("final_sigmas_type", final_sigmas_type, FINAL_SIGMAS_TYPES)
        self.sigma_schedule = schedules.chosen_sigma_schedule(bool(use_karras_sigmas), bool(use_exponential_sigmas),
                                                              bool(use_beta_sigmas))
        for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            if value is not None:
                check_positive(name, value)
        if sigma_min is not None and sigma_max is not None and sigma_min >= sigma_max:
            raise ValueError(f"sigma_min ({sigma_min}) must be smaller than sigma_max ({sigma_max})")
        self._init_betas()
        # Before set_timesteps: every training step, as diffusers exposes it.
        train_sigmas = self.train_sigmas()
        self._install(np.linspace(0, num_train_timesteps - 1, num_train_timesteps)[::-1].astype(np.float32),
                      np.append(train_sigmas[::-1], 0.0).astype(np.float32), tables=False)
        self.num_inference_steps = None

    steps_on_training_schedule = True

    def _install_training_schedule(self) -> None:
        self._set_table("sigma_table", self.sigmas)

    # -- host-side schedule ------------------------------------------------------------------
    def _uses_continuous_v(self) -> bool:
        return self.config.timestep_type == "continuous" and self.config["prediction_type"] == "v_prediction"

    @property
    def init_noise_sigma(self) -> float:
        """Standard deviation of x_T: σ_max, or sqrt(σ_max²+1) with ``leading`` spacing."""
        largest = np.float32(np.max(self.sigmas))
        if self.config.timestep_spacing in ("linspace", "trailing"):
            return float(largest)
        return float(np.sqrt(largest * largest + np.float32(1.0)))

    def _install(self, timesteps: np.ndarray, sigmas: np.ndarray, tables: bool = True) -> None:
        if self._uses_continuous_v():
            timesteps = np.float32(0.25) * np.log(sigmas[: len(timesteps)])
        self.timesteps = np.asarray(timesteps, np.float32)
        self.sigmas = np.asarray(sigmas, np.float32)
        if tables:
            self._set_table("sigma_table", self.sigmas)
        self._reset_step_index()

    def _sigma_bounds(self, sigmas: np.ndarray):
        cfg = self.config
        low = cfg.sigma_min if cfg.sigma_min is not None else float(sigmas[-1])
        high = cfg.sigma_max if cfg.sigma_max is not None else float(sigmas[0])
        return low, high

    def _remapped_sigmas(self, sigmas: np.ndarray, n: int) -> np.ndarray:
        """Karras / exponential / beta σ between the configured (or the schedule's) σ_min and σ_max."""
        low, high = self._sigma_bounds(sigmas)
        if self.sigma_schedule == "karras":
            return schedules.karras_sigmas(low, high, n)
        if self.sigma_schedule == "exponential":
            return schedules.exponential_sigmas(low, high, n)
        return schedules.beta_sigmas(low, high, n)

    def set_timesteps(
        self,
        num_inference_steps: Optional[int] = None,
        device=None,
        timesteps: Optional[Sequence[float]] = None,
        sigmas: Optional[Sequence[float]] = None,
    ) -> None:
        """Build the sampling schedule from exactly one of ``num_inference_steps`` (spaced by
        ``timestep_spacing``), ``timesteps`` (explicit, descending training timesteps) or
        ``sigmas`` (explicit σ, including the final one; timesteps follow by log-σ interpolation).
        ``device`` is accepted for diffusers compatibility and ignored."""
        cfg = self.config
        given = [name
                 for name, value in (("num_inference_steps", num_inference_steps), ("timesteps", timesteps),
                                     ("sigmas", sigmas)) if value is not None]
        if len(given) != 1:
            raise ValueError(f"pass exactly one of num_inference_steps, timesteps or sigmas, got {given or 'none'}")
        if timesteps is not None and self.sigma_schedule is not None:
            raise ValueError(f"custom timesteps cannot be combined with use_{self.sigma_schedule}_sigmas=True; pass "
                             "sigmas instead")
        if timesteps is not None and self._uses_continuous_v():
            raise ValueError("custom timesteps cannot be combined with timestep_type='continuous' and "
                             "prediction_type='v_prediction'")
        train_sigmas = self.train_sigmas()
        log_sigmas = np.log(train_sigmas)
        if sigmas is not None:
            custom = np.asarray(sigmas, dtype=np.float64).reshape(-1)
            if (custom.size < 2 or not np.all(np.isfinite(custom)) or np.any(custom < 0)
                    or np.any(custom[1:] > custom[:-1])):
                raise ValueError("sigmas must be a non-increasing list of at least 2 non-negative values (the last "
                                 f"is where sampling ends), got {list(sigmas)}")
            custom = custom.astype(np.float32)
            self.num_inference_steps = custom.size - 1
            self._install(schedules.sigma_to_t(custom[:-1], log_sigmas), custom)
            return
        if timesteps is not None:
            steps = np.asarray(timesteps, dtype=np.float64).reshape(-1)
            if (steps.size < 1 or np.any(steps[1:] >= steps[:-1]) or steps[0] > cfg.num_train_timesteps - 1
                    or steps[-1] < 0):
                raise ValueError("timesteps must be a strictly descending list in [0, "
                                 f"{cfg.num_train_timesteps - 1}], got {list(timesteps)}")
            steps = steps.astype(np.float32)
            n = steps.size
        else:
            n = self._check_num_inference_steps(num_inference_steps, cfg.num_train_timesteps)
            steps = schedules.spaced_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, n, cfg.steps_offset,
                                               round_linspace=False).astype(np.float32)
        if cfg.interpolation_type == "linear":
            sig = np.interp(steps, np.arange(len(train_sigmas)), train_sigmas)
        else:
            # diffusers spaces N+1 points evenly in log σ over the whole training range.
            sig = np.exp(schedules.torch_linspace_float32(log_sigmas[-1], log_sigmas[0], n + 1))
        if self.sigma_schedule is not None:
            sig = self._remapped_sigmas(sig, n)
            steps = schedules.sigma_to_t(sig, log_sigmas)
        last = train_sigmas[0] if cfg.final_sigmas_type == "sigma_min" else 0.0
        self.num_inference_steps = n
        self._install(steps, np.append(sig, last).astype(np.float32))

    # -- the step ----------------------------------------------------------------------------
    def scale_at(self, sample: Tensor, step_index: Tensor) -> Tensor:
        """Pure form of :meth:`scale_model_input`: x / sqrt(σ_i² + 1)."""
        sigma = gather(self.sigma_table, step_index, sample)
        scaled = as_float32(sample) / ops.sqrt(sigma * sigma + 1.0)
        return scaled if sample.dtype == ms.float32 else scaled.astype(sample.dtype)

    def construct(self, model_output: Tensor, sample: Tensor, step_index: Tensor, noise: Tensor, gamma: Tensor,
                  s_noise: float = 1.0):
        """One Euler step from σ_i (``step_index``) to σ_{i+1} with churn factor ``gamma``
        (0: plain ODE step; ``noise`` is then ignored). Returns ``(prev_sample, pred_original_sample)``."""
        sigma = gather(self.sigma_table, step_index, sample)
        sigma_next = gather(self.sigma_table, step_index + 1, sample)
        sigma_hat = sigma * (as_float32(gamma) + 1.0)
        x = as_float32(sample)
        # Churn: raise the noise level from σ to σ̂ with fresh noise (Karras et al. 2022, Algorithm 2, line 6).
        x = x + as_float32(noise) * s_noise * ops.sqrt(sigma_hat * sigma_hat - sigma * sigma)
        denoised = denoise_ve(self.config["prediction_type"], as_float32(model_output), x, sigma, sigma_hat)
        prev = euler_update(x, denoised, sigma_hat, sigma_next)
        return self._cast(prev), self._cast(denoised)

    def churn_gamma(
        self, step_index: int, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf")
    ) -> float:
        """γ_i = min(s_churn/N, √2-1) when s_tmin ≤ σ_i ≤ s_tmax, else 0 (N = len(sigmas) - 1)."""
        sigma = float(self.sigmas[step_index])
        if not s_tmin <= sigma <= s_tmax:
            return 0.0
        return min(s_churn / (len(self.sigmas) - 1), MAX_GAMMA)

    # -- the sampling loop's part ------------------------------------------------------------
    loop_constants = {"s_noise": 1.0}

    def loop_plan(self, num_inference_steps=None, s_churn: float = 0.0, s_tmin: float = 0.0,
                  s_tmax: float = float("inf")) -> LoopPlan:
        """The churn γ of each step in its knob; noise only if some γ > 0."""
        _check_churn(s_churn, s_tmin, s_tmax, 0.0)
        self.set_timesteps(num_inference_steps)
        gammas = np.array([self.churn_gamma(i, s_churn, s_tmin, s_tmax) for i in range(len(self.timesteps))],
                          np.float32)
        return LoopPlan(self.timesteps, gammas, bool(np.any(gammas > 0)))

    def loop_denoised(self, model_output, sample, i, timestep):
        # At the schedule's σ_i: guidance assumes no churn (γ = 0), the default.
        sigma = gather(self.sigma_table, i, sample)
        return denoise_ve(self.config["prediction_type"], as_float32(model_output), as_float32(sample), sigma, sigma)

    def loop_update(self, model_output, sample, i, timestep, noise, knob, state, constants):
        prev, _ = self.construct(model_output, sample, i, noise, knob, constants[0])
        return prev, state

    def step(
        self,
        model_output: Tensor,
        sample: Tensor,
        timestep,
        s_churn: float = 0.0,
        s_tmin: float = 0.0,
        s_tmax: float = float("inf"),
        s_noise: float = 1.0,
        generator: GeneratorLike = None,
        variance_noise: Optional[Tensor] = None,
        return_dict: Optional[bool] = None,
    ):
        """Step from ``timestep`` (a float from ``timesteps``) to the next σ.

        Returns the previous sample (``return_dict=None``), a :class:`SchedulerOutput`
        (``True``) or ``(prev_sample, pred_original_sample)`` (``False``). Noise is drawn only
        when churn is active at this step (γ > 0): ``variance_noise`` if given, else from ``generator``.
        """
        self._check_ready()
        self._check_tensors(model_output, sample)
        _check_churn(s_churn, s_tmin, s_tmax, s_noise)
        index = self._step_index_for(timestep, sample.shape[0])
        gamma = self.churn_gamma(index, s_churn, s_tmin, s_tmax)
        noise = self._noise_like(sample, generator, variance_noise) if gamma > 0 else self._zeros_like(sample)
        prev, x0 = self(self._cast(model_output), self._cast(sample), Tensor(index, ms.int32), noise,
                        Tensor(gamma, ms.float32), float(s_noise))
        self._step_index = index + 1
        return self._pack(return_dict, SchedulerOutput, prev, x0)
