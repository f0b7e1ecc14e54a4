"""Schedulers: one file per scheduler, shared pieces in ``schedules`` (host) and ``base`` (device).

Each scheduler module adds its class to ``__all__`` through the import below.
"""
from .base import ScaledInputMixin, SchedulerBase, StepIndexMixin, TimestepTableSchedulerBase, VPSchedulerBase
from .consistency_models import CMStochasticIterativeScheduler
from .ddim import DDIMScheduler
from .ddpm import DDPMScheduler
from .dpmsolver_multistep import DPMSolverMultistepScheduler
from .dpmsolver_multistep_inverse import DPMSolverMultistepInverseScheduler
from .euler_discrete import EulerDiscreteScheduler
from .score_sde_ve import ScoreSdeVeScheduler

__all__ = [name for name in dir() if name.endswith(("Scheduler", "SchedulerBase", "Mixin"))]
