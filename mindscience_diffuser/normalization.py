"""Physical units: the per-channel affine map between a data set's units and the model's.

A diffusion model is trained on data of order one (the noise it learns to remove has unit
variance). Fields in physical units — a temperature near 300 K with a spread of 20 K, a
pressure in pascals — are standardised channel by channel for training,
``model = (data − mean) / std``, and mapped back after sampling, ``data = model · std + mean``.
:class:`DataNormalization` holds the two per-channel vectors; the trainer records them
(:class:`~mindscience_diffuser.training.DiffusionTrainer`), a pipeline folder stores them
(:data:`MODEL_INDEX_KEY` in ``model_index.json``), and ``output_type="field"`` returns samples
in the data's units. A model without statistics works in the data's units already (identity).

>>> norm = DataNormalization(mean=[300.0], std=[20.0])
>>> norm.to_data_units(np.array([[[[0.0, 1.0]]]], np.float32)).tolist()
[[[[300.0, 320.0]]]]
>>> norm.to_dict()
{'mean': [300.0], 'std': [20.0]}
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

#: The ``model_index.json`` key of a pipeline folder that stores the statistics. diffusers drops
#: keys that start with "_" before it reads a pipeline's components (``extract_init_dict``), so
#: ``diffusers.DiffusionPipeline.from_pretrained`` loads such a folder quietly; this package's
#: loader skips them the same way when it builds components and reads this one.
MODEL_INDEX_KEY = "_data_normalization"

#: A channel is "far from [-1, 1]" when |mean| + std exceeds this (its typical values lie beyond ±3) ...
FAR_MAGNITUDE = 3.0
#: ... or when its std is below this (its variations drown in the unit-variance noise).
FAR_SMALL_STD = 0.01

ArrayLike = Union[Sequence[float], np.ndarray, float, int]


def _vector(name: str, values: Any) -> Tuple[float, ...]:
    if isinstance(values, (bool, np.bool_)) or isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a number or a sequence of numbers (one per channel), got {values!r}")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a number or a sequence of numbers (one per channel), got {values!r}") from err
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must hold one number per channel, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return tuple(float(v) for v in arr)


@dataclasses.dataclass(frozen=True)
class DataNormalization:
    """Per-channel ``mean`` and ``std`` of the training data, in the data's units.

    Both are tuples of floats with one entry per channel (a single number is one channel);
    every entry finite and every ``std`` > 0, else ``ValueError`` (``TypeError`` for text or
    other non-numbers). :meth:`to_model_units` and :meth:`to_data_units` apply the map to a
    (B, C, ...) numpy array or MindSpore Tensor along axis 1 and return the same kind.
    """

    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    def __post_init__(self) -> None:
        mean, std = _vector("mean", self.mean), _vector("std", self.std)
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have one entry per channel each, got {len(mean)} and {len(std)}")
        if min(std) <= 0:
            raise ValueError(f"std must be > 0 in every channel, got {list(std)}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def num_channels(self) -> int:
        return len(self.mean)

    # -- construction / storage -------------------------------------------------------------
    @classmethod
    def from_data(cls, data) -> "DataNormalization":
        """The per-channel mean and standard deviation of ``data`` (N, C, H, W) over N, H and W,
        accumulated in float64. A constant channel gets std 1 (it is only shifted)."""
        arr = np.asarray(data)
        if arr.ndim < 2:
            raise ValueError(f"data must be shaped (N, C, ...), got shape {arr.shape}")
        axes = (0,) + tuple(range(2, arr.ndim))
        mean = arr.mean(axis=axes, dtype=np.float64)
        std = arr.std(axis=axes, dtype=np.float64)
        return cls(mean=mean, std=np.where(std > 0, std, 1.0))

    @classmethod
    def coerce(cls, value: Any, num_channels: Optional[int] = None,
               name: str = "data_normalization") -> Optional["DataNormalization"]:
        """``None``, a :class:`DataNormalization` or a mapping ``{"mean": [...], "std": [...]}``
        (what ``model_index.json`` stores) as a :class:`DataNormalization` or ``None``; with
        ``num_channels``, its length must match (``ValueError`` otherwise)."""
        if value is None:
            return None
        if isinstance(value, Mapping):
            keys = set(value)
            if keys != {"mean", "std"}:
                raise ValueError(f"{name} must have exactly the keys 'mean' and 'std', got {sorted(keys)}")
            value = cls(mean=value["mean"], std=value["std"])
        if not isinstance(value, cls):
            raise TypeError(f"{name} must be None, a DataNormalization or a mapping with 'mean' and 'std', got "
                            f"{type(value).__name__}")
        if num_channels is not None and value.num_channels != num_channels:
            raise ValueError(f"{name} has {value.num_channels} channel(s) but the model makes {num_channels}")
        return value

    def to_dict(self) -> dict:
        """``{"mean": [...], "std": [...]}``, JSON-ready."""
        return {"mean": list(self.mean), "std": list(self.std)}

    # -- the map ----------------------------------------------------------------------------
    def _apply(self, x, scale: np.ndarray, shift: np.ndarray):
        from mindspore import Tensor

        shape = tuple(x.shape)
        if len(shape) < 2 or shape[1] != self.num_channels:
            raise ValueError(f"x must be shaped (B, C, ...) with C = {self.num_channels} channel(s) of the stored "
                             f"statistics, got shape {shape}")
        broadcast = (1, -1) + (1,) * (len(shape) - 2)
        if isinstance(x, Tensor):
            import mindspore as ms

            s = Tensor(scale.reshape(broadcast).astype(np.float32))
            b = Tensor(shift.reshape(broadcast).astype(np.float32))
            return x.astype(ms.float32) * s + b
        arr = np.asarray(x, np.float32)
        return arr * scale.reshape(broadcast).astype(np.float32) + shift.reshape(broadcast).astype(np.float32)

    def to_data_units(self, x):
        """model → data: ``x · std + mean`` per channel (float32)."""
        std, mean = np.asarray(self.std), np.asarray(self.mean)
        return self._apply(x, std, mean)

    def to_model_units(self, x):
        """data → model: ``(x − mean) / std`` per channel (float32)."""
        std, mean = np.asarray(self.std), np.asarray(self.mean)
        return self._apply(x, 1.0 / std, -mean / std)


def far_from_unit_range(stats: DataNormalization) -> bool:
    """True when some channel of data with these statistics is far from [-1, 1]: |mean| + std >
    :data:`FAR_MAGNITUDE`, or std < :data:`FAR_SMALL_STD`. A diffusion model trained on such data
    unnormalised spends its capacity on the offset, or sees its signal drowned in the noise."""
    mean, std = np.abs(np.asarray(stats.mean)), np.asarray(stats.std)
    return bool(np.any(mean + std > FAR_MAGNITUDE) or np.any(std < FAR_SMALL_STD))


def describe(stats: DataNormalization) -> str:
    """``mean [300], std [20]`` with 4 significant digits, for messages."""
    def fmt(values):
        return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"

    return f"mean {fmt(stats.mean)}, std {fmt(stats.std)}"
