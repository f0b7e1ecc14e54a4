"""``DDPMPipeline``: image (and any-shape sample) generation with DDPM ancestral sampling (Ho et al. 2020)."""
from __future__ import annotations

from typing import Optional

from ..utils import BatchGeneratorLike
from .pipeline_utils import VP_DESCRIPTION, VP_SCHEDULERS, DiffusionPipeline


class DDPMPipeline(DiffusionPipeline):
    """Sample images with the scheduler it is given (as diffusers, no conversion): a
    :class:`DDPMScheduler` normally; DDIM, DPM-Solver and Euler also work (Euler's input
    scaling and initial σ are applied).

    Noise order (one generator): the starting latents, then one slice per step.
    """

    supported_schedulers = VP_SCHEDULERS
    supported_description = VP_DESCRIPTION

    def __init__(self, unet, scheduler):
        super().__init__()
        self._register_unet_and_scheduler(unet, scheduler)

    def __call__(
        self,
        batch_size: int = 1,
        generator: BatchGeneratorLike = None,
        num_inference_steps: int = 1000,
        output_type: Optional[str] = None,
        return_dict: bool = True,
        latents=None,
        condition=None,
        class_labels=None,
        guidance_scale: float = 1.0,
        sample_shape=None,
        observation=None,
        guidance=None,
    ):
        """Generate ``batch_size`` images in ``num_inference_steps`` steps; arguments as
        :meth:`DDIMPipeline.__call__`."""
        return self._sample(batch_size, generator, num_inference_steps, latents, output_type, return_dict,
                            condition=condition, class_labels=class_labels, guidance_scale=guidance_scale,
                            sample_shape=sample_shape, observation=observation,
                            guidance=guidance)
