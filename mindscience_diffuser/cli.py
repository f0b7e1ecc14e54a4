"""Command line: ``python -m mindscience_diffuser`` / ``mindscience-diffuser``.

Sub-commands: ``sample``, ``train``, ``evaluate``, ``invert``, ``convert``. Each takes
``--config FILE.yaml`` (a flat mapping of the sub-command's option names) and flags that
override the file. Bad input — a missing path, an unknown config key, an invalid value —
prints one ``error:`` line and exits with status 2; outputs are written to a temporary
file and renamed, so a failure never leaves a half-written file.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from . import DEFAULT_MODEL_PATH

PIPELINES = {
    "ddim": ("DDIMPipeline", "DDIMScheduler"),
    "ddpm": ("DDPMPipeline", "DDPMScheduler"),
    "dpmsolver": ("DPMSolverPipeline", "DPMSolverMultistepScheduler"),
    "consistency": ("ConsistencyModelPipeline", "CMStochasticIterativeScheduler"),
    "sde_ve": ("ScoreSdeVePipeline", "ScoreSdeVeScheduler"),
}


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


# ----------------------------------------------------------------------------- helpers

def _positive_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}")
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {value}")
        return value

    return parse


def _existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise UsageError(f"no such file or directory: {path}")
    return path


def _atomic_output(path: Path, write: Callable[[Path], None]) -> Path:
    """Write via a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise UsageError(f"output folder does not exist: {path.parent}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix or ".tmp", dir=str(path.parent or "."))
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _set_mode(mode: str) -> None:
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)


def _load_array(path: Path) -> np.ndarray:
    """A (B, C, H, W) float array from .npy, .npz (first array) or an image file/folder."""
    from .training import datasets

    return datasets.load_fields(path)


def _model_dir(value: Optional[str]) -> Path:
    path = Path(value) if value else DEFAULT_MODEL_PATH
    for name in ("model_index.json", "unet/config.json"):
        if not (path / name).is_file():
            raise UsageError(f"--model must be a pipeline folder with model_index.json and unet/config.json (diffusers layout); {path} has no {name}")
    return path


def _model_index(model: Path) -> Dict[str, Any]:
    from .configuration import _read_json

    index = model / "model_index.json"
    return _read_json(index) if index.is_file() else {}


def _model_pipeline(model: Path) -> str:
    """The ``--pipeline`` name of the folder's own pipeline (``model_index.json``'s
    ``_class_name``); ``ddim`` when the folder names none this command line knows."""
    class_name = _model_index(model).get("_class_name")
    names = {pipeline_name: key for key, (pipeline_name, _) in PIPELINES.items()}
    return names.get(class_name, "ddim")


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
        swap["scheduler"] = scheduler_cls.from_config(config, compute_dtype=dtype)
    return getattr(msd, pipeline_name).from_pretrained(model, compute_dtype=dtype, **swap)


# ----------------------------------------------------------------------------- outputs

def save_npy(path: Path, array: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    return _atomic_output(path, write)


# ----------------------------------------------------------------------------- sub-commands

def cmd_sample(opts: argparse.Namespace) -> int:
    _set_mode(opts.mode)
    from . import imaging
    from .pipelines.pipeline_utils import to_images

    model = _model_dir(opts.model)
    pipeline = opts.pipeline or _model_pipeline(model)
    pipe = _build_pipeline(model, pipeline, opts.compute_dtype)
    pipe.set_progress_bar_config(disable=opts.quiet)
    kwargs: Dict[str, Any] = {"batch_size": opts.batch_size, "generator": opts.seed, "output_type": "latent"}
    if pipeline != "consistency" or opts.steps is not None:
        kwargs["num_inference_steps"] = opts.steps or 25
    if pipeline == "ddim":
        kwargs["eta"] = opts.eta
    start = time.perf_counter()
    samples = pipe(**kwargs).images
    seconds = time.perf_counter() - start
    images = to_images(samples, "np", scale_from_signed=pipe.signed_output)
    out = _atomic_output(Path(opts.output), lambda tmp: imaging.save_png(tmp, images, scale=opts.scale))
    if opts.save_npy:
        # Model space (B, C, H, W), unclipped, like training and reference fields, so the file
        # goes straight into `evaluate --generated`; samplers working in [0, 1] are mapped to [-1, 1].
        fields = samples.asnumpy() if pipe.signed_output else samples.asnumpy() * np.float32(2) - np.float32(1)
        save_npy(Path(opts.save_npy), fields)
    print(f"wrote {out} ({len(images)} samples, {pipeline}, {kwargs.get('num_inference_steps', 1)} steps, {seconds:.1f} s)")
    return 0


def cmd_train(opts: argparse.Namespace) -> int:
    """Build the data, a UNet (``--model-config`` or the small field UNet), a DDIM scheduler
    with ``--prediction-type`` (x0 clipping only for image data) and a ``DiffusionTrainer``;
    train ``--steps`` steps with checkpoints under ``--output`` (resuming from the newest one
    with ``--resume``) and export the EMA model as the pipeline folder ``OUTPUT/final``."""
    _set_mode(opts.mode)
    import mindspore as ms

    from .models import UNet2DModel
    from .schedulers import DDIMScheduler
    from .training import DiffusionTrainer, dataset_from_spec, small_unet_config
    from .training.datasets import IMAGE_SUFFIXES

    data = dataset_from_spec(opts.data, num_samples=opts.num_samples, size=opts.resolution, seed=opts.seed)
    if opts.model_config:
        config = UNet2DModel.load_config(_existing_path(opts.model_config))
    else:
        config = small_unet_config(in_channels=data.sample_shape[0], sample_size=data.sample_shape[1])
    ms.set_seed(opts.seed)
    unet = UNet2DModel.from_config(config)
    # Fields are not bounded images: DDIM's default x0 clipping to [-1, 1] would cut their tails.
    spec = Path(str(opts.data))
    images = spec.is_dir() or spec.suffix.lower() in IMAGE_SUFFIXES
    scheduler = DDIMScheduler(prediction_type=opts.prediction_type, clip_sample=images)
    trainer = DiffusionTrainer(
        unet, scheduler,
        learning_rate=opts.learning_rate, batch_size=opts.batch_size, loss=opts.loss,
        weighting=None if opts.weighting == "none" else opts.weighting,
        ema_decay=opts.ema_decay, seed=opts.seed, output_dir=opts.output, checkpoint_every=opts.checkpoint_every,
    )
    trainer.train(data, opts.steps, resume_from="latest" if opts.resume else None, log_every=None if opts.quiet else 10)
    final = trainer.save_pretrained(Path(opts.output) / "final")
    if not opts.quiet:
        print(f"trained {trainer.step} steps; pipeline written to {final}")
    return 0


def cmd_evaluate(opts: argparse.Namespace) -> int:
    generated_path, reference_path = _existing_path(opts.generated), _existing_path(opts.reference)
    from .training import evaluation

    generated, reference = _load_array(generated_path), _load_array(reference_path)
    metrics = evaluation.evaluate(generated, reference)
    text = json.dumps(metrics, indent=2, sort_keys=True)
    print(text)
    if opts.output:
        _atomic_output(Path(opts.output), lambda tmp: tmp.write_text(text + "\n"))
    if opts.plot:
        evaluation.plot_spectra(generated, reference, Path(opts.plot))
    if opts.max_spectrum_error is not None and metrics["spectrum_rel_error"] > opts.max_spectrum_error:
        print(f"spectrum error {metrics['spectrum_rel_error']:.4f} exceeds --max-spectrum-error {opts.max_spectrum_error}", file=sys.stderr)
        return 1
    return 0


def cmd_invert(opts: argparse.Namespace) -> int:
    import mindspore as ms

    _set_mode(opts.mode)
    model = _model_dir(opts.model)
    pipe = _build_pipeline(model, "dpmsolver", "float32")
    pipe.set_progress_bar_config(disable=opts.quiet)
    samples = _load_array(_existing_path(opts.input))
    latents = pipe.invert(ms.Tensor(samples.astype(np.float32)), num_inference_steps=opts.steps)
    latents = latents.asnumpy() if hasattr(latents, "asnumpy") else np.asarray(latents)
    save_npy(Path(opts.output), latents)
    message = f"wrote {opts.output}: latents {latents.shape}"
    if opts.reconstruct:
        recon = pipe(batch_size=len(latents), latents=ms.Tensor(latents), num_inference_steps=opts.steps, output_type="latent").images.asnumpy()
        save_npy(Path(opts.reconstruct), recon)
        message += f"; reconstruction max abs error {float(np.abs(recon - samples).max()):.3e} -> {opts.reconstruct}"
    print(message)
    return 0


def cmd_convert(opts: argparse.Namespace) -> int:
    """diffusers folder (safetensors) <-> MindSpore checkpoint (.ckpt)."""
    import mindspore as ms

    import mindscience_diffuser as msd

    source, target = _existing_path(opts.input), Path(opts.output)
    if source.is_dir():
        unet_dir = source / "unet" if (source / "unet" / "config.json").is_file() else source
        unet = msd.UNet2DModel.from_pretrained(unet_dir)
        if target.suffix != ".ckpt":
            raise UsageError(f"--output must end in .ckpt when --input is a folder, got {target}")
        _atomic_output(target, lambda tmp: ms.save_checkpoint(unet, str(tmp)))
        print(f"wrote {target} ({len(unet.parameters_dict())} tensors)")
        return 0
    if source.suffix != ".ckpt":
        raise UsageError(f"--input must be a diffusers folder or a .ckpt file, got {source}")
    if not opts.model_config:
        raise UsageError("converting a .ckpt needs --model-config (the UNet's config.json)")
    unet = msd.UNet2DModel.from_config(msd.UNet2DModel.load_config(_existing_path(opts.model_config)))
    params = ms.load_checkpoint(str(source))
    expected = unet.parameters_dict()
    missing, unexpected = sorted(set(expected) - set(params)), sorted(set(params) - set(expected))
    shapes = sorted(k for k in set(expected) & set(params) if tuple(expected[k].shape) != tuple(params[k].shape))
    if missing or unexpected or shapes:
        raise UsageError(f"checkpoint does not fit the config: missing {missing[:8]}, unexpected {unexpected[:8]}, wrong shape {shapes[:8]}")
    ms.load_param_into_net(unet, params, strict_load=True)
    unet.save_pretrained(target)
    print(f"wrote {target} (config.json, diffusion_pytorch_model.safetensors)")
    return 0


# ----------------------------------------------------------------------------- parser

def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML job file; flags override its values")
    parser.add_argument("--mode", choices=["graph", "pynative"], help="MindSpore execution mode (default graph)")
    parser.add_argument("--quiet", action="store_true", default=None, help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mindscience-diffuser", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="generate samples and write a PNG grid")
    _common(p)
    p.add_argument("--model", help="pipeline folder (diffusers layout); default: the shipped field model")
    p.add_argument("--pipeline", choices=sorted(PIPELINES), help="sampler (default: the model folder's own pipeline, from model_index.json)")
    p.add_argument("--steps", type=_positive_int("--steps"), help="inference steps (default 25)")
    p.add_argument("--batch-size", dest="batch_size", type=_positive_int("--batch-size"), help="samples (default 16)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--eta", type=float, help="DDIM eta in [0, 1] (default 0)")
    p.add_argument("--compute-dtype", dest="compute_dtype", choices=["float32", "float16"], help="default float32")
    p.add_argument("--output", help="PNG path (default samples.png)")
    p.add_argument("--save-npy", dest="save_npy", help="also save the samples as fields (B, C, H, W) in model space, unclipped, ready for evaluate")
    p.add_argument("--scale", type=_positive_int("--scale"), help="PNG upscaling factor (default 4)")
    p.set_defaults(handler=cmd_sample, defaults=dict(mode="graph", quiet=False, pipeline=None, steps=None, batch_size=16, seed=0, eta=0.0, compute_dtype="float32", output="samples.png", save_npy=None, scale=4, model=None))

    p = sub.add_parser("train", help="train a UNet2DModel on fields or images")
    _common(p)
    p.add_argument("--data", help="a .npy/.npz of (B, C, H, W) fields, an image folder, or synthetic:grf / synthetic:darcy")
    p.add_argument("--output", help="checkpoint folder (diffusers layout)")
    p.add_argument("--model-config", dest="model_config", help="UNet config.json (default: a small 3-level UNet)")
    p.add_argument("--resolution", type=_positive_int("--resolution"), help="field size for synthetic data (default 32)")
    p.add_argument("--num-samples", dest="num_samples", type=_positive_int("--num-samples"), help="synthetic fields to generate (default 2048)")
    p.add_argument("--steps", type=_positive_int("--steps"), help="optimizer steps (default 1000)")
    p.add_argument("--batch-size", dest="batch_size", type=_positive_int("--batch-size"), help="default 32")
    p.add_argument("--learning-rate", dest="learning_rate", type=float, help="default 2e-4")
    p.add_argument("--prediction-type", dest="prediction_type", choices=["epsilon", "sample", "v_prediction"], help="default epsilon")
    p.add_argument("--loss", choices=["mse", "l1"], help="default mse")
    p.add_argument("--weighting", choices=["none", "p2", "min_snr"], help="loss weighting (default none)")
    p.add_argument("--ema-decay", dest="ema_decay", type=float, help="default 0.999")
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=_positive_int("--checkpoint-every"), help="default 200")
    p.add_argument("--resume", action="store_true", default=None, help="continue from the checkpoint in --output")
    p.add_argument("--seed", type=int, help="default 0")
    p.set_defaults(handler=cmd_train, defaults=dict(mode="graph", quiet=False, data="synthetic:grf", output="checkpoints", model_config=None, resolution=32, num_samples=2048, steps=1000, batch_size=32, learning_rate=2e-4, prediction_type="epsilon", loss="mse", weighting="none", ema_decay=0.999, checkpoint_every=200, resume=False, seed=0))

    p = sub.add_parser("evaluate", help="compare generated fields with reference fields (power spectrum, histogram)")
    _common(p)
    p.add_argument("--generated", help=".npy/.npz or image folder of generated fields")
    p.add_argument("--reference", help=".npy/.npz or image folder of reference fields")
    p.add_argument("--output", help="write the metrics as JSON here")
    p.add_argument("--plot", help="write a PNG of both radially averaged spectra here")
    p.add_argument("--max-spectrum-error", dest="max_spectrum_error", type=float, help="exit 1 if the spectrum error is larger")
    p.set_defaults(handler=cmd_evaluate, defaults=dict(mode="graph", quiet=False, generated=None, reference=None, output=None, plot=None, max_spectrum_error=None))

    p = sub.add_parser("invert", help="DPM-Solver inversion of fields to latents")
    _common(p)
    p.add_argument("--model", help="pipeline folder; default: the shipped field model")
    p.add_argument("--input", help=".npy/.npz (B, C, H, W) fields in the model's range")
    p.add_argument("--steps", type=_positive_int("--steps"), help="inversion steps (default 25)")
    p.add_argument("--output", help=".npy path for the latents (default latents.npy)")
    p.add_argument("--reconstruct", help="also sample back from the latents and save the reconstruction here")
    p.set_defaults(handler=cmd_invert, defaults=dict(mode="graph", quiet=False, model=None, input=None, steps=25, output="latents.npy", reconstruct=None))

    p = sub.add_parser("convert", help="diffusers folder (safetensors) <-> MindSpore .ckpt")
    _common(p)
    p.add_argument("--input", help="a diffusers UNet or pipeline folder, or a .ckpt")
    p.add_argument("--output", help="a .ckpt path, or a folder for a .ckpt input")
    p.add_argument("--model-config", dest="model_config", help="the UNet's config.json (needed for a .ckpt input)")
    p.set_defaults(handler=cmd_convert, defaults=dict(mode="pynative", quiet=False, input=None, output=None, model_config=None))
    return parser


REQUIRED = {"evaluate": ("generated", "reference"), "invert": ("input",), "convert": ("input", "output")}


def _read_job_file(path: str, allowed: List[str]) -> Dict[str, Any]:
    import yaml

    file = _existing_path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"{file} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise UsageError(f"{file} must hold a mapping of option names to values")
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise UsageError(f"unknown key(s) {unknown} in {file}; allowed: {sorted(allowed)}")
    return data


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    opts = parser.parse_args(argv)
    defaults = dict(opts.defaults)
    merged = dict(defaults)
    if opts.config:
        merged.update(_read_job_file(opts.config, list(defaults)))
    for key in defaults:
        value = getattr(opts, key, None)
        if value is not None:
            merged[key] = value
    for key, value in merged.items():
        setattr(opts, key, value)
    for key in REQUIRED.get(opts.command, ()):
        if getattr(opts, key) in (None, ""):
            raise UsageError(f"{opts.command} needs --{key.replace('_', '-')}")
    _validate(opts)
    return opts


def _validate(opts: argparse.Namespace) -> None:
    """Values that came from a job file skip argparse's checks: check them here."""
    for key in ("steps", "batch_size", "num_samples", "resolution", "checkpoint_every", "scale"):
        value = getattr(opts, key, None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UsageError(f"{key} must be a positive integer, got {value!r}")
    if getattr(opts, "eta", None) is not None and not (isinstance(opts.eta, (int, float)) and 0.0 <= opts.eta <= 1.0):
        raise UsageError(f"eta must be a number in [0, 1], got {opts.eta!r}")
    if opts.command == "sample" and opts.pipeline is not None and opts.pipeline not in PIPELINES:
        raise UsageError(f"pipeline must be one of {sorted(PIPELINES)}, got {opts.pipeline!r}")
    if getattr(opts, "mode", None) not in ("graph", "pynative"):
        raise UsageError(f"mode must be graph or pynative, got {opts.mode!r}")


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
