"""DDPM: denoising diffusion probabilistic models (Ho et al. 2020)."""
from __future__ import annotations

from typing import Optional, Sequence

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from ..configuration import register_to_config
from ..outputs import SchedulerOutput
from ..utils import GeneratorLike, check_choice
from . import schedules
from .base import (
    PREDICTION_TYPES,
    LoopPlan,
    TimestepLike,
    TimestepTableSchedulerBase,
    clip_or_threshold,
    predict_x0_and_eps,
)

VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
LEARNED_VARIANCES = ("learned", "learned_range")


def posterior_std(variance_type: str, coefs_std: Tensor, log_small: Tensor, log_large: Tensor,
                  predicted: Optional[Tensor]) -> Tensor:
    """Standard deviation of p(x_{t-1} | x_t) for each ``variance_type``.

    fixed_small: sqrt(β̃_t), β̃_t = (1-ᾱ_{t-1})/(1-ᾱ_t)·β_t the true posterior variance (Ho et al.
    eq. 7); fixed_large: sqrt(β_t) (both tabulated on the host); learned: sqrt of the model's
    variance output; learned_range: exp(½(v·log β_t + (1-v)·log β̃_t)) with v = (output+1)/2
    (Nichol & Dhariwal 2021, eq. 15). The ``*_log`` variants are the same variances.
    """
    if variance_type == "learned":
        return ops.sqrt(predicted)
    if variance_type == "learned_range":
        frac = (predicted + 1.0) / 2.0
        return ops.exp(0.5 * (frac * log_large + (1.0 - frac) * log_small))
    return coefs_std


class DDPMScheduler(TimestepTableSchedulerBase):
    """DDPM ancestral sampling (Ho et al. 2020, eq. 6-7):

    x_{t-1} = μ̃_t(x_t, x̂0) + σ_t·z,
    μ̃_t = sqrt(ᾱ_{t-1})·β_t/(1-ᾱ_t)·x̂0 + sqrt(α_t)·(1-ᾱ_{t-1})/(1-ᾱ_t)·x_t,

    with α_t = ᾱ_t/ᾱ_{t-1} and β_t = 1 - α_t taken between consecutive *inference* timesteps,
    so fewer inference steps than training steps and custom timesteps are exact. No noise is
    added at t = 0. With ``variance_type`` learned/learned_range the model returns 2C
    channels: the first C are the prediction, the last C the variance output.

    Example:
        >>> import mindspore as ms, numpy as np
        >>> from mindscience_diffuser import DDPMScheduler
        >>> scheduler = DDPMScheduler(num_train_timesteps=100)
        >>> scheduler.set_timesteps(10)
        >>> x = ms.Tensor(np.random.default_rng(0).standard_normal((2, 1, 8, 8)), ms.float32)
        >>> for t in scheduler.timesteps:
        ...     x = scheduler.step(0.1 * x, x, int(t), generator=0)
        >>> x.shape
        (2, 1, 8, 8)
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Sequence[float]] = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        compute_dtype=ms.float32,
    ):
        super().__init__(compute_dtype)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("variance_type", variance_type, (None,) + VARIANCE_TYPES)
        check_choice("timestep_spacing", timestep_spacing, schedules.TIMESTEP_SPACINGS)
        self._init_betas()

    def set_timesteps(
        self, num_inference_steps: Optional[int] = None, device=None, timesteps: Optional[Sequence[int]] = None
    ) -> None:
        """Choose the inference timesteps: ``num_inference_steps`` spaced by ``timestep_spacing``,
        or an explicit descending list ``timesteps``. Either way each timestep steps to the
        next one in the list, and the last one to x0.
        ``device`` is accepted for diffusers compatibility and ignored."""
        cfg = self.config
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        if timesteps is not None:
            ts = self._check_custom_timesteps(timesteps)
            self.custom_timesteps = True
        else:
            n = self._check_num_inference_steps(num_inference_steps, cfg.num_train_timesteps)
            ts = schedules.spaced_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, n,
                                            cfg.steps_offset).astype(np.int64)
            self.custom_timesteps = False
        self._install_schedule(ts)

    steps_on_training_schedule = True

    def _install_training_schedule(self) -> None:
        # Every training timestep steps to the one below it, as diffusers' step does with no inference schedule.
        self._install_schedule(np.arange(self.config["num_train_timesteps"])[::-1].copy())
        self.num_inference_steps = None

    @property
    def _learned(self) -> bool:
        return self.config["variance_type"] in LEARNED_VARIANCES

    def _step_coefficients(self, abar, abar_prev):
        one = np.float32(1.0)
        step_alpha = abar / abar_prev
        step_beta = one - step_alpha
        posterior_var = np.maximum((one - abar_prev) / (one - abar) * step_beta, np.float32(1e-20))
        fixed_var = step_beta if str(self.config["variance_type"]).startswith("fixed_large") else posterior_var
        return {
            "alpha": np.sqrt(abar),
            "sigma": np.sqrt(one - abar),
            "x0_coef": np.sqrt(abar_prev) * step_beta / (one - abar),
            "xt_coef": np.sqrt(step_alpha) * (one - abar_prev) / (one - abar),
            "std": np.sqrt(fixed_var),
            "log_small": np.log(posterior_var),
            "log_large": np.log(step_beta),
            # No noise on the final step to x0 (t = 0).
            "noisy": (np.arange(len(abar)) > 0).astype(np.float32),
        }

    def construct(self, model_output: Tensor, sample: Tensor, timestep: Tensor, noise: Tensor):
        """One DDPM step; returns ``(prev_sample, pred_original_sample)``. Pure MindSpore."""
        channels = sample.shape[1]
        predicted = None
        if self._learned:
            predicted = model_output[:, channels:].astype(ms.float32)
            model_output = model_output[:, :channels]
        coefs = self._coefficients(timestep)
        column = lambda name: self._column(coefs, name, sample)  # noqa: E731
        x_t = sample.astype(ms.float32)
        x0, _ = predict_x0_and_eps(self.config["prediction_type"], model_output.astype(ms.float32), x_t,
                                   column("alpha"), column("sigma"))
        x0 = clip_or_threshold(x0, self.config)
        mean = column("x0_coef") * x0 + column("xt_coef") * x_t
        std = posterior_std(self.config["variance_type"], column("std"), column("log_small"), column("log_large"),
                            predicted)
        prev = mean + column("noisy") * std * noise.astype(ms.float32)
        return self._cast(prev), self._cast(x0)

    def loop_plan(self, num_inference_steps=None, **options) -> LoopPlan:
        """Every step draws noise (the last one scales it by zero)."""
        return super().loop_plan(num_inference_steps, **options)._replace(stochastic=True)

    def loop_update(self, model_output, sample, i, timestep, noise, knob, state, constants):
        prev, _ = self.construct(model_output, sample, timestep, noise)
        return prev, state

    def step(
        self,
        model_output: Tensor,
        sample: Tensor,
        timestep: TimestepLike,
        generator: GeneratorLike = None,
        variance_noise: Optional[Tensor] = None,
        return_dict: Optional[bool] = None,
    ):
        """Step from ``timestep`` to the previous inference timestep.

        Returns the previous sample (``return_dict=None``), a :class:`SchedulerOutput`
        (``True``) or ``(prev_sample, pred_original_sample)`` (``False``). The noise is
        ``variance_noise`` if given, else drawn from ``generator`` (a numpy Generator or seed).
        """
        self._check_ready()
        self._check_tensors(model_output, sample, channel_multiple=(1, 2) if self._learned else (1,))
        if self._learned and model_output.shape[1] != 2 * sample.shape[1]:
            raise ValueError(f"variance_type={self.config.variance_type!r} needs a 2C-channel model_output "
                             f"(prediction, variance), got shape {tuple(model_output.shape)}")
        self._check_host_timestep(timestep, in_schedule=True)
        t = self._timestep_tensor(timestep, sample.shape[0])
        noise = self._noise_like(sample, generator, variance_noise)
        prev, x0 = self(self._cast(model_output), self._cast(sample), t, noise)
        return self._pack(return_dict, SchedulerOutput, prev, x0)
