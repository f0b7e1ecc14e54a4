"""The sampling loop as one ``nn.Cell``: every denoising step of every scheduler runs inside its
``construct``.

Why a Cell rather than a Python loop over ``scheduler.step``: under GRAPH_MODE (or ``ms.jit``)
the whole loop (model, scheduler update, carried state) compiles into one graph, with a
``while`` on a Tensor step counter. The loop stays *rolled*: the graph holds the model once,
whatever the number of steps, so it compiles in seconds and is reused by every later call with
the same shapes. A Python ``for i in range(n)`` would be unrolled by the compiler (n copies of
the model, compile time growing with n).

The loop is the same for every scheduler; the scheduler contributes its part through the
methods of :class:`~mindscience_diffuser.schedulers.base.SchedulerBase`:

- host: ``loop_plan(num_inference_steps, **options)`` sets the schedule and returns, per
  iteration, the model's time conditioning, a float ``knob`` for the update and whether the
  update consumes noise;
- device: ``loop_state(latents)`` the carried state (DPM-Solver's history, score-SDE's
  predictor mean; empty elsewhere), ``loop_model_input(sample, i)`` what the model sees,
  ``loop_update(...)`` one iteration, ``loop_output(sample, state)`` what the result is made of.

What ``construct`` receives, all built on the host by the pipeline before the loop:

- ``sample`` and ``state``: where the iterations start from: the starting sample (already
  scaled by ``init_noise_sigma``) and ``scheduler.loop_state(sample)``, or what an earlier
  chunk returned (so a loop can run in chunks and carry DPM-Solver's history between them);
- ``timesteps``: the model's time conditioning for each iteration (a Tensor, so new values
  never recompile; its length is the number of iterations);
- ``noise``: ``(K, *latents.shape)`` Gaussian noise drawn from the caller's generator, one
  slice per iteration for stochastic updates, or ``K = 1`` zeros for deterministic ones
  (the iteration reads slice ``min(i, K - 1)``);
- ``knobs``: the per-iteration float scalars of the plan;
- ``start`` / ``stop``: 0-d int32 indices of the first iteration and one past the last (Tensor
  inputs, so the compiler cannot treat the trip count as a constant and unroll the loop, and a
  chunk of any length reuses the same graph);
- ``condition`` / ``class_labels``: what the model is conditioned on (see
  :mod:`~mindscience_diffuser.models.conditioning`), or None;
- ``guidance_scale``: the 0-d classifier-free guidance weight w of a *guided* loop, whose
  ``condition`` / ``class_labels`` hold the conditional batch followed by the null one;
- ``observed``, ``guide_table``, ``guide_noise``, ``step_map``: for a loop built with an
  observation ``guide`` (:mod:`mindscience_diffuser.guidance`): the observed values y, the
  per-iteration noise levels and RePaint jump scales, the noise of replacements and jumps, and
  the scheduler step each iteration runs (RePaint's schedule revisits steps). The guide's
  pieces attach after the model call (x̂0 corrections, through ``ms.grad`` of the denoiser) and
  after the update (DPS steps, replacement), the same for every scheduler.

Scheduler options are Python attributes of the scheduler (constants in the graph); per-schedule
tables are Parameters of the scheduler, refreshed by ``set_timesteps`` and read on every call.
The scheduler's ``loop_constants`` (DDIM's ``use_clipped_model_output``, Euler's ``s_noise``) are
fixed when the loop is built, so each set of values gets its own Cell and its own graph; so are
whether a field condition is concatenated to the sample and whether the loop is guided.

Progress: in PyNative the construct runs eagerly, one step per Python iteration, and
``progress`` (a tqdm bar) advances after every step. Compiled (GRAPH_MODE or ``ms.jit``),
:meth:`SamplingLoop.run` runs the same graph over consecutive chunks of iterations, carrying
``(sample, state)`` from one chunk to the next, and advances the bar after each chunk; with no
bar it runs every iteration in one call.
"""
from __future__ import annotations

from typing import Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..guidance import conjugate_gradient
from ..models.conditioning import call_denoiser
from ..schedulers.base import LoopPlan, SchedulerBase


def loop_constants_for(scheduler, options: dict) -> tuple:
    """The values of ``scheduler.loop_constants`` with ``options`` applied, in declaration order."""
    if not isinstance(scheduler, SchedulerBase):
        raise TypeError("the sampling loop drives a scheduler (a SchedulerBase subclass), got "
                        f"{type(scheduler).__name__}")
    declared = scheduler.loop_constants
    unknown = sorted(set(options) - set(declared))
    if unknown:
        raise TypeError(f"{type(scheduler).__name__} has no loop option {unknown}; it takes {sorted(declared)}")
    return tuple(options.get(name, default) for name, default in declared.items())


class SamplingLoop(nn.Cell):
    """The one sampling loop: holds the model and the scheduler; ``construct`` runs the iterations
    ``start .. stop - 1``.

    ``field_condition``: the condition is a field concatenated to the sample's channels (from the
    model's :class:`ConditionSpec`). ``guided``: classifier-free guidance (Ho & Salimans 2022,
    eq. 6): the model sees the batch twice, with the condition and with the null condition, in
    one call, and the prediction is ε̃ = ε(x, ∅) + w·(ε(x, c) − ε(x, ∅)).

    ``auto_prefix=False`` keeps the model's parameter names unchanged (the same UNet may sit in
    several loops, and its names are the diffusers weight names).
    """

    def __init__(self, unet: nn.Cell, scheduler: SchedulerBase, field_condition: bool = False, guided: bool = False,
                 guide=None, **constants):
        super().__init__(auto_prefix=False)
        self.constants = loop_constants_for(scheduler, constants)
        self.unet = unet
        self.scheduler = scheduler
        self.field_condition = bool(field_condition)
        self.guided = bool(guided)
        #: whether the scheduler carries state between iterations (DPM-Solver, score-SDE)
        self.stateful = type(scheduler).loop_state is not SchedulerBase.loop_state
        self.progress = None
        #: at most this many compiled calls per run when a progress bar is shown
        self.progress_chunks = 10
        #: observation guidance (a mindscience_diffuser.guidance.Guidance attached to an observation), or None
        self.guide = guide
        if guide is not None and guide.differentiable:
            self._guided_loss_grad = ms.grad(self._guided_loss, grad_position=0, has_aux=True)
            self._prediction_vjp = ms.grad(self._weighted_prediction, grad_position=0, has_aux=True)

    def _model(self, sample: Tensor, timestep: Tensor, condition: Optional[Tensor], class_labels: Optional[Tensor],
               guidance_scale: Optional[Tensor]) -> Tensor:
        """The model's output for ``sample`` at a 0-d ``timestep`` (broadcast over the batch),
        guided when the loop is."""
        batch = sample.shape[0]
        if not self.guided:
            t = ops.broadcast_to(timestep.reshape((1,)), (batch,))
            return call_denoiser(self.unet, self.field_condition, sample, t, condition, class_labels)
        t = ops.broadcast_to(timestep.reshape((1,)), (2 * batch,))
        both = call_denoiser(self.unet, self.field_condition, ops.concat((sample, sample), 0), t, condition,
                             class_labels)
        return classifier_free_guidance(both[:batch], both[batch:], guidance_scale, sample.shape[1])

    # -- observation guidance (after the model call; after the update) ------------------------
    def _denoise(self, sample, step, t, condition, class_labels, guidance_scale):
        """(x̂0, model output) at scheduler step ``step``."""
        model_output = self._model(self.scheduler.loop_model_input(sample, step), t, condition, class_labels,
                                   guidance_scale)
        return self.scheduler.loop_denoised(model_output, sample, step, t), model_output

    def _weighted_prediction(self, sample, weights, step, t, condition, class_labels, guidance_scale):
        """Σ weights·A(x̂0(sample)): its gradient in ``sample`` is Jᵀ Aᵀ weights."""
        x0, model_output = self._denoise(sample, step, t, condition, class_labels, guidance_scale)
        return (weights * self.guide.operator(x0)).sum(), x0, model_output

    def _guided_loss(self, sample, observed, a, s, step, t, condition, class_labels, guidance_scale):
        """Σ u·A(x̂0) with the guide's weights u(y − A(x̂0)) held constant: one forward and one
        backward pass give g = Jᵀ Aᵀ u."""
        x0, model_output = self._denoise(sample, step, t, condition, class_labels, guidance_scale)
        prediction = self.guide.operator(x0)
        weights = ops.stop_gradient(self.guide.weights(observed - prediction, a, s))
        return (weights * prediction).sum(), x0, model_output

    def _likelihood_gradient(self, sample, observed, a, s, step, t, condition, class_labels, guidance_scale):
        """(g = Jᵀ Aᵀ u, model output) for a differentiable guide."""
        guide = self.guide
        if not guide.uses_jacobian:
            gradient, (_, model_output) = self._guided_loss_grad(sample, observed, a, s, step, t, condition,
                                                                  class_labels, guidance_scale)
            return gradient, model_output
        # MMPS: u = (σ_y² I + (s²/a) A J Aᵀ)⁻¹ r, each product with J a vector–Jacobian product.
        x0, model_output = self._denoise(sample, step, t, condition, class_labels, guidance_scale)
        covariance_scale = s * s / a
        noise_variance = guide.noise_std ** 2

        def likelihood_covariance(v):
            jtv, _ = self._prediction_vjp(sample, v, step, t, condition, class_labels, guidance_scale)
            return noise_variance * v + covariance_scale * guide.operator(jtv)

        residual = observed - guide.operator(x0)
        u, cg_residual = conjugate_gradient(likelihood_covariance, residual, guide.cg_iterations, return_residual=True)
        u = guide.safeguarded_weights(u, cg_residual, residual, a, s)
        gradient, _ = self._prediction_vjp(sample, u, step, t, condition, class_labels, guidance_scale)
        return guide.safeguarded_gradient(gradient, residual, a, s), model_output

    def _observed_iteration(self, sample, state, i, timesteps, noise, knobs, observed, guide_table, guide_noise,
                            step_map, condition, class_labels, guidance_scale):
        """One iteration with the observation guide: the scheduler runs step ``step_map[i]``."""
        scheduler, guide = self.scheduler, self.guide
        step = ops.gather(step_map, i, 0)
        t = ops.gather(timesteps, i, 0)
        a, s, a_next, s_next, jump_keep, jump_noise = ops.unstack(ops.gather(guide_table, i, 0), 0)
        if guide.differentiable:
            gradient, model_output = self._likelihood_gradient(sample, observed, a, s, step, t, condition,
                                                               class_labels, guidance_scale)
        else:
            gradient = None
            model_output = self._model(scheduler.loop_model_input(sample, step), t, condition, class_labels,
                                       guidance_scale)
        if guide.corrects_denoised:
            # Every parametrisation's x̂0 is affine in the model output, x̂0 = slope·output + c·x:
            # a correction δx̂0 is the output correction δx̂0/slope, for any scheduler.
            slope = scheduler.loop_denoised(ops.ones_like(model_output), ops.zeros_like(sample), step, t)
            correction = guide.denoised_correction(gradient, a, s) / slope
            model_output = model_output + correction.astype(model_output.dtype)
        noise_i = ops.gather(noise, ops.minimum(i, noise.shape[0] - 1), 0)
        sample, state = scheduler.loop_update(model_output, sample, step, t, noise_i, ops.gather(knobs, i, 0), state,
                                              self.constants)
        if guide.steps_after_update:
            sample = guide.after_update(sample, gradient)
        extra_noise = ops.gather(guide_noise, ops.minimum(i, guide_noise.shape[0] - 1), 0)
        if guide.replaces:
            sample = guide.replace(sample, observed, extra_noise[0], a_next, s_next).astype(sample.dtype)
        # RePaint's jump back up the schedule (keep = 1, noise = 0 on the other iterations).
        sample = (jump_keep * sample + jump_noise * extra_noise[1]).astype(sample.dtype)
        return sample, state

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress.update(1)

    def construct(self, sample, state, timesteps, noise, knobs, start, stop, condition=None, class_labels=None,
                  guidance_scale=None, observed=None, guide_table=None, guide_noise=None, step_map=None):
        scheduler = self.scheduler
        i = start
        while i < stop:
            if self.guide is not None:
                sample, state = self._observed_iteration(sample, state, i, timesteps, noise, knobs, observed,
                                                         guide_table, guide_noise, step_map, condition, class_labels,
                                                         guidance_scale)
            else:
                t = ops.gather(timesteps, i, 0)
                model_output = self._model(scheduler.loop_model_input(sample, i), t, condition, class_labels,
                                           guidance_scale)
                noise_i = ops.gather(noise, ops.minimum(i, noise.shape[0] - 1), 0)
                sample, state = scheduler.loop_update(model_output, sample, i, t, noise_i, ops.gather(knobs, i, 0),
                                                      state, self.constants)
            i = i + 1
            self._tick()
        if not self.stateful:
            # MindSpore 2.8 returns garbage for a loop-carried tuple the body only passes
            # through (an empty or placeholder state): a stateless loop returns the sample alone.
            return sample
        # A flat (sample, *state), built element by element: a nested tuple output comes back
        # reshaped, and adding the input tuple whole fails for mixed element types.
        flat = (sample,)
        for k in range(len(state)):
            flat = flat + (state[k],)
        return flat

    # -- host side ---------------------------------------------------------------------------
    def schedule(self, num_inference_steps: Optional[int] = None, **options) -> LoopPlan:
        """The scheduler's :class:`LoopPlan` for this call (``(timesteps, knobs, stochastic)``)."""
        return self.scheduler.loop_plan(num_inference_steps, **options)

    def run(self, latents: Tensor, timesteps: np.ndarray, knobs: np.ndarray, noise: Tensor,
            condition: Optional[Tensor] = None, class_labels: Optional[Tensor] = None,
            guidance_scale: Optional[float] = None, progress_bar=None, use_jit: bool = False,
            observed_inputs: tuple = ()) -> Tuple[Tensor, Tensor]:
        """Run every iteration from ``latents``: compiled under GRAPH_MODE (or with ``use_jit``),
        eagerly in PyNative. ``progress_bar`` (a tqdm-like object or None) advances after each
        step (eager) or each chunk (compiled). ``observed_inputs``: for a loop with a guide,
        ``(observed, guide_table, guide_noise, step_map)`` (see the module docstring). Returns
        ``(sample, result)``: the last sample and what the output is made of."""
        timesteps = np.asarray(timesteps)
        if self.guided and guidance_scale is None:
            raise ValueError("a guided sampling loop needs guidance_scale")
        n = len(timesteps)
        fixed = (
            Tensor(timesteps, ms.int32 if np.issubdtype(timesteps.dtype, np.integer) else ms.float32),
            noise,
            Tensor(np.asarray(knobs, np.float32)),
        )
        conditioning = (condition, class_labels,
                        None if guidance_scale is None else Tensor(guidance_scale, ms.float32))
        sample, state = latents, tuple(self.scheduler.loop_state(latents))
        compiled = ms.get_context("mode") == ms.GRAPH_MODE or use_jit
        call = self if not compiled or ms.get_context("mode") == ms.GRAPH_MODE else self.compiled
        self.progress = None if compiled else progress_bar
        try:
            for begin, end in chunk_bounds(n, self.progress_chunks if compiled and progress_bar is not None else 1):
                # The state is mutable so that a chunk's returned state is a variable input of
                # the same graph rather than a new constant to compile for.
                out = call(sample, ms.mutable(state) if state else (), *fixed, Tensor(begin, ms.int32),
                           Tensor(end, ms.int32), *conditioning, *observed_inputs)
                sample, state = (out[0], tuple(out[1:])) if self.stateful else (out, state)
                if compiled and progress_bar is not None:
                    progress_bar.update(end - begin)
        finally:
            self.progress = None
        return sample, self.scheduler.loop_output(sample, state)

    @ms.jit
    def compiled(self, sample, state, timesteps, noise, knobs, start, stop, condition=None, class_labels=None,
                 guidance_scale=None, observed=None, guide_table=None, guide_noise=None, step_map=None):
        """``construct`` compiled with ``ms.jit`` (for PyNative processes)."""
        return self.construct(sample, state, timesteps, noise, knobs, start, stop, condition, class_labels,
                              guidance_scale, observed, guide_table, guide_noise, step_map)


def chunk_bounds(num_iterations: int, num_chunks: int) -> list:
    """``[(begin, end), ...]``: ``num_iterations`` split into at most ``num_chunks`` consecutive
    runs of near-equal length (one run, the whole loop, when ``num_chunks`` is 1).

    >>> chunk_bounds(25, 10)[:3], chunk_bounds(3, 10), chunk_bounds(0, 4)
    ([(0, 2), (2, 5), (5, 8)], [(0, 1), (1, 2), (2, 3)], [(0, 0)])
    """
    count = max(1, min(num_chunks, num_iterations))
    edges = np.linspace(0, num_iterations, count + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def classifier_free_guidance(conditional: Tensor, unconditional: Tensor, guidance_scale: Tensor,
                             sample_channels: int) -> Tensor:
    """ε̃ = ε_∅ + w·(ε_c − ε_∅) (Ho & Salimans 2022, eq. 6) on the first ``sample_channels``
    channels; the channels beyond them (a learned variance, as in DDPM's ``learned_range``)
    are the conditional model's, as guidance applies to the mean prediction only."""
    w = guidance_scale.astype(conditional.dtype)
    guided = unconditional + w * (conditional - unconditional)
    if conditional.ndim == 4 and conditional.shape[1] == 2 * sample_channels:
        return ops.concat((guided[:, :sample_channels], conditional[:, sample_channels:]), 1)
    return guided
