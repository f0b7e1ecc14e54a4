"""Train, export and evaluate the shipped default model (``mindscience_diffuser/default_model``).

    python tools/train_default_model.py train [--minutes 25] [--run-dir DIR]   # resumable
    python tools/train_default_model.py export [--run-dir DIR]                  # newest checkpoint's EMA -> package
    python tools/train_default_model.py evaluate [--samples 512] [--steps 25]   # spectrum / histogram figures + plot

Everything is seeded: the data (GRF seeds 0 train / 1 held out), the UNet init (ms.set_seed(0)),
the batch order and every noise/timestep draw (trainer seed 0). ``train`` stops after
``--minutes`` of wall time or ``STEPS`` steps and resumes from the newest checkpoint in the run
directory when started again, so the run is reproducible piecewise too.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from recipe_steps import export_ema, train_resumably, trainer_at_latest_checkpoint  # noqa: E402

from mindscience_diffuser import DDIMScheduler, DiffusionPipeline  # noqa: E402
from mindscience_diffuser.models import UNet2DModel  # noqa: E402
from mindscience_diffuser.training import (  # noqa: E402
    DiffusionTrainer,
    SyntheticFieldDataset,
    evaluate,
    generate_samples,
    plot_spectra,
    small_unet_config,
)

PACKAGE_MODEL = ROOT / "mindscience_diffuser" / "default_model"
DOCS = ROOT / "docs"

# The data: 32×32 periodic Gaussian random fields, P(k) ∝ k^-2.5, std 0.3 (99.9% inside [-1, 1]).
FIELDS = dict(kind="grf", size=32, spectrum=2.5, std=0.3)
NUM_TRAIN, TRAIN_SEED = 4096, 0
NUM_HELDOUT, HELDOUT_SEED = 512, 1
TRUE_SET_SEED = 2  # another set of true fields, for the floor of each figure
# The noise schedule the model is trained for ...
SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                 clip_sample=False)
# ... and the sampler it ships with: DPM-Solver++(2M) with steps uniform in log-SNR. Deterministic
# DDIM with 20-25 steps loses a third of the small-scale power even with the exact (Wiener)
# denoiser of these fields: tools/sampler_floor.py measures each sampler's floor that way.
SAMPLER = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
               algorithm_type="dpmsolver++", solver_order=2, use_lu_lambdas=True)
SAMPLE_STEPS = 25
# Trainer hyper-parameters: warm-up, constant 1e-3, then a cosine decay to 0 over the last
# LR_DECAY_STEPS (warmup-stable-decay: the constant phase can be resumed and extended freely).
STEPS = 4000
LR_DECAY_STEPS = 2000
TRAINER = dict(learning_rate=1e-3, batch_size=16, loss="mse", weighting="min_snr", min_snr_gamma=5.0,
               ema_decay=0.995, warmup_steps=50, max_grad_norm=1.0, seed=0,
               lr_schedule="cosine", num_training_steps=STEPS, lr_decay_steps=LR_DECAY_STEPS)
CHECKPOINT_EVERY = 25
INIT_SEED = 0


def heldout_fields() -> np.ndarray:
    return SyntheticFieldDataset(num_samples=NUM_HELDOUT, seed=HELDOUT_SEED, **FIELDS).data


def build_trainer(run_dir: Path) -> DiffusionTrainer:
    ms.set_seed(INIT_SEED)
    unet = UNet2DModel(**small_unet_config(in_channels=1, sample_size=FIELDS["size"]))
    scheduler = DDIMScheduler(**SCHEDULER)
    return DiffusionTrainer(unet, scheduler, output_dir=run_dir, checkpoint_every=CHECKPOINT_EVERY, keep_checkpoints=3,
                            **TRAINER)


def cmd_train(args) -> None:
    data = SyntheticFieldDataset(num_samples=NUM_TRAIN, seed=TRAIN_SEED, **FIELDS)
    trainer = build_trainer(args.run_dir)
    train_resumably(trainer, data, STEPS, args.minutes)
    cmd_export(args, trainer)


def cmd_export(args, trainer: DiffusionTrainer = None) -> None:
    export_ema(trainer or trainer_at_latest_checkpoint(build_trainer, args.run_dir), PACKAGE_MODEL, SAMPLER)


def cmd_evaluate(args) -> None:
    if args.write and args.sampler != "shipped":
        raise SystemExit("--write records the shipped sampler's figures; drop --sampler or --write")
    ms.set_context(mode=ms.GRAPH_MODE)
    pipe = DiffusionPipeline.from_pretrained(args.model)
    unet, scheduler = pipe.unet, pipe.scheduler
    if args.sampler == "ddim":
        # The sampler the model shipped with before: deterministic DDIM on the training schedule.
        scheduler = DDIMScheduler(**SCHEDULER)
    # Warm-up call: compiles the sampling loop once, so the timing below is sampling only.
    generate_samples(unet, scheduler, args.batch, num_inference_steps=args.steps, seed=123, batch_size=args.batch)
    begun = time.time()
    generated = generate_samples(unet, scheduler, args.samples, num_inference_steps=args.steps, seed=args.seed,
                                 batch_size=args.batch, data_normalization=pipe.data_normalization)
    seconds = time.time() - begun
    # Wall time of one 16-field batch (after its own compile): the "sample in seconds" figure.
    generate_samples(unet, scheduler, 16, num_inference_steps=args.steps, seed=7, batch_size=16)
    small = time.time()
    generate_samples(unet, scheduler, 16, num_inference_steps=args.steps, seed=8, batch_size=16)
    seconds_16 = time.time() - small
    result = evaluate(generated, heldout_fields())
    # What two finite sets of *true* fields score against each other: the best reachable figure.
    true_fields = SyntheticFieldDataset(num_samples=args.samples, seed=TRUE_SET_SEED, **FIELDS).data
    floor = evaluate(true_fields, heldout_fields())
    figures = {k: v for k, v in result.items() if not isinstance(v, list)}
    figures.update({f"true_set_{k}": round(v, 5)
                    for k, v in floor.items()
                    if k in ("spectrum_rel_error", "spectrum_max_rel_error", "wasserstein1", "histogram_l1")})
    figures.update(sampler=type(scheduler).__name__, num_generated=args.samples, num_inference_steps=args.steps,
                   sampling_seconds=round(seconds, 2),
                   seconds_per_batch=round(seconds / -(-args.samples // args.batch), 2), batch_size=args.batch,
                   seconds_for_16_fields=round(seconds_16, 2))
    print(json.dumps(figures, indent=2), flush=True)
    if args.write:
        DOCS.mkdir(exist_ok=True)
        result.update({k: v for k, v in figures.items() if k not in result})
        (DOCS / "workflow_default_model_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        plot_spectra(result, DOCS / "workflow_spectrum.png", title="Default model: GRF P(k) ∝ k^-2.5, 32×32")
        print("wrote docs/workflow_default_model_metrics.json and docs/workflow_spectrum.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train")
    p.add_argument("--minutes", type=float, default=25.0)
    p.add_argument("--run-dir", type=Path, default=Path("/tmp/msd_default_model_run"))
    p.set_defaults(handler=cmd_train)
    p = sub.add_parser("export")
    p.add_argument("--run-dir", type=Path, default=Path("/tmp/msd_default_model_run"))
    p.set_defaults(handler=cmd_export)
    p = sub.add_parser("evaluate")
    p.add_argument("--model", default=str(PACKAGE_MODEL))
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--steps", type=int, default=SAMPLE_STEPS)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", choices=["shipped", "ddim"], default="shipped",
                   help="the folder's own sampler, or deterministic DDIM on the training schedule (for comparison)")
    p.add_argument("--write", action="store_true", help="write the metrics JSON and the spectrum plot into docs/")
    p.set_defaults(handler=cmd_evaluate)
    args = parser.parse_args()
    args.handler(args)


if __name__ == "__main__":
    main()
