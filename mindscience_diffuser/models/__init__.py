"""Models: ``UNet2DModel`` and the blocks it is built from; MindScience's sequence transformers;
the exact denoiser of Gaussian random fields."""
from .blocks import (
    AttnDownBlock2D,
    AttnDownEncoderBlock2D,
    AttnSkipDownBlock2D,
    AttnSkipUpBlock2D,
    AttnUpBlock2D,
    DownBlock2D,
    ResnetDownsampleBlock2D,
    ResnetUpsampleBlock2D,
    SkipDownBlock2D,
    SkipUpBlock2D,
    UNetMidBlock2D,
    UpBlock2D,
)
from .diffusion_transformer import ConditionDiffusionTransformer, DiffusionTransformer
from .gaussian_field_denoiser import GaussianFieldDenoiser
from .unet_2d import UNet2DModel

__all__ = [
    "UNet2DModel",
    "DiffusionTransformer",
    "ConditionDiffusionTransformer",
    "GaussianFieldDenoiser",
    "UNetMidBlock2D",
    "DownBlock2D",
    "AttnDownBlock2D",
    "SkipDownBlock2D",
    "AttnSkipDownBlock2D",
    "ResnetDownsampleBlock2D",
    "AttnDownEncoderBlock2D",
    "UpBlock2D",
    "AttnUpBlock2D",
    "SkipUpBlock2D",
    "AttnSkipUpBlock2D",
    "ResnetUpsampleBlock2D",
]
