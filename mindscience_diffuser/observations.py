r"""Observations of a field for posterior sampling: values y, a forward operator A and a noise level σ_y.

The measurement model of every inverse problem here is

    y = A(x) + σ_y · η,      η ~ N(0, I),

for a sample x of the prior (B, C, H, W) (or any rank ≥ 2 where the operator makes sense). The
guidance methods of the sampling loop read it through two pieces:

- an **operator**, an ``nn.Cell`` whose ``construct(x)`` is A applied to a whole batch. It is
  pure MindSpore, so it compiles inside the GRAPH_MODE sampling loop and ``ms.grad`` can
  differentiate through it: the gradient of ‖y − A(x̂₀(x_t))‖² of diffusion posterior sampling
  (DPS, Chung et al. 2023, "Diffusion posterior sampling for general noisy inverse problems").
  Linear operators (``is_linear = True``) also give their adjoint Aᵀ (``adjoint``, pure MindSpore:
  the Gaussian-likelihood guidance of ΠGDM, Song et al. 2023, "Pseudoinverse-guided diffusion
  models for inverse problems", and of score-based data assimilation, Rozet & Louppe 2023, solve
  systems in A Σ Aᵀ) and their dense matrix on the host (``as_matrix``: the exact posterior of
  :mod:`mindscience_diffuser.training.posterior`);
- an :class:`Observation`, which holds y (one observation shared by the batch, or one per sample),
  the operator and σ_y, checks them against the sample shape before sampling
  (:meth:`Observation.check`) and computes the residual y − A(x) as a Cell.

Built-in operators: :class:`MaskOperator` (point sensors, inpainting), :class:`BlockAverage`
(coarse observations, downscaling), :class:`MatrixOperator` (a dense matrix on the flattened
sample) and :class:`CellOperator` (any differentiable Cell, e.g. a nonlinear forward model).

Shapes: ``sample_shape`` always means the shape of *one* sample, without the batch axis, e.g.
(C, H, W); operators map a batch (B, *sample_shape) to (B, *output_shape(sample_shape)).

The command line reads observations from a ``.npz`` file with ``values`` (shaped like one
sample), ``mask`` (same shape, 1 where observed) and ``noise_std`` (:meth:`Observation.from_npz`).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from mindspore import Tensor, nn, ops

from .utils import GeneratorLike, as_numpy_generator, check_positive

ArrayLike = Union[np.ndarray, Tensor, Sequence]

#: The arrays of the command line's observation file (see :meth:`Observation.from_npz`).
NPZ_KEYS = ("values", "mask", "noise_std")


def _as_float_array(name: str, value) -> np.ndarray:
    """``value`` (numpy array, Tensor, nested sequence, bool allowed) as a float64 numpy array."""
    if isinstance(value, Tensor):
        value = value.asnumpy()
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an array of numbers (numpy array or mindspore Tensor), got a string")
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array of numbers (numpy array or mindspore Tensor), got "
                        f"{type(value).__name__}") from err
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _sample_shape(sample_shape, minimum_rank: int = 1) -> Tuple[int, ...]:
    """``sample_shape`` (one sample, no batch axis) as a tuple of positive ints, else an error naming it."""
    try:
        shape = tuple(sample_shape)
    except TypeError as err:
        raise TypeError(f"sample_shape must be a tuple of ints (one sample, without the batch axis), got "
                        f"{sample_shape!r}") from err
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in shape):
        raise TypeError(f"sample_shape must be a tuple of ints (one sample, without the batch axis), got {shape!r}")
    if len(shape) < minimum_rank or any(s < 1 for s in shape):
        raise ValueError(f"sample_shape must have at least {minimum_rank} positive dimension(s) (one sample, without "
                         f"the batch axis), got {shape!r}")
    return tuple(int(s) for s in shape)


class ObservationOperator(nn.Cell):
    """Base of the forward operators A: ``construct(x)`` maps a batch (B, *sample_shape) to
    (B, *output_shape(sample_shape)) in pure MindSpore (graph-compilable, differentiable).

    Subclasses implement ``construct`` and :meth:`output_shape` (host side, raises
    ``ValueError`` for a sample shape the operator cannot take). ``is_linear`` says whether
    A(a·x + b·z) = a·A(x) + b·A(z); linear operators derive from :class:`LinearOperator`.
    """

    is_linear = False

    def output_shape(self, sample_shape: Sequence[int]) -> Tuple[int, ...]:
        """The shape of A(x) for one sample of ``sample_shape`` (no batch axis); ``ValueError`` if
        the operator cannot take that shape."""
        raise TypeError(f"{type(self).__name__} is an ObservationOperator without output_shape; an operator "
                        "defines it (or wrap a Cell in CellOperator, which infers it)")

    def observed(self, noise: np.ndarray) -> np.ndarray:
        """``noise`` (shaped like A's output) with the entries the operator never observes zeroed:
        where A's output is zero by construction (a mask's unobserved pixels) measurement noise
        does not exist. Every entry is observed by default."""
        return noise


class LinearOperator(ObservationOperator):
    """A linear forward operator: adds the adjoint Aᵀ (``adjoint(y)``, pure MindSpore, maps
    (B, *output_shape) back to (B, *sample_shape), with ⟨A x, y⟩ = ⟨x, Aᵀ y⟩) and the dense
    (m, n) matrix on the flattened sample (``as_matrix``, host-side numpy float64, for the exact
    posterior). ``m`` = prod(output_shape), ``n`` = prod(sample_shape), row-major flattening."""

    is_linear = True

    def adjoint(self, y: Tensor) -> Tensor:
        raise TypeError(f"{type(self).__name__} is a LinearOperator without adjoint; a linear operator defines "
                        "A^T (MaskOperator, BlockAverage and MatrixOperator do)")

    def as_matrix(self, sample_shape: Sequence[int]) -> np.ndarray:
        raise TypeError(f"{type(self).__name__} is a LinearOperator without as_matrix; a linear operator defines "
                        "its dense matrix for the exact posterior")


class MaskOperator(LinearOperator):
    """A(x) = x · mask: point sensors (a sparse mask) and inpainting (a region of ones).

    The output keeps the sample's shape, zero where unobserved, so ‖y − A(x)‖² sums over the
    observed entries only. A is an orthogonal projection: Aᵀ = A and A Aᵀ = A.

    Args:
        mask: 0/1 values (numbers or bools; numpy array or Tensor), shaped like one sample
            (C, H, W) or any shape that broadcasts to it, e.g. (H, W) for the same pixels in every
            channel. ``ValueError`` for other values or for a mask that observes nothing.

    Example:
        >>> import numpy as np, mindspore as ms
        >>> op = MaskOperator(np.array([[1, 0], [0, 1]]))
        >>> op(ms.Tensor(np.full((1, 1, 2, 2), 3.0, np.float32))).asnumpy().tolist()
        [[[[3.0, 0.0], [0.0, 3.0]]]]
        >>> op.as_matrix((1, 2, 2)).diagonal().tolist()
        [1.0, 0.0, 0.0, 1.0]
    """

    def __init__(self, mask: ArrayLike):
        super().__init__()
        arr = _as_float_array("mask", mask)
        if arr.ndim == 0:
            raise ValueError("mask must have at least one dimension (shaped like one sample, or broadcasting to it)")
        if not np.all((arr == 0) | (arr == 1)):
            bad = np.unique(arr[(arr != 0) & (arr != 1)])[:5]
            raise ValueError(f"mask must hold only 0 and 1 (1 where observed), got values such as {bad.tolist()}")
        if not arr.any():
            raise ValueError("mask observes nothing: every entry is 0")
        self.mask_array = arr.astype(np.float32)
        self.mask = Tensor(self.mask_array)

    def construct(self, x: Tensor) -> Tensor:
        return x * self.mask.astype(x.dtype)

    def adjoint(self, y: Tensor) -> Tensor:
        # A projection: its own transpose.
        return y * self.mask.astype(y.dtype)

    def output_shape(self, sample_shape: Sequence[int]) -> Tuple[int, ...]:
        shape = _sample_shape(sample_shape)
        try:
            fits = np.broadcast_shapes(self.mask_array.shape, shape) == shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"mask of shape {self.mask_array.shape} does not fit samples of shape {shape}: it must "
                             "be shaped like one sample or broadcast to it")
        return shape

    def full_mask(self, sample_shape: Sequence[int]) -> np.ndarray:
        """The mask broadcast to one sample's shape (float32)."""
        shape = self.output_shape(sample_shape)
        return np.ascontiguousarray(np.broadcast_to(self.mask_array, shape))

    def observed(self, noise: np.ndarray) -> np.ndarray:
        return noise * self.mask_array

    def as_matrix(self, sample_shape: Sequence[int]) -> np.ndarray:
        return np.diag(self.full_mask(sample_shape).reshape(-1).astype(np.float64))

    def extra_repr(self) -> str:
        return f"mask shape {self.mask_array.shape}, {int(self.mask_array.sum())} observed"


class BlockAverage(LinearOperator):
    """A(x) = the mean of each ``factor``×``factor`` block of the last two axes (H, W): coarse
    observations of a fine field (downscaling), (B, C, H, W) -> (B, C, H/f, W/f).

    Aᵀ spreads each coarse value over its block divided by f² (so A Aᵀ = I/f²).

    Args:
        factor: the block size f (an int ≥ 1); H and W must be multiples of it (``ValueError``
            from :meth:`output_shape`, which :meth:`Observation.check` calls before sampling).

    Example:
        >>> import numpy as np, mindspore as ms
        >>> x = ms.Tensor(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
        >>> BlockAverage(2)(x).asnumpy().tolist()
        [[[[2.5, 4.5], [10.5, 12.5]]]]
    """

    def __init__(self, factor: int):
        super().__init__()
        self.factor = check_positive("factor", factor, integer=True)

    def _coarse(self, shape):
        f = self.factor
        return shape[:-2] + (shape[-2] // f, f, shape[-1] // f, f)

    def construct(self, x: Tensor) -> Tensor:
        return x.reshape(self._coarse(x.shape)).mean(axis=(-3, -1))

    def adjoint(self, y: Tensor) -> Tensor:
        f = self.factor
        shape = y.shape
        spread = ops.broadcast_to(y.reshape(shape[:-2] + (shape[-2], 1, shape[-1], 1)),
                                  shape[:-2] + (shape[-2], f, shape[-1], f))
        return spread.reshape(shape[:-2] + (shape[-2] * f, shape[-1] * f)) / (f * f)

    def output_shape(self, sample_shape: Sequence[int]) -> Tuple[int, ...]:
        shape = _sample_shape(sample_shape, minimum_rank=2)
        f = self.factor
        if shape[-2] % f or shape[-1] % f:
            raise ValueError(f"BlockAverage(factor={f}) needs H and W (the last two axes) divisible by {f}, got "
                             f"samples of shape {shape}")
        return shape[:-2] + (shape[-2] // f, shape[-1] // f)

    def as_matrix(self, sample_shape: Sequence[int]) -> np.ndarray:
        shape = _sample_shape(sample_shape, minimum_rank=2)
        out = self.output_shape(shape)
        f = self.factor
        # Block averaging is separable: rows (H/f, H) ⊗ columns (W/f, W), one copy per leading index.
        rows = np.kron(np.eye(out[-2]), np.full((1, f), 1.0 / f))
        cols = np.kron(np.eye(out[-1]), np.full((1, f), 1.0 / f))
        return np.kron(np.eye(int(np.prod(shape[:-2], dtype=np.int64))), np.kron(rows, cols))

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class MatrixOperator(LinearOperator):
    """A(x) = M · vec(x): a dense (m, n) matrix on the row-major flattened sample,
    (B, *sample_shape) -> (B, m), with n = prod(sample_shape).

    Args:
        matrix: the (m, n) matrix (numpy array or Tensor, finite), stored in float32.
        sample_shape: one sample's shape (prod = n); when given, ``adjoint`` returns
            (B, *sample_shape), otherwise the flat (B, n). ``None``: any sample with n entries.

    Example:
        >>> import numpy as np, mindspore as ms
        >>> op = MatrixOperator(np.array([[1.0, 1.0, 0.0, 0.0]]), sample_shape=(1, 2, 2))
        >>> op(ms.Tensor(np.ones((2, 1, 2, 2), np.float32))).asnumpy().tolist()
        [[2.0], [2.0]]
        >>> op.adjoint(ms.Tensor(np.ones((1, 1), np.float32))).shape
        (1, 1, 2, 2)
    """

    def __init__(self, matrix: ArrayLike, sample_shape: Optional[Sequence[int]] = None):
        super().__init__()
        arr = _as_float_array("matrix", matrix)
        if arr.ndim != 2 or 0 in arr.shape:
            raise ValueError(f"matrix must be a non-empty 2-D (m, n) array, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("matrix contains NaN or infinite values")
        self.matrix_array = arr
        self.sample_shape = None if sample_shape is None else _sample_shape(sample_shape)
        if self.sample_shape is not None and math.prod(self.sample_shape) != arr.shape[1]:
            raise ValueError(f"sample_shape {self.sample_shape} has {math.prod(self.sample_shape)} entries but matrix "
                             f"has {arr.shape[1]} columns")
        self.matrix = Tensor(arr.astype(np.float32))
        self.matrix_t = Tensor(np.ascontiguousarray(arr.T).astype(np.float32))
        self.adjoint_shape = (-1,) if self.sample_shape is None else self.sample_shape

    def construct(self, x: Tensor) -> Tensor:
        return ops.matmul(x.reshape((x.shape[0], -1)), self.matrix_t.astype(x.dtype))

    def adjoint(self, y: Tensor) -> Tensor:
        return ops.matmul(y, self.matrix.astype(y.dtype)).reshape((y.shape[0],) + self.adjoint_shape)

    def output_shape(self, sample_shape: Sequence[int]) -> Tuple[int, ...]:
        shape = _sample_shape(sample_shape)
        if self.sample_shape is not None and shape != self.sample_shape:
            raise ValueError(f"this MatrixOperator was built for samples of shape {self.sample_shape}, got {shape}")
        if math.prod(shape) != self.matrix_array.shape[1]:
            raise ValueError(f"matrix has {self.matrix_array.shape[1]} columns but samples of shape {shape} have "
                             f"{math.prod(shape)} entries")
        return (self.matrix_array.shape[0],)

    def as_matrix(self, sample_shape: Sequence[int]) -> np.ndarray:
        self.output_shape(sample_shape)
        return self.matrix_array.copy()

    def extra_repr(self) -> str:
        return f"matrix shape {self.matrix_array.shape}"


class CellOperator(ObservationOperator):
    """A(x) = cell(x) for any differentiable MindSpore Cell: a nonlinear forward model (a
    solver step, a sensor response, a neural surrogate). Guidance that only needs gradients
    (DPS) works with it; methods that need Aᵀ or a matrix refuse it (``is_linear`` is False).

    Args:
        cell: an ``nn.Cell`` mapping (B, *sample_shape) to (B, ...). Its output shape for a
            sample shape is found by running it once on zeros (:meth:`output_shape`).

    Example:
        >>> import numpy as np, mindspore as ms
        >>> from mindspore import nn, ops
        >>> class Square(nn.Cell):
        ...     def construct(self, x):
        ...         return ops.square(x)
        >>> CellOperator(Square())(ms.Tensor(np.full((1, 1, 1, 2), 3.0, np.float32))).asnumpy().tolist()
        [[[[9.0, 9.0]]]]
    """

    def __init__(self, cell: nn.Cell):
        super().__init__()
        if not isinstance(cell, nn.Cell):
            raise TypeError(f"cell must be a mindspore nn.Cell, got {type(cell).__name__}")
        self.cell = cell

    def construct(self, x: Tensor) -> Tensor:
        return self.cell(x)

    def output_shape(self, sample_shape: Sequence[int]) -> Tuple[int, ...]:
        shape = _sample_shape(sample_shape)
        try:
            out = self.cell(Tensor(np.zeros((1,) + shape, np.float32)))
        except Exception as err:  # the user's Cell: report which shape it failed on
            raise ValueError(f"cell of CellOperator failed on a sample batch of shape {(1,) + shape}: {err}") from err
        if not isinstance(out, Tensor) or out.ndim < 1 or out.shape[0] != 1:
            raise ValueError(f"cell of CellOperator must return one Tensor with the batch axis first, got "
                             f"{type(out).__name__} for a batch of shape {(1,) + shape}")
        return tuple(out.shape[1:])


class Observation(nn.Cell):
    r"""Observed values y of a field, the forward operator A and the noise level σ_y:
    y = A(x) + σ_y·η, η ~ N(0, I).

    As a Cell, ``construct(x)`` returns the residual y − A(x) for a batch x (broadcast over the
    batch when y holds one observation), pure MindSpore: inside a compiled loop
    ``ms.grad`` of ``observation.squared_error(denoiser(x_t, t))`` gives the DPS guidance
    direction (Chung et al. 2023, Algorithm 1). The negative log-likelihood is
    ‖y − A(x)‖² / (2σ_y²) up to a constant.

    Args:
        values: y, a numpy array or Tensor shaped like A's output for a batch of one sample,
            (1, *output_shape) — one observation shared by every sample — or for the whole batch
            (B, *output_shape). Finite (``ValueError`` for NaN or infinity; a mask file may mark
            unobserved entries with NaN, see :meth:`from_npz`). Stored in float32.
        operator: an :class:`ObservationOperator` (a plain ``nn.Cell`` is wrapped in a
            :class:`CellOperator`).
        noise_std: σ_y ≥ 0, finite (0: noise-free observations, for hard data consistency).

    Example:
        >>> import numpy as np, mindspore as ms
        >>> truth = np.zeros((1, 1, 4, 4), np.float32)
        >>> obs = Observation(truth[:, :, ::2, ::2] + 1.0, BlockAverage(2), noise_std=0.1)
        >>> obs.check((1, 4, 4))
        (1, 2, 2)
        >>> obs.squared_error(ms.Tensor(truth)).asnumpy().tolist()
        [4.0]
    """

    def __init__(self, values: ArrayLike, operator: ObservationOperator, noise_std: float = 0.0):
        super().__init__()
        if isinstance(operator, nn.Cell) and not isinstance(operator, ObservationOperator):
            operator = CellOperator(operator)
        if not isinstance(operator, ObservationOperator):
            raise TypeError(f"operator must be an ObservationOperator (MaskOperator, BlockAverage, MatrixOperator, "
                            f"CellOperator) or an nn.Cell, got {type(operator).__name__}")
        arr = _as_float_array("values", values)
        if arr.ndim < 2:
            raise ValueError(f"values must be shaped like the operator's output for a batch, (1, ...) or (B, ...), "
                             f"got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"values contain {int(np.sum(~np.isfinite(arr)))} NaN or infinite entries; every "
                             "observed value must be finite")
        if isinstance(noise_std, (bool, np.bool_)) or not isinstance(noise_std, (int, float, np.integer, np.floating)):
            raise TypeError(f"noise_std must be a number (σ_y >= 0), got {type(noise_std).__name__}")
        if not math.isfinite(noise_std) or noise_std < 0:
            raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
        self.operator = operator
        self.noise_std = float(noise_std)
        self.values_array = arr.astype(np.float32)
        self.values = Tensor(self.values_array)

    @property
    def is_linear(self) -> bool:
        return self.operator.is_linear

    @property
    def batch_size(self) -> int:
        """The leading axis of ``values``: 1 (shared by the batch) or B."""
        return self.values_array.shape[0]

    # -- device side (graph-compilable) ------------------------------------------------------
    def construct(self, x: Tensor) -> Tensor:
        return self.residual(x)

    def residual(self, x: Tensor) -> Tensor:
        """y − A(x), shaped (B, *output_shape)."""
        prediction = self.operator(x)
        return self.values.astype(prediction.dtype) - prediction

    def squared_error(self, x: Tensor) -> Tensor:
        """‖y − A(x)‖² per sample, shape (B,)."""
        r = self.residual(x)
        return ops.square(r).reshape((r.shape[0], -1)).sum(axis=1)

    # -- host side ---------------------------------------------------------------------------
    def check(self, sample_shape: Sequence[int], batch_size: Optional[int] = None) -> Tuple[int, ...]:
        """Check the observation against samples of ``sample_shape`` (one sample, no batch
        axis, e.g. (C, H, W)) drawn ``batch_size`` at a time, before any sampling; returns A's
        output shape for one sample. ``ValueError`` naming the operator or ``values`` otherwise."""
        output = self.operator.output_shape(sample_shape)
        leading = self.values_array.shape[0]
        allowed = (1,) if batch_size is None else tuple(sorted({1, check_positive("batch_size", batch_size,
                                                                                   integer=True)}))
        if tuple(self.values_array.shape[1:]) != output or leading not in allowed:
            batches = " or ".join(f"({b}, {', '.join(map(str, output))})" for b in allowed)
            hint = ""
            if self.values_array.shape == output:
                hint = ": add the batch axis, values[None]"
            raise ValueError(f"values must have shape {batches} for samples of shape {tuple(sample_shape)} observed "
                             f"by {type(self.operator).__name__}, got {self.values_array.shape}{hint}")
        return output

    @classmethod
    def from_truth(cls, truth: ArrayLike, operator: ObservationOperator, noise_std: float = 0.0,
                   generator: GeneratorLike = None) -> "Observation":
        """Simulate y = A(truth) + σ_y·η for a known field ``truth`` (B, *sample_shape), the noise
        drawn on the host from ``generator`` (zero where the operator observes nothing)."""
        field = _as_float_array("truth", truth).astype(np.float32)
        if field.ndim < 2:
            raise ValueError(f"truth must be a batch (B, *sample_shape), got shape {field.shape}")
        out_shape = operator.output_shape(field.shape[1:])
        clean = operator(Tensor(field)).asnumpy().astype(np.float64)
        rng = as_numpy_generator(generator)
        noise = operator.observed(rng.standard_normal((field.shape[0],) + out_shape))
        return cls(clean + float(noise_std) * noise, operator, noise_std)

    @classmethod
    def from_npz(cls, path: Union[str, os.PathLike]) -> "Observation":
        """Read the command line's observation file: ``values`` (shaped like one sample, in the
        model's units), ``mask`` (same shape, 1 where observed) and ``noise_std`` (a scalar).

        Unobserved entries of ``values`` are ignored and may be NaN (they are set to 0).
        ``OSError`` for a missing or unreadable file, ``ValueError`` naming the key that is
        missing or has the wrong shape.
        """
        path = Path(path)
        if not path.is_file():
            raise OSError(f"observation file not found: {path}")
        try:
            archive = np.load(path, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("it is a single array, not a .npz archive")
            with archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError) as err:
            raise OSError(f"cannot read observation file {path} (an .npz archive with {', '.join(NPZ_KEYS)}): "
                          f"{err}") from err
        for key in NPZ_KEYS:
            if key not in arrays:
                raise ValueError(f"observation file {path} has no {key!r} array (it holds {sorted(arrays)}; needed: "
                                 f"{', '.join(NPZ_KEYS)})")
        values = _as_float_array("values", arrays["values"])
        mask = _as_float_array("mask", arrays["mask"])
        noise_std = _as_float_array("noise_std", arrays["noise_std"])
        if values.ndim < 1:
            raise ValueError(f"values in {path} must be shaped like one sample, e.g. (C, H, W), got a scalar")
        if mask.shape != values.shape:
            raise ValueError(f"mask in {path} must have the shape of values {values.shape}, got {mask.shape}")
        if noise_std.size != 1:
            raise ValueError(f"noise_std in {path} must be a single number, got shape {noise_std.shape}")
        operator = MaskOperator(mask)
        observed = mask == 1
        if not np.all(np.isfinite(values[observed])):
            raise ValueError(f"values in {path} are NaN or infinite at {int(np.sum(~np.isfinite(values[observed])))} "
                             "observed entries")
        return cls(np.where(observed, values, 0.0)[None], operator, float(noise_std.reshape(())))

    def to_npz(self, path: Union[str, os.PathLike]) -> Path:
        """Write the observation in the format :meth:`from_npz` reads (a :class:`MaskOperator`
        observation with one shared ``values``; ``ValueError`` otherwise)."""
        if not isinstance(self.operator, MaskOperator):
            raise ValueError(f"to_npz writes mask observations only (values, mask, noise_std); this one is observed "
                             f"by {type(self.operator).__name__}")
        if self.batch_size != 1:
            raise ValueError(f"to_npz writes one observation shared by the batch, but values hold {self.batch_size}")
        values = self.values_array[0]
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")  # what np.savez would write
        np.savez(path, values=values, mask=self.operator.full_mask(values.shape), noise_std=np.float64(self.noise_std))
        return path

    def extra_repr(self) -> str:
        return f"values shape {self.values_array.shape}, noise_std={self.noise_std:g}"
