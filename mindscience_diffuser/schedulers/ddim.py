"""DDIM: denoising diffusion implicit models (Song et al. 2021)."""
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


def _check_eta(eta) -> None:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)):
        raise TypeError(f"eta must be a float in [0, 1], got {type(eta).__name__}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0: DDIM, 1: DDPM), got {eta}")


class DDIMScheduler(TimestepTableSchedulerBase):
    """DDIM sampling (Song et al. 2021, eq. 12):

    x_{t-1} = sqrt(ᾱ_{t-1})·x̂0 + sqrt(1 - ᾱ_{t-1} - σ_t²)·ε̂ + σ_t·z,
    σ_t = η·sqrt((1-ᾱ_{t-1})/(1-ᾱ_t))·sqrt(1 - ᾱ_t/ᾱ_{t-1})  (eq. 16).

    η = 0 is the deterministic DDIM; η = 1 is DDPM's ancestral step. The step goes from t to
    t - T//N for every spacing; past 0 it lands on ``final_alpha_cumprod`` (1 with
    ``set_alpha_to_one``, else ᾱ_0).

    The constructor follows the MindScience signature (default ``beta_schedule`` is
    ``"squaredcos_cap_v2"``) plus diffusers' ``trained_betas``, ``set_alpha_to_one`` and
    ``steps_offset``.

    Example:
        >>> import mindspore as ms, numpy as np
        >>> from mindscience_diffuser import DDIMScheduler
        >>> scheduler = DDIMScheduler()
        >>> scheduler.set_timesteps(10)
        >>> x = ms.Tensor(np.random.default_rng(0).standard_normal((1, 3, 8, 8)), ms.float32)
        >>> for t in scheduler.timesteps:
        ...     eps = 0.1 * x  # stands in for a trained model
        ...     x = scheduler.step(eps, x, int(t))
        >>> x.shape
        (1, 3, 8, 8)
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "squaredcos_cap_v2",
        prediction_type: str = "epsilon",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        sample_max_value: float = 1.0,
        dynamic_thresholding_ratio: float = 0.995,
        rescale_betas_zero_snr: bool = False,
        timestep_spacing: str = "leading",
        trained_betas: Optional[Sequence[float]] = None,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        compute_dtype=ms.float32,
    ):
        super().__init__(compute_dtype)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", timestep_spacing, schedules.TIMESTEP_SPACINGS)
        self._init_betas()
        self.final_alpha_cumprod = 1.0 if set_alpha_to_one else self.alphas_cumprod[0]

    def set_timesteps(
        self, num_inference_steps: Optional[int] = None, device=None, timesteps: Optional[Sequence[int]] = None
    ) -> None:
        """Choose the inference timesteps: ``num_inference_steps`` spaced by ``timestep_spacing``,
        or an explicit descending list ``timesteps`` (each steps to the next one in the list).
        ``device`` is accepted for diffusers compatibility and ignored."""
        cfg = self.config
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        if timesteps is not None:
            ts = self._check_custom_timesteps(timesteps)
            self.custom_timesteps = True
            self._install_schedule(ts)
            return
        n = self._check_num_inference_steps(num_inference_steps, cfg.num_train_timesteps)
        ts = schedules.spaced_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, n,
                                        cfg.steps_offset).astype(np.int64)
        self.custom_timesteps = False
        self._install_schedule(ts, np.arange(cfg.num_train_timesteps) - cfg.num_train_timesteps // n)

    def _final_alpha_cumprod(self) -> float:
        return self.final_alpha_cumprod

    def _step_coefficients(self, abar, abar_prev):
        one = np.float32(1.0)
        return {
            "alpha": np.sqrt(abar),
            "sigma": np.sqrt(one - abar),
            "alpha_prev": np.sqrt(abar_prev),
            "sigma_prev_sq": one - abar_prev,
            "variance": (one - abar_prev) / (one - abar) * (one - abar / abar_prev),
        }

    def construct(self, model_output: Tensor, sample: Tensor, timestep: Tensor, noise: Tensor, eta=0.0,
                  use_clipped_model_output: bool = False):
        """One DDIM step; returns ``(prev_sample, pred_original_sample)``. Pure MindSpore."""
        coefs = self._coefficients(timestep)
        alpha, sigma = self._column(coefs, "alpha", sample), self._column(coefs, "sigma", sample)
        x_t = sample.astype(ms.float32)
        x0, eps = predict_x0_and_eps(self.config["prediction_type"], model_output.astype(ms.float32), x_t, alpha,
                                     sigma)
        x0 = clip_or_threshold(x0, self.config)
        if use_clipped_model_output:
            eps = (x_t - alpha * x0) / sigma
        std = eta * ops.sqrt(self._column(coefs, "variance", sample))
        direction = ops.sqrt(ops.clamp(self._column(coefs, "sigma_prev_sq", sample) - std * std, 0.0)) * eps
        prev = self._column(coefs, "alpha_prev", sample) * x0 + direction + std * noise.astype(ms.float32)
        return self._cast(prev), self._cast(x0)

    # -- the sampling loop's part ------------------------------------------------------------
    loop_constants = {"use_clipped_model_output": False}

    def loop_plan(self, num_inference_steps=None, eta: float = 0.0) -> LoopPlan:
        """η in every iteration's knob; noise only when η > 0."""
        _check_eta(eta)
        self.set_timesteps(num_inference_steps)
        return LoopPlan(self.timesteps, np.full(len(self.timesteps), eta, np.float32), eta > 0)

    def loop_update(self, model_output, sample, i, timestep, noise, knob, state, constants):
        prev, _ = self.construct(model_output, sample, timestep, noise, knob, constants[0])
        return prev, state

    def step(
        self,
        model_output: Tensor,
        sample: Tensor,
        timestep: TimestepLike,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: GeneratorLike = None,
        variance_noise: Optional[Tensor] = None,
        return_dict: Optional[bool] = None,
    ):
        """Step from ``timestep`` to the previous one.

        Returns the previous sample (``return_dict=None``), a :class:`SchedulerOutput`
        (``True``) or ``(prev_sample, pred_original_sample)`` (``False``). Noise is drawn
        only when ``eta > 0``: ``variance_noise`` if given, else from ``generator``.
        """
        self._check_ready()
        self._check_tensors(model_output, sample)
        _check_eta(eta)
        self._check_host_timestep(timestep, in_schedule=False)
        t = self._timestep_tensor(timestep, sample.shape[0])
        noise = self._noise_like(sample, generator, variance_noise) if eta > 0 else self._zeros_like(sample)
        prev, x0 = self(self._cast(model_output), self._cast(sample), t, noise, float(eta),
                        bool(use_clipped_model_output))
        return self._pack(return_dict, SchedulerOutput, prev, x0)
