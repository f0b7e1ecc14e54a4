"""``DPMSolverPipeline``: DPM-Solver sampling, and inversion of images back to their latents."""
from __future__ import annotations

from typing import Optional

import numpy as np
from mindspore import Tensor

from ..models.conditioning import condition_spec
from ..schedulers.dpmsolver_multistep import DPMSolverMultistepScheduler
from ..schedulers.dpmsolver_multistep_inverse import DPMSolverMultistepInverseScheduler
from ..utils import BatchGeneratorLike, check_positive
from .pipeline_utils import DiffusionPipeline, convert_scheduler, images_to_samples


class DPMSolverPipeline(DiffusionPipeline):
    """Multistep DPM-Solver sampling (``__call__``) and its inverse (``invert``).

    ``invert(images, N)`` integrates the same probability-flow ODE from the images up to the
    noisiest timestep with :class:`DPMSolverMultistepInverseScheduler` (built from the
    scheduler's config) and returns the latents; ``pipe(latents=those, num_inference_steps=N)``
    integrates back down and reconstructs the images up to the solver's discretisation error,
    which shrinks as N grows (see docs/api/pipelines.md for measured numbers).

    The scheduler given to the constructor is converted to a
    :class:`DPMSolverMultistepScheduler` with the same config when it is another discrete-β
    scheduler (so a folder saved with a DDPM scheduler loads). Inversion needs a deterministic
    algorithm (``dpmsolver++`` or ``dpmsolver``).
    """

    supported_schedulers = (DPMSolverMultistepScheduler,)

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=convert_scheduler(scheduler, DPMSolverMultistepScheduler))
        self._inverse = None

    @property
    def inverse_scheduler(self) -> DPMSolverMultistepInverseScheduler:
        """The inverse scheduler with the forward scheduler's config (rebuilt when it changes)."""
        if self._inverse is None or self._inverse[0] is not self.scheduler:
            self._inverse = (self.scheduler, convert_inverse(self.scheduler))
        return self._inverse[1]

    def __call__(
        self,
        batch_size: int = 1,
        generator: BatchGeneratorLike = None,
        num_inference_steps: int = 20,
        latents=None,
        output_type: Optional[str] = None,
        return_dict: bool = True,
        condition=None,
        class_labels=None,
        guidance_scale: float = 1.0,
        sample_shape=None,
        observation=None,
        guidance=None,
    ):
        """Generate ``batch_size`` images in ``num_inference_steps`` DPM-Solver steps, from
        ``latents`` (e.g. the output of :meth:`invert`) or from noise drawn from ``generator``;
        other arguments as :meth:`DDIMPipeline.__call__`."""
        return self._sample(batch_size, generator, num_inference_steps, latents, output_type, return_dict,
                            condition=condition, class_labels=class_labels, guidance_scale=guidance_scale,
                            sample_shape=sample_shape, observation=observation,
                            guidance=guidance)

    def invert(self, images_or_samples, num_inference_steps: int = 20, condition=None, class_labels=None) -> Tensor:
        """The latents that sampling with ``num_inference_steps`` steps (and the same
        ``condition`` / ``class_labels``) maps back to ``images_or_samples``.

        ``images_or_samples``: images as this pipeline outputs them (a list of PIL images or a
        (B, H, W, C) numpy array in [0, 1]), or model-space samples (a MindSpore Tensor of any
        rank the model takes, e.g. (B, C, H, W) in [-1, 1] for image models).
        """
        check_positive("num_inference_steps", num_inference_steps, integer=True)
        samples = images_to_samples(images_or_samples)
        expected = self._sample_shape(samples.shape[0], samples)
        if tuple(samples.shape) != expected:
            raise ValueError(f"images_or_samples must have shape {expected} as samples, got {tuple(samples.shape)}")
        inverse = self.inverse_scheduler
        cond, labels, _ = self._conditioning(condition_spec(self.unet), condition, class_labels, None, expected,
                                             inverse.compute_dtype, None)
        loop = self.sampling_loop(inverse)
        timesteps, knobs, _ = loop.schedule(num_inference_steps)
        noise = Tensor(np.zeros((1,) + expected, np.float32), inverse.compute_dtype)
        return self._run_loop(loop, samples.astype(inverse.compute_dtype), timesteps, knobs, noise, cond, labels)


def convert_inverse(scheduler: DPMSolverMultistepScheduler) -> DPMSolverMultistepInverseScheduler:
    """The inverse scheduler with ``scheduler``'s config (forward-only keys kept as hidden config)."""
    if scheduler.stochastic:
        raise ValueError(
            "invert needs a deterministic solver; the scheduler has "
            f"algorithm_type={scheduler.config.algorithm_type!r}. "
            "Use 'dpmsolver++' or 'dpmsolver'"
        )
    return convert_scheduler(scheduler, DPMSolverMultistepInverseScheduler)
