"""Ready-made pieces around the trainer: the small field UNet, the data spec parser and sampling
for evaluation (the command line's ``train`` is :func:`mindscience_diffuser.cli.cmd_train`)."""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple, Union

import numpy as np

from .datasets import FieldDataset, SyntheticFieldDataset, as_dataset


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


def dataset_from_spec(spec: Union[str, os.PathLike], num_samples: int = 2048, size: int = 32,
                      seed: int = 0, vary: Optional[Dict[str, Tuple[float, float]]] = None) -> FieldDataset:
    """``"synthetic:grf"`` / ``"synthetic:darcy"`` (generated from ``seed``; ``vary`` draws the
    named generator parameters per field and returns them as the condition, see
    :class:`SyntheticFieldDataset`), or a .npy/.npz file / image folder / image file read with
    :func:`load_fields` (an .npz with ``fields`` and ``condition``/``labels`` arrays is paired data)."""
    text = str(spec)
    if text.startswith("synthetic:"):
        return SyntheticFieldDataset(text.split(":", 1)[1], num_samples=num_samples, size=size, seed=seed, vary=vary)
    if vary:
        raise ValueError(f"vary draws the parameters of synthetic data, but the data are {text}")
    return as_dataset(text)


def generate_samples(unet, scheduler, num_samples: int, num_inference_steps: int = 20, seed: int = 0,
                     batch_size: int = 64, data_normalization=None) -> np.ndarray:
    """``num_samples`` fields (N, C, H, W), unclipped, in the data's units (``output_type="field"``):
    ``data_normalization`` — the statistics the model was trained in, ``trainer.data_normalization``
    or ``pipe.data_normalization`` — maps them back; ``None`` leaves them in model space.

    ``DDPMPipeline`` drives the scheduler as given, with that scheduler's own sampling loop
    (DDIM deterministic, eta = 0; DPM-Solver; DDPM; Euler). Batches draw their starting noise in
    turn from one generator seeded with ``seed``.
    """
    from ..pipelines import DDPMPipeline

    pipe = DDPMPipeline(unet, scheduler)
    pipe.data_normalization = data_normalization
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(seed)
    chunks = []
    done = 0
    while done < num_samples:
        n = min(batch_size, num_samples - done)
        fields = pipe(batch_size=n, num_inference_steps=num_inference_steps, generator=rng,
                      output_type="field").images
        chunks.append(fields.asnumpy())
        done += n
    return np.concatenate(chunks)
