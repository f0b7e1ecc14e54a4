"""Small helpers shared across schedulers, models and pipelines."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import mindspore as ms
import numpy as np

SUPPORTED_COMPUTE_DTYPES = (ms.float32, ms.float16)

GeneratorLike = Union[np.random.Generator, int, None]
#: what a pipeline call takes: one generator (or seed) for the batch, or a list of them, one per sample
BatchGeneratorLike = Union[GeneratorLike, Sequence[Union[np.random.Generator, int]]]


def check_compute_dtype(compute_dtype) -> "ms.dtype":
    """Return ``compute_dtype`` if it is float32 or float16, else raise ``TypeError``."""
    if compute_dtype not in SUPPORTED_COMPUTE_DTYPES:
        raise TypeError(f"compute_dtype must be mindspore.float32 or mindspore.float16, got {compute_dtype!r}")
    return compute_dtype


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type (a ``TypeError``).

    It is a ``ValueError`` too, so code written against the options that raised ``ValueError``
    for every bad argument (the trainer, the UNet config, the field generators) keeps catching it.
    """


def check_positive(name: str, value, integer: bool = False, allow_zero: bool = False, minimum=None):
    """``value`` as a positive number (``int`` if ``integer``, else ``float``), else an error naming ``name``.

    The one argument check of the package: ``bool`` is never a number here, and ``integer``
    accepts Python and numpy ints only (``2.0`` is a wrong type, as in ``range``).
    ``allow_zero`` admits 0; ``minimum`` (inclusive) replaces the lower bound altogether. Floats
    must be finite: an infinite rate, scale or noise level is never what a caller means, and
    downstream it becomes NaN rather than an error.

    Raises :class:`ArgumentTypeError` (a ``TypeError``) for a wrong type and ``ValueError`` for a
    value below the bound, each message naming the argument and what it allows.

    >>> check_positive("batch_size", 4, integer=True)
    4
    >>> check_positive("p2_gamma", 0, allow_zero=True)
    0.0
    >>> check_positive("size", 1, integer=True, minimum=2)
    Traceback (most recent call last):
        ...
    ValueError: size must be an int >= 2, got 1 (at least 2)
    """
    kind = "int" if integer else "number"
    if minimum is not None:
        allowed = f"an int >= {minimum}" if integer else f"a number >= {minimum}"
    else:
        allowed = f"a {'non-negative' if allow_zero else 'positive'} {kind}"
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ArgumentTypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
    if minimum is not None:
        ok = value >= minimum
    else:
        ok = value >= 0 if allow_zero else value > 0
    if not ok:  # also False for NaN
        bound = minimum if minimum is not None else 0 if allow_zero else 1 if integer else None
        limit = f"at least {bound}" if bound is not None else "greater than 0"
        raise ValueError(f"{name} must be {allowed}, got {value!r} ({limit})")
    if not integer and not np.isfinite(value):
        raise ValueError(f"{name} must be {allowed}, got {value!r} (finite)")
    return int(value) if integer else float(value)


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


class BatchGenerator:
    """The random source of one batch: one ``numpy.random.Generator`` for the whole batch, or one
    per sample (as diffusers takes a list of torch generators, one per batch element).

    ``standard_normal(shape, batch_axis=0)`` and ``integers(low, high, size)`` draw as numpy
    does. With one generator they *are* numpy's draws of the whole array (so seeds keep their
    meaning). With per-sample generators, the slice of sample ``i`` along ``batch_axis`` comes
    from generator ``i``, drawn as numpy draws that sample's shape: sample ``i``'s numbers
    depend on its own generator only, never on the batch it is in or on its position in it.
    """

    def __init__(self, generators: Sequence[np.random.Generator]):
        self.generators = tuple(generators)

    @property
    def per_sample(self) -> bool:
        return len(self.generators) > 1

    def standard_normal(self, shape: Sequence[int], batch_axis: int = 0) -> np.ndarray:
        shape = tuple(shape)
        if not self.per_sample:
            return self.generators[0].standard_normal(shape)
        one = shape[:batch_axis] + shape[batch_axis + 1:]
        return np.stack([g.standard_normal(one) for g in self.generators], axis=batch_axis)

    def integers(self, low: int, high: Optional[int] = None, size=None) -> np.ndarray:
        """Integers in [low, high) with ``size`` (the batch size, or a shape with it first)."""
        if not self.per_sample:
            return self.generators[0].integers(low, high, size=size)
        one = tuple(np.atleast_1d(size))[1:]
        return np.stack([g.integers(low, high, size=one) for g in self.generators])


def as_batch_generator(generator, batch_size: int) -> BatchGenerator:
    """``generator`` for a batch of ``batch_size``: a ``numpy.random.Generator``, an int seed or
    ``None`` (one generator for the batch, as :func:`as_numpy_generator`), or a list/tuple of
    exactly ``batch_size`` of those (one per sample; a ``ValueError`` for another length).

    >>> import numpy as np
    >>> pair = as_batch_generator([np.random.default_rng([7, 0]), np.random.default_rng([7, 1])], 2)
    >>> second = as_batch_generator([np.random.default_rng([7, 1])], 1)
    >>> bool(np.array_equal(pair.standard_normal((2, 3))[1], second.standard_normal((1, 3))[0]))
    True
    """
    if not isinstance(generator, (list, tuple)):
        return BatchGenerator((as_numpy_generator(generator),))
    if len(generator) != batch_size:
        raise ValueError(f"generator: a list of generators needs one per sample, batch_size={batch_size}, got "
                         f"{len(generator)}")
    return BatchGenerator(tuple(as_numpy_generator(g) for g in generator))


def randn(shape: Sequence[int], generator: GeneratorLike, dtype=ms.float32) -> ms.Tensor:
    """Standard normal noise drawn on the host, so every mode and backend sees the same numbers."""
    rng = as_numpy_generator(generator)
    return ms.Tensor(rng.standard_normal(tuple(shape)).astype(np.float32), dtype)


def enable_compile_cache(key: Any, cache_root: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Turn on MindSpore's graph compile cache in a folder of its own for ``key``; return the folder.

    Opt-in: call it before the process's first compiled call (``GRAPH_MODE`` or ``ms.jit``). A
    later process that calls it with the same ``key`` and then compiles the same graphs in the
    same order loads them instead of compiling: on the small UNet layout at batch 4 the first call
    fell from 5-11 s to 0.7-1.3 s in one run and to 3.7 s in another, both on a loaded machine
    (docs/benchmarks.md), with the same output and 140-160 MiB less peak memory.

    MindSpore identifies a cached graph only by its place in the process's compile order
    (``compile_cache_0.mindir``, ``_1``, ...) and by a hash of the Python source it was traced
    from, not by the model's configuration or the input shapes: a CIFAR-10 UNet started on a
    folder written by the small UNet failed (Reshape size mismatch), and a batch-8 call on a
    folder written at batch 4 returned a batch-4 output without any error. Hence one folder per
    ``key``: pass everything that decides what the process compiles — the model's config, batch
    size, step count, dtype — as any JSON-serialisable value (others by ``str``). The folder name
    hashes it with the MindSpore version, the device target and the execution mode, under
    ``cache_root`` (default ``$MINDSCIENCE_DIFFUSER_COMPILE_CACHE``, else
    ``~/.cache/mindscience_diffuser/compile_cache``).

    The key also carries a hash of this package's own source: MindSpore hashes only the entry
    script and the modules it imports from outside ``sys.path``, so an installed package is not
    in its check, and graphs traced from an older version of it would load silently.
    """
    if cache_root is None:
        cache_root = os.environ.get("MINDSCIENCE_DIFFUSER_COMPILE_CACHE",
                                    Path.home() / ".cache" / "mindscience_diffuser" / "compile_cache")
    _point_compile_cache_at_the_entry_script()
    described = json.dumps([key, ms.__version__, ms.get_context("device_target"), ms.get_context("mode"),
                            _package_source_digest()], sort_keys=True, default=str)
    folder = Path(cache_root) / hashlib.sha256(described.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    ms.set_context(enable_compile_cache=True, compile_cache_path=str(folder))
    return folder


def tree_digest(root: Union[str, os.PathLike], pattern: str = "*") -> str:
    """sha256 of the files under ``root`` that match ``pattern`` (their relative names and bytes)."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob(pattern) if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _package_source_digest() -> str:
    """sha256 of every ``.py`` file of this package (names and contents)."""
    return tree_digest(Path(__file__).resolve().parent, "*.py")


def _point_compile_cache_at_the_entry_script() -> None:
    """MindSpore reads ``sys.argv[0]`` as the entry script when it is imported and hashes it (and
    what it imports) into the cache check. Under ``python -m mindscience_diffuser`` that is
    still ``"-m"`` then, and the cache fails with FileNotFoundError on ``./-m`` (the module's
    ``__main__.py`` would not do either: MindSpore's import scan cannot resolve its relative
    import). No entry script makes MindSpore skip that check, which the key's package digest
    covers."""
    from mindspore.common import api

    entry = getattr(api, "entry_script_path", None)
    if entry is not None and not os.path.isfile(entry):
        api.entry_script_path = None
