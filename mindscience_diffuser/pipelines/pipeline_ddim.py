"""``DDIMPipeline``: generation with DDIM (Song et al. 2021)."""
from __future__ import annotations

from typing import Optional

from ..schedulers.ddim import DDIMScheduler
from ..utils import BatchGeneratorLike
from .pipeline_utils import VP_DESCRIPTION, VP_SCHEDULERS, DiffusionPipeline, convert_scheduler


class DDIMPipeline(DiffusionPipeline):
    """Sample images with DDIM: ``DDIMPipeline(unet, scheduler)(batch_size, generator, ...)``.

    As in diffusers, the scheduler given to the constructor is converted to a
    :class:`DDIMScheduler` with the same config. A scheduler swapped in afterwards
    (``pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)``) is
    used as is; DDPM, DPM-Solver and Euler are supported, and ``eta`` /
    ``use_clipped_model_output`` then have no effect.

    Example:
        >>> from mindscience_diffuser import DDIMPipeline, DDIMScheduler, UNet2DModel
        >>> unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        ...                    down_block_types=("DownBlock2D", "DownBlock2D"),
        ...                    up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=4)
        >>> pipe = DDIMPipeline(unet, DDIMScheduler())
        >>> pipe.set_progress_bar_config(disable=True)
        >>> pipe(batch_size=2, num_inference_steps=3, generator=0, output_type="np").images.shape
        (2, 8, 8, 1)
    """

    supported_schedulers = VP_SCHEDULERS
    supported_description = VP_DESCRIPTION

    def __init__(self, unet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=convert_scheduler(scheduler, DDIMScheduler))

    def __call__(
        self,
        batch_size: int = 1,
        generator: BatchGeneratorLike = None,
        eta: float = 0.0,
        num_inference_steps: int = 50,
        use_clipped_model_output: Optional[bool] = None,
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
        """Generate ``batch_size`` images in ``num_inference_steps`` DDIM steps.

        Args:
            batch_size: number of images.
            generator: a ``numpy.random.Generator`` or an int seed; draws the starting noise
                (unless ``latents`` is given) and, for ``eta > 0``, the noise of every step. A
                list of ``batch_size`` of them: sample i's noise comes from generator i alone.
            eta: η of DDIM (0: deterministic DDIM, 1: DDPM-like), in [0, 1].
            num_inference_steps: number of denoising steps.
            use_clipped_model_output: recompute ε from the clipped x̂0 (see ``DDIMScheduler.step``).
            output_type: ``None`` (the default: ``"pil"`` for (B, C, H, W) samples of 1, 3 or
                4 channels, as diffusers, ``"latent"`` for any other shape), ``"pil"`` (list of
                PIL images), ``"np"`` ((B, H, W, C) float32 in [0, 1]), ``"ms"`` ((B, C, H, W)
                Tensor in [0, 1]), ``"latent"`` (the sample in model space, unclipped) or
                ``"field"`` (that sample in the training data's units: see ``data_normalization``).
            return_dict: return :class:`ImagePipelineOutput` (True) or the tuple ``(images,)``.
            latents: the starting noise, a Tensor or numpy array of shape (batch_size, *sample shape).
            condition: what a conditional model is conditioned on: a vector (batch_size, d) (or
                (d,) for every sample) for vector-conditioned models (UNet
                ``class_embed_type="projection"``/``"identity"``, ``ConditionDiffusionTransformer``),
                or a field (batch_size, c, H, W) concatenated to the sample's channels for a UNet
                with ``in_channels`` = sample channels + c (super-resolution, downscaling).
            class_labels: one label per sample for class-conditional UNets (``num_class_embeds``;
                an int alone for batch_size 1).
            guidance_scale: classifier-free guidance weight w (Ho & Salimans 2022):
                ε(x, ∅) + w·(ε(x, c) − ε(x, ∅)), both in one batched model call per step; 1 (the
                default) is the conditional model itself, 0 the unconditional one. Needs
                ``pipe.null_condition``, the "no condition" the model learned in training.
            sample_shape: one sample's shape, e.g. (C, H, W) or (L, C), for a model whose config does
                not give it; samples may have rank 2 to 5.
            observation: an :class:`~mindscience_diffuser.observations.Observation` (in model
                units) to sample the posterior p(x | y) of, with ``guidance``.
            guidance: the posterior-sampling method: ``"replace"``, ``"dps"``, ``"pigdm"``,
                ``"mmps"`` or a configured object such as ``DPS(step_size=0.5)`` (see
                :mod:`mindscience_diffuser.guidance` and docs/inverse_problems.md).
        """
        is_ddim = isinstance(self.scheduler, DDIMScheduler)
        return self._sample(
            batch_size, generator, num_inference_steps, latents, output_type, return_dict,
            loop_options={"use_clipped_model_output": bool(use_clipped_model_output)} if is_ddim else {},
            schedule_options={"eta": eta} if is_ddim else {},
            condition=condition, class_labels=class_labels, guidance_scale=guidance_scale, sample_shape=sample_shape,
            observation=observation, guidance=guidance,
        )
