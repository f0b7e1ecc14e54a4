"""Config capture and diffusers-compatible JSON save/load.

A class that mixes in :class:`ConfigMixin` and decorates its ``__init__`` with
:func:`register_to_config` records every constructor argument (defaults included) in
``self.config``. ``save_config`` writes it as the JSON that diffusers writes
(``_class_name``, ``_diffusers_version``, sorted keys), and ``from_config`` /
``from_pretrained`` read what diffusers writes: keys starting with ``_`` are metadata,
keys the class does not take are kept as hidden config (and warned about unless a compatible
class or the writing class takes them), missing keys take the defaults.

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
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .io_utils import atomic_file

logger = logging.getLogger("mindscience_diffuser")

#: The diffusers release whose file formats this package reads and writes.
DIFFUSERS_FORMAT_VERSION = "0.42.1"

#: Constructor arguments that configure this process only and are never serialised.
RUNTIME_ARGUMENTS = ("compute_dtype",)

#: options that describe the trained model's noise process, not the sampler: they always travel with a
#: config, defaults or not (this package's DDIM defaults to a cosine schedule where diffusers' other
#: schedulers default to a linear one, and a silent switch would sample with the wrong schedule)
MODEL_KEYS = (
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr",
    "prediction_type",
)

#: every ConfigMixin class by name, to recognise the options of the class that wrote a config
_CONFIG_CLASSES: Dict[str, type] = {}


class FrozenConfig(dict):
    """A read-only dict whose keys are also attributes (``config.num_train_timesteps``).

    ``used_defaults`` names the keys whose values the constructor's defaults gave (diffusers'
    ``_use_default_values``): when the config moves to another class, that class's own defaults
    apply to them instead. It is not part of the mapping and never written to a file.
    """

    def __init__(self, *args, used_defaults=(), **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self, "used_defaults", frozenset(used_defaults))

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
        return (_frozen_config, (dict(self), tuple(self.used_defaults)))


def _frozen_config(data, used_defaults):
    return FrozenConfig(data, used_defaults=used_defaults)


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
        passed = set(bound.arguments)
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("self")
        extra = values.pop("kwargs", None) or {}
        for key in RUNTIME_ARGUMENTS:
            values.pop(key, None)
        defaults = [k for k in values if k not in passed and k not in MODEL_KEYS]
        config = FrozenConfig({k: _json_value(v) for k, v in values.items()}, used_defaults=defaults)
        object.__setattr__(self, "_internal_config", config)
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
            data = {**self.config, **{k: _json_value(v) for k, v in changed.items()}}
            config = FrozenConfig(data, used_defaults=self.config.used_defaults - set(changed))
            object.__setattr__(self, "_internal_config", config)

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

    #: names of the classes whose configs this class reads as its own (diffusers' ``_compatibles``)
    _compatibles: Sequence[str] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _CONFIG_CLASSES[cls.__name__] = cls

    @classmethod
    def _known_keys(cls, config: Mapping[str, Any]) -> set:
        """Options of the compatible classes and of the class that wrote ``config``: kept quietly."""
        names = set(cls._compatibles) | {config.get("_class_name")}
        keys = set()
        for name in names:
            other = _CONFIG_CLASSES.get(name) if isinstance(name, str) else None
            if other is not None:
                keys |= set(other._init_parameters())
        return keys

    @classmethod
    def extract_init_kwargs(cls, config: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """``(kwargs, hidden)``: the keys of ``config`` that ``cls.__init__`` takes, and the rest.

        As in diffusers, the rest is kept as hidden config (``from_config`` registers it, so a
        config that moves on through another scheduler class keeps the options of the first);
        keys that no compatible class and not the writing class takes are warned about. Keys
        starting with ``_`` are file metadata and dropped silently.
        """
        accepted = cls._init_parameters()
        known = cls._known_keys(config)
        used_defaults = set(getattr(config, "used_defaults", ())) | set(config.get("_use_default_values", ()))
        kwargs, hidden, unknown = {}, {}, []
        for key, value in config.items():
            if key.startswith("_") or key in used_defaults:
                continue
            if key in accepted and key not in RUNTIME_ARGUMENTS:
                kwargs[key] = value
                continue
            if key not in RUNTIME_ARGUMENTS:
                hidden[key] = value
            if key not in known:
                unknown.append(key)
        if unknown:
            logger.warning("%s ignores config keys it does not know: %s", cls.__name__, sorted(unknown))
        return kwargs, hidden

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
        kwargs, hidden = cls.extract_init_kwargs(config)
        accepted = cls._init_parameters()
        for key, value in overrides.items():
            if key not in accepted:
                raise TypeError(f"{cls.__name__} has no argument {key!r}; it takes {sorted(accepted)}")
            kwargs[key] = value
        instance = cls(**kwargs)
        instance._update_config(**{key: value for key, value in hidden.items() if key not in instance.config})
        return instance

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
