"""Pipelines: the compiled sampling loop and the image pipelines built on it."""
from .export import ExportedSampler, export_sampler, load_sampler
from .pipeline_consistency_models import ConsistencyModelPipeline
from .pipeline_ddim import DDIMPipeline
from .pipeline_ddpm import DDPMPipeline
from .pipeline_dpm_solver import DPMSolverPipeline
from .pipeline_score_sde_ve import ScoreSdeVePipeline
from .pipeline_utils import DiffusionPipeline
from .sampling_loop import SamplingLoop

PIPELINES = (DDIMPipeline, DDPMPipeline, DPMSolverPipeline, ScoreSdeVePipeline, ConsistencyModelPipeline)

__all__ = [
    "DiffusionPipeline",
    "DDIMPipeline",
    "DDPMPipeline",
    "DPMSolverPipeline",
    "ScoreSdeVePipeline",
    "ConsistencyModelPipeline",
    "SamplingLoop",
    "ExportedSampler",
    "export_sampler",
    "load_sampler",
]
