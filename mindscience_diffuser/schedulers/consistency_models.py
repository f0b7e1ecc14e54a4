"""Consistency models: multistep and one-step sampling (Song et al. 2023, Algorithm 1)."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from ..configuration import register_to_config
from ..outputs import CMStochasticIterativeSchedulerOutput
from ..utils import GeneratorLike, check_positive
from . import schedules
from .base import LoopPlan, ScaledInputMixin, SchedulerBase, StepIndexMixin, as_float32, gather


def boundary_scalings(sigma, sigma_min: float, sigma_data: float):
    """The parameterisation f(x, σ) = c_skip(σ)·x + c_out(σ)·F(x, σ) that makes f(x, σ_min) = x
    (Song et al. 2023, Appendix C, with ε = σ_min):

    c_skip = σ_d² / ((σ - σ_min)² + σ_d²),   c_out = (σ - σ_min)·σ_d / sqrt(σ² + σ_d²).

    Works on numpy arrays and on MindSpore Tensors alike.
    """
    data_var = sigma_data**2
    c_skip = data_var / ((sigma - sigma_min) ** 2 + data_var)
    c_out = (sigma - sigma_min) * sigma_data / (sigma**2 + data_var) ** 0.5
    return c_skip, c_out


class CMStochasticIterativeScheduler(ScaledInputMixin, StepIndexMixin, SchedulerBase):
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1).

    Each step denoises with the consistency function, x̂0 = c_skip(σ)·x + c_out(σ)·F(x, σ)
    (clipped to [-1, 1] with ``clip_denoised``), then re-noises to the next level of the
    Karras schedule: x' = x̂0 + s_noise·z·sqrt(σ̂² - σ_min²), σ̂ = clamp(σ_next, σ_min, σ_max).
    One-step sampling (a single timestep) adds no noise.

    Timesteps are floats, t = 1000·0.25·log(σ + 1e-44) (the model's noise conditioning);
    an integer passed as a timestep is rejected, since it is almost always a loop counter.

    Example:
        >>> import mindspore as ms, numpy as np
        >>> from mindscience_diffuser import CMStochasticIterativeScheduler
        >>> scheduler = CMStochasticIterativeScheduler()
        >>> scheduler.set_timesteps(timesteps=[22, 0])
        >>> noise = np.random.default_rng(0).standard_normal((1, 3, 8, 8))
        >>> x = ms.Tensor(noise, ms.float32) * scheduler.init_noise_sigma
        >>> for t in scheduler.timesteps:
        ...     model_in = scheduler.scale_model_input(x, t)
        ...     x = scheduler.step(0.1 * model_in, x, t, generator=0)  # 0.1·x stands in for a trained model
        >>> x.shape
        (1, 3, 8, 8)
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 40,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
        s_noise: float = 1.0,
        rho: float = 7.0,
        clip_denoised: bool = True,
        compute_dtype=ms.float32,
    ):
        super().__init__(compute_dtype)
        check_positive("num_train_timesteps", num_train_timesteps, integer=True, minimum=2)
        for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max), ("sigma_data", sigma_data),
                            ("rho", rho)):
            check_positive(name, value)
        if not sigma_max > sigma_min:
            raise ValueError(f"sigma_max ({sigma_max}) must be larger than sigma_min ({sigma_min})")
        check_positive("s_noise", s_noise, allow_zero=True)
        self.init_noise_sigma = float(sigma_max)
        # Before set_timesteps: the full training schedule, as diffusers exposes it.
        sigmas = self._sigmas_at(np.linspace(0, 1, num_train_timesteps))
        self.sigmas = sigmas
        self.timesteps = self.sigma_to_t(sigmas)
        self.custom_timesteps = False
        self._reset_step_index()

    steps_on_training_schedule = True

    def _install_training_schedule(self) -> None:
        # The last training step lands on σ_min, as the sampling schedule's appended entry does.
        self._set_table("sigma_table", np.append(self.sigmas, self.config["sigma_min"]).astype(np.float32))

    # -- host-side schedule ------------------------------------------------------------------
    def _sigmas_at(self, ramp: np.ndarray) -> np.ndarray:
        return schedules.karras_ramp_sigmas(ramp, self.config["sigma_min"], self.config["sigma_max"],
                                            self.config["rho"])

    @staticmethod
    def sigma_to_t(sigmas):
        """The model's time conditioning of a noise level: t = 1000·0.25·log(σ + 1e-44) (float64)."""
        return 1000 * 0.25 * np.log(np.asarray(sigmas, dtype=np.float64) + 1e-44)

    def get_scalings_for_boundary_condition(self, sigma) -> Tuple:
        """(c_skip, c_out) of :func:`boundary_scalings` at ``sigma`` (a number, array or Tensor)."""
        return boundary_scalings(sigma, self.config["sigma_min"], self.config["sigma_data"])

    def set_timesteps(
        self, num_inference_steps: Optional[int] = None, device=None, timesteps: Optional[Sequence[int]] = None
    ) -> None:
        """Place the sampling noise levels on the Karras schedule over the training steps.

        ``num_inference_steps`` uses training steps 0, T//N, 2·T//N, ...; ``timesteps`` is an
        explicit descending list of training-step indices in [0, num_train_timesteps). Step i
        of the list is mapped to the Karras ramp position i-th from the *end* divided by
        (T-1), exactly as the reference sampler does, and ``self.timesteps`` holds the float
        conditioning values of those σ.
        ``device`` is accepted for diffusers compatibility and ignored."""
        T = self.config.num_train_timesteps
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        if timesteps is not None:
            steps = np.asarray(timesteps)
            if steps.ndim != 1 or steps.size < 1 or not (np.issubdtype(steps.dtype, np.integer)
                                                         or np.all(np.mod(steps, 1) == 0)):
                raise ValueError("timesteps must be a non-empty 1-D list of integer training steps, got "
                                 f"{timesteps!r}")
            if np.any(steps[1:] >= steps[:-1]):
                raise ValueError(f"timesteps must be in descending order, got {steps.tolist()}")
            if steps[0] >= T or steps[-1] < 0:
                raise ValueError(f"timesteps must lie in [0, {T - 1}] (num_train_timesteps={T}), got {steps.tolist()}")
            steps = steps.astype(np.int64)
            self.custom_timesteps = True
        else:
            n = self._check_num_inference_steps(num_inference_steps, T)
            steps = (np.arange(n) * (T // n)).round()[::-1].astype(np.int64)
            self.custom_timesteps = False
        sigmas = self._sigmas_at(steps[::-1] / (T - 1))
        self.timesteps = self.sigma_to_t(sigmas)
        self.sigmas = np.append(sigmas, self.config["sigma_min"]).astype(np.float32)
        self.num_inference_steps = len(steps)
        self._set_table("sigma_table", self.sigmas)
        self._reset_step_index()

    # -- the step ----------------------------------------------------------------------------
    def _sigma_pair(self, step_index: Tensor, sample: Tensor) -> Tuple[Tensor, Tensor]:
        """(σ_i, σ_{i+1}) in float32; σ_{N} is σ_min, appended by set_timesteps."""
        return gather(self.sigma_table, step_index, sample), gather(self.sigma_table, step_index + 1, sample)

    def scale_at(self, sample: Tensor, step_index: Tensor) -> Tensor:
        """Pure form of :meth:`scale_model_input`: x / sqrt(σ_i² + σ_d²) (EDM's c_in)."""
        sigma = gather(self.sigma_table, step_index, sample)
        scaled = as_float32(sample) / ops.sqrt(sigma * sigma + self.config["sigma_data"]**2)
        return scaled if sample.dtype == ms.float32 else scaled.astype(sample.dtype)

    def construct(self, model_output: Tensor, sample: Tensor, step_index: Tensor, noise: Tensor) -> Tensor:
        """One consistency step from σ_i (``step_index``) to σ_{i+1}; pure MindSpore.

        ``noise`` is z ~ N(0, I) (zeros for one-step sampling); s_noise scales it here.
        """
        sigma, sigma_next = self._sigma_pair(step_index, sample)
        c_skip, c_out = boundary_scalings(sigma, self.config["sigma_min"], self.config["sigma_data"])
        denoised = c_out * as_float32(model_output) + c_skip * as_float32(sample)
        if self.config["clip_denoised"]:
            denoised = ops.clamp(denoised, -1.0, 1.0)
        sigma_hat = ops.clamp(sigma_next, self.config["sigma_min"], self.config["sigma_max"])
        z = as_float32(noise) * self.config["s_noise"]
        # sqrt(σ̂² - σ_min²) factored, so the last step (σ̂ = σ_min) re-noises by exactly zero in
        # every execution mode (a fused σ̂·σ̂ - σ_min² can leave a float32 residue there).
        prev = denoised + z * ops.sqrt((sigma_hat - self.config["sigma_min"]) * (sigma_hat + self.config["sigma_min"]))
        return self._cast(prev)

    # -- the sampling loop's part ------------------------------------------------------------
    def loop_plan(self, num_inference_steps=None, timesteps: Optional[Sequence[int]] = None) -> LoopPlan:
        """Noise for the re-noising of multistep sampling; one-step sampling lands on σ_min and draws none."""
        if timesteps is not None:
            self.set_timesteps(timesteps=timesteps)
        else:
            self.set_timesteps(num_inference_steps)
        ts = np.asarray(self.timesteps, np.float32)
        return LoopPlan(ts, np.zeros(len(ts), np.float32), len(ts) > 1)

    def loop_update(self, model_output, sample, i, timestep, noise, knob, state, constants):
        return self.construct(model_output, sample, i, noise), state

    def loop_denoised(self, model_output, sample, i, timestep):
        """f_θ(x, σ_i) = c_skip·x + c_out·F_θ (Song et al. 2023, eq. 5), unclipped."""
        sigma = gather(self.sigma_table, i, sample)
        c_skip, c_out = boundary_scalings(sigma, self.config["sigma_min"], self.config["sigma_data"])
        return c_out * as_float32(model_output) + c_skip * as_float32(sample)

    def step(
        self,
        model_output: Tensor,
        sample: Tensor,
        timestep,
        generator: GeneratorLike = None,
        variance_noise: Optional[Tensor] = None,
        return_dict: Optional[bool] = None,
    ):
        """Denoise at ``timestep`` (a float from ``timesteps``) and re-noise to the next level.

        Returns the next sample (``return_dict=None``), a
        :class:`CMStochasticIterativeSchedulerOutput` (``True``) or ``(prev_sample,)``
        (``False``). Multistep sampling draws z at every step (``variance_noise`` if given,
        else from ``generator``); the last step's re-noising has zero scale.
        """
        self._check_ready()
        self._check_tensors(model_output, sample)
        index = self._step_index_for(timestep, sample.shape[0])
        if len(self.timesteps) > 1:
            noise = self._noise_like(sample, generator, variance_noise)
        else:
            noise = self._zeros_like(sample)
        prev = self(self._cast(model_output), self._cast(sample), Tensor(index, ms.int32), noise)
        self._step_index = index + 1
        return self._pack(return_dict, CMStochasticIterativeSchedulerOutput, prev)
