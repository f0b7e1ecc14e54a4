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

- ``latents``: the starting sample (already scaled by ``init_noise_sigma``);
- ``timesteps``: the model's time conditioning for each iteration (a Tensor, so new values
  never recompile; its length is the number of iterations);
- ``noise``: ``(K, *latents.shape)`` Gaussian noise drawn from the caller's generator, one
  slice per iteration for stochastic updates, or ``K = 1`` zeros for deterministic ones
  (the iteration reads slice ``min(i, K - 1)``);
- ``knobs``: the per-iteration float scalars of the plan;
- ``start``: the 0-d int32 index of the first iteration (a Tensor input, so the compiler cannot
  treat the trip count as a constant and unroll the loop).

Scheduler options are Python attributes of the scheduler (constants in the graph); per-schedule
tables are Parameters of the scheduler, refreshed by ``set_timesteps`` and read on every call.
The scheduler's ``loop_constants`` (DDIM's ``use_clipped_model_output``, Euler's ``s_noise``) are
fixed when the loop is built, so each set of values gets its own Cell and its own graph.

In PyNative the same construct runs eagerly, one step per Python iteration; ``progress`` (a
tqdm bar, set by the pipeline for eager runs only) advances after every step. In a compiled
graph ``progress`` is ``None`` and the tick folds away.
"""
from __future__ import annotations

from typing import Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

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
    """The one sampling loop: holds the model and the scheduler; ``construct`` runs every iteration.

    ``auto_prefix=False`` keeps the model's parameter names unchanged (the same UNet may sit in
    several loops, and its names are the diffusers weight names).
    """

    def __init__(self, unet: nn.Cell, scheduler: SchedulerBase, **constants):
        super().__init__(auto_prefix=False)
        self.constants = loop_constants_for(scheduler, constants)
        self.unet = unet
        self.scheduler = scheduler
        self.progress = None

    def _model(self, sample: Tensor, timestep: Tensor, class_labels: Optional[Tensor]) -> Tensor:
        """The model's output for ``sample`` at a 0-d ``timestep`` (broadcast over the batch)."""
        t = ops.broadcast_to(timestep.reshape((1,)), (sample.shape[0],))
        if class_labels is None:
            return self.unet(sample, t)
        return self.unet(sample, t, class_labels)

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress.update(1)

    def construct(self, latents, timesteps, noise, knobs, start, class_labels=None):
        scheduler = self.scheduler
        sample = latents
        state = scheduler.loop_state(latents)
        i = start
        while i < timesteps.shape[0]:
            t = ops.gather(timesteps, i, 0)
            model_output = self._model(scheduler.loop_model_input(sample, i), t, class_labels)
            noise_i = ops.gather(noise, ops.minimum(i, noise.shape[0] - 1), 0)
            sample, state = scheduler.loop_update(model_output, sample, i, t, noise_i, ops.gather(knobs, i, 0), state,
                                                  self.constants)
            i = i + 1
            self._tick()
        return sample, scheduler.loop_output(sample, state)

    # -- host side ---------------------------------------------------------------------------
    def schedule(self, num_inference_steps: Optional[int] = None, **options) -> LoopPlan:
        """The scheduler's :class:`LoopPlan` for this call (``(timesteps, knobs, stochastic)``)."""
        return self.scheduler.loop_plan(num_inference_steps, **options)

    def run(self, latents: Tensor, timesteps: np.ndarray, knobs: np.ndarray, noise: Tensor,
            class_labels: Optional[Tensor] = None, progress_bar=None, use_jit: bool = False) -> Tuple[Tensor, Tensor]:
        """Run the loop over ``latents``: compiled under GRAPH_MODE (or with ``use_jit``),
        eagerly with ``progress_bar`` (a tqdm-like object or None) in PyNative. Returns
        ``(sample, result)``: the last sample and what the output is made of."""
        timesteps = np.asarray(timesteps)
        args = (
            latents,
            Tensor(timesteps, ms.int32 if np.issubdtype(timesteps.dtype, np.integer) else ms.float32),
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
