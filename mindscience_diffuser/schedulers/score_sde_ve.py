"""Score-based generative modelling with the variance-exploding SDE: predictor-corrector sampling
(Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations")."""
from __future__ import annotations

from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..configuration import register_to_config
from ..outputs import SchedulerOutput, SdeVeOutput
from ..utils import GeneratorLike, check_positive
from . import schedules
from .base import LoopPlan, SchedulerBase, as_float32, broadcast_to_sample


def _per_sample_norm(x: Tensor) -> Tensor:
    """‖x_b‖₂ over every non-batch element, in float32."""
    flat = as_float32(x).reshape(x.shape[0], -1)
    return ops.sqrt(ops.sum(flat * flat, dim=1))


class LangevinCorrector(nn.Cell):
    """The corrector of Song et al. 2021, Algorithm 4 (annealed Langevin dynamics), one step:

    ε = 2·(snr·‖z‖/‖s‖)²,  x' = x + ε·s + sqrt(2ε)·z,

    with ‖·‖ the per-sample norms averaged over the batch (one ε for the whole batch, as the
    reference implementation does). A Cell of its own so that it compiles like the predictor.
    """

    def __init__(self, snr: float, compute_dtype=ms.float32):
        super().__init__(auto_prefix=False)
        self.snr = snr
        self.compute_dtype = compute_dtype

    def construct(self, model_output: Tensor, sample: Tensor, noise: Tensor) -> Tensor:
        grad_norm = ops.mean(_per_sample_norm(model_output))
        noise_norm = ops.mean(_per_sample_norm(noise))
        step_size = (self.snr * noise_norm / grad_norm) ** 2 * 2
        mean = as_float32(sample) + step_size * as_float32(model_output)
        prev = mean + ops.sqrt(step_size * 2) * as_float32(noise)
        return prev.astype(self.compute_dtype)


class ScoreSdeVeScheduler(SchedulerBase):
    """Predictor-corrector sampling of the VE SDE dx = sqrt(d[σ²]/dt)·dw (Song et al. 2021).

    The model output is the score s(x, σ) ≈ ∇ₓ log p_σ(x). On the geometric discrete noise
    levels σ_0 < … < σ_{N-1} (σ_min to σ_max), the predictor (reverse diffusion, eq. 47 /
    Algorithm 2) at continuous time t ∈ [sampling_eps, 1] uses i = ⌊t·(N-1)⌋ and

        g² = σ_i² − σ_{i-1}² (σ_{-1} = 0),   x̄ = x + g²·s,   x' = x̄ + g·z,

    returning (x', x̄). The corrector is :class:`LangevinCorrector`. σ² reaches 1.8e6 at the
    default σ_max = 1348, beyond float16: those terms are always computed in float32.

    As in diffusers, constructing the scheduler already sets a ``num_train_timesteps``-step
    schedule; a sampler calls ``set_timesteps(N)`` and ``set_sigmas(N)``.

    Example:
        >>> import mindspore as ms, numpy as np
        >>> from mindscience_diffuser import ScoreSdeVeScheduler
        >>> scheduler = ScoreSdeVeScheduler()
        >>> scheduler.set_timesteps(5); scheduler.set_sigmas(5)
        >>> noise = np.random.default_rng(0).standard_normal((1, 3, 8, 8))
        >>> x = ms.Tensor(noise, ms.float32) * scheduler.init_noise_sigma
        >>> for i, t in enumerate(scheduler.timesteps):
        ...     score = -x / float(scheduler.sigmas[i] ** 2 + 1)  # stands in for a score model
        ...     x = scheduler.step_correct(score, x, generator=i)
        ...     score = -x / float(scheduler.sigmas[i] ** 2 + 1)
        ...     x, x_mean = scheduler.step_pred(score, x, float(t), generator=100 + i)
        >>> x.shape
        (1, 3, 8, 8)
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 2000,
        snr: float = 0.15,
        sigma_min: float = 0.01,
        sigma_max: float = 1348.0,
        sampling_eps: float = 1e-5,
        correct_steps: int = 1,
        compute_dtype=ms.float32,
    ):
        super().__init__(compute_dtype)
        check_positive("num_train_timesteps", num_train_timesteps, integer=True)
        check_positive("correct_steps", correct_steps, integer=True, allow_zero=True)
        self._check_sigmas(sigma_min, sigma_max, sampling_eps)
        self.corrector = LangevinCorrector(check_positive("snr", snr), self.compute_dtype)
        self.init_noise_sigma = float(sigma_max)
        self.timesteps = None
        self.set_sigmas(num_train_timesteps, sigma_min, sigma_max, sampling_eps)

    @staticmethod
    def _check_sigmas(sigma_min, sigma_max, sampling_eps) -> None:
        if (sigma_min is not None and sigma_max is not None
                and not check_positive("sigma_max", sigma_max) > check_positive("sigma_min", sigma_min)):
            raise ValueError(f"sigma_max ({sigma_max}) must be larger than sigma_min ({sigma_min})")
        if sampling_eps is not None and not 0 < check_positive("sampling_eps", sampling_eps) <= 1:
            raise ValueError(f"sampling_eps must lie in (0, 1], got {sampling_eps!r}")

    # -- host-side schedule ------------------------------------------------------------------
    def set_timesteps(self, num_inference_steps: int, sampling_eps: Optional[float] = None, device=None) -> None:
        """Continuous times t_i evenly from 1 down to ``sampling_eps`` (float32, as torch.linspace).
        ``device`` is accepted for diffusers compatibility and ignored."""
        n = self._check_num_inference_steps(num_inference_steps)
        self._check_sigmas(None, None, sampling_eps)
        eps = self.config.sampling_eps if sampling_eps is None else sampling_eps
        self.timesteps = schedules.torch_linspace_float32(1.0, eps, n)
        self.num_inference_steps = n
        # The predictor maps t to a discrete level with the length of *this* list.
        self._set_table("time_to_index_scale", np.array([n - 1], np.float32))

    def set_sigmas(self, num_inference_steps: int, sigma_min: Optional[float] = None,
                   sigma_max: Optional[float] = None, sampling_eps: Optional[float] = None) -> None:
        """The noise levels: ``discrete_sigmas`` geometric from σ_min to σ_max (N levels, used by
        the predictor) and ``sigmas`` = σ_min·(σ_max/σ_min)^t at the current timesteps (the
        model's conditioning). Sets N timesteps first if none are set."""
        n = self._check_num_inference_steps(num_inference_steps)
        self._check_sigmas(sigma_min, sigma_max, sampling_eps)
        sigma_min = self.config.sigma_min if sigma_min is None else sigma_min
        sigma_max = self.config.sigma_max if sigma_max is None else sigma_max
        self._check_sigmas(sigma_min, sigma_max, None)
        if self.timesteps is None:
            self.set_timesteps(n, sampling_eps)
        ratio = np.float32(sigma_max / sigma_min)
        self.sigmas = (np.float32(sigma_min) * np.power(ratio, self.timesteps)).astype(np.float32)
        self.discrete_sigmas = np.exp(schedules.torch_linspace_float32(np.log(sigma_min), np.log(sigma_max), n))
        self._set_table("discrete_sigma_table", self.discrete_sigmas)

    def get_adjacent_sigma(self, timesteps, t=None) -> Tensor:
        """σ of the level below each discrete level index (0 below level 0)."""
        index = np.asarray(timesteps.asnumpy() if isinstance(timesteps, Tensor) else timesteps, np.int64)
        below = np.where(index == 0, 0.0, self.discrete_sigmas[np.maximum(index - 1, 0)])
        return Tensor(below.astype(np.float32))

    # -- the steps ---------------------------------------------------------------------------
    def construct(self, model_output: Tensor, sample: Tensor, timestep: Tensor, noise: Tensor):
        """The predictor (reverse-diffusion step) at continuous time ``timestep`` (0-d or (B,));
        returns ``(prev_sample, prev_sample_mean)``. Pure MindSpore; σ² in float32."""
        t = as_float32(timestep) * ops.ones((sample.shape[0],), ms.float32)
        # int(t·(N-1)) truncates in float32, exactly as the reference's .long() does.
        index = (t * self.time_to_index_scale).astype(ms.int32)
        sigma = ops.gather(self.discrete_sigma_table, index, 0)
        below = ops.gather(self.discrete_sigma_table, ops.maximum(index - 1, 0), 0)
        below = ops.where(index == 0, ops.zeros_like(below), below)
        diffusion = broadcast_to_sample(ops.sqrt(sigma * sigma - below * below), sample)
        mean = as_float32(sample) + diffusion * diffusion * as_float32(model_output)
        prev = mean + diffusion * as_float32(noise)
        return self._cast(prev), self._cast(mean)

    def _check_time(self, timestep, batch: int) -> Tensor:
        if not isinstance(timestep, Tensor):
            values = np.asarray(timestep, np.float64).reshape(-1)
            if np.any(values < 0) or np.any(values > 1):
                raise ValueError("timestep must be a continuous time in [0, 1] (one of scheduler.timesteps), got "
                                 f"{timestep!r}")
        return self._timestep_tensor(timestep, batch, ms.float32)

    def step_pred(
        self,
        model_output: Tensor,
        sample: Tensor,
        timestep,
        generator: GeneratorLike = None,
        variance_noise: Optional[Tensor] = None,
        return_dict: Optional[bool] = None,
    ):
        """Predictor step at continuous time ``timestep`` in [0, 1].

        Returns ``(prev_sample, prev_sample_mean)`` (``return_dict=None`` or ``False``) or an
        :class:`SdeVeOutput` (``True``). Noise: ``variance_noise`` if given, else from ``generator``.
        """
        self._check_ready()
        self._check_tensors(model_output, sample)
        t = self._check_time(timestep, sample.shape[0])
        noise = self._noise_like(sample, generator, variance_noise)
        prev, mean = self(self._cast(model_output), self._cast(sample), t, noise)
        if return_dict:
            return SdeVeOutput(prev, mean)
        return prev, mean

    def step_correct(
        self,
        model_output: Tensor,
        sample: Tensor,
        generator: GeneratorLike = None,
        variance_noise: Optional[Tensor] = None,
        return_dict: Optional[bool] = None,
    ):
        """Corrector (Langevin) step; returns the corrected sample (``return_dict=None``), a
        :class:`SchedulerOutput` (``True``, as diffusers) or ``(prev_sample,)`` (``False``)."""
        self._check_ready()
        self._check_tensors(model_output, sample)
        noise = self._noise_like(sample, generator, variance_noise)
        prev = self.corrector(self._cast(model_output), self._cast(sample), noise)
        return self._pack(return_dict, SchedulerOutput, prev)

    # -- the sampling loop's part ------------------------------------------------------------
    # Each of the N steps is ``correct_steps`` Langevin corrections followed by one predictor
    # step, each after a model call: the loop runs N·(c+1) iterations, iteration i being the
    # predictor when i mod (c+1) = c. Both updates are elementwise and cheap, so both are
    # computed and the right one kept with ``where``; the predictor mean rides in the state.
    def loop_plan(self, num_inference_steps=None) -> LoopPlan:
        """The model is conditioned on σ, the knob is the predictor's continuous time t."""
        self.set_timesteps(num_inference_steps)
        self.set_sigmas(num_inference_steps)
        period = self.config.correct_steps + 1
        sigmas = np.repeat(np.asarray(self.sigmas, np.float32), period)
        return LoopPlan(sigmas, np.repeat(np.asarray(self.timesteps, np.float32), period), True)

    def loop_state(self, sample: Tensor) -> tuple:
        return (sample,)

    def loop_update(self, model_output, sample, i, timestep, noise, knob, state, constants):
        predicted, predicted_mean = self.construct(model_output, sample, knob, noise)
        corrections = self.config["correct_steps"]
        if corrections == 0:
            return predicted, (predicted_mean,)
        corrected = self.corrector(model_output, sample, noise)
        is_predictor = (i % (corrections + 1)) == corrections
        return ops.where(is_predictor, predicted, corrected), (ops.where(is_predictor, predicted_mean, state[0]),)

    def loop_output(self, sample: Tensor, state: tuple) -> Tensor:
        """The last predictor step's noise-free mean."""
        return state[0]

    def step(self, *args, **kwargs):
        raise TypeError("ScoreSdeVeScheduler has no single step: call step_correct (the Langevin corrector) "
                        "correct_steps times, then step_pred (the predictor)")

    def _noise_scales(self, timesteps, like: Tensor):
        """(1, σ_i) at discrete level indices ``timesteps``: x = x0 + σ_i·ε."""
        index = np.asarray(timesteps.asnumpy() if isinstance(timesteps, Tensor) else timesteps, np.int64).reshape(-1)
        if np.any(index < 0) or np.any(index >= len(self.discrete_sigmas)):
            raise ValueError(f"timesteps must be level indices in [0, {len(self.discrete_sigmas) - 1}], got "
                             f"{index.tolist()}")
        sigma = np.broadcast_to(self.discrete_sigmas[index], (like.shape[0],)).astype(np.float32)
        return Tensor(1.0, like.dtype), broadcast_to_sample(Tensor(sigma, like.dtype), like)
