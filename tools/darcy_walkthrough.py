"""The Darcy walkthrough of docs/inverse_problems.md: permeability fields reconstructed from sparse
well measurements with a diffusion prior, and the calibration of the posterior spread against the
truth (the field is binary, so there is no closed-form posterior to compare with).

    python tools/darcy_walkthrough.py train [--minutes 60] [--run-dir DIR]    # resumable
    python tools/darcy_walkthrough.py export [--run-dir DIR] [--model DIR]     # EMA weights -> a pipeline folder
    python tools/darcy_walkthrough.py evaluate [--model DIR] [--fields 8] [--samples 32] [--json F]

The data are the project's Darcy permeabilities (``darcy_permeability``: +1 where a Gaussian
field with spectrum (4π²k² + τ²)^-2, τ = 3, is ≥ 0, else −1; Li et al. 2021's benchmark, rescaled
to ±1), 32×32. The wells measure the field at ``WELL_FRACTION`` of the pixels with noise σ_y.
For each held-out field and method, ``evaluate`` reports over the unobserved pixels:

- the reconstruction error of the posterior mean, ‖mean − truth‖ / ‖truth‖, and the fraction of
  pixels whose sign (the facies) the mean gets right;
- the calibration of the spread against the truth: the coverage of the truth by each pixel's
  central 90% interval of the samples (0.9 if calibrated) and the ratio of the RMS error of the
  mean to the RMS posterior std (1 if calibrated; above 1: overconfident);
- the wells' misfit, RMS(A·mean − y) / σ_y (about 1 or below when the data are honoured).

The prior alone (unconditional samples) is the control every method must beat. Everything is
seeded: the data (seed 0), the UNet init, the trainer's draws, the held-out truths (seed 1) and
the wells (seed 2).
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import mindspore as ms
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import train_default_model as recipe  # noqa: E402
from recipe_steps import export_ema, train_resumably, trainer_at_latest_checkpoint  # noqa: E402

from mindscience_diffuser import DDIMScheduler, DiffusionPipeline  # noqa: E402
from mindscience_diffuser.guidance import DPS, MMPS, PiGDM, matched_data_std  # noqa: E402
from mindscience_diffuser.models import UNet2DModel  # noqa: E402
from mindscience_diffuser.observations import MaskOperator, Observation  # noqa: E402
from mindscience_diffuser.training import DiffusionTrainer, SyntheticFieldDataset, small_unet_config  # noqa: E402

FIELDS = dict(kind="darcy", size=32)
NUM_TRAIN, TRAIN_SEED, TRUTH_SEED, WELL_SEED = 4096, 0, 1, 2
WELL_FRACTION, WELL_NOISE = 0.03, 0.05
# The default model's schedule, target, sampler and recipe (tools/train_default_model.py), shorter.
SCHEDULER, SAMPLER, SAMPLE_STEPS = recipe.SCHEDULER, recipe.SAMPLER, recipe.SAMPLE_STEPS
STEPS = 1000
LR_DECAY_STEPS = 350
TRAINER = {**recipe.TRAINER, "num_training_steps": STEPS, "lr_decay_steps": LR_DECAY_STEPS}
DEFAULT_RUN = Path("/tmp/msd_darcy_run")
DEFAULT_MODEL = Path("/tmp/msd_darcy_model")


@functools.lru_cache(maxsize=None)
def training_data() -> SyntheticFieldDataset:
    """The training set (generated once per process: ``evaluate`` reads it for every truth)."""
    return SyntheticFieldDataset(num_samples=NUM_TRAIN, seed=TRAIN_SEED, **FIELDS)


def build_trainer(run_dir: Path) -> DiffusionTrainer:
    ms.set_seed(0)
    unet = UNet2DModel(**small_unet_config(in_channels=1, sample_size=FIELDS["size"]))
    return DiffusionTrainer(unet, DDIMScheduler(**SCHEDULER), output_dir=run_dir, checkpoint_every=25,
                            keep_checkpoints=3, **TRAINER)


def cmd_train(args) -> None:
    trainer = build_trainer(args.run_dir)
    train_resumably(trainer, training_data(), STEPS, args.minutes)
    export_ema(trainer, args.model, SAMPLER)


def cmd_export(args) -> None:
    export_ema(trainer_at_latest_checkpoint(build_trainer, args.run_dir), args.model, SAMPLER)


def wells(rng: np.random.Generator) -> np.ndarray:
    size = FIELDS["size"]
    mask = np.zeros((1, size, size), np.float32)
    mask.reshape(-1)[rng.choice(size * size, round(WELL_FRACTION * size * size), replace=False)] = 1
    return mask


METHOD_NAMES = ("prior only (ignores the wells)", "DPS (ζ = 1)", "ΠGDM (σ_d matched)", "MMPS (3 CG steps)",
                "MMPS (3 CG steps, no safeguard)")


def methods(mask: np.ndarray) -> dict:
    """Row name -> ``guidance=`` (None: the prior alone). ΠGDM's σ_d is matched to the wells from
    the training fields (for point measurements: the pixel std, 1 for ±1 fields)."""
    guides = (None, DPS(step_size=1.0),
              PiGDM(data_std=matched_data_std(MaskOperator(mask), training_data().data[:1024])),
              MMPS(cg_iterations=3),  # safeguarded (the default)
              MMPS(cg_iterations=3, safeguard=False))
    return dict(zip(METHOD_NAMES, guides))


def scores(samples: np.ndarray, truth: np.ndarray, observation: Observation) -> dict:
    """The walkthrough's figures for one truth: over the unobserved pixels, reconstruction error and
    sign accuracy of the mean, 90%-interval coverage of the truth and error/spread ratio."""
    mean, std = samples.mean(axis=0), samples.std(axis=0, ddof=1)
    hidden = observation.operator.full_mask(truth.shape) == 0
    low, high = np.quantile(samples, [0.05, 0.95], axis=0)
    error = (mean - truth)[hidden]
    misfit = (observation.operator(ms.Tensor(mean[None].astype(np.float32))).asnumpy()
              - observation.values_array)[0][~hidden]
    return {
        "relative_error": float(np.linalg.norm(error) / np.linalg.norm(truth[hidden])),
        "sign_accuracy": float(np.mean(np.sign(mean[hidden]) == np.sign(truth[hidden]))),
        "coverage_90": float(np.mean((truth[hidden] >= low[hidden]) & (truth[hidden] <= high[hidden]))),
        "error_to_spread": float(np.sqrt(np.mean(error ** 2)) / np.sqrt(np.mean(std[hidden] ** 2))),
        "well_misfit": float(np.sqrt(np.mean(misfit ** 2)) / observation.noise_std),
    }


def cmd_evaluate(args) -> None:
    ms.set_context(mode=ms.GRAPH_MODE)
    pipe = DiffusionPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    truths = SyntheticFieldDataset(num_samples=args.fields, seed=TRUTH_SEED, **FIELDS).data
    rng = np.random.default_rng(WELL_SEED)
    rows = {}
    for index, truth in enumerate(truths):
        mask = wells(rng)
        observation = Observation.from_truth(truth[None], MaskOperator(mask), WELL_NOISE, generator=index)
        for name, guidance in methods(mask).items():
            if args.methods and name not in args.methods:
                continue
            extra = {} if guidance is None else {"observation": observation, "guidance": guidance}
            samples = pipe(batch_size=args.samples, generator=100 + index, num_inference_steps=args.steps,
                           output_type="latent", **extra).images.asnumpy()
            rows.setdefault(name, []).append(scores(samples, truth, observation))
            print(f"field {index} | {name}: {rows[name][-1]}", file=sys.stderr, flush=True)
    summary = {name: {key: float(np.mean([r[key] for r in per_field])) for key in per_field[0]}
               for name, per_field in rows.items()}
    print("| method | relative error of the mean | sign accuracy | 90% coverage of the truth | "
          "error / spread | well misfit / σ_y |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, s in summary.items():
        print(f"| {name} | {s['relative_error']:.3f} | {s['sign_accuracy']:.3f} | {s['coverage_90']:.3f} | "
              f"{s['error_to_spread']:.2f} | {s['well_misfit']:.2f} |")
    print(f"\n{args.fields} held-out fields, {args.samples} posterior samples each, {args.steps} steps, "
          f"{round(WELL_FRACTION * FIELDS['size'] ** 2)} wells with σ_y = {WELL_NOISE}.")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "per_field": rows}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, handler in (("train", cmd_train), ("export", cmd_export), ("evaluate", cmd_evaluate)):
        p = sub.add_parser(name)
        p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN)
        p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the pipeline folder to write / read")
        p.set_defaults(handler=handler)
        if name == "train":
            p.add_argument("--minutes", type=float, default=60.0)
        if name == "evaluate":
            p.add_argument("--fields", type=int, default=8, help="held-out truths")
            p.add_argument("--samples", type=int, default=32, help="posterior samples per truth and method")
            p.add_argument("--steps", type=int, default=SAMPLE_STEPS)
            p.add_argument("--json", type=Path, default=None)
            p.add_argument("--methods", nargs="+", default=None, choices=METHOD_NAMES,
                           help="only these rows, by name (default: all)")
    args = parser.parse_args()
    args.handler(args)


if __name__ == "__main__":
    main()
