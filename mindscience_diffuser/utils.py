"""Small helpers shared across schedulers, models and pipelines."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import mindspore as ms
import numpy as np

SUPPORTED_COMPUTE_DTYPES = (ms.float32, ms.float16)

GeneratorLike = Union[np.random.Generator, int, None]


def check_compute_dtype(compute_dtype) -> "ms.dtype":
    """Return ``compute_dtype`` if it is float32 or float16, else raise ``TypeError``."""
    if compute_dtype not in SUPPORTED_COMPUTE_DTYPES:
        raise TypeError(f"compute_dtype must be mindspore.float32 or mindspore.float16, got {compute_dtype!r}")
    return compute_dtype


def check_choice(name: str, value, allowed: Sequence) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def as_numpy_generator(generator: GeneratorLike) -> np.random.Generator:
    """Accept a ``numpy.random.Generator``, an int seed or ``None`` (fresh entropy)."""
    if generator is None or isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.default_rng(generator)
    if isinstance(generator, np.random.Generator):
        return generator
    raise TypeError(f"generator must be a numpy.random.Generator or an int seed, got {type(generator).__name__}")


def randn(shape: Sequence[int], generator: GeneratorLike, dtype=ms.float32) -> ms.Tensor:
    """Standard normal noise drawn on the host, so every mode and backend sees the same numbers."""
    rng = as_numpy_generator(generator)
    return ms.Tensor(rng.standard_normal(tuple(shape)).astype(np.float32), dtype)
