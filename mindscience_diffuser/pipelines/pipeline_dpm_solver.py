"""``DPMSolverPipeline``: DPM-Solver sampling, and inversion of images back to their latents."""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..schedulers.dpmsolver_multistep import DPMSolverMultistepScheduler
from ..schedulers.dpmsolver_multistep_inverse import DPMSolverMultistepInverseScheduler
from ..utils import GeneratorLike, check_positive
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
        generator: GeneratorLike = None,
        num_inference_steps: int = 20,
        latents=None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Generate ``batch_size`` images in ``num_inference_steps`` DPM-Solver steps, from
        ``latents`` (e.g. the output of :meth:`invert`) or from noise drawn from ``generator``;
        other arguments as :meth:`DDIMPipeline.__call__`."""
        return self._sample(batch_size, generator, num_inference_steps, latents, output_type, return_dict)

    def invert(self, images_or_samples, num_inference_steps: int = 20) -> Tensor:
        """The latents (B, C, H, W) that sampling with ``num_inference_steps`` steps maps back
        to ``images_or_samples``.

        ``images_or_samples``: images as this pipeline outputs them (a list of PIL images or a
        (B, H, W, C) numpy array in [0, 1]), or model-space samples (a (B, C, H, W) MindSpore
        Tensor, in [-1, 1] for image models).
        """
        check_positive("num_inference_steps", num_inference_steps, integer=True)
        samples = images_to_samples(images_or_samples)
        expected = self._sample_shape(samples.shape[0], samples)
        if tuple(samples.shape) != expected:
            raise ValueError(f"images_or_samples must have shape {expected} as samples (B, C, H, W), got "
                             f"{tuple(samples.shape)}")
        inverse = self.inverse_scheduler
        loop = self.sampling_loop(inverse)
        timesteps, knobs, _ = loop.schedule(num_inference_steps)
        noise = Tensor(np.zeros((1,) + expected, np.float32), inverse.compute_dtype)
        bar = None
        if ms.get_context("mode") != ms.GRAPH_MODE and not self.use_jit:
            bar = self.progress_bar(total=len(timesteps))
        try:
            latents, _ = loop.run(samples.astype(inverse.compute_dtype), timesteps, knobs, noise, progress_bar=bar,
                                  use_jit=self.use_jit)
        finally:
            if bar is not None:
                bar.close()
        return latents


def convert_inverse(scheduler: DPMSolverMultistepScheduler) -> DPMSolverMultistepInverseScheduler:
    """The inverse scheduler with ``scheduler``'s config (forward-only keys kept as hidden config)."""
    if scheduler.stochastic:
        raise ValueError(
            "invert needs a deterministic solver; the scheduler has "
            f"algorithm_type={scheduler.config.algorithm_type!r}. "
            "Use 'dpmsolver++' or 'dpmsolver'"
        )
    return convert_scheduler(scheduler, DPMSolverMultistepInverseScheduler)
