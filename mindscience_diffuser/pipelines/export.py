"""A sampler that deploys as one file: the whole compiled sampling loop as one MindIR graph.

:func:`export_sampler` writes ``pipe``'s sampling loop (:class:`~.sampling_loop.SamplingLoop`:
the model's weights, the scheduler's tables and every step, as a rolled ``while`` loop) with
``mindspore.export(..., file_format="MINDIR")``; :func:`load_sampler` reads it back with
``mindspore.load`` + ``nn.GraphCell`` and samples from a seed without building the model.

The exported graph is ``f(latents[, noise][, condition][, class_labels]) -> samples``:

- ``latents`` (B, *S) float32: standard normal starting noise (the graph scales it by the
  scheduler's ``init_noise_sigma``);
- ``noise`` (K, B, *S) float32, stochastic samplers only (DDIM with eta > 0, DDPM, SDE variants of
  DPM-Solver, Euler ancestral, score-SDE, consistency models with several steps): the standard
  normal noise of each of the K iterations;
- ``condition`` (B, ...) in the compute dtype and ``class_labels`` (B,) int32, conditional models only;
- the output (B, *S) float32: the model-space sample, what ``output_type="latent"`` returns.

Fixed at export time (constants or Parameters inside the file): the batch size B and one sample's
shape S; the number of steps and so K and the timesteps; the scheduler, its whole config and the
call's options (DDIM's ``eta`` and ``use_clipped_model_output``, a consistency model's
``timesteps``); the compute dtype; the classifier-free guidance weight and the null condition it
pairs with; the weights. Anything else needs another export.

MindSpore 2.8 notes (why the code is as it is):

- ``mindspore.export`` compiles in STRICT syntax whatever the context says; the schedulers'
  ``construct`` use Python string methods on config values (``algorithm_type.endswith("++")``),
  which STRICT refuses, so the export runs with ``MS_DEV_JIT_SYNTAX_LEVEL=2`` (LAX, the level
  GRAPH_MODE sampling compiles at) and restores it afterwards.
- The schedule (timesteps, knobs) and the loop bounds are Parameters of :class:`SamplerGraph`,
  not Python constants: constant bounds would let the compiler unroll the ``while`` (K copies of
  the model in the file), and Parameters are what ``export`` stores in the file.
- ``export`` writes ``NAME.mindir`` (appending the suffix), read-only, and splits models over
  1 GB of parameters into ``NAME_graph.mindir`` + ``NAME_variables/``; we export under a
  temporary name next to the target and rename it, so a failure leaves no file, and a split
  export is refused (it would not be one file).
- What :func:`load_sampler` needs to draw the inputs (shapes, which inputs, the scheduler) is
  JSON in the MindIR's ``user_info`` under :data:`EXPORT_INFO_KEY`.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from ..io_utils import atomic_file, check_output_file
from ..normalization import DataNormalization
from ..utils import BatchGeneratorLike, as_batch_generator, check_choice, check_positive
from .pipeline_utils import samples_to_data_units
from .sampling_loop import SamplingLoop

#: the ``user_info`` key of the sampler's description in the MindIR file
EXPORT_INFO_KEY = "mindscience_diffuser.sampler"
#: bumped when the graph's inputs or the description change incompatibly
EXPORT_FORMAT_VERSION = 1
MINDIR_SUFFIX = ".mindir"
_SYNTAX_LEVEL_ENV = "MS_DEV_JIT_SYNTAX_LEVEL"
_LAX = "2"


class SamplerGraph(nn.Cell):
    """``construct(latents, *inputs)``: the whole sampling loop with its schedule built in.

    ``inputs`` are, in order, those of ``input_names`` after ``"latents"``: ``"noise"``,
    ``"condition"``, ``"class_labels"``. With a guided loop, the null condition (and null labels)
    stored here are appended to the given ones, the batch layout the loop expects.
    """

    def __init__(self, loop: SamplingLoop, timesteps: np.ndarray, knobs: np.ndarray, input_names,
                 guidance_scale: Optional[float] = None, null_condition: Optional[Tensor] = None,
                 null_labels: Optional[Tensor] = None):
        super().__init__(auto_prefix=False)
        self.loop = loop
        scheduler = loop.scheduler
        self.dtype = scheduler.compute_dtype
        self.init_noise_sigma = float(scheduler.init_noise_sigma)
        integer = np.issubdtype(np.asarray(timesteps).dtype, np.integer)
        # Parameters, not constants: see the module's notes.
        self.schedule_timesteps = _fixed("export.timesteps", Tensor(timesteps, ms.int32 if integer else ms.float32))
        self.schedule_knobs = _fixed("export.knobs", Tensor(np.asarray(knobs, np.float32)))
        self.first_iteration = _fixed("export.start", Tensor(0, ms.int32))
        self.num_iterations = _fixed("export.stop", Tensor(len(timesteps), ms.int32))
        self.input_names = tuple(input_names)
        self.stochastic = "noise" in self.input_names
        self.noise_at = self._position("noise")
        self.condition_at = self._position("condition")
        self.labels_at = self._position("class_labels")
        self.guided = guidance_scale is not None
        self.guidance_scale = _fixed("export.guidance_scale", Tensor(guidance_scale if self.guided else 1.0,
                                                                     ms.float32))
        self.has_null_condition = null_condition is not None
        self.has_null_labels = null_labels is not None
        self.null_condition = _fixed("export.null_condition", null_condition if self.has_null_condition
                                     else Tensor(0.0, ms.float32))
        self.null_labels = _fixed("export.null_labels", null_labels if self.has_null_labels else Tensor(0, ms.int32))

    def _position(self, name: str) -> int:
        """Where input ``name`` sits in ``*inputs`` (after ``latents``), -1 when the graph has none."""
        return self.input_names.index(name) - 1 if name in self.input_names else -1

    def construct(self, latents, *inputs):
        sample = (latents * self.init_noise_sigma).astype(self.dtype)
        if self.stochastic:
            noise = inputs[self.noise_at].astype(self.dtype)
        else:
            noise = ops.zeros((1,) + latents.shape, self.dtype)
        condition = None
        if self.condition_at >= 0:
            condition = inputs[self.condition_at]
            if self.has_null_condition:
                condition = ops.concat((condition, self.null_condition), 0)
        labels = None
        if self.labels_at >= 0:
            labels = inputs[self.labels_at]
            if self.has_null_labels:
                labels = ops.concat((labels, self.null_labels), 0)
        scale = self.guidance_scale if self.guided else None
        scheduler = self.loop.scheduler
        out = self.loop(sample, scheduler.loop_state(sample), self.schedule_timesteps, noise, self.schedule_knobs,
                        self.first_iteration, self.num_iterations, condition, labels, scale)
        # The loop's MindSpore 2.8 output convention: the sample alone, or a flat (sample, *state).
        if self.loop.stateful:
            return scheduler.loop_output(out[0], out[1:]).astype(ms.float32)
        return scheduler.loop_output(out, ()).astype(ms.float32)


def _fixed(name: str, value: Tensor) -> Parameter:
    return Parameter(value, name=name, requires_grad=False)


# ----------------------------------------------------------------------------- export

def export_sampler(pipe, path: Union[str, os.PathLike], batch_size: int = 1,
                   num_inference_steps: Optional[int] = None, **call_options) -> Path:
    """Write ``pipe``'s sampler for ``batch_size`` samples in ``num_inference_steps`` steps as one
    MindIR file at ``path`` (which must end in ``.mindir``); returns the path.

    ``call_options`` are what the pipeline's ``__call__`` takes besides the noise: ``eta``,
    ``use_clipped_model_output``, ``sample_shape``, ``condition`` / ``class_labels`` (only their
    shapes are kept: they are inputs of the graph), ``guidance_scale`` (kept, with the pipeline's
    null condition). ``num_inference_steps=None`` is the pipeline's default. The sampler is the
    one ``pipe(batch_size=..., num_inference_steps=..., **call_options)`` runs: the same host-side
    checks, the same loop, the same schedule (the pipeline is called once with the loop stubbed
    out to capture them). What is fixed in the file: see the module docstring.

    Raises ``ValueError`` for a ``batch_size`` < 1 or a path without the ``.mindir`` suffix and
    ``OSError`` for a folder that does not exist or is not writable; a failure leaves no file.
    """
    batch_size = check_positive("batch_size", batch_size, integer=True)
    path = _check_output_path(path)
    if num_inference_steps is not None:
        call_options["num_inference_steps"] = check_positive("num_inference_steps", num_inference_steps,
                                                             integer=True)
    call = _capture_loop_call(pipe, batch_size, call_options)
    graph = SamplerGraph(call["loop"], call["timesteps"], call["knobs"], call["input_names"], call["guidance_scale"],
                         call["null_condition"], call["null_labels"])
    info = _describe(pipe, call, batch_size, call_options)
    example = [call["latents"]] + [call[name] for name in call["input_names"][1:]]

    def add_info(model_proto) -> None:
        entry = model_proto.user_info.add()
        entry.key, entry.value = EXPORT_INFO_KEY, json.dumps(info, sort_keys=True)

    with atomic_file(path) as tmp:
        # export appends ".mindir" to any other name and leaves the file read-only.
        named = tmp.with_name(tmp.name + MINDIR_SUFFIX)
        try:
            with _lax_syntax():
                ms.export(graph, *example, file_name=str(named), file_format="MINDIR", custom_func=add_info)
            if not named.is_file():
                raise OSError(f"cannot write {path} as one file: the model has over 1 GB of parameters, which "
                              "mindspore.export splits into a graph file and a folder of weights")
            os.replace(named, tmp)
        finally:
            _remove_export_leftovers(named)
    return path


def _check_output_path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)) or str(path) == "":
        raise TypeError(f"path must be a file path ending in {MINDIR_SUFFIX}, got {path!r}")
    path = Path(path)
    if path.suffix != MINDIR_SUFFIX:
        raise ValueError(f"path must end in {MINDIR_SUFFIX} (mindspore.load reads no other name), got {path}")
    return check_output_file(path)


def _remove_export_leftovers(named: Path) -> None:
    """What a failed or split export may leave: ``NAME.mindir``, ``NAME_graph.mindir``, ``NAME_variables/``."""
    import shutil

    stem = named.name[:-len(MINDIR_SUFFIX)]
    for leftover in (named, named.with_name(stem + "_graph" + MINDIR_SUFFIX)):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    shutil.rmtree(named.with_name(stem + "_variables"), ignore_errors=True)


@contextlib.contextmanager
def _lax_syntax() -> Iterator[None]:
    previous = os.environ.get(_SYNTAX_LEVEL_ENV)
    os.environ[_SYNTAX_LEVEL_ENV] = _LAX
    try:
        yield
    finally:
        if previous is None:
            del os.environ[_SYNTAX_LEVEL_ENV]
        else:
            os.environ[_SYNTAX_LEVEL_ENV] = previous


def _capture_loop_call(pipe, batch_size: int, call_options: Dict[str, Any]) -> Dict[str, Any]:
    """Call ``pipe`` with its loop stubbed out and return what it would have run: the loop, the
    schedule, example inputs and, for a guided call, the null halves of the conditioning."""
    captured: Dict[str, Any] = {}

    def capture(loop, latents, timesteps, knobs, noise, condition=None, class_labels=None, guidance_scale=None,
                **hooks):
        used = sorted(name for name, value in hooks.items() if value is not None)
        if used:
            raise ValueError(f"export_sampler cannot bake {used} into a MindIR sampler: export an unguided call")
        captured.update(loop=loop, latents=latents, timesteps=np.asarray(timesteps), knobs=np.asarray(knobs),
                        noise=noise, condition=condition, class_labels=class_labels, guidance_scale=guidance_scale)
        return latents  # the pipeline converts it as its output; never used

    pipe._run_loop = capture  # an instance attribute, shadowing the method for this one call
    try:
        pipe(batch_size=batch_size, generator=0, output_type="latent", **call_options)
    finally:
        del pipe._run_loop
    # The pipeline passes zeros for a deterministic sampler's noise and standard normal draws for
    # a stochastic one, which are all zero with probability 0.
    stochastic = bool(np.any(captured["noise"].asnumpy()))
    guided = captured["guidance_scale"] is not None
    names = ["latents"] + (["noise"] if stochastic else [])
    for name in ("condition", "class_labels"):
        value = captured[name]
        null = None
        if value is not None:
            names.append(name)
            if guided:  # the loop's layout: the conditional batch, then the null one
                value, null = value[:batch_size], value[batch_size:]
        captured[name], captured["null_" + ("labels" if name == "class_labels" else name)] = value, null
    # The graph scales the latents itself: its input is unit-variance noise.
    captured["latents"] = Tensor(np.random.default_rng(0).standard_normal(captured["latents"].shape), ms.float32)
    captured["noise"] = captured["noise"].astype(ms.float32)
    captured["input_names"] = names
    return captured


def _describe(pipe, call: Dict[str, Any], batch_size: int, call_options: Dict[str, Any]) -> Dict[str, Any]:
    """The JSON description :func:`load_sampler` reads: what to feed the graph and how to read its output."""
    from .. import __version__

    scheduler = call["loop"].scheduler
    inputs = {name: {"shape": list(call[name].shape), "dtype": str(call[name].dtype).lower()}
              for name in call["input_names"]}
    normalization = pipe.data_normalization
    kept = {k: v for k, v in call_options.items() if k not in ("condition", "class_labels")}
    return {
        "format_version": EXPORT_FORMAT_VERSION,
        "mindscience_diffuser_version": __version__,
        "mindspore_version": ms.__version__,
        "pipeline": type(pipe).__name__,
        "scheduler": type(scheduler).__name__,
        "scheduler_config": dict(scheduler.config),
        "compute_dtype": str(scheduler.compute_dtype).lower(),
        "batch_size": batch_size,
        "sample_shape": list(call["latents"].shape[1:]),
        "num_iterations": int(len(call["timesteps"])),
        "call_options": json.loads(json.dumps(kept, default=repr)),
        "inputs": inputs,
        "input_names": call["input_names"],
        "signed_output": bool(pipe.signed_output),
        "data_normalization": None if normalization is None else normalization.to_dict(),
    }


# ----------------------------------------------------------------------------- load

def read_export_info(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The description :func:`export_sampler` stored in the MindIR file at ``path``; ``OSError``
    for a missing or unreadable file, ``ValueError`` for a MindIR that is not such a sampler."""
    from google.protobuf.message import DecodeError
    from mindspore.train.mind_ir_pb2 import ModelProto

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such MindIR file: {path}")
    model = ModelProto()
    try:
        model.ParseFromString(path.read_bytes())
    except DecodeError as err:
        raise ValueError(f"path {path} is not a MindIR file ({err})") from err
    for entry in model.user_info:
        if entry.key == EXPORT_INFO_KEY:
            info = json.loads(entry.value)
            if info.get("format_version") != EXPORT_FORMAT_VERSION:
                raise ValueError(f"{path} is a sampler of export format {info.get('format_version')}; this "
                                 f"mindscience_diffuser reads format {EXPORT_FORMAT_VERSION}: export it again")
            return info
    raise ValueError(f"{path} is a MindIR file but not a sampler written by export_sampler (no {EXPORT_INFO_KEY!r} "
                     "in its user_info)")


class ExportedSampler:
    """A sampler loaded from a MindIR file: ``sampler(generator)`` gives ``batch_size`` samples.

    The noise is drawn on the host as the pipeline draws it (latents, then each iteration's
    noise, from one generator or from generator i for sample i), so
    ``sampler(seed)`` equals ``pipe(batch_size, generator=seed, output_type="latent", ...)`` of the
    exported pipeline. :attr:`info` is the stored description (shapes, scheduler, options).
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = Path(path)
        self.info = read_export_info(self.path)
        self.graph = nn.GraphCell(ms.load(str(self.path)))

    @property
    def batch_size(self) -> int:
        return self.info["batch_size"]

    @property
    def sample_shape(self) -> tuple:
        return tuple(self.info["sample_shape"])

    def __call__(self, generator: BatchGeneratorLike = None, condition=None, class_labels=None,
                 output_type: str = "latent") -> np.ndarray:
        """``batch_size`` samples as a float32 numpy array (B, *S): ``output_type="latent"`` the
        model-space samples, ``"field"`` in the training data's units (the stored statistics).

        ``generator``: a ``numpy.random.Generator``, an int seed, or a list of ``batch_size`` of them.
        ``condition`` / ``class_labels``: required by a conditional sampler, of the exported shapes.
        """
        check_choice("output_type", output_type, ("latent", "field"))
        shape = (self.batch_size,) + self.sample_shape
        rng = as_batch_generator(generator, self.batch_size)
        # The pipeline's order of draws (DiffusionPipeline._sample): latents, then step noise.
        feeds = {"latents": Tensor(rng.standard_normal(shape).astype(np.float32))}
        if "noise" in self.info["input_names"]:
            noise = rng.standard_normal((self.info["num_iterations"],) + shape, batch_axis=1)
            feeds["noise"] = Tensor(noise.astype(np.float32))
        for name, value in (("condition", condition), ("class_labels", class_labels)):
            feeds.update(self._conditioning_input(name, value))
        out = self.graph(*[feeds[name] for name in self.info["input_names"]]).asnumpy()
        if output_type == "latent":
            return out
        stats = self.info["data_normalization"]
        return samples_to_data_units(out, self.info["signed_output"],
                                     None if stats is None else DataNormalization.coerce(stats))

    def _conditioning_input(self, name: str, value) -> Dict[str, Tensor]:
        expected = self.info["inputs"].get(name)
        if expected is None:
            if value is not None:
                raise ValueError(f"{name}: this sampler was exported without one (an unconditional sampler)")
            return {}
        if value is None:
            raise ValueError(f"{name}: this sampler needs one of shape {tuple(expected['shape'])}")
        array = value.asnumpy() if isinstance(value, Tensor) else np.asarray(value)
        if tuple(array.shape) != tuple(expected["shape"]):
            raise ValueError(f"{name} must have the exported shape {tuple(expected['shape'])}, got {array.shape}")
        dtype = {"int32": ms.int32, "float16": ms.float16}.get(expected["dtype"], ms.float32)
        return {name: Tensor(array, dtype)}

    def __repr__(self) -> str:
        info = self.info
        return (f"ExportedSampler({self.path.name}: {info['pipeline']} with {info['scheduler']}, batch "
                f"{self.batch_size}, sample shape {self.sample_shape}, {info['num_iterations']} iterations)")


def load_sampler(path: Union[str, os.PathLike]) -> ExportedSampler:
    """Load a sampler written by :func:`export_sampler` (``mindspore.load`` + ``nn.GraphCell``:
    the model is not rebuilt; MindSpore compiles the stored graph on the first call)."""
    return ExportedSampler(path)
