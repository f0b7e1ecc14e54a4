"""``ConsistencyModelPipeline``: one-step and multistep consistency sampling (Song et al. 2023)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from mindspore import Tensor

from ..schedulers.consistency_models import CMStochasticIterativeScheduler
from ..utils import BatchGeneratorLike
from .pipeline_utils import DiffusionPipeline


class ConsistencyModelPipeline(DiffusionPipeline):
    """Consistency-model sampling: one step (``num_inference_steps=1``, the default) maps noise
    at σ_max straight to an image; more steps, or explicit ``timesteps``, alternate denoising
    and re-noising (Algorithm 1).

    Class-conditional UNets (``num_class_embeds``) take ``class_labels``: an int (batch 1), a
    list / array / Tensor of ``batch_size`` ints, or None for labels drawn from the generator.
    Noise order (one generator): latents (scaled by σ_max), class labels, then one slice per step.
    """

    supported_schedulers = (CMStochasticIterativeScheduler,)

    def __init__(self, unet, scheduler: CMStochasticIterativeScheduler):
        super().__init__()
        self._register_unet_and_scheduler(unet, scheduler)

    def __call__(
        self,
        batch_size: int = 1,
        class_labels=None,
        num_inference_steps: int = 1,
        timesteps: Optional[Sequence[int]] = None,
        generator: BatchGeneratorLike = None,
        latents=None,
        output_type: Optional[str] = None,
        return_dict: bool = True,
        condition=None,
        guidance_scale: float = 1.0,
        sample_shape=None,
        observation=None,
        guidance=None,
    ):
        """Generate ``batch_size`` images. ``timesteps`` (descending training-step indices)
        replaces ``num_inference_steps``; other arguments as :meth:`DDIMPipeline.__call__`."""
        if timesteps is not None:
            num_inference_steps = None
        return self._sample(
            batch_size, generator, num_inference_steps, latents, output_type, return_dict,
            schedule_options={"timesteps": timesteps} if timesteps is not None else None,
            class_labels=class_labels, condition=condition, guidance_scale=guidance_scale, sample_shape=sample_shape,
            observation=observation, guidance=guidance,
        )

    def _class_labels(self, spec, class_labels, batch_size: int, rng) -> Optional[Tensor]:
        """As diffusers: labels missing for a class-conditional UNet are drawn from the generator."""
        if class_labels is None and spec.num_classes is not None and rng is not None:
            return Tensor(rng.integers(0, spec.num_classes, size=batch_size).astype(np.int32))
        return super()._class_labels(spec, class_labels, batch_size, rng)
