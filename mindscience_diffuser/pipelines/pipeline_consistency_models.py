"""``ConsistencyModelPipeline``: one-step and multistep consistency sampling (Song et al. 2023)."""
from __future__ import annotations

from typing import Optional, Sequence

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..schedulers.consistency_models import CMStochasticIterativeScheduler
from ..utils import GeneratorLike
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
        generator: GeneratorLike = None,
        latents=None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Generate ``batch_size`` images. ``timesteps`` (descending training-step indices)
        replaces ``num_inference_steps``; other arguments as :meth:`DDIMPipeline.__call__`."""
        if timesteps is not None:
            num_inference_steps = None
        return self._sample(
            batch_size, generator, num_inference_steps, latents, output_type, return_dict,
            schedule_options={"timesteps": timesteps} if timesteps is not None else None,
            class_labels=class_labels,
        )

    def _class_labels(self, class_labels, batch_size: int, rng: np.random.Generator) -> Optional[Tensor]:
        num_classes = self.unet.config.num_class_embeds
        if num_classes is None:
            if class_labels is not None:
                raise ValueError("class_labels given, but the UNet is not class-conditional (num_class_embeds is "
                                 "None)")
            return None
        if class_labels is None:
            return Tensor(rng.integers(0, num_classes, size=batch_size).astype(np.int32))
        if isinstance(class_labels, Tensor):
            class_labels = class_labels.asnumpy()
        if isinstance(class_labels, (int, np.integer)) and not isinstance(class_labels, bool):
            if batch_size != 1:
                raise ValueError(f"a single int class label needs batch_size 1, got batch_size {batch_size}; pass a "
                                 f"list of {batch_size} labels")
            class_labels = [class_labels]
        labels = np.asarray(class_labels)
        if labels.shape != (batch_size,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"class_labels must be {batch_size} ints (one per image), got {class_labels!r}")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"class_labels must lie in [0, {num_classes - 1}], got {labels.tolist()}")
        return Tensor(labels.astype(np.int32), ms.int32)
