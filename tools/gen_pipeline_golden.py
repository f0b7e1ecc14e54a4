"""Generate the pipeline golden files with torch + diffusers 0.42.1 (the reference stack).

For each case: build diffusers' pipeline (``DDIMPipeline`` / ``DDPMPipeline``) around a small
``UNet2DModel`` whose weights are overwritten with seeded values (``seeded_weights`` of
``tools/gen_unet_golden.py``: numpy only), save it with diffusers' ``save_pretrained`` under
``tests/golden/pipelines/<pipeline>/`` and run diffusers' own ``__call__``.

diffusers draws its noise with torch's generator, which the torch-free tests cannot reproduce.
So every ``randn_tensor`` call in the pipeline and scheduler modules is *taped*: replaced by
draws from ``numpy.random.default_rng(seed)``, in call order, each ``standard_normal(shape)``
cast to float32. That is exactly how mindscience_diffuser's pipelines consume an int seed
(latents first, then one slice per step), so the test calls ``pipe(generator=seed)`` and must
reproduce diffusers' images; the starting latents are stored too, for the ``latents=`` path.

Afterwards (unless ``--no-roundtrip``) each stored pipeline is loaded with mindscience_diffuser,
saved with its ``save_pretrained``, loaded back with diffusers' ``from_pretrained`` and run
again; the difference to the golden images is stored in ``roundtrip.json`` (the reverse
direction: diffusers reading our files), which the tests check along with the file layout.

Run from the repository root:  python tools/gen_pipeline_golden.py
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "pipelines"

UNET_RGB = dict(
    sample_size=16, in_channels=3, out_channels=3, block_out_channels=[8, 16],
    down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
    layers_per_block=1, norm_num_groups=4, attention_head_dim=4,
)
# A one-channel scientific field (non-square, 1 in/out channel).
UNET_FIELD = dict(UNET_RGB, sample_size=[8, 16], in_channels=1, out_channels=1)

PIPELINES = {
    "ddim": dict(
        pipeline="DDIMPipeline", unet=UNET_RGB, weight_seed=11,
        scheduler=("DDIMScheduler",
                   dict(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, set_alpha_to_one=True)),
    ),
    "ddpm": dict(
        pipeline="DDPMPipeline", unet=UNET_FIELD, weight_seed=12,
        scheduler=("DDPMScheduler",
                   dict(num_train_timesteps=1000, beta_schedule="linear", variance_type="fixed_small",
                        clip_sample=True)),
    ),
}

# name -> (pipeline folder, __call__ kwargs, seed)
RUNS = {
    "ddim_eta0_b2_s10": ("ddim", dict(batch_size=2, num_inference_steps=10, eta=0.0), 5),
    "ddim_eta05_clipped_b1_s8": ("ddim",
                                 dict(batch_size=1, num_inference_steps=8, eta=0.5, use_clipped_model_output=True), 6),
    "ddpm_b2_s12": ("ddpm", dict(batch_size=2, num_inference_steps=12), 7),
}


def _unet_generator():
    spec = importlib.util.spec_from_file_location("gen_unet_golden", ROOT / "tools" / "gen_unet_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class NumpyTape:
    """Stands in for diffusers' ``randn_tensor``: sequential float32 draws from one numpy stream."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.draws = []

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        import torch

        value = self.rng.standard_normal(tuple(shape)).astype(np.float32)
        self.draws.append(value)
        return torch.from_numpy(value).to(dtype or torch.float32)


def taped(seed: int):
    """Patch ``randn_tensor`` in every module that draws noise for these pipelines."""
    import diffusers.pipelines.ddim.pipeline_ddim as p_ddim
    import diffusers.pipelines.ddpm.pipeline_ddpm as p_ddpm
    import diffusers.schedulers.scheduling_ddim as s_ddim
    import diffusers.schedulers.scheduling_ddpm as s_ddpm

    tape = NumpyTape(seed)
    modules = (p_ddim, p_ddpm, s_ddim, s_ddpm)
    saved = [m.randn_tensor for m in modules]
    for m in modules:
        m.randn_tensor = tape

    def restore():
        for m, f in zip(modules, saved):
            m.randn_tensor = f

    return tape, restore


def build_pipeline(name: str, spec: dict):
    import diffusers
    import torch

    unet = diffusers.UNet2DModel(**spec["unet"]).eval()
    weights = _unet_generator().seeded_weights({k: v.shape for k, v in unet.state_dict().items()},
                                               seed=spec["weight_seed"])
    unet.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    sched_name, sched_kwargs = spec["scheduler"]
    scheduler = getattr(diffusers, sched_name)(**sched_kwargs)
    pipe = getattr(diffusers, spec["pipeline"])(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    out_dir = GOLDEN / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    return pipe


def run_taped(pipe, kwargs: dict, seed: int):
    import torch

    tape, restore = taped(seed)
    try:
        with torch.no_grad():
            images = pipe(output_type="np", **kwargs).images
    finally:
        restore()
    return np.asarray(images, np.float32), tape.draws[0]


def roundtrip(folder: str, runs: dict) -> dict:
    """Our from_pretrained -> our save_pretrained -> diffusers' from_pretrained -> run: max|diff| per run."""
    import diffusers

    sys.path.insert(0, str(ROOT))
    from mindscience_diffuser.pipelines import DiffusionPipeline

    ours = DiffusionPipeline.from_pretrained(GOLDEN / folder)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        pipe = getattr(diffusers, PIPELINES[folder]["pipeline"]).from_pretrained(tmp)
        pipe.set_progress_bar_config(disable=True)
        for run, (f, kwargs, seed) in runs.items():
            if f != folder:
                continue
            images, _ = run_taped(pipe, kwargs, seed)
            ref = np.load(GOLDEN / "io.npz")[f"{run}__images"]
            result[run] = float(np.abs(images - ref).max())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-roundtrip", action="store_true")
    args = parser.parse_args()
    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    torch.set_num_threads(2)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    pipes = {name: build_pipeline(name, spec) for name, spec in PIPELINES.items()}
    io = {}
    for run, (folder, kwargs, seed) in RUNS.items():
        images, latents = run_taped(pipes[folder], kwargs, seed)
        io[f"{run}__images"] = images
        io[f"{run}__latents"] = latents
        inside = float(np.mean((images > 0.01) & (images < 0.99)))
        print(f"{run}: images {images.shape}, range [{images.min():.3f}, {images.max():.3f}], {inside:.0%} of pixels "
              "unsaturated")
    np.savez_compressed(GOLDEN / "io.npz", **io)
    (GOLDEN / "runs.json").write_text(json.dumps({k: {"pipeline": f, "kwargs": kw, "seed": s}
                                                  for k, (f, kw, s) in RUNS.items()}, indent=2, sort_keys=True) + "\n")
    if not args.no_roundtrip:
        errors = {}
        for folder in PIPELINES:
            errors.update(roundtrip(folder, RUNS))
        print("diffusers running our save_pretrained output, max|diff| to golden:", errors)
        (GOLDEN / "roundtrip.json").write_text(json.dumps(errors, indent=2, sort_keys=True) + "\n")
    total = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file())
    print(f"tests/golden/pipelines: {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
