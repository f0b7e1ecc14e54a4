"""The steps every shipped-model recipe (``tools/train_*_model.py``) shares: train resumably for a
time budget, then export the EMA weights with the sampler the model ships with."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from mindscience_diffuser import DPMSolverMultistepScheduler
from mindscience_diffuser.training import DiffusionTrainer, latest_checkpoint


def train_resumably(trainer: DiffusionTrainer, data, steps: int, minutes: float) -> None:
    """Train towards ``steps`` from the newest checkpoint (if any), stopping after ``minutes``."""
    begun = time.time()
    trainer.train(data, steps, resume_from="latest", log_every=10, max_seconds=minutes * 60)
    print(f"stopped at step {trainer.step} after {(time.time() - begun) / 60:.1f} min", flush=True)


def trainer_at_latest_checkpoint(build_trainer: Callable[[Path], DiffusionTrainer], run_dir: Path):
    """The recipe's trainer with the newest checkpoint of ``run_dir`` loaded."""
    trainer = build_trainer(run_dir)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise SystemExit(f"no checkpoint in {run_dir}")
    trainer.load_checkpoint(checkpoint)
    return trainer


def export_ema(trainer: DiffusionTrainer, package_model: Path, sampler: dict) -> None:
    """Write the EMA weights into the package's model folder, sampled with DPM-Solver(``sampler``)."""
    trainer.save_pretrained(package_model, use_ema=True, pipeline_class="DPMSolverPipeline",
                            scheduler=DPMSolverMultistepScheduler(**sampler))
    print(f"exported step {trainer.step} (EMA weights) to {package_model}", flush=True)
