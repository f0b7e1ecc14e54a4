"""The sampling loop as one ``nn.Cell``: every denoising step runs inside its ``construct``.

Why a Cell rather than a Python loop over ``scheduler.step``: under GRAPH_MODE (or ``ms.jit``)
the whole loop (model, scheduler step, multistep state) compiles into one graph, with a
``while`` on a Tensor step counter. The loop stays *rolled*: the graph holds the model once,
whatever the number of steps, so it compiles in seconds and is reused by every later call with
the same shapes. A Python ``for i in range(n)`` would be unrolled by the compiler (n copies of
the model, compile time growing with n).

What each construct receives, all built on the host by the pipeline before the loop:

- ``latents``: the starting sample (already scaled by ``init_noise_sigma``);
- ``timesteps``: the model's time conditioning for each iteration (a Tensor, so new values
  never recompile; its length is the number of iterations);
- ``noise``: ``(K, *latents.shape)`` Gaussian noise drawn from the caller's generator, one
  slice per iteration for stochastic schedulers, or ``K = 1`` zeros for deterministic ones
  (the iteration reads slice ``min(i, K - 1)``);
- ``knobs``: a per-iteration float Tensor for the scheduler's host-computed scalar (DDIM's η,
  Euler's churn γ, score-SDE's σ conditioning); unused elsewhere;
- ``start``: the 0-d int32 index of the first iteration (a Tensor input, so the compiler cannot
  treat the trip count as a constant and unroll the loop).

Scheduler options are Python attributes of the scheduler (constants in the graph); per-schedule
tables are Parameters of the scheduler, refreshed by ``set_timesteps`` and read on every call.
Options of the loop itself (DDIM's ``use_clipped_model_output``, Euler's ``s_noise``) are fixed
when the loop is built, so each value gets its own Cell and its own compiled graph.

In PyNative the same constructs run eagerly, one step per Python iteration; ``progress`` (a
tqdm bar, set by the pipeline for eager runs only) advances after every step. In a compiled
graph ``progress`` is ``None`` and the tick folds away.
"""
from __future__ import annotations

from typing import Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..schedulers.consistency_models import CMStochasticIterativeScheduler
from ..schedulers.ddim import DDIMScheduler
from ..schedulers.ddpm import DDPMScheduler
from ..schedulers.dpmsolver_multistep import DPMSolverMultistepScheduler
from ..schedulers.dpmsolver_multistep_inverse import DPMSolverMultistepInverseScheduler
from ..schedulers.euler_discrete import EulerDiscreteScheduler
from ..schedulers.score_sde_ve import ScoreSdeVeScheduler


class SamplingLoop(nn.Cell):
    """Base of the per-scheduler loops: holds the model and the scheduler, calls the model and
    picks each iteration's noise. Subclasses write the ``while`` loop itself.

    ``auto_prefix=False`` keeps the model's parameter names unchanged (the same UNet may sit in
    several loops, and its names are the diffusers weight names).
    """

    #: the scheduler class(es) the loop drives
    scheduler_types: tuple = ()
    #: does a step consume noise (so the pipeline draws one slice per iteration)?
    stochastic = True
    #: the dtype of the timesteps the model is conditioned on
    timestep_dtype = ms.int32

    def __init__(self, unet: nn.Cell, scheduler: nn.Cell):
        super().__init__(auto_prefix=False)
        self.unet = unet
        self.scheduler = scheduler
        self.progress = None

    def _model(self, sample: Tensor, timestep: Tensor, class_labels: Optional[Tensor]) -> Tensor:
        """The model's output for ``sample`` at a 0-d ``timestep`` (broadcast over the batch)."""
        t = ops.broadcast_to(timestep.reshape((1,)), (sample.shape[0],))
        if class_labels is None:
            return self.unet(sample, t)
        return self.unet(sample, t, class_labels)

    @staticmethod
    def _noise_at(noise: Tensor, i: Tensor) -> Tensor:
        return ops.gather(noise, ops.minimum(i, noise.shape[0] - 1), 0)

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress.update(1)

    # -- host side ---------------------------------------------------------------------------
    def schedule(self, num_inference_steps: int, **options) -> Tuple[np.ndarray, np.ndarray, bool]:
        """Set the scheduler's timesteps and return, per iteration, the model's time
        conditioning and the ``knobs`` value, plus whether the loop consumes noise."""
        self.scheduler.set_timesteps(num_inference_steps)
        ts = np.asarray(self.scheduler.timesteps)
        return ts, np.zeros(len(ts), np.float32), self.stochastic

    def run(self, latents: Tensor, timesteps: np.ndarray, knobs: np.ndarray, noise: Tensor,
            class_labels: Optional[Tensor] = None, progress_bar=None, use_jit: bool = False) -> Tuple[Tensor, Tensor]:
        """Run the loop over ``latents``: compiled under GRAPH_MODE (or with ``use_jit``),
        eagerly with ``progress_bar`` (a tqdm-like object or None) in PyNative."""
        args = (
            latents,
            Tensor(np.asarray(timesteps), self.timestep_dtype),
            noise,
            Tensor(np.asarray(knobs, np.float32)),
            Tensor(0, ms.int32),
            class_labels,
        )
        if ms.get_context("mode") == ms.GRAPH_MODE:
            return self(*args)
        if use_jit:
            return self.compiled(*args)
        self.progress = progress_bar
        try:
            return self(*args)
        finally:
            self.progress = None

    @ms.jit
    def compiled(self, latents, timesteps, noise, knobs, start, class_labels=None):
        """``construct`` compiled with ``ms.jit`` (for PyNative processes)."""
        return self.construct(latents, timesteps, noise, knobs, start, class_labels)


class DDIMLoop(SamplingLoop):
    """DDIM (Song et al. 2021, eq. 12), η per iteration in ``knobs``; noise only when η > 0."""

    scheduler_types = (DDIMScheduler,)

    def __init__(self, unet, scheduler, use_clipped_model_output: bool = False):
        super().__init__(unet, scheduler)
        self.use_clipped_model_output = bool(use_clipped_model_output)

    def schedule(self, num_inference_steps, eta: float = 0.0):
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be a float in [0, 1] (0: DDIM, 1: DDPM), got {eta!r}")
        ts, _, _ = super().schedule(num_inference_steps)
        return ts, np.full(len(ts), eta, np.float32), eta > 0

    def construct(self, latents, timesteps, noise, knobs, start, class_labels=None):
        sample = latents
        i = start
        while i < timesteps.shape[0]:
            t = ops.gather(timesteps, i, 0)
            model_output = self._model(sample, t, class_labels)
            sample, _ = self.scheduler(model_output, sample, t, self._noise_at(noise, i), ops.gather(knobs, i, 0), self.use_clipped_model_output)
            i = i + 1
            self._tick()
        return sample, sample


class DDPMLoop(SamplingLoop):
    """DDPM ancestral sampling (Ho et al. 2020, eq. 6-7); learned variances ride on the model output."""

    scheduler_types = (DDPMScheduler,)

    def construct(self, latents, timesteps, noise, knobs, start, class_labels=None):
        sample = latents
        i = start
        while i < timesteps.shape[0]:
            t = ops.gather(timesteps, i, 0)
            model_output = self._model(sample, t, class_labels)
            sample, _ = self.scheduler(model_output, sample, t, self._noise_at(noise, i))
            i = i + 1
            self._tick()
        return sample, sample


class DPMSolverLoop(SamplingLoop):
    """Multistep DPM-Solver (forward or inverse): the solver state (step index, warm-up count,
    history of converted outputs) is carried as three separate loop variables (MindSpore 2.8
    cannot join a loop-carried tuple whose elements are rebuilt in the body)."""

    scheduler_types = (DPMSolverMultistepScheduler, DPMSolverMultistepInverseScheduler)

    def __init__(self, unet, scheduler):
        super().__init__(unet, scheduler)
        self.stochastic = bool(scheduler.stochastic)

    def construct(self, latents, timesteps, noise, knobs, start, class_labels=None):
        sample = latents
        i = start
        index = start
        count = ops.zeros((), ms.int32)
        history = ops.zeros((self.scheduler.solver_order,) + latents.shape, ms.float32)
        while i < timesteps.shape[0]:
            t = ops.gather(timesteps, i, 0)
            model_output = self._model(sample, t, class_labels)
            sample, _, (index, count, history) = self.scheduler(model_output, sample, self._noise_at(noise, i), (index, count, history))
            i = i + 1
            self._tick()
        return sample, sample


class EulerLoop(SamplingLoop):
    """Euler on the σ schedule (Karras et al. 2022, Algorithm 2): the model sees x/sqrt(σ²+1),
    the churn γ of each step is in ``knobs`` (noise drawn only if some γ > 0)."""

    scheduler_types = (EulerDiscreteScheduler,)
    timestep_dtype = ms.float32

    def __init__(self, unet, scheduler, s_noise: float = 1.0):
        super().__init__(unet, scheduler)
        self.s_noise = float(s_noise)

    def schedule(self, num_inference_steps, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf")):
        ts, _, _ = super().schedule(num_inference_steps)
        gammas = np.array([self.scheduler.churn_gamma(i, s_churn, s_tmin, s_tmax) for i in range(len(ts))], np.float32)
        return ts, gammas, bool(np.any(gammas > 0))

    def construct(self, latents, timesteps, noise, knobs, start, class_labels=None):
        sample = latents
        i = start
        while i < timesteps.shape[0]:
            t = ops.gather(timesteps, i, 0)
            model_output = self._model(self.scheduler.scale_at(sample, i), t, class_labels)
            sample, _ = self.scheduler(model_output, sample, i, self._noise_at(noise, i), ops.gather(knobs, i, 0), self.s_noise)
            i = i + 1
            self._tick()
        return sample, sample


class ConsistencyLoop(SamplingLoop):
    """Consistency-model sampling (Song et al. 2023, Algorithm 1): the model sees
    x/sqrt(σ²+σ_d²); each step denoises and re-noises to the next level."""

    scheduler_types = (CMStochasticIterativeScheduler,)
    timestep_dtype = ms.float32

    def schedule(self, num_inference_steps=None, timesteps=None):
        if timesteps is not None:
            self.scheduler.set_timesteps(timesteps=timesteps)
        else:
            self.scheduler.set_timesteps(num_inference_steps)
        ts = np.asarray(self.scheduler.timesteps, np.float32)
        # One-step sampling adds no noise (the single step lands on σ_min).
        return ts, np.zeros(len(ts), np.float32), len(ts) > 1

    def construct(self, latents, timesteps, noise, knobs, start, class_labels=None):
        sample = latents
        i = start
        while i < timesteps.shape[0]:
            t = ops.gather(timesteps, i, 0)
            model_output = self._model(self.scheduler.scale_at(sample, i), t, class_labels)
            sample = self.scheduler(model_output, sample, i, self._noise_at(noise, i))
            i = i + 1
            self._tick()
        return sample, sample


class ScoreSdeVeLoop(SamplingLoop):
    """Predictor-corrector sampling of the VE SDE (Song et al. 2021, Algorithm 2 + 4).

    Each of the N steps is ``correct_steps`` Langevin corrections followed by one predictor
    step, every one of them after a model call. The loop runs over the N·(c+1) model calls
    (one ``while``, one model in the graph): iteration i is a predictor step when
    i mod (c+1) = c, else a corrector step; both updates are elementwise and cheap, so both are
    computed and the right one kept with ``where``. ``timesteps`` holds each iteration's
    continuous time t, ``knobs`` its σ conditioning, ``noise`` one slice per iteration in the
    order the reference sampler draws them.
    """

    scheduler_types = (ScoreSdeVeScheduler,)
    timestep_dtype = ms.float32

    def __init__(self, unet, scheduler):
        super().__init__(unet, scheduler)
        self.correct_steps = int(scheduler.config.correct_steps)

    def schedule(self, num_inference_steps):
        self.scheduler.set_timesteps(num_inference_steps)
        self.scheduler.set_sigmas(num_inference_steps)
        period = self.correct_steps + 1
        ts = np.repeat(np.asarray(self.scheduler.timesteps, np.float32), period)
        sigmas = np.repeat(np.asarray(self.scheduler.sigmas, np.float32), period)
        return ts, sigmas, True

    def construct(self, latents, timesteps, noise, knobs, start, class_labels=None):
        sample = latents
        mean = latents
        i = start
        period = self.correct_steps + 1
        while i < timesteps.shape[0]:
            z = self._noise_at(noise, i)
            model_output = self._model(sample, ops.gather(knobs, i, 0), class_labels)
            predicted, predicted_mean = self.scheduler(model_output, sample, ops.gather(timesteps, i, 0), z)
            if self.correct_steps > 0:
                corrected = self.scheduler.corrector(model_output, sample, z)
                is_predictor = (i % period) == (period - 1)
                sample = ops.where(is_predictor, predicted, corrected)
                mean = ops.where(is_predictor, predicted_mean, mean)
            else:
                sample = predicted
                mean = predicted_mean
            i = i + 1
            self._tick()
        return sample, mean


LOOPS = (DDIMLoop, DDPMLoop, DPMSolverLoop, EulerLoop, ConsistencyLoop, ScoreSdeVeLoop)


def loop_class_for(scheduler) -> type:
    """The loop that drives ``scheduler``; ``TypeError`` naming the supported schedulers otherwise."""
    for cls in LOOPS:
        if isinstance(scheduler, cls.scheduler_types):
            return cls
    names = [t.__name__ for cls in LOOPS for t in cls.scheduler_types]
    raise TypeError(f"no compiled sampling loop for {type(scheduler).__name__}; supported schedulers: {names}")
