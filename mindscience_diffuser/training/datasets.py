"""Training data as in-memory float32 arrays of fields (N, C, H, W), and the resumable batch order.

Three sources: ``.npy``/``.npz`` files (:class:`ArrayDataset`), a folder of images
(:class:`ImageFolderDataset`, scaled to [-1, 1]) and the synthetic scientific fields of
:mod:`.fields` (:class:`SyntheticFieldDataset`). Each is a sequence of (C, H, W) arrays with the
whole set in ``.data``; the trainer draws batches through :class:`BatchOrder`, whose state is two
integers and a seed, so a checkpoint restores exactly the next batch.

Paired (conditional) data carry, row for row with ``.data``, a ``.condition`` array (a vector
(N, d) or a field (N, c, H, W)) and/or ``.class_labels`` (N,): an ``.npz`` archive with
``fields``, ``condition`` and ``labels`` arrays, in-memory arrays
(``FieldDataset(fields, condition=cond)``), or synthetic fields whose generator parameters are
drawn per sample and returned as the condition (``SyntheticFieldDataset(vary={"spectrum": (1.5, 3.5)})``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .fields import generate_fields

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def as_field_array(array, name: str = "data", dtype=np.float32) -> np.ndarray:
    """``array`` as contiguous ``dtype`` (N, C, H, W); a (N, H, W) stack gets C = 1.

    Raises ``TypeError`` for non-numeric data and ``ValueError`` for any other rank, an empty
    set or non-finite values, naming ``name``.
    """
    arr = np.asarray(array)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise ValueError(f"{name} must be shaped (N, C, H, W) (or (N, H, W) for one channel), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def as_condition_array(condition, num_items: int, name: str = "condition") -> np.ndarray:
    """``condition`` as float32 with one row per field: (N,) becomes (N, 1) (one scalar
    parameter per field), (N, d) is a vector condition, (N, c, H, W) a field condition.

    Raises ``TypeError`` for non-numeric values and ``ValueError`` for a length other than
    ``num_items``, another rank, or non-finite values, naming ``name``.
    """
    if hasattr(condition, "asnumpy"):
        condition = condition.asnumpy()
    arr = np.asarray(condition)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim not in (2, 4):
        raise ValueError(f"{name} must be shaped (N,), (N, d) (a vector per field) or (N, c, H, W) (a field per "
                         f"field), got shape {arr.shape}")
    if arr.shape[0] != num_items:
        raise ValueError(f"{name} must have one row per field ({num_items}), got {arr.shape[0]} (shape {arr.shape})")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def as_label_array(labels, num_items: int, name: str = "class_labels") -> np.ndarray:
    """``labels`` as (N,) int32 (integer labels) or float32 (float labels), one per field."""
    if hasattr(labels, "asnumpy"):
        labels = labels.asnumpy()
    arr = np.asarray(labels)
    if arr.shape != (num_items,):
        raise ValueError(f"{name} must hold one label per field, shape ({num_items},), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        return np.ascontiguousarray(arr, dtype=np.int32)
    if arr.dtype != bool and np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
        return np.ascontiguousarray(arr, dtype=np.float32)
    raise TypeError(f"{name} must hold ints (or floats for float labels), got dtype {arr.dtype}")


class FieldDataset:
    """A set of fields held as one float32 array ``data`` of shape (N, C, H, W), optionally paired
    row for row with a ``condition`` ((N, d) vectors or (N, c, H, W) fields; (N,) means d = 1)
    and ``class_labels`` ((N,) ints or floats), checked by :func:`as_condition_array` /
    :func:`as_label_array`. Unpaired data have ``condition = class_labels = None``."""

    def __init__(self, data, name: str = "data", condition=None, class_labels=None):
        self.data = as_field_array(data, name)
        n = self.data.shape[0]
        self.condition = None if condition is None else as_condition_array(condition, n)
        self.class_labels = None if class_labels is None else as_label_array(class_labels, n)

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, index):
        return self.data[index]

    @property
    def is_paired(self) -> bool:
        """The fields come with a condition or class labels."""
        return self.condition is not None or self.class_labels is not None

    def subset(self, index) -> "FieldDataset":
        """The fields (and their conditions and labels) at ``index`` (a slice or an index array)."""
        def pick(array):
            return None if array is None else array[index]

        return FieldDataset(self.data[index], condition=pick(self.condition), class_labels=pick(self.class_labels))

    def with_data(self, data) -> "FieldDataset":
        """The same pairing with new fields ``data`` (e.g. normalised), row for row."""
        return FieldDataset(data, condition=self.condition, class_labels=self.class_labels)

    @property
    def sample_shape(self) -> Tuple[int, int, int]:
        """(C, H, W) of one field."""
        return tuple(self.data.shape[1:])

    def split(self, num_holdout: int) -> Tuple["FieldDataset", "FieldDataset"]:
        """(train, held-out) with the last ``num_holdout`` fields held out."""
        if not 0 < num_holdout < len(self):
            raise ValueError(f"num_holdout must lie in [1, {len(self) - 1}], got {num_holdout!r}")
        return self.subset(slice(None, -num_holdout)), self.subset(slice(-num_holdout, None))


class ArrayDataset(FieldDataset):
    """Fields from a ``.npy`` file, a ``.npz`` archive (``key`` names the array; default: the
    first one in the archive) or an in-memory array."""

    def __init__(self, source: Union[str, os.PathLike, np.ndarray], key: Optional[str] = None):
        if isinstance(source, (str, os.PathLike)):
            data = load_array_file(source, key)
            name = str(source)
        else:
            if key is not None:
                raise ValueError("key only applies to .npz files, not to an in-memory array")
            data, name = source, "data"
        super().__init__(data, name)


def load_array_file(path: Union[str, os.PathLike], key: Optional[str] = None) -> np.ndarray:
    """Read a ``.npy`` or ``.npz`` file (OSError for a missing/unreadable file, ValueError for a bad key)."""
    path = Path(path)
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"path must end in .npy or .npz, got {str(path)!r}")
    if not path.is_file():
        raise OSError(f"data file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise OSError(f"cannot read data file {path}: {err}") from err
    if path.suffix == ".npy":
        if key is not None:
            raise ValueError(f"key applies to .npz archives only, but {path} is a .npy file")
        return loaded
    with loaded:
        keys = list(loaded.files)
        if not keys:
            raise ValueError(f"{path} holds no arrays")
        if key is None:
            key = keys[0]
        if key not in keys:
            raise ValueError(f"key must be one of {keys} (the arrays in {path}), got {key!r}")
        return loaded[key]


class ImageFolderDataset(FieldDataset):
    """Every image file in ``folder`` (sorted by name), resized to ``size`` (int or (H, W)) if
    given, converted to ``mode`` ("L": 1 channel, "RGB": 3) and scaled from [0, 255] to [-1, 1]."""

    def __init__(self, folder: Union[str, os.PathLike], size: Optional[Union[int, Sequence[int]]] = None,
                 mode: str = "RGB"):
        from PIL import Image

        folder = Path(folder)
        if not folder.is_dir():
            raise OSError(f"image folder not found: {folder}")
        if mode not in ("L", "RGB"):
            raise ValueError(f"mode must be one of ['L', 'RGB'], got {mode!r}")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise OSError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        if isinstance(size, int):
            size = (size, size)
        images = []
        for path in files:
            try:
                with Image.open(path) as img:
                    img = img.convert(mode)
                    if size is not None:
                        img = img.resize((size[1], size[0]), Image.BICUBIC)
                    arr = np.asarray(img, dtype=np.float32)
            except OSError as err:
                raise OSError(f"cannot read image {path}: {err}") from err
            images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        shapes = {a.shape for a in images}
        if len(shapes) != 1:
            raise ValueError(f"images in {folder} have different sizes {sorted(shapes)}: pass size= to resize them")
        super().__init__(np.stack(images) / 127.5 - 1.0, str(folder))


class SyntheticFieldDataset(FieldDataset):
    """``num_samples`` synthetic fields of ``kind`` ("grf" or "darcy", see :mod:`.fields`),
    generated once from ``seed``; ``field_kwargs`` go to the generator (e.g. ``spectrum=3.0``).

    ``vary``: generator parameters drawn per field, uniformly from a ``(low, high)`` range each
    (e.g. ``{"spectrum": (1.5, 3.5)}``: every field has its own spectral slope α), returned as
    the ``condition`` (N, len(vary)), one column per parameter in ``vary``'s order: the paired
    data of a model conditioned on the parameters. All parameters are drawn first, then the
    fields one by one, from one generator seeded with ``seed``.

    >>> data = SyntheticFieldDataset(num_samples=4, size=8, vary={"spectrum": (1.5, 3.5)})
    >>> data.data.shape, data.condition.shape
    ((4, 1, 8, 8), (4, 1))
    """

    def __init__(self, kind: str = "grf", num_samples: int = 1024, size: int = 32, seed: int = 0,
                 vary: Optional[Dict[str, Tuple[float, float]]] = None, **field_kwargs):
        self.kind = kind
        self.seed = seed
        self.field_kwargs = dict(field_kwargs)
        self.vary = dict(vary or {})
        if not self.vary:
            super().__init__(generate_fields(kind, num_samples, size, generator=seed, **field_kwargs),
                             f"{kind} fields")
            return
        for param, bounds in self.vary.items():
            if param in field_kwargs:
                raise ValueError(f"vary[{param!r}] draws {param} per field: do not also pass {param}=")
            if np.shape(bounds) != (2,) or not float(bounds[0]) < float(bounds[1]):
                raise ValueError(f"vary[{param!r}] must be a (low, high) range with low < high, got {bounds!r}")
        rng = np.random.default_rng(seed)
        params = np.stack([rng.uniform(low, high, num_samples) for low, high in self.vary.values()], axis=1)
        fields = np.concatenate([
            generate_fields(kind, 1, size, generator=rng, **field_kwargs, **dict(zip(self.vary, map(float, row))))
            for row in params
        ])
        super().__init__(fields, f"{kind} fields", condition=params)


def load_fields(path: Union[str, os.PathLike], key: Optional[str] = None) -> np.ndarray:
    """(N, C, H, W) float32 fields from a .npy/.npz file (``key`` or the first array), an image
    folder, or a single image file (images scaled to [-1, 1], grayscale kept as one channel)."""
    path = Path(path)
    if path.is_dir():
        return ImageFolderDataset(path, mode=_folder_mode(path)).data
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image

        if not path.is_file():
            raise OSError(f"image file not found: {path}")
        with Image.open(path) as img:
            mode = "L" if img.mode in ("L", "I", "F", "1") else "RGB"
            arr = np.asarray(img.convert(mode), dtype=np.float32)
        arr = arr[None, None] if arr.ndim == 2 else arr.transpose(2, 0, 1)[None]
        return as_field_array(arr / 127.5 - 1.0, str(path))
    return as_field_array(load_array_file(path, key), str(path))


def _folder_mode(folder: Path) -> str:
    """"L" when every image in ``folder`` is single-channel, else "RGB"."""
    from PIL import Image

    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(p) as img:
                if img.mode not in ("L", "I", "F", "1"):
                    return "RGB"
    return "L"


PAIRED_KEYS = ("fields", "condition", "labels")


def load_paired_npz(path: Union[str, os.PathLike]) -> FieldDataset:
    """A paired dataset from an ``.npz`` archive with a ``fields`` array and a ``condition``
    and/or ``labels`` array (one row per field); an archive without ``condition`` or ``labels``
    reads as unpaired fields (its first array, as :func:`load_fields` reads it)."""
    path = Path(path)
    if not path.is_file():
        raise OSError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if "condition" not in keys and "labels" not in keys:
                return FieldDataset(load_fields(path), name=str(path))
            if "fields" not in keys:
                raise ValueError(f"{path} holds a condition or labels but no 'fields' array (it has {keys})")
            arrays = {key: archive[key] for key in PAIRED_KEYS if key in keys}
    except (OSError, EOFError) as err:
        raise OSError(f"cannot read data file {path}: {err}") from err
    return FieldDataset(arrays["fields"], name=str(path), condition=arrays.get("condition"),
                        class_labels=arrays.get("labels"))


def as_dataset(data, condition=None, class_labels=None) -> FieldDataset:
    """A :class:`FieldDataset` from a dataset, an array, or a path (.npy/.npz file or image folder),
    paired with ``condition`` / ``class_labels`` (arrays, one row per field) when given.

    An ``.npz`` with a ``condition`` or ``labels`` array is read as paired data (see
    :func:`load_paired_npz`). A condition given both in the data and as an argument is a
    ``ValueError``: one source of truth.
    """
    if isinstance(data, FieldDataset):
        dataset = data
    elif isinstance(data, (str, os.PathLike)):
        path = Path(data)
        dataset = load_paired_npz(path) if path.suffix == ".npz" else FieldDataset(load_fields(data), name=str(data))
    elif isinstance(data, np.ndarray):
        dataset = FieldDataset(data)
    else:
        raise TypeError(f"dataset must be a FieldDataset, a numpy array or a path, got {type(data).__name__}")
    if condition is None and class_labels is None:
        return dataset
    for name, given, held in (("condition", condition, dataset.condition),
                              ("class_labels", class_labels, dataset.class_labels)):
        if given is not None and held is not None:
            raise ValueError(f"{name} given, but the dataset already carries its own {name}: pass one of them")
    return FieldDataset(dataset.data, condition=dataset.condition if condition is None else condition,
                        class_labels=dataset.class_labels if class_labels is None else class_labels)


class BatchOrder:
    """Reshuffle-every-epoch batch indices: epoch e uses the permutation drawn from
    ``default_rng([seed, e])``, and the state is just (epoch, position), so resuming from a
    checkpoint continues with exactly the batch the interrupted run would have drawn next.

    With ``num_shards`` > 1 (data-parallel ranks) every shard steps through the same global
    batches of ``batch_size * num_shards`` indices and takes its own contiguous slice.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, shard: int = 0, num_shards: int = 1):
        global_batch = batch_size * num_shards
        if global_batch > num_items:
            raise ValueError(f"batch_size * num_shards = {global_batch} exceeds the dataset size {num_items}")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.shard, self.num_shards = shard, num_shards
        self.epoch, self.position = 0, 0

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.num_items)

    def next_indices(self) -> np.ndarray:
        """Indices of this shard's next batch; an epoch's incomplete last global batch is dropped."""
        global_batch = self.batch_size * self.num_shards
        if self.position + global_batch > self.num_items:
            self.epoch, self.position = self.epoch + 1, 0
        batch = self._permutation()[self.position:self.position + global_batch]
        self.position += global_batch
        return batch[self.shard * self.batch_size:(self.shard + 1) * self.batch_size]

    def state_dict(self) -> Dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(f"checkpoint data order seed {state['seed']} differs from this trainer's seed "
                             f"{self.seed}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
