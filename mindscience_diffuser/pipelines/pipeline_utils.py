"""``DiffusionPipeline``: components, diffusers' folder layout, and the host side of sampling.

A pipeline is a few components (a ``unet`` and a ``scheduler``) and a ``__call__`` that draws the
starting noise, runs the compiled sampling loop (:mod:`.sampling_loop`) and turns the result into
images. The folder layout is diffusers':

    model_index.json          {"_class_name": ..., "unet": ["diffusers", "UNet2DModel"], "scheduler": [...]}
    unet/config.json, unet/diffusion_pytorch_model.safetensors
    scheduler/scheduler_config.json

so a folder written by diffusers' ``save_pretrained`` loads here and the reverse.

Randomness: every random number (starting latents, class labels, per-step noise) comes from
one ``numpy.random.Generator`` (or int seed), drawn on the host *before* the loop in the order
the reference samplers draw them, so a seed gives the same images in PyNative, GRAPH_MODE and
under ``ms.jit``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..configuration import DIFFUSERS_FORMAT_VERSION, FrozenConfig, _read_json, write_json_atomically
from ..normalization import MODEL_INDEX_KEY, DataNormalization
from ..outputs import ImagePipelineOutput
from ..schedulers.base import VPSchedulerBase
from ..schedulers.euler_discrete import EulerDiscreteScheduler
from ..utils import GeneratorLike, as_numpy_generator, check_choice, check_positive
from .sampling_loop import SamplingLoop, loop_constants_for

OUTPUT_TYPES = ("pil", "np", "ms", "latent", "field")
PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


# ----------------------------------------------------------------------------- conversions

def numpy_to_pil(images: np.ndarray) -> list:
    """(B, H, W, C) floats in [0, 1] -> PIL images: 1 channel "L", 3 "RGB", 4 "RGBA"."""
    from PIL import Image

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    mode = PIL_MODES.get(images.shape[-1])
    if mode is None:
        raise ValueError(f"output_type='pil' needs 1, 3 or 4 channels, got {images.shape[-1]}; use output_type='np'")
    pixels = (images * 255).round().astype(np.uint8)
    if mode == "L":
        return [Image.fromarray(p[..., 0], mode="L") for p in pixels]
    return [Image.fromarray(p, mode=mode) for p in pixels]


def to_images(sample: Tensor, output_type: str, scale_from_signed: bool = True):
    """The final sample (B, C, H, W) as ``output_type``: values mapped x/2 + 0.5 (unless the
    sampler already works in [0, 1]) and clipped to [0, 1]; "np" (B, H, W, C) float32, "pil" a
    list of PIL images, "ms" a (B, C, H, W) MindSpore Tensor. "latent" is the sample itself
    as a float32 Tensor, neither rescaled nor clipped: a field's values as the model made them
    (model units; a pipeline's ``output_type="field"`` maps them to the data's units)."""
    if output_type == "latent":
        return sample.astype(ms.float32)
    x = sample.asnumpy().astype(np.float32)
    if scale_from_signed:
        x = x / np.float32(2) + np.float32(0.5)
    x = np.clip(x, 0, 1)
    if output_type == "ms":
        return Tensor(x)
    x = x.transpose(0, 2, 3, 1)
    return numpy_to_pil(x) if output_type == "pil" else x


def images_to_samples(images) -> Tensor:
    """Images back to model space: a list of PIL images or a (B, H, W, C) / (H, W, C) numpy array
    in [0, 1] -> (B, C, H, W) in [-1, 1]; a MindSpore Tensor is taken as samples (B, C, H, W) as is."""
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise ValueError(f"samples must be a (B, C, H, W) Tensor, got shape {tuple(images.shape)}")
        return images.astype(ms.float32)
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images must not be empty")
        arrays = []
        for image in images:
            if not hasattr(image, "mode"):
                raise TypeError(f"a list of images must hold PIL images, got {type(image).__name__}")
            a = np.asarray(image, np.float32) / np.float32(255)
            arrays.append(a[..., None] if a.ndim == 2 else a)
        images = np.stack(arrays)
    if not isinstance(images, np.ndarray):
        raise TypeError("images must be PIL images, a numpy array (B, H, W, C) in [0, 1] or a Tensor (B, C, H, W), "
                        f"got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"a numpy image batch must have shape (B, H, W, C), got {images.shape}")
    return Tensor((images.astype(np.float32).transpose(0, 3, 1, 2) * 2 - 1).astype(np.float32))


# ----------------------------------------------------------------------------- schedulers

#: the schedulers on a discrete variance-preserving β schedule; any converts into any other with
#: ``from_config``, and every image pipeline on such a schedule drives all of them
VP_SCHEDULERS = (VPSchedulerBase, EulerDiscreteScheduler)
VP_DESCRIPTION = ("a scheduler on a discrete beta schedule (DDIMScheduler, DDPMScheduler, "
                  "DPMSolverMultistepScheduler, EulerDiscreteScheduler or another VPSchedulerBase)")


def convert_scheduler(scheduler, target: type):
    """``scheduler`` as a ``target`` with the same config and compute dtype (keys ``target`` does
    not take ride along as hidden config, as in diffusers); ``scheduler`` itself when it already is one."""
    if isinstance(scheduler, target):
        return scheduler
    if not isinstance(scheduler, VP_SCHEDULERS):
        raise TypeError(f"cannot convert a {type(scheduler).__name__} to {target.__name__}; pass {VP_DESCRIPTION}")
    config = FrozenConfig({**scheduler.config, "_class_name": type(scheduler).__name__},
                          used_defaults=scheduler.config.used_defaults)
    return target.from_config(config, compute_dtype=scheduler.compute_dtype)


# ----------------------------------------------------------------------------- the base

def _component_classes() -> Dict[str, type]:
    """Every class a ``model_index.json`` entry may name, by class name."""
    from .. import schedulers
    from ..models import ConditionDiffusionTransformer, DiffusionTransformer, UNet2DModel

    classes = {name: getattr(schedulers, name) for name in schedulers.__all__}
    for model in (UNet2DModel, DiffusionTransformer, ConditionDiffusionTransformer):
        classes[model.__name__] = model
    return classes


def library_name(module: Any) -> str:
    """The library a ``model_index.json`` entry names for ``module``: ``"diffusers"`` for the classes
    diffusers has too (schedulers, ``UNet2DModel``), ``"mindscience_diffuser"`` for this package's own
    (the MindScience transformers, class attribute ``_library_name``), which diffusers cannot load."""
    return getattr(type(module), "_library_name", "diffusers")


MODEL_INDEX_NAME = "model_index.json"

#: the pipeline class a folder names, where diffusers has no class of this package's name: diffusers'
#: ``DDPMPipeline`` drives the scheduler it is given as it is, so a DPM-Solver sampler is a
#: DDPMPipeline folder with a DPMSolverMultistepScheduler (and samples the same here)
DIFFUSERS_PIPELINE_NAMES = {"DPMSolverPipeline": "DDPMPipeline"}


def folder_pipeline_name(pipeline_class: str) -> str:
    """The ``_class_name`` a folder of ``pipeline_class`` records: a pipeline class diffusers has.

    >>> folder_pipeline_name("DPMSolverPipeline"), folder_pipeline_name("DDIMPipeline")
    ('DDPMPipeline', 'DDIMPipeline')
    """
    return DIFFUSERS_PIPELINE_NAMES.get(pipeline_class, pipeline_class)


def model_index(pipeline_class: str, components: Mapping[str, Any],
                data_normalization: Optional[DataNormalization] = None) -> Dict[str, Any]:
    """The ``model_index.json`` content of a pipeline folder: ``_class_name`` (through
    :func:`folder_pipeline_name`), the format version, each component's ``[library, class name]``
    (:func:`library_name`; ``[None, None]`` for ``None``) and, when given, the training data's statistics under
    ``"_data_normalization"`` (``{"mean": [...], "std": [...]}``, per channel; a private key,
    which diffusers ignores).

    >>> from mindscience_diffuser import DDIMScheduler
    >>> model_index("DDIMPipeline", {"scheduler": DDIMScheduler(), "unet": None})["scheduler"]
    ['diffusers', 'DDIMScheduler']
    """
    data: Dict[str, Any] = {"_class_name": folder_pipeline_name(pipeline_class),
                            "_diffusers_version": DIFFUSERS_FORMAT_VERSION}
    for name, module in components.items():
        data[name] = [library_name(module), type(module).__name__] if module is not None else [None, None]
    if data_normalization is not None:
        data[MODEL_INDEX_KEY] = data_normalization.to_dict()
    return data


def save_pipeline_folder(save_directory: Union[str, os.PathLike], pipeline_class: str,
                         components: Mapping[str, Any], data_normalization=None) -> Path:
    """Write diffusers' pipeline layout: each component in its subfolder (``save_pretrained``
    where it has one, else ``save_config``: ``unet/`` config + safetensors, ``scheduler/``
    ``scheduler_config.json``), then ``model_index.json`` naming ``pipeline_class`` (and holding
    ``data_normalization``, a :class:`~mindscience_diffuser.normalization.DataNormalization`
    or ``{"mean", "std"}`` mapping, when given)."""
    data_normalization = DataNormalization.coerce(data_normalization, _sample_channels(components.get("unet")))
    directory = Path(save_directory)
    if directory.is_file():
        raise OSError(f"save_directory must be a directory, but {directory} is a file")
    directory.mkdir(parents=True, exist_ok=True)
    for name, module in components.items():
        if module is None:
            continue
        if hasattr(module, "save_pretrained"):
            module.save_pretrained(directory / name)
        else:
            module.save_config(directory / name)
    write_json_atomically(directory / MODEL_INDEX_NAME, model_index(pipeline_class, components, data_normalization))
    return directory


def _sample_channels(unet) -> Optional[int]:
    """The channels of the samples ``unet`` makes (its ``in_channels``), or None when it has no config."""
    config = getattr(unet, "config", None)
    return config.get("in_channels") if hasattr(config, "get") else None


def _pipeline_classes() -> Dict[str, type]:
    from . import PIPELINES

    return {cls.__name__: cls for cls in PIPELINES}


class DiffusionPipeline:
    """Components + diffusers' folder layout + the shared sampling driver.

    Subclasses call :meth:`register_modules` in ``__init__`` and implement ``__call__`` with
    :meth:`_sample`. Components are plain attributes: ``pipe.unet``, ``pipe.scheduler``;
    ``pipe.scheduler = OtherScheduler.from_config(pipe.scheduler.config)`` swaps the scheduler
    (the pipeline builds a compiled loop per (unet, scheduler) pair and keeps it for reuse).

    Execution: under GRAPH_MODE the loop is compiled; in PyNative it runs eagerly with a tqdm
    progress bar (``set_progress_bar_config(disable=True)`` switches it off), or compiled with
    ``ms.jit`` when ``use_jit`` is True.

    Units: the model works in *model units*; :attr:`data_normalization` (the per-channel mean
    and std of the training data, stored in ``model_index.json``; ``None``: none stored, the
    identity) maps them to the data's units. ``output_type="field"`` returns samples in data
    units, ``"latent"`` in model units; :meth:`to_data_units` / :meth:`to_model_units` convert.
    """

    config_name = MODEL_INDEX_NAME
    #: schedulers this pipeline's ``__call__`` can drive (checked at call time)
    supported_schedulers: Tuple[type, ...] = ()
    #: how the error for another scheduler names the supported ones (default: their class names)
    supported_description: Optional[str] = None
    #: the final sample is mapped x/2 + 0.5 to images (False: the sampler ends in [0, 1])
    signed_output = True

    def __init__(self):
        self._component_names: List[str] = []
        self._progress_bar_config: Dict[str, Any] = {}
        self._loops: Dict[tuple, SamplingLoop] = {}
        self.use_jit = False
        self._data_normalization: Optional[DataNormalization] = None

    # -- units ---------------------------------------------------------------------------------
    @property
    def data_normalization(self) -> Optional[DataNormalization]:
        """The per-channel ``mean``/``std`` of the training data (a
        :class:`~mindscience_diffuser.normalization.DataNormalization`), or ``None`` when the
        model works in the data's units. Assign a ``DataNormalization``, a mapping
        ``{"mean": [...], "std": [...]}`` or ``None``; lengths must match the UNet's channels,
        every value be finite and every std > 0 (``ValueError``)."""
        return self._data_normalization

    @data_normalization.setter
    def data_normalization(self, value) -> None:
        self._data_normalization = DataNormalization.coerce(value, _sample_channels(getattr(self, "unet", None)))

    def to_data_units(self, samples):
        """Model-unit samples (B, C, H, W; numpy array or Tensor) in the data's units:
        ``x · std + mean`` per channel, float32; the samples as float32 when no statistics are stored."""
        if self._data_normalization is None:
            return samples.astype(ms.float32) if isinstance(samples, Tensor) else np.asarray(samples, np.float32)
        return self._data_normalization.to_data_units(samples)

    def to_model_units(self, fields):
        """Fields in the data's units (B, C, H, W) in model units: ``(x − mean) / std`` per
        channel, float32 (the inverse of :meth:`to_data_units`); what ``invert`` takes."""
        if self._data_normalization is None:
            return fields.astype(ms.float32) if isinstance(fields, Tensor) else np.asarray(fields, np.float32)
        return self._data_normalization.to_model_units(fields)

    def _convert_output(self, final: Tensor, output_type: str):
        """The loop's final sample as ``output_type``: ``"field"`` in the data's units (samplers
        that end in [0, 1] are first mapped to [-1, 1], the model space they were trained in),
        every other type by :func:`to_images`."""
        if output_type != "field":
            return to_images(final, output_type, scale_from_signed=self.signed_output)
        sample = final.astype(ms.float32)
        return self.to_data_units(sample if self.signed_output else sample * 2.0 - 1.0)

    # -- components --------------------------------------------------------------------------
    def register_modules(self, **modules) -> None:
        for name, module in modules.items():
            if name not in self._component_names:
                self._component_names.append(name)
            setattr(self, name, module)

    def _register_unet_and_scheduler(self, unet, scheduler) -> None:
        """Register the two components, refusing a scheduler this pipeline cannot drive."""
        if not isinstance(scheduler, self.supported_schedulers):
            raise TypeError(f"{type(self).__name__} needs {self._supported_text()}, got {type(scheduler).__name__}")
        self.register_modules(unet=unet, scheduler=scheduler)

    @classmethod
    def _supported_text(cls) -> str:
        return cls.supported_description or " or ".join(c.__name__ for c in cls.supported_schedulers)

    @property
    def components(self) -> Dict[str, Any]:
        """The components by name (pass them to another pipeline: ``OtherPipeline(**pipe.components)``;
        the statistics travel separately: ``other.data_normalization = pipe.data_normalization``)."""
        return {name: getattr(self, name) for name in self._component_names}

    @property
    def config(self) -> FrozenConfig:
        """The ``model_index.json`` content: each component's ``(library, class name)`` and
        the stored :attr:`data_normalization`, if any."""
        return FrozenConfig(model_index(type(self).__name__, self.components, self._data_normalization))

    # -- save / load ---------------------------------------------------------------------------
    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> Path:
        """Write ``model_index.json``, ``unet/`` (config + safetensors) and ``scheduler/``
        (``scheduler_config.json``) as diffusers' ``save_pretrained`` does, with
        :attr:`data_normalization` in ``model_index.json``; returns the folder."""
        return save_pipeline_folder(save_directory, type(self).__name__, self.components, self._data_normalization)

    @classmethod
    def from_pretrained(cls, pretrained_path: Union[str, os.PathLike], compute_dtype=ms.float32, **components):
        """Load a folder written by diffusers' or this package's ``save_pretrained``.

        Called on ``DiffusionPipeline`` itself, the class named by ``model_index.json`` is built;
        called on a subclass, that subclass is. Components passed as keywords (``scheduler=...``)
        replace the stored ones. ``compute_dtype`` applies to the UNet and the scheduler. The
        statistics stored under ``"_data_normalization"`` become :attr:`data_normalization`.
        """
        directory = Path(pretrained_path)
        if not directory.is_dir():
            raise OSError(f"no such pipeline directory: {directory}")
        index = _read_json(directory / cls.config_name)
        target = cls
        if cls is DiffusionPipeline:
            name = index.get("_class_name")
            target = _pipeline_classes().get(name)
            if target is None:
                raise ValueError(f"{directory / cls.config_name} names pipeline {name!r}; mindscience_diffuser "
                                 f"provides {sorted(_pipeline_classes())}")
        classes = _component_classes()
        loaded = {}
        for name, entry in index.items():
            if name.startswith("_") or name in components:
                continue
            if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise OSError(f"{directory / cls.config_name}: component {name!r} must be [library, class name], got "
                              f"{entry!r}")
            if entry[1] is None:
                loaded[name] = None
                continue
            component_cls = classes.get(entry[1])
            if component_cls is None:
                raise ValueError(f"component {name!r} is a {entry[1]}, which mindscience_diffuser does not provide; "
                                 f"known: {sorted(classes)}")
            loaded[name] = component_cls.from_pretrained(directory, subfolder=name, compute_dtype=compute_dtype)
        loaded.update(components)
        pipe = target(**loaded)
        try:
            pipe.data_normalization = index.get(MODEL_INDEX_KEY)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{directory / cls.config_name}: {MODEL_INDEX_KEY} {err}") from err
        return pipe

    # -- progress bar --------------------------------------------------------------------------
    def set_progress_bar_config(self, **kwargs) -> None:
        """Options for the tqdm bar shown by eager (PyNative) runs, e.g. ``disable=True``."""
        self._progress_bar_config = dict(kwargs)

    def progress_bar(self, total: int):
        from tqdm.auto import tqdm

        return tqdm(total=total, **self._progress_bar_config)

    numpy_to_pil = staticmethod(numpy_to_pil)

    # -- sampling ------------------------------------------------------------------------------
    def sampling_loop(self, scheduler=None, **options) -> SamplingLoop:
        """The compiled loop for ``(self.unet, scheduler or self.scheduler, options)``, built once
        and kept, so GRAPH_MODE compiles it once per input shape and step count."""
        scheduler = self.scheduler if scheduler is None else scheduler
        key = (id(self.unet), id(scheduler), loop_constants_for(scheduler, options))
        loop = self._loops.get(key)
        if loop is None:
            # Drop loops of components that are no longer in the pipeline.
            live = {id(m) for m in self.components.values()} | {id(scheduler)}
            self._loops = {k: v for k, v in self._loops.items() if k[0] in live and k[1] in live}
            loop = self._loops[key] = SamplingLoop(self.unet, scheduler, **options)
        return loop

    def _sample_shape(self, batch_size: int, latents) -> Tuple[int, ...]:
        cfg = self.unet.config
        size = cfg.sample_size
        if size is None:
            if latents is None:
                raise ValueError("the UNet config has no sample_size: pass latents of shape (batch_size, in_channels, "
                                 "H, W)")
            hw = tuple(latents.shape[2:])
        else:
            hw = (size, size) if isinstance(size, int) else tuple(size)
        return (batch_size, cfg.in_channels) + hw

    def _prepare_latents(self, shape, latents, rng: np.random.Generator) -> np.ndarray:
        if latents is None:
            return rng.standard_normal(shape).astype(np.float32)
        if isinstance(latents, Tensor):
            latents = latents.asnumpy()
        if not isinstance(latents, np.ndarray):
            raise TypeError(f"latents must be a mindspore Tensor or a numpy array, got {type(latents).__name__}")
        if tuple(latents.shape) != tuple(shape):
            raise ValueError(f"latents must have shape {tuple(shape)} (batch_size, in_channels, height, width), got "
                             f"{tuple(latents.shape)}")
        return latents.astype(np.float32)

    def _sample(
        self,
        batch_size: int,
        generator: GeneratorLike,
        num_inference_steps,
        latents,
        output_type: str,
        return_dict: bool,
        loop_options: Optional[Dict[str, Any]] = None,
        schedule_options: Optional[Dict[str, Any]] = None,
        class_labels=None,
        scheduler=None,
    ):
        """The shared ``__call__``: validate, schedule, draw (latents, class labels, step noise)
        from one generator, run the loop, convert to ``output_type``."""
        batch_size = check_positive("batch_size", batch_size, integer=True)
        if num_inference_steps is not None:
            check_positive("num_inference_steps", num_inference_steps, integer=True)
        check_choice("output_type", output_type, OUTPUT_TYPES)
        shape = self._sample_shape(batch_size, latents)
        if output_type == "pil" and shape[1] not in PIL_MODES:
            raise ValueError(f"output_type='pil' needs 1, 3 or 4 channels, this UNet makes {shape[1]}; use "
                             "output_type='np'")
        scheduler = self.scheduler if scheduler is None else scheduler
        if not isinstance(scheduler, self.supported_schedulers):
            raise TypeError(
                f"{type(self).__name__} cannot drive a {type(scheduler).__name__}; use {self._supported_text()}"
            )
        loop = self.sampling_loop(scheduler, **(loop_options or {}))
        rng = as_numpy_generator(generator)
        timesteps, knobs, stochastic = loop.schedule(num_inference_steps, **(schedule_options or {}))
        x = self._prepare_latents(shape, latents, rng) * scheduler.init_noise_sigma
        labels = self._class_labels(class_labels, batch_size, rng)
        if stochastic:
            noise = rng.standard_normal((len(timesteps),) + shape).astype(np.float32)
        else:
            noise = np.zeros((1,) + shape, np.float32)
        dtype = scheduler.compute_dtype
        bar = None
        if ms.get_context("mode") != ms.GRAPH_MODE and not self.use_jit:
            bar = self.progress_bar(total=len(timesteps))
        try:
            # The loop returns (sample, what the image is made of): the sample itself, or the
            # noise-free predictor mean for score-SDE sampling.
            _, final = loop.run(Tensor(x, dtype), timesteps, knobs, Tensor(noise, dtype), labels, progress_bar=bar,
                                use_jit=self.use_jit)
        finally:
            if bar is not None:
                bar.close()
        images = self._convert_output(final, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _class_labels(self, class_labels, batch_size: int, rng: np.random.Generator) -> Optional[Tensor]:
        """Unconditional pipelines take no class labels."""
        if class_labels is not None:
            raise ValueError(f"{type(self).__name__} takes no class_labels")
        return None

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}={type(module).__name__}" for name, module in self.components.items())
        return f"{type(self).__name__}({parts})"
