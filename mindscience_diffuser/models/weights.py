"""Weight files in diffusers' layout: ``diffusion_pytorch_model.safetensors`` (optionally sharded
with a ``.safetensors.index.json``), read and written with safetensors' numpy API, no torch.

Parameter names of the models here equal diffusers' state-dict keys, so loading is a strict
name-for-name, shape-for-shape copy: anything missing, unexpected or misshapen is reported in
one ``ValueError`` before a single parameter is touched.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import mindspore as ms
import numpy as np
from mindspore import nn

from ..io_utils import atomic_file

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"

_NP_DTYPES = {ms.float32: np.float32, ms.float16: np.float16}


def _read_safetensors(path: Path) -> Dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise OSError(f"cannot read weight file {path}: {err}") from err


def read_weights(directory: Union[str, os.PathLike]) -> Dict[str, np.ndarray]:
    """All tensors of the model in ``directory``, as numpy arrays keyed by diffusers' names."""
    directory = Path(directory)
    single = directory / WEIGHTS_NAME
    index = directory / WEIGHTS_INDEX_NAME
    if single.is_file():
        return _read_safetensors(single)
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as err:
            raise OSError(f"weight index {index} is not a valid safetensors index: {err}") from err
        arrays: Dict[str, np.ndarray] = {}
        for shard in sorted(set(weight_map.values())):
            arrays.update(_read_safetensors(directory / shard))
        return arrays
    hint = ""
    if (directory / "diffusion_pytorch_model.bin").is_file():
        hint = (" (a PyTorch .bin file is present; only safetensors files are read: "
                "re-save with safe_serialization=True)")
    raise OSError(f"weight file not found: {single}{hint}")


def model_state(model: nn.Cell) -> Dict[str, ms.Parameter]:
    """The model's parameters keyed by their diffusers names."""
    return {name: param for name, param in model.parameters_and_names()}


def check_state_arrays(expected: Mapping[str, Sequence[int]], arrays: Mapping[str, Any], source: str = "weights",
                       target: str = "model") -> None:
    """The strict weight check: ``arrays`` (anything with a ``.shape``) must hold exactly the
    names of ``expected`` (name -> shape), each with its shape.

    Raises ``ValueError`` listing missing keys, unexpected keys and shape mismatches, all at
    once: "``source`` do not fit the ``target`` config: ...".
    """
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    wrong_shape = sorted(
        f"{k}: file {tuple(arrays[k].shape)}, model {tuple(expected[k])}"
        for k in set(expected) & set(arrays)
        if tuple(arrays[k].shape) != tuple(expected[k])
    )
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if wrong_shape:
            parts.append(f"wrong shapes {wrong_shape}")
        raise ValueError(f"{source} do not fit the {target} config: " + "; ".join(parts))


def load_state_dict(model: nn.Cell, arrays: Dict[str, np.ndarray], source: str = "weights") -> None:
    """Copy ``arrays`` into ``model``'s parameters (cast to each parameter's dtype).

    Raises ``ValueError`` listing missing keys, unexpected keys and shape mismatches, all at
    once (:func:`check_state_arrays`), and leaves the model untouched in that case.
    """
    params = model_state(model)
    check_state_arrays({name: param.shape for name, param in params.items()}, arrays, source, type(model).__name__)
    for name, param in params.items():
        np_dtype = _NP_DTYPES.get(param.dtype, np.float32)
        param.set_data(ms.Tensor(np.ascontiguousarray(arrays[name], dtype=np_dtype)))


def load_model_weights(model: nn.Cell, directory: Union[str, os.PathLike]) -> None:
    """Read the weight file(s) in ``directory`` into ``model`` (strict)."""
    load_state_dict(model, read_weights(directory), source=f"weights in {directory}")


def state_arrays(model: nn.Cell) -> Dict[str, np.ndarray]:
    """The model's parameters as contiguous numpy arrays keyed by diffusers names."""
    return {name: np.ascontiguousarray(param.asnumpy()) for name, param in model.parameters_and_names()}


def save_model_weights(model: nn.Cell, directory: Union[str, os.PathLike]) -> Path:
    """Write ``diffusion_pytorch_model.safetensors`` atomically (:func:`~..io_utils.atomic_file`),
    with the ``{"format": "pt"}`` metadata diffusers writes; returns its path."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / WEIGHTS_NAME
    with atomic_file(path) as tmp:
        save_file(state_arrays(model), str(tmp), metadata={"format": "pt"})
    return path


class PretrainedWeightsMixin:
    """``from_pretrained`` / ``save_pretrained`` in diffusers' model-folder layout (``config.json`` +
    ``diffusion_pytorch_model.safetensors``) for a :class:`~..configuration.ConfigMixin` Cell whose
    parameter names are its weight names."""

    @classmethod
    def from_pretrained(cls, pretrained_path: Union[str, os.PathLike], subfolder: Optional[str] = None,
                        compute_dtype=ms.float32, **overrides):
        """Build from ``config.json`` and load ``diffusion_pytorch_model.safetensors`` from
        ``pretrained_path[/subfolder]``.

        Raises ``OSError`` naming the path of a missing or unreadable file and ``ValueError``
        listing every missing, unexpected or wrongly shaped weight.
        """
        config = cls.load_config(pretrained_path, subfolder)
        model = cls.from_config(config, compute_dtype=compute_dtype, **overrides)
        directory = Path(pretrained_path) / subfolder if subfolder else Path(pretrained_path)
        load_model_weights(model, directory)
        return model

    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> Path:
        """Write ``config.json`` and ``diffusion_pytorch_model.safetensors`` (atomically); returns the directory."""
        directory = Path(save_directory)
        self.save_config(directory)
        save_model_weights(self, directory)
        return directory
