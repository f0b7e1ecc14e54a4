"""Schedulers: one file per scheduler, shared pieces in ``schedules`` (host) and ``base`` (device)."""
from .base import SchedulerBase, VPSchedulerBase
from .ddim import DDIMScheduler
