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
under ``ms.jit``. ``generator`` may also be a list of one generator per sample (as diffusers
takes a list of torch generators): sample i's latents, class label and every step's noise then
come from generator i, so a sample does not depend on the batch it is drawn in
(:class:`~mindscience_diffuser.utils.BatchGenerator`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from ..configuration import DIFFUSERS_FORMAT_VERSION, FrozenConfig, _read_json, write_json_atomically
from ..models.conditioning import (
    ConditionSpec,
    check_null_condition,
    condition_spec,
    null_condition_for,
    prepare_class_labels,
    prepare_condition,
)
from ..normalization import MODEL_INDEX_KEY, DataNormalization
from ..outputs import ImagePipelineOutput
from ..schedulers.base import VPSchedulerBase
from ..schedulers.euler_discrete import EulerDiscreteScheduler
from ..utils import BatchGenerator, BatchGeneratorLike, as_batch_generator, check_choice, check_positive
from .sampling_loop import SamplingLoop, loop_constants_for

OUTPUT_TYPES = ("pil", "np", "ms", "latent", "field")
#: output types that are images: they need (B, C, H, W) samples
IMAGE_OUTPUT_TYPES = ("pil", "np", "ms")
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


def samples_to_data_units(samples, signed_output: bool, normalization: Optional[DataNormalization]):
    """Final float32 samples (numpy or Tensor) in the data's units: samplers that end in [0, 1]
    (``signed_output`` False) are first mapped to [-1, 1], the model space they were trained in,
    then ``x · std + mean`` per channel (the identity without stored statistics)."""
    x = samples if signed_output else samples * 2.0 - 1.0
    return x if normalization is None else normalization.to_data_units(x)


def images_to_samples(images) -> Tensor:
    """Images back to model space: a list of PIL images or a (B, H, W, C) / (H, W, C) numpy array
    in [0, 1] -> (B, C, H, W) in [-1, 1]; a MindSpore Tensor is taken as samples as is (any rank
    from 2 to 5: (B, C, H, W) images, (B, L, C) sequences, ...)."""
    if isinstance(images, Tensor):
        if not 2 <= images.ndim <= 5:
            raise ValueError(f"samples must be a Tensor of rank 2 to 5 (batch first), got shape "
                             f"{tuple(images.shape)}")
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
#: the private ``model_index.json`` key of the null condition learned for classifier-free guidance
NULL_CONDITION_KEY = "_null_condition"

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
                data_normalization: Optional[DataNormalization] = None, null_condition=None) -> Dict[str, Any]:
    """The ``model_index.json`` content of a pipeline folder: ``_class_name`` (through
    :func:`folder_pipeline_name`), the format version, each component's ``[library, class name]``
    (:func:`library_name`; ``[None, None]`` for ``None``) and, when given, the training data's statistics under
    ``"_data_normalization"`` (``{"mean": [...], "std": [...]}``, per channel; a private key,
    which diffusers ignores), and the null condition classifier-free guidance uses under
    ``"_null_condition"`` (an int label, ``"zeros"`` or a list), when the model learned one.

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
    if null_condition is not None:
        data[NULL_CONDITION_KEY] = check_null_condition(null_condition)
    return data


def save_pipeline_folder(save_directory: Union[str, os.PathLike], pipeline_class: str,
                         components: Mapping[str, Any], data_normalization=None, null_condition=None) -> Path:
    """Write diffusers' pipeline layout: each component in its subfolder (``save_pretrained``
    where it has one, else ``save_config``: ``unet/`` config + safetensors, ``scheduler/``
    ``scheduler_config.json``), then ``model_index.json`` naming ``pipeline_class`` (and holding
    ``data_normalization``, a :class:`~mindscience_diffuser.normalization.DataNormalization`
    or ``{"mean", "std"}`` mapping, when given, and the model's ``null_condition``)."""
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
    write_json_atomically(directory / MODEL_INDEX_NAME,
                          model_index(pipeline_class, components, data_normalization, null_condition))
    return directory


def _sample_channels(unet) -> Optional[int]:
    """The channels of the samples ``unet`` makes (its ``sample_channels``, else ``in_channels``), or None."""
    if hasattr(unet, "sample_channels"):
        return unet.sample_channels
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
        self._null_condition = None

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

    @property
    def null_condition(self):
        """The condition the model learned as "no condition" (condition dropout in training), which
        classifier-free guidance pairs with the given one: an int class label, ``"zeros"`` (an
        all-zero vector or field) or a per-sample array as a list; ``None`` (the default): none
        learned, and ``guidance_scale`` other than 1 is refused. Stored in ``model_index.json``."""
        return self._null_condition

    @null_condition.setter
    def null_condition(self, value) -> None:
        self._null_condition = check_null_condition(value)

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
        return samples_to_data_units(final.astype(ms.float32), self.signed_output, self._data_normalization)

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
        return FrozenConfig(model_index(type(self).__name__, self.components, self._data_normalization,
                                        self._null_condition))

    # -- save / load ---------------------------------------------------------------------------
    def save_pretrained(self, save_directory: Union[str, os.PathLike]) -> Path:
        """Write ``model_index.json``, ``unet/`` (config + safetensors) and ``scheduler/``
        (``scheduler_config.json``) as diffusers' ``save_pretrained`` does, with
        :attr:`data_normalization` in ``model_index.json``; returns the folder."""
        return save_pipeline_folder(save_directory, type(self).__name__, self.components, self._data_normalization,
                                    self._null_condition)

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
        for key, attribute in ((MODEL_INDEX_KEY, "data_normalization"), (NULL_CONDITION_KEY, "null_condition")):
            try:
                setattr(pipe, attribute, index.get(key))
            except (TypeError, ValueError) as err:
                raise ValueError(f"{directory / cls.config_name}: {key} {err}") from err
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
    def sampling_loop(self, scheduler=None, guided: bool = False, guide=None, **options) -> SamplingLoop:
        """The compiled loop for ``(self.unet, scheduler or self.scheduler, guided, guide, options)``,
        built once and kept, so GRAPH_MODE compiles it once per input shape and step count.
        ``guide``: an observation method attached to its observation (:mod:`..guidance`); loops
        are shared between guides of the same configuration and operator."""
        scheduler = self.scheduler if scheduler is None else scheduler
        guide_key = None if guide is None else guide.key() + (id(guide.operator), guide.noise_std)
        key = (id(self.unet), id(scheduler), bool(guided), loop_constants_for(scheduler, options), guide_key)
        loop = self._loops.get(key)
        if loop is None:
            # Drop loops of components that are no longer in the pipeline.
            live = {id(m) for m in self.components.values()} | {id(scheduler)}
            self._loops = {k: v for k, v in self._loops.items() if k[0] in live and k[1] in live}
            field = condition_spec(self.unet).field is not None
            loop = self._loops[key] = SamplingLoop(self.unet, scheduler, field_condition=field, guided=guided,
                                                   guide=guide, **options)
        return loop

    def _sample_shape(self, batch_size: int, latents, sample_shape=None) -> Tuple[int, ...]:
        """The shape of the batch to sample: ``(batch_size, *sample_shape)`` when given, else the
        model's ``sample_shape(batch_size)`` (its config's size and channels), else the shape
        of ``latents``."""
        if sample_shape is not None:
            if isinstance(sample_shape, (int, np.integer)) or not isinstance(sample_shape, (tuple, list)):
                raise TypeError(f"sample_shape must be a tuple of ints, the shape of one sample (e.g. (C, H, W) or "
                                f"(L, C)), got {sample_shape!r}")
            dims = tuple(check_positive("sample_shape entries", d, integer=True) for d in sample_shape)
            if not 1 <= len(dims) <= 4:
                raise ValueError(f"sample_shape must have 1 to 4 entries (samples of rank 2 to 5), got {dims}")
            return (batch_size,) + dims
        if hasattr(self.unet, "sample_shape"):
            try:
                return tuple(self.unet.sample_shape(batch_size))
            except ValueError:
                if latents is None:
                    raise
                return (batch_size,) + tuple(latents.shape[1:])
        config = getattr(self.unet, "config", None)
        size = config.get("sample_size") if hasattr(config, "get") else None
        if size is not None and config.get("in_channels") is not None:
            hw = (size, size) if isinstance(size, int) else tuple(size)
            return (batch_size, config["in_channels"]) + hw
        if latents is not None:
            return (batch_size,) + tuple(latents.shape[1:])
        raise ValueError(f"cannot tell the sample shape of a {type(self.unet).__name__}: pass sample_shape= (one "
                         "sample's shape) or latents=")

    def _prepare_latents(self, shape, latents, rng: BatchGenerator) -> np.ndarray:
        if latents is None:
            return rng.standard_normal(shape).astype(np.float32)
        if isinstance(latents, Tensor):
            latents = latents.asnumpy()
        if not isinstance(latents, np.ndarray):
            raise TypeError(f"latents must be a mindspore Tensor or a numpy array, got {type(latents).__name__}")
        if tuple(latents.shape) != tuple(shape):
            raise ValueError(f"latents must have shape {tuple(shape)} (batch_size, then one sample's shape), got "
                             f"{tuple(latents.shape)}")
        if not np.all(np.isfinite(latents)):
            raise ValueError("latents hold NaN or infinite values")
        return latents.astype(np.float32)

    def _resolve_output_type(self, output_type: Optional[str], shape: Tuple[int, ...]) -> str:
        """``output_type`` checked against the samples: ``None`` is ``"pil"`` for images
        ((B, C, H, W) with 1, 3 or 4 channels) and ``"latent"`` for anything else."""
        if output_type is None:
            return "pil" if len(shape) == 4 and shape[1] in PIL_MODES else "latent"
        check_choice("output_type", output_type, OUTPUT_TYPES)
        if output_type in IMAGE_OUTPUT_TYPES and len(shape) != 4:
            raise ValueError(f"output_type={output_type!r} makes images from (B, C, H, W) samples; these have shape "
                             f"{shape}: use output_type='latent' or 'field'")
        if output_type == "pil" and shape[1] not in PIL_MODES:
            raise ValueError(f"output_type='pil' needs 1, 3 or 4 channels, this model makes {shape[1]}; use "
                             "output_type='np'")
        return output_type

    def _conditioning(self, spec: ConditionSpec, condition, class_labels, guidance_scale, shape, dtype,
                      rng: Optional[BatchGenerator]):
        """``(condition, class_labels, guidance_scale)`` for the loop: checked, as Tensors, and for a
        guided call (``guidance_scale`` other than 1) the conditional batch followed by the null one."""
        batch = shape[0]
        labels = self._class_labels(spec, class_labels, batch, rng)
        cond = prepare_condition(spec, condition, batch, shape, dtype)
        if guidance_scale is None or guidance_scale == 1:
            # w = 1 is the conditional model itself: no unconditional half is computed.
            return cond, labels, None
        guidance_scale = check_positive("guidance_scale", guidance_scale, allow_zero=True)
        if not np.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {guidance_scale}")
        if cond is None and labels is None:
            raise ValueError(f"guidance_scale={guidance_scale} needs a conditional model and a condition; this call "
                             "has neither condition nor class_labels (use guidance_scale=1)")
        if self._null_condition is None:
            raise ValueError(f"guidance_scale={guidance_scale} needs the null condition the model learned (train with "
                             "condition_dropout > 0, or set pipe.null_condition); this pipeline has none")
        null_cond, null_labels = null_condition_for(self._null_condition, cond, labels)
        if spec.num_classes is not None and null_labels is not None and int(null_labels[0]) >= spec.num_classes:
            raise ValueError(f"null_condition {self._null_condition} is not a class of this model (it has "
                             f"{spec.num_classes})")
        both = [None if a is None else ops.concat((a, b), 0) for a, b in ((cond, null_cond), (labels, null_labels))]
        return both[0], both[1], guidance_scale

    def _sample(
        self,
        batch_size: int,
        generator: BatchGeneratorLike,
        num_inference_steps,
        latents,
        output_type: Optional[str],
        return_dict: bool,
        loop_options: Optional[Dict[str, Any]] = None,
        schedule_options: Optional[Dict[str, Any]] = None,
        class_labels=None,
        scheduler=None,
        condition=None,
        guidance_scale: float = 1.0,
        sample_shape=None,
        observation=None,
        guidance=None,
    ):
        """The shared ``__call__``: validate, schedule, draw (latents, class labels, step noise)
        from one generator, or from generator i for sample i when ``generator`` is a list of
        ``batch_size`` of them, run the loop, convert to ``output_type``.

        ``observation`` / ``guidance``: sample the posterior given an
        :class:`~mindscience_diffuser.observations.Observation` (in model units) with a method
        of :mod:`mindscience_diffuser.guidance` (a name or a configured object); the guidance
        noise is drawn after the sampler's own."""
        batch_size = check_positive("batch_size", batch_size, integer=True)
        if num_inference_steps is not None:
            check_positive("num_inference_steps", num_inference_steps, integer=True)
        shape = self._sample_shape(batch_size, latents, sample_shape)
        output_type = self._resolve_output_type(output_type, shape)
        scheduler = self.scheduler if scheduler is None else scheduler
        if not isinstance(scheduler, self.supported_schedulers):
            raise TypeError(
                f"{type(self).__name__} cannot drive a {type(scheduler).__name__}; use {self._supported_text()}"
            )
        dtype = scheduler.compute_dtype
        rng = as_batch_generator(generator, batch_size)
        x = self._prepare_latents(shape, latents, rng)
        guide = self._observation_guide(observation, guidance, shape)
        cond, labels, scale = self._conditioning(condition_spec(self.unet), condition, class_labels, guidance_scale,
                                                 shape, dtype, rng)
        loop = self.sampling_loop(scheduler, guided=scale is not None, guide=guide, **(loop_options or {}))
        timesteps, knobs, stochastic = loop.schedule(num_inference_steps, **(schedule_options or {}))
        if guide is not None:
            from ..guidance import plan_observation

            plan = plan_observation(guide, scheduler, timesteps, knobs, loop.stateful)
            timesteps, knobs = plan.timesteps, plan.knobs
        x = x * scheduler.init_noise_sigma
        if stochastic:
            noise = rng.standard_normal((len(timesteps),) + shape, batch_axis=1).astype(np.float32)
        else:
            noise = np.zeros((1,) + shape, np.float32)
        observed = {}
        if guide is not None:
            from ..guidance import guide_inputs

            observed["observed_inputs"] = guide_inputs(plan, observation, shape, dtype, rng)
        final = self._run_loop(loop, Tensor(x, dtype), timesteps, knobs, Tensor(noise, dtype), cond, labels, scale,
                               **observed)
        images = self._convert_output(final, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _observation_guide(self, observation, guidance, shape):
        """The guidance method attached to ``observation`` and checked against the batch, or None."""
        if observation is None:
            if guidance is not None:
                raise ValueError(f"guidance={guidance!r} needs an observation= to guide by")
            return None
        from ..guidance import check_observation, resolve_guidance

        guide = resolve_guidance(guidance, observation)
        check_observation(observation, shape)
        return guide

    def _run_loop(self, loop: SamplingLoop, latents: Tensor, timesteps, knobs, noise: Tensor, condition=None,
                  class_labels=None, guidance_scale=None, observed_inputs: tuple = ()) -> Tensor:
        """Run ``loop`` with this pipeline's progress bar; the loop's result (see :meth:`SamplingLoop.run`)."""
        bar = None
        if not self._progress_bar_config.get("disable", False):
            bar = self.progress_bar(total=len(timesteps))
        try:
            # The loop returns (sample, what the image is made of): the sample itself, or the
            # noise-free predictor mean for score-SDE sampling.
            _, final = loop.run(latents, timesteps, knobs, noise, condition, class_labels, guidance_scale,
                                progress_bar=bar, use_jit=self.use_jit, observed_inputs=observed_inputs)
        finally:
            if bar is not None:
                bar.close()
        return final

    def _class_labels(self, spec: ConditionSpec, class_labels, batch_size: int,
                      rng: Optional[BatchGenerator]) -> Optional[Tensor]:
        """``class_labels`` checked against the model (:func:`prepare_class_labels`)."""
        return prepare_class_labels(spec, class_labels, batch_size)

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}={type(module).__name__}" for name, module in self.components.items())
        return f"{type(self).__name__}({parts})"
