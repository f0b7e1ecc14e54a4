"""Config capture and diffusers-compatible JSON save/load.

A class that mixes in :class:`ConfigMixin` and decorates its ``__init__`` with
:func:`register_to_config` records every constructor argument (defaults included) in
``self.config``. ``save_config`` writes it as the JSON that diffusers writes
(``_class_name``, ``_diffusers_version``, sorted keys), and ``from_config`` /
``from_pretrained`` read what diffusers writes: keys starting with ``_`` are metadata,
unknown keys are warned about and ignored, missing keys take the defaults.

Runtime-only arguments (``compute_dtype``) are not part of the config: they describe how
this process computes, not what the model is, and diffusers would not understand them.
"""
from __future__ import annotations

import functools
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

from .io_utils import atomic_file

logger = logging.getLogger("mindscience_diffuser")

#: The diffusers release whose file formats this package reads and writes.
DIFFUSERS_FORMAT_VERSION = "0.42.1"

#: Constructor arguments that configure this process only and are never serialised.
RUNTIME_ARGUMENTS = ("compute_dtype",)


class FrozenConfig(dict):
    """A read-only dict whose keys are also attributes (``config.num_train_timesteps``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(f"config has no key {name!r}") from err

    def _readonly(self, *args, **kwargs):
        raise TypeError("a config is read-only; build a new object with from_config(config, key=value)")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _readonly
    __setattr__ = __delattr__ = _readonly

    def __reduce__(self):
        return (FrozenConfig, (dict(self),))


def _json_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def register_to_config(init):
    """Decorate ``__init__`` so that its bound arguments become ``self.config``."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("self")
        extra = values.pop("kwargs", None) or {}
        for key in RUNTIME_ARGUMENTS:
            values.pop(key, None)
        object.__setattr__(self, "_internal_config", FrozenConfig({k: _json_value(v) for k, v in values.items()}))
        if extra:
            logger.warning("%s ignores unknown config keys %s", type(self).__name__, sorted(extra))
        init(self, *args, **kwargs)

    wrapper.__signature__ = signature
    return wrapper


def _read_json(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise OSError(f"config file not found: {path}")
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise OSError(f"config file {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise OSError(f"config file {path} must hold a JSON object, got {type(data).__name__}")
    return data


def write_json_atomically(path: Union[str, os.PathLike], data: Mapping[str, Any]) -> None:
    """Write ``data`` as diffusers does (indent 2, sorted keys) with :func:`~.io_utils.atomic_file`,
    so a failure never leaves a half-written config behind."""
    text = json.dumps(dict(data), indent=2, sort_keys=True) + "\n"
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class ConfigMixin:
    """Config capture, ``save_config``, ``from_config`` and ``from_pretrained``.

    Subclasses set ``config_name`` (the file name diffusers uses) and decorate ``__init__``
    with :func:`register_to_config`.
    """

    config_name: str = "config.json"

    @property
    def config(self) -> FrozenConfig:
        return self._internal_config

    def _update_config(self, **changes: Any) -> None:
        """Rewrite config entries after ``__init__`` resolved them (diffusers writes a deprecated
        option's replacement into its config the same way), so ``save_config`` writes the
        options the object runs with."""
        changed = {key: value for key, value in changes.items() if self.config.get(key) != value}
        if changed:
            object.__setattr__(self, "_internal_config",
                               FrozenConfig({**self.config, **{k: _json_value(v) for k, v in changed.items()}}))

    def _config_with_metadata(self) -> Dict[str, Any]:
        data = dict(self.config)
        data["_class_name"] = type(self).__name__
        data["_diffusers_version"] = DIFFUSERS_FORMAT_VERSION
        return data

    def save_config(self, save_directory: Union[str, os.PathLike]) -> Path:
        """Write ``config_name`` into ``save_directory`` (created if missing); return its path."""
        directory = Path(save_directory)
        if directory.is_file():
            raise OSError(f"save_directory must be a directory, but {directory} is a file")
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / self.config_name
        write_json_atomically(path, self._config_with_metadata())
        return path

    @classmethod
    def _init_parameters(cls) -> Dict[str, inspect.Parameter]:
        params = dict(inspect.signature(cls.__init__).parameters)
        params.pop("self", None)
        params.pop("kwargs", None)
        return params

    @classmethod
    def extract_init_kwargs(cls, config: Mapping[str, Any]) -> Dict[str, Any]:
        """The keys of ``config`` that ``cls.__init__`` takes; warn about the rest.

        Keys starting with ``_`` are file metadata and dropped silently.
        """
        accepted = cls._init_parameters()
        kwargs, unknown = {}, []
        for key, value in config.items():
            if key.startswith("_"):
                continue
            if key in accepted and key not in RUNTIME_ARGUMENTS:
                kwargs[key] = value
            else:
                unknown.append(key)
        if unknown:
            logger.warning("%s ignores config keys it does not know: %s", cls.__name__, sorted(unknown))
        return kwargs

    @classmethod
    def from_config(cls, config: Optional[Mapping[str, Any]] = None, **overrides):
        """Build an instance from a config mapping (``other.config`` or a loaded JSON dict).

        ``overrides`` (for example ``compute_dtype=mindspore.float16`` or
        ``prediction_type="v_prediction"``) take precedence over the mapping.
        """
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping (for example other.config), got {type(config).__name__}")
        kwargs = cls.extract_init_kwargs(config)
        accepted = cls._init_parameters()
        for key, value in overrides.items():
            if key not in accepted:
                raise TypeError(f"{cls.__name__} has no argument {key!r}; it takes {sorted(accepted)}")
            kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def load_config(cls, pretrained_path: Union[str, os.PathLike], subfolder: Optional[str] = None) -> Dict[str, Any]:
        """Read ``config_name`` from a directory (or a JSON file path) as a plain dict."""
        path = Path(pretrained_path)
        if subfolder:
            path = path / subfolder
        if path.is_dir():
            path = path / cls.config_name
        elif not path.exists():
            raise OSError(f"no such directory or config file: {path}")
        return _read_json(path)

    @classmethod
    def from_pretrained(cls, pretrained_path: Union[str, os.PathLike], subfolder: Optional[str] = None, **overrides):
        """Load from a directory written by ``save_config`` here or by diffusers."""
        return cls.from_config(cls.load_config(pretrained_path, subfolder), **overrides)
