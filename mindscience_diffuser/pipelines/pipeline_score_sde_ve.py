"""``ScoreSdeVePipeline``: predictor-corrector sampling of the variance-exploding SDE (Song et al. 2021)."""
from __future__ import annotations

from typing import Optional

from ..schedulers.score_sde_ve import ScoreSdeVeScheduler
from ..utils import GeneratorLike
from .pipeline_utils import DiffusionPipeline


class ScoreSdeVePipeline(DiffusionPipeline):
    """Score-SDE-VE sampling: the UNet is a score model s(x, σ) conditioned on σ (NCSN++ style,
    ``time_embedding_type="fourier"``). Each of the N steps runs ``scheduler.config.correct_steps``
    Langevin corrections and one reverse-diffusion predictor step, all in one compiled loop.

    The image is the last predictor step's noise-free mean ``prev_sample_mean``, clipped to
    [0, 1] (this sampler works in [0, 1], no x/2 + 0.5). Noise order (one generator): latents
    (scaled by σ_max), then per step the corrector draws and the predictor draw.
    """

    supported_schedulers = (ScoreSdeVeScheduler,)
    signed_output = False

    def __init__(self, unet, scheduler: ScoreSdeVeScheduler):
        super().__init__()
        self._register_unet_and_scheduler(unet, scheduler)

    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 2000,
        generator: GeneratorLike = None,
        output_type: Optional[str] = None,
        return_dict: bool = True,
        latents=None,
        condition=None,
        class_labels=None,
        guidance_scale: float = 1.0,
        sample_shape=None,
    ):
        """Generate ``batch_size`` images with ``num_inference_steps`` predictor steps (each
        preceded by ``correct_steps`` corrector steps); other arguments as :meth:`DDIMPipeline.__call__`."""
        return self._sample(batch_size, generator, num_inference_steps, latents, output_type, return_dict,
                            condition=condition, class_labels=class_labels, guidance_scale=guidance_scale,
                            sample_shape=sample_shape)
