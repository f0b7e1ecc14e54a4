"""Ready-made pieces around the trainer: the small field UNet, the data spec parser, sampling
for evaluation, and ``cli_train`` (the command line's ``train``)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np

from .datasets import IMAGE_SUFFIXES, FieldDataset, SyntheticFieldDataset, load_fields


def small_unet_config(in_channels: int = 1, sample_size: int = 32) -> Dict:
    """A 3-level UNet2DModel (32/64/64 channels, one ResNet per level, attention at the coarsest
    level and in the mid block; ~1.1 M parameters, 4.5 MB in float32): fast enough to train on
    a CPU and to sample in seconds, enough for 32×32 scientific fields."""
    return dict(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=None,
    )


def dataset_from_spec(spec: Union[str, os.PathLike], num_samples: int = 2048, size: int = 32, seed: int = 0) -> FieldDataset:
    """``"synthetic:grf"`` / ``"synthetic:darcy"`` (generated from ``seed``), or a .npy/.npz
    file / image folder / image file read with :func:`load_fields`."""
    text = str(spec)
    if text.startswith("synthetic:"):
        return SyntheticFieldDataset(text.split(":", 1)[1], num_samples=num_samples, size=size, seed=seed)
    return FieldDataset(load_fields(spec), name=text)


def generate_samples(unet, scheduler, num_samples: int, num_inference_steps: int = 20, seed: int = 0,
                     batch_size: int = 64) -> np.ndarray:
    """``num_samples`` fields (N, C, H, W) in model space, unclipped (``output_type="latent"``).

    ``DDPMPipeline`` drives the scheduler as given, with that scheduler's own sampling loop
    (DDIM deterministic, eta = 0; DPM-Solver; DDPM; Euler). Batches draw their starting noise in
    turn from one generator seeded with ``seed``.
    """
    from ..pipelines import DDPMPipeline

    pipe = DDPMPipeline(unet, scheduler)
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(seed)
    chunks = []
    done = 0
    while done < num_samples:
        n = min(batch_size, num_samples - done)
        fields = pipe(batch_size=n, num_inference_steps=num_inference_steps, generator=rng, output_type="latent").images
        chunks.append(fields.asnumpy())
        done += n
    return np.concatenate(chunks)


def cli_train(opts) -> int:
    """The command line's ``train``: builds the data, a UNet (``opts.model_config`` or
    :func:`small_unet_config`), a DDIM scheduler with ``opts.prediction_type`` (x0 clipping
    only for image data) and a
    :class:`DiffusionTrainer`, trains ``opts.steps`` steps with checkpoints under ``opts.output``
    (resuming from the newest one with ``opts.resume``) and exports the EMA model as a pipeline
    folder ``opts.output/final``. Returns the exit status."""
    from ..models import UNet2DModel
    from ..schedulers import DDIMScheduler
    from .trainer import DiffusionTrainer

    data = dataset_from_spec(opts.data, num_samples=opts.num_samples, size=opts.resolution, seed=opts.seed)
    if opts.model_config:
        path = Path(opts.model_config)
        if not path.is_file():
            raise OSError(f"model_config not found: {path}")
        config = json.loads(path.read_text(encoding="utf-8"))
    else:
        config = small_unet_config(in_channels=data.sample_shape[0], sample_size=data.sample_shape[1])
    import mindspore as ms

    ms.set_seed(opts.seed)
    unet = UNet2DModel.from_config(config)
    # Fields are not bounded images: DDIM's default x0 clipping to [-1, 1] would cut their tails.
    spec = Path(str(opts.data))
    images = spec.is_dir() or spec.suffix.lower() in IMAGE_SUFFIXES
    scheduler = DDIMScheduler(prediction_type=opts.prediction_type, clip_sample=images)
    trainer = DiffusionTrainer(
        unet, scheduler,
        learning_rate=opts.learning_rate, batch_size=opts.batch_size, loss=opts.loss,
        weighting=None if opts.weighting in (None, "none") else opts.weighting,
        ema_decay=opts.ema_decay, seed=opts.seed, output_dir=opts.output, checkpoint_every=opts.checkpoint_every,
    )
    trainer.train(data, opts.steps, resume_from="latest" if opts.resume else None,
                  log_every=None if getattr(opts, "quiet", False) else 10)
    final = trainer.save_pretrained(Path(opts.output) / "final")
    if not getattr(opts, "quiet", False):
        print(f"trained {trainer.step} steps; pipeline written to {final}")
    return 0
