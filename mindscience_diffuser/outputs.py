"""Output classes returned with ``return_dict=True``.

Each is a dataclass that also answers key access (``out["prev_sample"]``), index access
(``out[0]``) and ``to_tuple()`` (the fields that are not ``None``, in order), as diffusers'
``BaseOutput`` does.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, List, Optional, Tuple, Union

import numpy as np


class BaseOutput:
    """Mixin for the dataclasses below: attribute, key and index access, ``to_tuple``."""

    def keys(self) -> List[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def values(self) -> List[Any]:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> List[Tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> Tuple[Any, ...]:
        return tuple(self.values())

    def __getitem__(self, key: Union[str, int, slice]) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{type(self).__name__} has no field {key!r}; it has {self.keys()}")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@dataclass
class SchedulerOutput(BaseOutput):
    """``prev_sample``: x_{t-1}; ``pred_original_sample``: the model's estimate of x_0."""

    prev_sample: Any
    pred_original_sample: Optional[Any] = None


@dataclass
class SdeVeOutput(BaseOutput):
    """``prev_sample``: x_{t-1} with noise; ``prev_sample_mean``: the same step without it."""

    prev_sample: Any
    prev_sample_mean: Any


@dataclass
class CMStochasticIterativeSchedulerOutput(BaseOutput):
    """``prev_sample``: the sample at the next (lower) noise level."""

    prev_sample: Any


@dataclass
class UNet2DOutput(BaseOutput):
    """``sample``: the UNet's output, shaped like its input but with ``out_channels`` channels."""

    sample: Any


@dataclass
class ImagePipelineOutput(BaseOutput):
    """``images``: a list of PIL images, or a numpy array (B, H, W, C) in [0, 1]."""

    images: Union[List[Any], np.ndarray]
