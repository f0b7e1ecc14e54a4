"""Command line: ``python -m mindscience_diffuser`` / ``mindscience-diffuser``.

Sub-commands: ``sample``, ``export``, ``train``, ``evaluate``, ``invert``, ``convert``. Each takes
``--config FILE.yaml`` (a flat mapping of the sub-command's option names) and flags that
override the file. One table per sub-command (:data:`COMMANDS`) declares every option once:
argparse, the job-file keys, the help's defaults and the checks of job-file values (by the
same parsers as the flags) all come from it. Bad input — a missing path, an unknown config key, an invalid value —
prints one ``error:`` line and exits with status 2; outputs are written to a temporary
file and renamed, so a failure never leaves a half-written file.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import DEFAULT_MODEL_PATH
from .io_utils import atomic_file, check_output_file

PIPELINES = {
    "ddim": ("DDIMPipeline", "DDIMScheduler"),
    "ddpm": ("DDPMPipeline", "DDPMScheduler"),
    "dpmsolver": ("DPMSolverPipeline", "DPMSolverMultistepScheduler"),
    "consistency": ("ConsistencyModelPipeline", "CMStochasticIterativeScheduler"),
    "sde_ve": ("ScoreSdeVePipeline", "ScoreSdeVeScheduler"),
}


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


class _ArgumentParser(argparse.ArgumentParser):
    """Reports a bad flag like every other bad input: the usage, then one ``error:`` line from
    :func:`main` (status 2), which also returns normally when called from Python."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        raise UsageError(message)


# ----------------------------------------------------------------------------- value parsers

# One parser per kind of value, for a flag's text and a job file's value alike. Each returns the
# value or raises ``ValueError`` with a message that reads after the option's name.

_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")  # YAML's spellings, any case


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"must be an integer, got {value!r}")


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())  # also "2e-4", which YAML reads as text
        except ValueError:
            pass
    raise ValueError(f"must be a number, got {value!r}")


def _in_range(parse: Callable[[Any], float], low: float, high: float, what: str) -> Callable[[Any], Any]:
    def check(value: Any):
        try:
            number = parse(value)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            raise ValueError(f"must be {what}, got {value!r}")
        return number

    return check


_positive_int = _in_range(_integer, 1, math.inf, "a positive integer")
_unit_interval = _in_range(_number, 0.0, 1.0, "a number in [0, 1]")


def _positive_number(value: Any) -> float:
    number = _in_range(_number, 0.0, math.inf, "a positive number")(value)
    if number == 0.0 or number == math.inf:
        raise ValueError(f"must be a positive number, got {value!r}")
    return number


def _probability_below_one(value: Any) -> float:
    number = _unit_interval(value)
    if number >= 1.0:
        raise ValueError(f"must be a probability in [0, 1), got {value!r}")
    return number


def _vary(value: Any) -> Dict[str, Tuple[float, float]]:
    """``"spectrum=1.5:3.5[,name=low:high]"`` (or a job file's mapping) -> {name: (low, high)}."""
    if isinstance(value, dict):
        items = [(str(k), str(v)) for k, v in value.items()]
    else:
        items = [part.split("=", 1) if "=" in part else (part, "") for part in _text(value).split(",")]
    ranges = {}
    for name, bounds in items:
        low, sep, high = str(bounds).partition(":")
        try:
            ranges[name.strip()] = (float(low), float(high))
        except ValueError:
            raise ValueError(f"must be NAME=LOW:HIGH pairs separated by commas (e.g. spectrum=1.5:3.5), got "
                             f"{value!r}") from None
    return ranges


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    spellings = [f"{yes}/{no}" for yes, no in zip(_TRUE, _FALSE)]
    raise ValueError(f"must be {', '.join(spellings[:-1])} or {spellings[-1]}, got {value!r}")


def _auto_or_boolean(value: Any) -> Any:
    """``"auto"``, or a boolean in any of :func:`_boolean`'s spellings (a job file's ``on`` is
    YAML's True)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return _boolean(value)
    except ValueError:
        raise ValueError(f"must be auto, true or false, got {value!r}") from None


def _json_mapping(value: Any) -> Dict[str, Any]:
    """A mapping: a job file's own, or a flag's JSON text (``'{"solver_order": 3}'``)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if isinstance(value, dict):
        return value
    raise ValueError(f"must be a JSON mapping of option names to values, e.g. '{{\"eta\": 0.5}}', got {value!r}")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"must be text (a path or a name), got {value!r}")


# ----------------------------------------------------------------------------- helpers

def _existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise UsageError(f"no such file or directory: {path}")
    return path


def _check_output(value: Any, flag: str) -> Optional[Path]:
    """``value`` as an output file path, checked before any compute starts: not a folder, in a
    folder that exists and is writable. None when the option is not given."""
    if value in (None, ""):
        return None
    try:
        return check_output_file(value, flag)
    except OSError as err:
        raise UsageError(str(err)) from None


def _write_all(writes: List[Tuple[Path, Callable[[Path], None]]]) -> None:
    """Each ``write(tmp)`` writes a temporary file next to its ``path``; only when all of them
    succeeded are they renamed into place, so a command writes all of its outputs or none.
    Files get the user's umask and errors name the user's paths (:func:`io_utils.atomic_file`)."""
    with contextlib.ExitStack() as stack:
        staged = [(stack.enter_context(atomic_file(path)), write) for path, write in writes]
        for tmp, write in staged:
            write(tmp)


def _atomic_output(path: Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` via a temporary file in the same folder, renamed over it at the end."""
    path = _check_output(path, "output")
    _write_all([(path, write)])
    return path


def _set_mode(mode: str) -> None:
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)


def _load_array(path: Path) -> np.ndarray:
    """A (B, C, H, W) float array from .npy, .npz (first array) or an image file/folder."""
    from .training import datasets

    return datasets.load_fields(path)


def _is_array_file(text: str) -> bool:
    """``text`` names a .npy file, an .npz file or an .npz key (``file.npz:key``)."""
    head = text.rsplit(":", 1)[0] if ".npz:" in text else text
    return head.lower().endswith((".npy", ".npz"))


def _read_array_spec(text: str, flag: str) -> np.ndarray:
    """The array of ``file.npy``, ``file.npz`` (its first array) or ``file.npz:key``."""
    from .training import datasets

    path, key = (text.rsplit(":", 1) if ".npz:" in text else (text, None))
    try:
        return np.asarray(datasets.load_array_file(path, key), np.float32)
    except (OSError, ValueError) as err:
        raise UsageError(f"{flag}: {err}") from err


def _condition_values(text: str) -> np.ndarray:
    """``sample --condition``: a .npy/.npz file (``file.npz:key``), or inline comma-separated
    numbers, one vector for every sample (the pipeline repeats a (d,) condition over the batch)."""
    if _is_array_file(text):
        return _read_array_spec(text, "--condition")
    try:
        values = np.array([float(part) for part in text.split(",")], np.float32)
    except ValueError:
        raise UsageError(f"--condition must be a .npy/.npz file (or file.npz:key) or comma-separated numbers, got "
                         f"{text!r}") from None
    if not np.all(np.isfinite(values)):
        raise UsageError(f"--condition must hold finite numbers, got {text!r}")
    return values


def _training_condition(text: Optional[str], data_spec: str) -> Optional[np.ndarray]:
    """``train --condition``: a file (``file.npy``, ``file.npz[:key]``) or the name of an array in
    the ``--data`` .npz; None leaves the data's own (an .npz's ``condition`` array)."""
    if text is None:
        return None
    if _is_array_file(text):
        return _read_array_spec(text, "--condition")
    if str(data_spec).lower().endswith(".npz"):
        return _read_array_spec(f"{data_spec}:{text}", "--condition")
    raise UsageError(f"--condition must be a .npy/.npz file (or file.npz:key), or the name of an array in the --data "
                     f".npz; got {text!r} with --data {data_spec}")


def _conditional_unet_config(config: Dict[str, Any], data, condition_dropout: float) -> Dict[str, Any]:
    """The small UNet, conditioned as the paired ``data`` need: a vector (N, d) through
    UNet2DConditionModel's projection, a field (N, c, H, W) as c extra input channels, labels
    through an embedding table with one row per label (and a last, unused row for the null label
    when ``condition_dropout`` trains one)."""
    config = dict(config)
    if data.condition is not None and data.condition.ndim == 2:
        config.update(class_embed_type="projection", projection_class_embeddings_input_dim=data.condition.shape[1])
    elif data.condition is not None:
        config["in_channels"] = data.sample_shape[0] + data.condition.shape[1]
    if data.class_labels is not None:
        if not np.issubdtype(data.class_labels.dtype, np.integer) or data.class_labels.min() < 0:
            raise UsageError("the training labels must be ints >= 0 (class indices)")
        config["num_class_embeds"] = int(data.class_labels.max()) + 1 + (condition_dropout > 0)
    return config


def _model_dir(value: Optional[str]) -> Path:
    path = Path(value) if value else DEFAULT_MODEL_PATH
    for name in ("model_index.json", "unet/config.json"):
        if not (path / name).is_file():
            raise UsageError("--model must be a pipeline folder with model_index.json and unet/config.json "
                             f"(diffusers layout); {path} has no {name}")
    return path


def _model_index(model: Path) -> Dict[str, Any]:
    from .configuration import _read_json

    index = model / "model_index.json"
    return _read_json(index) if index.is_file() else {}


def _model_pipeline(model: Path) -> str:
    """The ``--pipeline`` name of the folder's own sampler: its ``model_index.json``'s
    ``_class_name``, except that a ``DDPMPipeline`` drives the scheduler it stores as it is (a
    DPM-Solver sampler is a DDPMPipeline folder with a DPMSolverMultistepScheduler); ``ddim``
    when the folder names nothing this command line knows."""
    index = _model_index(model)
    class_name = index.get("_class_name")
    if class_name == "DDPMPipeline":
        stored = (index.get("scheduler") or [None])[-1]
        by_scheduler = {scheduler: key for key, (_, scheduler) in PIPELINES.items()}
        if stored in by_scheduler and by_scheduler[stored] not in _SPECIAL_KINDS:
            return by_scheduler[stored]
    names = {pipeline_name: key for key, (pipeline_name, _) in PIPELINES.items()}
    return names.get(class_name, "ddim")


#: The model kind each sampler needs, by the scheduler class its folder stores: a VE model
#: (trained on sigmas) and a consistency model each have their one sampler; the VP samplers
#: share the VP models (ᾱ schedules).
_SPECIAL_KINDS = {
    "sde_ve": ("a Score-SDE-VE model (a folder whose model_index.json names ScoreSdeVeScheduler)",
               "ScoreSdeVeScheduler"),
    "consistency": ("a consistency model (a folder whose model_index.json names CMStochasticIterativeScheduler)",
                    "CMStochasticIterativeScheduler"),
}


def _check_model_kind(model: Path, pipeline: str) -> None:
    """A sampler run on a model of another kind writes noise: refuse it, naming the model it needs."""
    stored = (_model_index(model).get("scheduler") or [None])[-1]
    if stored is None:
        return  # a folder that names no scheduler: nothing to check against
    special = {scheduler: name for name, (_, scheduler) in _SPECIAL_KINDS.items()}
    if pipeline in _SPECIAL_KINDS and stored != _SPECIAL_KINDS[pipeline][1]:
        raise UsageError(f"--pipeline {pipeline} needs {_SPECIAL_KINDS[pipeline][0]}; {model} is a {stored} model")
    if pipeline not in _SPECIAL_KINDS and stored in special:
        raise UsageError(f"--pipeline {pipeline} needs a VP (DDPM/DDIM) model; {model} is a {stored} model: "
                         f"use --pipeline {special[stored]}")


def _build_pipeline(model: Path, pipeline: str, compute_dtype: str):
    """``from_pretrained`` of the folder as ``pipeline``'s class; when the folder stores another
    scheduler class, it is swapped for ``pipeline``'s, built from the stored scheduler config."""
    import mindspore as ms

    import mindscience_diffuser as msd

    pipeline_name, scheduler_name = PIPELINES[pipeline]
    dtype = ms.float16 if compute_dtype == "float16" else ms.float32
    stored = _model_index(model).get("scheduler") or [None]  # [library, class name]
    swap = {}
    if stored[-1] != scheduler_name:
        scheduler_cls = getattr(msd, scheduler_name)
        config = scheduler_cls.load_config(model / "scheduler") if (model / "scheduler").is_dir() else {}
        # from_config keeps the stored class's other keys as hidden config, quietly (the file names its class).
        swap["scheduler"] = scheduler_cls.from_config(config, compute_dtype=dtype)
    return getattr(msd, pipeline_name).from_pretrained(model, compute_dtype=dtype, **swap)


# ----------------------------------------------------------------------------- outputs

def _npy_writer(array: np.ndarray) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.save would append ".npy" to the name
            np.save(handle, array)

    return write


def save_npy(path: Path, array: np.ndarray) -> Path:
    return _atomic_output(path, _npy_writer(array))


def _ckpt_writer(cell) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        import mindspore as ms

        # save_checkpoint appends ".ckpt" to any other name and leaves the file read-only (0o400).
        named = tmp.with_name(tmp.name + ".ckpt")
        try:
            ms.save_checkpoint(cell, str(named))
            os.replace(named, tmp)
        finally:
            if named.exists():
                named.unlink()

    return write


# ----------------------------------------------------------------------------- sub-commands

def _check_value_range(opts: argparse.Namespace) -> None:
    for flag, value in (("--vmin", opts.vmin), ("--vmax", opts.vmax)):
        if value is not None and not math.isfinite(value):
            raise UsageError(f"{flag} must be a finite number, got {value!r}")
    if opts.vmin is not None and opts.vmax is not None and not opts.vmin < opts.vmax:
        raise UsageError(f"--vmin must be smaller than --vmax, got --vmin {opts.vmin:g} --vmax {opts.vmax:g}")


def _is_rgb_image_model(pipe) -> bool:
    """A 3-channel model without data statistics makes RGB images: its PNG shows them as they
    are. Every other model makes fields: colour-mapped in the data's units, with a colour bar."""
    return pipe.unet.config.in_channels == 3 and pipe.data_normalization is None


def cmd_sample(opts: argparse.Namespace) -> int:
    _check_value_range(opts)
    _set_mode(opts.mode)
    from . import imaging
    from .pipelines.pipeline_utils import to_images

    model = _model_dir(opts.model)
    output, save_npy_path = _check_output(opts.output, "--output"), _check_output(opts.save_npy, "--save-npy")
    pipeline = opts.pipeline or _model_pipeline(model)
    _check_model_kind(model, pipeline)
    pipe = _build_pipeline(model, pipeline, opts.compute_dtype)
    rgb = _is_rgb_image_model(pipe)
    if rgb and (opts.vmin is not None or opts.vmax is not None):
        raise UsageError(f"--vmin/--vmax set the colour range of field PNGs, but {model} makes RGB images "
                         "(3 channels, no data statistics), which are written as they are")
    pipe.set_progress_bar_config(disable=opts.quiet)
    kwargs = _sampler_call(opts, pipeline)
    if opts.compile_cache:
        _enable_sample_compile_cache(opts, model, pipeline, kwargs)
    samples, seconds, workers = _sample_job(opts, pipe, model, pipeline, kwargs, save_npy_path or output)
    if samples is None:
        return 0  # a worker other than the first: worker 0 writes the outputs
    # The data's units (B, C, H, W), unclipped, like the training and reference fields, so the
    # .npy goes straight into `evaluate --generated`: what output_type="field" returns.
    fields = pipe._convert_output(samples, "field").asnumpy()
    shown = ""
    if rgb:
        images = to_images(samples, "np", scale_from_signed=pipe.signed_output)
        writes = [(output, lambda tmp: imaging.save_png(tmp, images, scale=opts.scale))]
    else:
        try:
            vmin, vmax = imaging.fitted_range(fields if fields.shape[1] == 1 else fields.mean(axis=1), opts.vmin,
                                              opts.vmax)
        except ValueError as err:
            raise UsageError(f"colour range: {err}") from err
        shown = f", colour range [{vmin:.4g}, {vmax:.4g}]"
        writes = [(output, lambda tmp: imaging.save_field_png(tmp, fields, scale=opts.scale, vmin=vmin, vmax=vmax))]
    if save_npy_path:
        writes.append((save_npy_path, _npy_writer(fields)))
    _write_all(writes)
    steps = kwargs.get("num_inference_steps", 1)
    on = f" on {workers} workers" if workers > 1 else ""
    print(f"wrote {output} ({len(fields)} samples, {pipeline}, {steps} steps, {seconds:.1f} s{on}{shown})")
    return 0


def _enable_sample_compile_cache(opts: argparse.Namespace, model: Path, pipeline: str, call: Dict[str, Any]) -> None:
    """MindSpore's compile cache for this job (``utils.enable_compile_cache``), keyed by all that
    decides what it compiles: the model folder's files (weights included, by content), the
    pipeline, the call, the batch layout, the precision, the worker (workers of one msrun job
    must not write one folder at once) and the progress bar (chunked calls). A later identical
    job loads the graphs instead of compiling them."""
    from .pipelines import sharded_sampling as shards
    from .utils import enable_compile_cache, tree_digest

    try:
        worker = shards.worker_rank_and_count()
    except ValueError as err:
        raise UsageError(str(err)) from err
    # A condition is a loop input: its shape decides the graph, its values do not.
    described = {name: (["shape", list(np.shape(value))] if name == "condition" else value)
                 for name, value in call.items()}
    key = {"model": tree_digest(model), "pipeline": pipeline, "call": described, "batch_size": opts.batch_size,
           "num_samples": opts.num_samples or opts.batch_size, "dtype": opts.compute_dtype, "worker": worker,
           "quiet": bool(opts.quiet)}
    folder = enable_compile_cache(key)
    if not opts.quiet:
        print(f"compile cache: {folder}")


def _sampler_call(opts: argparse.Namespace, pipeline: str) -> Dict[str, Any]:
    """The pipeline call's step count, DDIM eta, condition and guidance scale, as ``sample`` and
    ``export`` take them."""
    call: Dict[str, Any] = {}
    if pipeline != "consistency" or opts.steps is not None:
        call["num_inference_steps"] = opts.steps or 25
    if pipeline == "ddim":
        call["eta"] = opts.eta
    # Passed only when given, so an unconditional model samples as it always did.
    if getattr(opts, "condition", None) is not None:
        call["condition"] = _condition_values(opts.condition)
    if getattr(opts, "guidance_scale", None) is not None:
        call["guidance_scale"] = opts.guidance_scale
    return call


def _sample_job(opts: argparse.Namespace, pipe, model: Path, pipeline: str, call: Dict[str, Any], output: Path):
    """``(samples, seconds, workers)``: the job's ``--num-samples`` samples as a model-space Tensor,
    sample i drawn from ``default_rng([seed, i])`` in batches of ``--batch-size``. Under msrun the
    batches are shared out among the workers and worker 0 gathers them (the other workers get
    ``samples`` None), so the samples are those of a single process
    (:mod:`~mindscience_diffuser.pipelines.sharded_sampling`)."""
    from mindspore import Tensor

    from .pipelines import sharded_sampling as shards

    if opts.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {opts.seed}")
    try:
        rank, workers = shards.worker_rank_and_count()
    except ValueError as err:
        raise UsageError(str(err)) from err
    num_samples = opts.num_samples or opts.batch_size
    batches = shards.batch_indices(num_samples, opts.batch_size)
    start = time.perf_counter()
    own = shards.sample_batches(pipe, shards.batches_of_worker(batches, rank, workers), opts.seed,
                                num_samples=num_samples, output_type="latent", **call)
    seconds = time.perf_counter() - start
    if workers == 1:
        return Tensor(own[1]), seconds, workers
    job = {"model": str(model.resolve()), "pipeline": pipeline, "seed": opts.seed, "num_samples": num_samples,
           "batch_size": opts.batch_size, "dtype": opts.compute_dtype, **call}
    digest = shards.job_digest(job)
    if rank > 0:
        shards.write_shard(shards.shard_path(output, digest, rank, workers), *own)
        print(f"worker {rank}/{workers}: {len(own[0])} samples handed to worker 0 ({seconds:.1f} s)")
        return None, seconds, workers
    gathered = shards.gather_shards(output, digest, workers, num_samples, own)
    return Tensor(gathered), time.perf_counter() - start, workers


def cmd_export(opts: argparse.Namespace) -> int:
    """Write the folder's sampler (``--batch-size`` samples, ``--steps`` steps, the scheduler with
    ``--scheduler-options``) as one MindIR file: :func:`~mindscience_diffuser.pipelines.export.export_sampler`."""
    from .pipelines.export import export_sampler, read_export_info

    model = _model_dir(opts.model)
    output = _check_output(opts.output, "--output")
    if output.suffix != ".mindir":
        raise UsageError(f"--output must end in .mindir (mindspore.load reads no other name), got {output}")
    pipeline = opts.pipeline or _model_pipeline(model)
    _check_model_kind(model, pipeline)
    pipe = _build_pipeline(model, pipeline, opts.compute_dtype)
    if opts.scheduler_options:
        pipe.scheduler = _scheduler_with(pipe.scheduler, opts.scheduler_options)
    call = _sampler_call(opts, pipeline)
    start = time.perf_counter()
    export_sampler(pipe, output, batch_size=opts.batch_size, **call)
    info = read_export_info(output)
    print(f"wrote {output} ({info['pipeline']} with {info['scheduler']}, batch {info['batch_size']}, "
          f"{info['num_iterations']} iterations, inputs {', '.join(info['input_names'])}, "
          f"{time.perf_counter() - start:.1f} s)")
    return 0


def _scheduler_with(scheduler, options: Dict[str, Any]):
    """``scheduler`` rebuilt with its config updated by ``options``; an option its class does not take is refused."""
    unknown = sorted(set(options) - set(type(scheduler)._init_parameters()))
    if unknown:
        raise UsageError(f"--scheduler-options: {type(scheduler).__name__} has no option {unknown}")
    return type(scheduler).from_config({**scheduler.config, **options}, compute_dtype=scheduler.compute_dtype)


def cmd_train(opts: argparse.Namespace) -> int:
    """Build the data, a UNet (``--model-config`` or the small field UNet), a DDIM scheduler
    with ``--prediction-type`` (x0 clipping only for image data) and a ``DiffusionTrainer``;
    train ``--steps`` steps with checkpoints under ``--output`` (resuming from the newest one
    with ``--resume``) and export the EMA model as the pipeline folder ``OUTPUT/final``."""
    import shutil

    from .training.trainer import CHECKPOINT_PREFIX, STATE_NAME, latest_checkpoint

    output = Path(opts.output)
    # Every checkpoint-* folder, complete or not: a fresh run would prune the older run's.
    earlier = sorted(p.name for p in output.glob(CHECKPOINT_PREFIX + "*")) if output.is_dir() else []
    if earlier and not opts.resume and not opts.overwrite:
        raise UsageError(f"{output} already holds checkpoints of an earlier run ({', '.join(earlier[:3])}"
                         f"{', ...' if len(earlier) > 3 else ''}); pass --resume to continue it, "
                         "or --overwrite to replace it")
    resume_from = latest_checkpoint(output) if opts.resume else None
    if resume_from is not None:
        from .configuration import _read_json

        done = int(_read_json(resume_from / STATE_NAME)["step"])
        if done >= opts.steps:
            print(f"nothing to train: {resume_from} is at step {done}, --steps is {opts.steps}")
            return 0
        if not opts.quiet:
            print(f"resuming from {resume_from} (step {done} of {opts.steps})")
    elif opts.resume and not opts.quiet:
        print(f"no checkpoint in {output} to resume from: starting at step 0")

    _set_mode(opts.mode)
    import mindspore as ms

    from .models import UNet2DModel
    from .schedulers import DDIMScheduler
    from .training import DiffusionTrainer, FieldDataset, dataset_from_spec, small_unet_config
    from .training.datasets import IMAGE_SUFFIXES

    data = dataset_from_spec(opts.data, num_samples=opts.num_samples, size=opts.resolution, seed=opts.seed,
                             vary=opts.vary)
    condition = _training_condition(opts.condition, opts.data)
    if condition is not None:  # --condition names the condition: it replaces an .npz's own "condition" array
        data = FieldDataset(data.data, condition=condition, class_labels=data.class_labels)
    if opts.model_config:
        config = UNet2DModel.load_config(_existing_path(opts.model_config))
    else:
        config = small_unet_config(in_channels=data.sample_shape[0], sample_size=data.sample_shape[1])
        config = _conditional_unet_config(config, data, opts.condition_dropout)
    ms.set_seed(opts.seed)
    unet = UNet2DModel.from_config(config)
    # Fields are not bounded images: DDIM's default x0 clipping to [-1, 1] would cut their tails.
    spec = Path(str(opts.data))
    images = spec.is_dir() or spec.suffix.lower() in IMAGE_SUFFIXES
    # Standardised data have unit std: clipping x0 to [-1, 1] in model units would cut them too.
    scheduler = DDIMScheduler(prediction_type=opts.prediction_type, clip_sample=images and opts.normalize is not True)
    trainer = DiffusionTrainer(
        unet, scheduler,
        learning_rate=opts.learning_rate, batch_size=opts.batch_size, loss=opts.loss,
        weighting=None if opts.weighting == "none" else opts.weighting,
        ema_decay=opts.ema_decay, seed=opts.seed, output_dir=opts.output, checkpoint_every=opts.checkpoint_every,
        normalize=opts.normalize, condition_dropout=opts.condition_dropout,
    )
    if earlier and opts.overwrite and not opts.resume:
        for name in earlier:
            shutil.rmtree(output / name)
    start = done if resume_from is not None else 0
    try:
        trainer.train(data, opts.steps, resume_from=resume_from, log_every=None if opts.quiet else 10)
    except (KeyboardInterrupt, SystemExit) as stop:
        # The trainer finished the step in flight and checkpointed it before raising.
        code = 130 if isinstance(stop, KeyboardInterrupt) else stop.code
        checkpoint = latest_checkpoint(output)
        where = f"checkpoint {checkpoint}" if checkpoint is not None else "no checkpoint written"
        args = [a for a in getattr(opts, "argv", []) if a not in ("--resume", "--overwrite")]
        print(f"stopped after step {trainer.step}; {where}; "
              f"resume with: mindscience-diffuser {' '.join(args)} --resume", file=sys.stderr)
        return code
    final = trainer.save_pretrained(Path(opts.output) / "final")
    if not opts.quiet and trainer.data_normalization is not None:
        from .normalization import describe

        print(f"trained on standardised data ({describe(trainer.data_normalization)}, stored with the model): "
              "sample writes the data's units")
    if not opts.quiet:
        done = f"{trainer.step - start} steps ({start + 1} to {trainer.step})" if start else f"{trainer.step} steps"
        print(f"trained {done}; pipeline written to {final}")
    return 0


def cmd_evaluate(opts: argparse.Namespace) -> int:
    generated_path, reference_path = _existing_path(opts.generated), _existing_path(opts.reference)
    output, plot = _check_output(opts.output, "--output"), _check_output(opts.plot, "--plot")
    from .training import evaluation

    generated, reference = _load_array(generated_path), _load_array(reference_path)
    metrics = evaluation.evaluate(generated, reference)
    text = json.dumps(metrics, indent=2, sort_keys=True)
    print(text)
    gap = abs(metrics["mean_generated"] - metrics["mean_reference"])
    spread = max(metrics["std_generated"], metrics["std_reference"])
    if gap > 5 * spread or not 0.05 < metrics["std_generated"] / max(metrics["std_reference"], 1e-300) < 20:
        print(f"note: the generated fields (mean {metrics['mean_generated']:.4g}, std {metrics['std_generated']:.4g}) "
              f"and the reference (mean {metrics['mean_reference']:.4g}, std {metrics['std_reference']:.4g}) look "
              "like different units; `sample --save-npy` writes the data's units (fields from before it did, or "
              "output_type='latent', are model units)", file=sys.stderr)
    writes = []
    if output:
        writes.append((output, lambda tmp: tmp.write_text(text + "\n")))
    if plot:
        writes.append((plot, lambda tmp: evaluation.plot_spectra(generated, reference, tmp)))
    _write_all(writes)
    if opts.max_spectrum_error is not None and metrics["spectrum_rel_error"] > opts.max_spectrum_error:
        print(f"spectrum error {metrics['spectrum_rel_error']:.4f} exceeds --max-spectrum-error "
              f"{opts.max_spectrum_error}", file=sys.stderr)
        return 1
    return 0


def cmd_invert(opts: argparse.Namespace) -> int:
    import mindspore as ms

    _set_mode(opts.mode)
    model = _model_dir(opts.model)
    output, reconstruct = _check_output(opts.output, "--output"), _check_output(opts.reconstruct, "--reconstruct")
    _check_model_kind(model, "dpmsolver")
    pipe = _build_pipeline(model, "dpmsolver", "float32")
    pipe.set_progress_bar_config(disable=opts.quiet)
    samples = _load_array(_existing_path(opts.input))  # the data's units, as `sample --save-npy` writes them
    latents = pipe.invert(ms.Tensor(pipe.to_model_units(samples)), num_inference_steps=opts.steps)
    latents = latents.asnumpy() if hasattr(latents, "asnumpy") else np.asarray(latents)
    writes = [(output, _npy_writer(latents))]
    message = f"wrote {output}: latents {latents.shape}"
    if reconstruct:
        recon = pipe(batch_size=len(latents), latents=ms.Tensor(latents), num_inference_steps=opts.steps,
                     output_type="field").images.asnumpy()
        writes.append((reconstruct, _npy_writer(recon)))
        message += f"; reconstruction max abs error {float(np.abs(recon - samples).max()):.3e} -> {reconstruct}"
    _write_all(writes)
    print(message)
    return 0


def cmd_convert(opts: argparse.Namespace) -> int:
    """diffusers folder (safetensors) <-> MindSpore checkpoint (.ckpt)."""
    import mindspore as ms

    import mindscience_diffuser as msd

    source, target = _existing_path(opts.input), Path(opts.output)
    if source.is_dir():
        if target.suffix != ".ckpt":
            raise UsageError(f"--output must end in .ckpt when --input is a folder, got {target}")
        _check_output(target, "--output")
        unet_dir = source / "unet" if (source / "unet" / "config.json").is_file() else source
        unet = msd.UNet2DModel.from_pretrained(unet_dir)
        _write_all([(target, _ckpt_writer(unet))])
        print(f"wrote {target} ({len(unet.parameters_dict())} tensors)")
        return 0
    if source.suffix != ".ckpt":
        raise UsageError(f"--input must be a diffusers folder or a .ckpt file, got {source}")
    if not opts.model_config:
        raise UsageError("converting a .ckpt needs --model-config (the UNet's config.json)")
    to_ckpt = target.suffix == ".ckpt"  # a checked copy: a file, never a folder named *.ckpt
    if to_ckpt:
        _check_output(target, "--output")
    elif target.exists() and not target.is_dir():
        raise UsageError(f"--output {target} is a file; converting a .ckpt writes a folder (or give a .ckpt path)")
    scheduler = None
    if opts.scheduler_config:
        if to_ckpt:
            raise UsageError("--scheduler-config makes a pipeline folder: --output must be a folder, not a .ckpt")
        scheduler = _scheduler_from_config(_existing_path(opts.scheduler_config))
    unet = msd.UNet2DModel.from_config(msd.UNet2DModel.load_config(_existing_path(opts.model_config)))
    params = ms.load_checkpoint(str(source))
    expected = unet.parameters_dict()
    missing, unexpected = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    shapes = sorted(k for k in set(expected) & set(params) if tuple(expected[k].shape) != tuple(params[k].shape))
    if missing or unexpected or shapes:
        raise UsageError(f"checkpoint does not fit the config: missing {missing[:8]}, unexpected {unexpected[:8]}, "
                         f"wrong shape {shapes[:8]}")
    ms.load_param_into_net(unet, params, strict_load=True)
    if to_ckpt:
        _write_all([(target, _ckpt_writer(unet))])
        print(f"wrote {target} ({len(expected)} tensors, checked against {opts.model_config})")
    elif scheduler is not None:
        from .pipelines.pipeline_utils import folder_pipeline_name, save_pipeline_folder

        kind = type(scheduler).__name__
        pipeline_class = next((name for name, scheduler_name in PIPELINES.values() if scheduler_name == kind),
                              "DiffusionPipeline")
        save_pipeline_folder(target, pipeline_class, {"unet": unet, "scheduler": scheduler})
        print(f"wrote {target} ({folder_pipeline_name(pipeline_class)}: model_index.json, unet/, scheduler/)")
    else:
        unet.save_pretrained(target)
        print(f"wrote {target} (config.json, diffusion_pytorch_model.safetensors; a UNet folder: "
              "add --scheduler-config for a pipeline folder that sample loads)")
    return 0


def _scheduler_from_config(path: Path):
    """The scheduler a ``scheduler_config.json`` (or a folder holding one) describes, by its ``_class_name``."""
    import mindscience_diffuser as msd

    from .configuration import _read_json

    file = path / "scheduler_config.json" if path.is_dir() else path
    if not file.is_file():
        raise UsageError(f"--scheduler-config: no scheduler_config.json in {path}")
    config = _read_json(file)
    known = sorted(scheduler for _, scheduler in PIPELINES.values())
    name = config.get("_class_name")
    if name not in known:
        raise UsageError(f"--scheduler-config {file} names the scheduler {name!r}; this command line knows {known}")
    scheduler_cls = getattr(msd, name)
    return scheduler_cls.from_config(config)


# ----------------------------------------------------------------------------- options

@dataclass(frozen=True)
class Option:
    """One option of a sub-command: its flag ``--name-with-dashes``, its job-file key
    ``name_with_underscores`` and its value's parser, default, help and choices."""

    name: str
    help: str
    parse: Callable[[Any], Any] = _text
    default: Any = None
    choices: Tuple[str, ...] = ()
    in_job_file: bool = True
    required: bool = False
    shown_default: Optional[str] = None  # the help's default where ``default`` alone does not say it

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> Any:
        """``value`` parsed, or ``ValueError`` (the message reads after the option's name)."""
        value = self.parse(value)
        if self.choices and value not in self.choices:
            raise ValueError(f"must be one of {list(self.choices)}, got {value!r}")
        return value

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        shown = self.shown_default if self.shown_default is not None else self.default
        text = self.help
        if self.required:
            text += " (required)"
        elif shown is not None and self.parse is not _boolean:
            text += f" (default: {shown})"
        if self.parse is _boolean:
            kind: Dict[str, Any] = {"action": "store_true"}
        else:
            kind = {"type": self._parse_flag, "choices": self.choices or None}
        # Flags default to None, "not given", so a job file's value or the default shows through.
        parser.add_argument(self.flag, dest=self.name, default=None, help=text, **kind)

    def _parse_flag(self, text: str) -> Any:
        try:
            return self.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from err


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    handler: Callable[[argparse.Namespace], int]
    options: Tuple[Option, ...]

    def job_file_keys(self) -> List[str]:
        return [option.name for option in self.options if option.in_job_file]


def _common(mode: str = "graph") -> Tuple[Option, ...]:
    return (
        Option("config", "YAML job file of option names (flags override its values)", in_job_file=False),
        Option("mode", "MindSpore execution mode", default=mode, choices=("graph", "pynative")),
        Option("quiet", "no progress bar", _boolean, default=False),
    )


COMMANDS: Tuple[Command, ...] = (
    Command("sample", "generate samples and write a PNG grid", cmd_sample, _common() + (
        Option("model", "pipeline folder (diffusers layout)", shown_default="the shipped field model"),
        Option("pipeline", "sampler", choices=tuple(sorted(PIPELINES)),
               shown_default="the model folder's own pipeline, from model_index.json"),
        Option("steps", "inference steps", _positive_int, shown_default="25; consistency: 1"),
        Option("batch_size", "samples per model call", _positive_int, default=16),
        Option("num_samples", "samples in all, drawn in batches of --batch-size and, under msrun, shared out among "
               "the workers (sample i's noise comes from the seed and i alone)", _positive_int,
               shown_default="--batch-size"),
        Option("seed", "random seed", _integer, default=0),
        Option("eta", "DDIM eta in [0, 1]", _unit_interval, default=0.0),
        Option("compute_dtype", "UNet and scheduler precision", default="float32", choices=("float32", "float16")),
        Option("output", "PNG path", default="samples.png"),
        Option("save_npy",
               "also save the samples as fields (B, C, H, W) in the data's units (the model's stored per-channel "
               "mean/std applied; model space for a model that stores none), unclipped, ready for evaluate"),
        Option("scale", "PNG upscaling factor", _positive_int, default=4),
        Option("compile_cache", "keep the compiled sampling graphs on disk and reuse them in a later identical job "
               "(folder under $MINDSCIENCE_DIFFUSER_COMPILE_CACHE, else ~/.cache/mindscience_diffuser/compile_cache)",
               _boolean, default=False),
        Option("vmin", "lower end of the PNG's colour range, in the data's units (fields only)", _number,
               shown_default="fitted: the batch's 0.5th percentile"),
        Option("vmax", "upper end of the PNG's colour range, in the data's units (fields only)", _number,
               shown_default="fitted: the batch's 99.5th percentile"),
        Option("condition", "the condition of a conditional model: a .npy/.npz file (file.npz:key) of (B, d) "
               "vectors or (B, c, H, W) fields, or comma-separated numbers (one vector for every sample)"),
        Option("guidance_scale", "classifier-free guidance scale s (Ho & Salimans 2022): ε(∅) + s·(ε(c) − ε(∅)); "
               "needs a model trained with --condition-dropout", _number, shown_default="1: the conditional model"),
    )),
    Command("export", "write the sampler (model, scheduler, every step) as one MindIR file", cmd_export, (
        Option("config", "YAML job file of option names (flags override its values)", in_job_file=False),
        Option("model", "pipeline folder (diffusers layout)", shown_default="the shipped field model"),
        Option("pipeline", "sampler", choices=tuple(sorted(PIPELINES)),
               shown_default="the model folder's own pipeline, from model_index.json"),
        Option("output", "MindIR path (ends in .mindir)", default="sampler.mindir"),
        Option("batch_size", "samples per call (fixed in the file)", _positive_int, default=1),
        Option("steps", "inference steps (fixed in the file)", _positive_int, shown_default="25; consistency: 1"),
        Option("eta", "DDIM eta in [0, 1] (fixed in the file)", _unit_interval, default=0.0),
        Option("scheduler_options", "scheduler config changes as JSON, e.g. '{\"algorithm_type\": "
               "\"sde-dpmsolver++\"}' (fixed in the file)", _json_mapping),
        Option("compute_dtype", "UNet and scheduler precision", default="float32", choices=("float32", "float16")),
    )),
    Command("train", "train a UNet2DModel on fields or images", cmd_train, _common() + (
        Option("data", "a .npy/.npz of (B, C, H, W) fields (an .npz with 'fields' and 'condition'/'labels' arrays "
               "is paired, conditional data), an image folder, or synthetic:grf / synthetic:darcy",
               default="synthetic:grf"),
        Option("output", "checkpoint folder (diffusers layout)", default="checkpoints"),
        Option("model_config", "UNet config.json", shown_default="a small 3-level UNet"),
        Option("resolution", "field size for synthetic data", _positive_int, default=32),
        Option("num_samples", "synthetic fields to generate", _positive_int, default=2048),
        Option("steps", "optimizer steps", _positive_int, default=1000),
        Option("batch_size", "batch size", _positive_int, default=32),
        Option("learning_rate", "learning rate", _number, default=2e-4),
        Option("prediction_type", "regression target", default="epsilon",
               choices=("epsilon", "sample", "v_prediction")),
        Option("loss", "loss", default="mse", choices=("mse", "l1")),
        Option("weighting", "loss weighting", default="none", choices=("none", "p2", "min_snr")),
        Option("ema_decay", "EMA decay", _number, default=0.999),
        Option("checkpoint_every", "steps between checkpoints", _positive_int, default=200),
        Option("resume", "continue from the checkpoint in --output", _boolean, default=False),
        Option("overwrite", "start afresh in an --output that holds an earlier run's checkpoints (they are deleted)",
               _boolean, default=False),
        Option("normalize", "auto, true or false: train on per-channel standardised data and store the mean/std "
               "with the model, so sample writes the data's units (auto: only for data far from [-1, 1])",
               _auto_or_boolean, default="auto"),
        Option("seed", "random seed", _integer, default=0),
        Option("condition", "the fields' conditions: a .npy/.npz file (file.npz:key) with one row per field, or the "
               "name of an array in the --data .npz (replacing its 'condition' array)",
               shown_default="the --data .npz's 'condition' array, if any"),
        Option("vary", "synthetic data: generator parameters drawn per field and used as the condition, "
               "NAME=LOW:HIGH[,...] (e.g. spectrum=1.5:3.5)", _vary),
        Option("condition_dropout", "probability in [0, 1) of training a sample on the null condition (for "
               "classifier-free guidance)", _probability_below_one, default=0.0),
    )),
    Command("evaluate", "compare generated fields with reference fields (power spectrum, histogram)",
            cmd_evaluate, _common() + (
        Option("generated", ".npy/.npz or image folder of generated fields, in the data's units "
               "(as sample --save-npy writes them)", required=True),
        Option("reference", ".npy/.npz or image folder of reference fields, in the data's units", required=True),
        Option("output", "write the metrics as JSON here"),
        Option("plot", "write a PNG of both radially averaged spectra here"),
        Option("max_spectrum_error", "exit 1 if the spectrum error is larger", _number),
    )),
    Command("invert", "DPM-Solver inversion of fields to latents", cmd_invert, _common() + (
        Option("model", "pipeline folder", shown_default="the shipped field model"),
        Option("input", ".npy/.npz (B, C, H, W) fields in the data's units (as sample --save-npy writes them)",
               required=True),
        Option("steps", "inversion steps", _positive_int, default=25),
        Option("output", ".npy path for the latents", default="latents.npy"),
        Option("reconstruct", "also sample back from the latents and save the reconstruction (data units) here"),
    )),
    Command("convert", "diffusers folder (safetensors) <-> MindSpore .ckpt", cmd_convert, _common("pynative") + (
        Option("input", "a diffusers UNet or pipeline folder, or a .ckpt", required=True),
        Option("output", "a .ckpt path, or a folder for a .ckpt input", required=True),
        Option("model_config", "the UNet's config.json (needed for a .ckpt input)"),
        Option("scheduler_config",
               "a scheduler_config.json: a .ckpt input then becomes a pipeline folder that sample loads"),
    )),
)


# ----------------------------------------------------------------------------- assimilate (issue 12)

def _posterior_png(path, panels: np.ndarray, std: np.ndarray, scale: int = 4) -> None:
    """``panels`` (truth, observations, mean, samples; (K, C, H, W), the data's units, one colour
    bar) beside the posterior ``std`` (its own colour bar), as one PNG."""
    import io

    from PIL import Image

    from . import imaging

    pictures = []
    for fields in (panels, std[None]):
        buffer = io.BytesIO()
        imaging.save_field_png(buffer, fields, scale=scale)
        buffer.seek(0)
        pictures.append(Image.open(buffer).convert("RGB"))
    canvas = Image.new("RGB", (sum(p.width for p in pictures) + 8, max(p.height for p in pictures)), "white")
    canvas.paste(pictures[0], (0, 0))
    canvas.paste(pictures[1], (pictures[0].width + 8, 0))
    canvas.save(path, format="PNG")


def cmd_assimilate(opts: argparse.Namespace) -> int:
    """Posterior samples given observations (``Observation.from_npz``: values in the model's
    units, a mask, noise_std), by one of mindscience_diffuser.guidance's methods."""
    _set_mode(opts.mode)
    from .guidance import METHODS, PiGDM
    from .observations import Observation

    model = _model_dir(opts.model)
    output, plot = _check_output(opts.output, "--output"), _check_output(opts.plot, "--plot")
    if output.suffix != ".npz":
        raise UsageError(f"--output {output} must end in .npz (it holds samples, mean and std)")
    if opts.method not in METHODS:
        raise UsageError(f"--method must be one of {sorted(METHODS)}, got {opts.method!r}")
    if opts.data_std is not None and not issubclass(METHODS[opts.method], PiGDM):  # ΠGDM and MMPS take it
        raise UsageError(f"--data-std is ΠGDM's prior scale (and MMPS's safeguard fallback): it needs --method pigdm "
                         f"or mmps, got --method {opts.method}")
    observation = Observation.from_npz(_existing_path(opts.observations))
    truth = _load_array(_existing_path(opts.truth)) if opts.truth else None
    pipeline = _model_pipeline(model)
    _check_model_kind(model, pipeline)
    pipe = _build_pipeline(model, pipeline, "float32")
    pipe.set_progress_bar_config(disable=opts.quiet)
    kwargs: Dict[str, Any] = {"batch_size": opts.num_samples, "generator": opts.seed, "output_type": "latent",
                              "observation": observation, "guidance": opts.method}
    if opts.data_std is not None:
        kwargs["guidance"] = METHODS[opts.method](data_std=opts.data_std)
    if pipeline != "consistency" or opts.steps is not None:
        kwargs["num_inference_steps"] = opts.steps or 25
    start = time.perf_counter()
    samples = pipe(**kwargs).images
    seconds = time.perf_counter() - start
    fields = pipe._convert_output(samples, "field").asnumpy()  # the data's units, as `sample --save-npy`
    mean, std = fields.mean(axis=0), fields.std(axis=0, ddof=1) if len(fields) > 1 else np.zeros(fields.shape[1:])

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle: np.savez would append ".npz" to the name
            np.savez(handle, samples=fields, mean=mean, std=std)

    writes = [(output, write_npz)]
    if plot:
        observed = pipe.to_data_units(observation.values_array)[0]
        shown = np.where(observation.operator.full_mask(observed.shape) > 0, observed, np.nan)
        panels = [shown, mean] + list(fields[:4])
        if truth is not None:
            panels = [np.asarray(truth, np.float64).reshape(mean.shape)] + panels
        writes.append((plot, lambda tmp: _posterior_png(tmp, np.stack(panels), std)))
    _write_all(writes)
    print(f"wrote {output} ({len(fields)} posterior samples, {opts.method}, {kwargs.get('num_inference_steps', 1)} "
          f"steps, {seconds:.1f} s)" + (f" and {plot}" if plot else ""))
    return 0


COMMANDS = COMMANDS + (
    Command("assimilate", "posterior samples given observations (inverse problems, data assimilation)",
            cmd_assimilate, _common() + (
        Option("model", "pipeline folder (diffusers layout)", shown_default="the shipped field model"),
        Option("observations", ".npz with values (one sample's shape, the model's units), mask (1 where observed) "
               "and noise_std", required=True),
        Option("method", "posterior-sampling method (see docs/inverse_problems.md)", default="dps",
               choices=("dps", "mmps", "pigdm", "replace")),
        Option("data_std", "pigdm and mmps: the prior's standard deviation σ_d in the model's units (ΠGDM's r_t² = "
               "σ_d²σ_t²/(σ_d² + σ_t²); MMPS uses it where its safeguard falls back to ΠGDM)", _positive_number,
               shown_default="1, the paper's unit-variance prior"),
        Option("num_samples", "posterior samples", _positive_int, default=16),
        Option("steps", "inference steps", _positive_int, shown_default="25; consistency: 1"),
        Option("seed", "random seed", _integer, default=0),
        Option("output", ".npz path: samples (N, C, H, W), mean and std, in the data's units",
               default="posterior.npz"),
        Option("plot", "also write a PNG: truth (if given), observations, mean, samples, and the std"),
        Option("truth", ".npy/.npz of the true field (data units), shown first in --plot"),
    )),
)


def _command(name: str) -> Command:
    return next(command for command in COMMANDS if command.name == name)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="mindscience-diffuser", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        epilog = "job-file keys (--config): " + ", ".join(command.job_file_keys())
        p = sub.add_parser(command.name, help=command.help, description=command.help, epilog=epilog)
        for option in command.options:
            option.add_to(p)
        p.set_defaults(handler=command.handler)
    return parser


def _read_job_file(path: str, command: Command) -> Dict[str, Any]:
    """The job file's values, each checked by its option's parser; an empty value (``key:``)
    leaves the option at its default."""
    import yaml

    file = _existing_path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"{file} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise UsageError(f"{file} must hold a mapping of option names to values")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    allowed = command.job_file_keys()
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise UsageError(f"unknown key(s) {unknown} in {file}; allowed: {sorted(allowed)}")
    values = {}
    for option in command.options:
        if data.get(option.name) is not None:
            try:
                values[option.name] = option.check(data[option.name])
            except ValueError as err:
                raise UsageError(f"{option.name} {err} (in {file})") from err
    return values


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Flags over the job file over the table's defaults."""
    opts = build_parser().parse_args(argv)
    command = _command(opts.command)
    values = {option.name: option.default for option in command.options}
    if opts.config:
        values.update(_read_job_file(opts.config, command))
    for option in command.options:
        value = getattr(opts, option.name)
        if value is not None:
            values[option.name] = value
        if option.required and values[option.name] in (None, ""):
            raise UsageError(f"{command.name} needs {option.flag}")
    for name, value in values.items():
        setattr(opts, name, value)
    opts.argv = list(sys.argv[1:] if argv is None else argv)  # to print the command that resumes a run
    return opts


def main(argv: Optional[List[str]] = None) -> int:
    try:
        opts = parse(argv)
        return opts.handler(opts)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
