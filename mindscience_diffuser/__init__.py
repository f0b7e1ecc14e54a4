"""mindscience_diffuser: MindSpore-native diffusion schedulers, UNet and graph-compiled pipelines."""
from pathlib import Path as _Path

from .configuration import ConfigMixin, FrozenConfig, register_to_config
from .models import ConditionDiffusionTransformer, DiffusionTransformer, GaussianFieldDenoiser, UNet2DModel
from .observations import BlockAverage, CellOperator, MaskOperator, MatrixOperator, Observation
from .outputs import (
    CMStochasticIterativeSchedulerOutput,
    ImagePipelineOutput,
    SchedulerOutput,
    SdeVeOutput,
    UNet2DOutput,
)
from .pipelines import (  # noqa: F401
    ConsistencyModelPipeline,
    DDIMPipeline,
    DDPMPipeline,
    DiffusionPipeline,
    DPMSolverPipeline,
    ScoreSdeVePipeline,
)
from .pipelines.export import ExportedSampler, export_sampler, load_sampler  # noqa: F401
from .schedulers import *  # noqa: F401,F403  (every scheduler class)
from .training import DiffusionTrainer, SyntheticFieldDataset, evaluate  # noqa: F401

__version__ = "0.1.0"

#: The pipeline folder (diffusers layout) of the field model that ships with the package.
DEFAULT_MODEL_PATH = _Path(__file__).resolve().parent / "default_model"
#: The pipeline folder of the shipped conditional model: 32×32 Gaussian random fields conditioned on
#: their spectral slope α ∈ [1.5, 3.5] (``condition=[α]``); see docs/conditional_generation.md.
GRF_SLOPE_MODEL_PATH = _Path(__file__).resolve().parent / "grf_slope_model"

from .docstrings import document_public_classes as _document_public_classes  # noqa: E402

_document_public_classes(globals())  # every public class's docstring gets its generated ``Args:`` section
