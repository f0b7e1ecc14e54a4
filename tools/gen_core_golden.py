"""Golden files for the scheduler core: configs in both directions, add_noise/get_velocity,
and timestep tables over the spacing grid (needs the ``ref`` extra).

    python tools/gen_core_golden.py

- ``tests/golden/configs/diffusers/<Class>/scheduler_config.json``: written by diffusers;
- ``tests/golden/configs/ours/<Class>/scheduler_config.json``: written by this project, then
  loaded by diffusers, whose view of it is stored as ``loaded_by_diffusers.json`` beside it;
- ``tests/golden/core.npz``: diffusers' add_noise / get_velocity and timesteps;
- ``tests/golden/diffusers_options.json``: every constructor option of the classes this project mirrors.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import diffusers
import numpy as np
import torch

import mindscience_diffuser as msd

ROOT = Path(__file__).resolve().parents[1] / "tests" / "golden"

CONFIGS = {
    "DDIMScheduler": {"beta_schedule": "scaled_linear", "prediction_type": "v_prediction",
                      "timestep_spacing": "trailing", "set_alpha_to_one": False, "steps_offset": 1,
                      "clip_sample": False},
    "DDPMScheduler": {"variance_type": "learned_range", "beta_schedule": "squaredcos_cap_v2", "thresholding": True,
                      "sample_max_value": 2.5, "num_train_timesteps": 500},
}


def write_configs():
    for name, options in CONFIGS.items():
        theirs = ROOT / "configs" / "diffusers" / name
        ours = ROOT / "configs" / "ours" / name
        for folder in (theirs, ours):
            shutil.rmtree(folder, ignore_errors=True)
        getattr(diffusers, name)(**options).save_config(theirs)
        getattr(msd, name)(**options).save_config(ours)
        loaded = getattr(diffusers, name).from_pretrained(ours)
        view = {k: v for k, v in dict(loaded.config).items() if not k.startswith("_")}
        (ours / "loaded_by_diffusers.json").write_text(json.dumps(view, indent=2, sort_keys=True) + "\n")


def core_arrays():
    arrays = {}
    rng = np.random.default_rng(7)
    x0 = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    noise = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    t = np.array([0, 417, 999])
    arrays["x0"], arrays["noise"], arrays["t"] = x0, noise, t
    for name, schedule in (("DDIMScheduler", "squaredcos_cap_v2"), ("DDPMScheduler", "linear")):
        sched = getattr(diffusers, name)(beta_schedule=schedule)
        arrays[f"{name}/add_noise"] = sched.add_noise(torch.from_numpy(x0), torch.from_numpy(noise),
                                                      torch.from_numpy(t)).numpy()
        arrays[f"{name}/get_velocity"] = sched.get_velocity(torch.from_numpy(x0), torch.from_numpy(noise),
                                                            torch.from_numpy(t)).numpy()
    for name in ("DDIMScheduler", "DDPMScheduler"):
        for spacing in ("leading", "linspace", "trailing"):
            for n in (1, 7, 50, 333, 1000):
                for offset in (0, 1):
                    sched = getattr(diffusers, name)(timestep_spacing=spacing, steps_offset=offset)
                    sched.set_timesteps(n)
                    arrays[f"{name}/timesteps/{spacing}/{n}/{offset}"] = sched.timesteps.numpy()
    return arrays


SCHEDULERS = [
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverMultistepInverseScheduler",
    "EulerDiscreteScheduler",
    "CMStochasticIterativeScheduler",
    "ScoreSdeVeScheduler",
]


def write_option_lists():
    """Every constructor option of diffusers' schedulers and UNet2DModel, with its default."""
    import inspect

    options = {}
    for name in SCHEDULERS + ["UNet2DModel"]:
        params = inspect.signature(getattr(diffusers, name).__init__).parameters
        options[name] = {k: (repr(p.default) if p.default is not inspect.Parameter.empty else None)
                         for k, p in params.items() if k not in ("self", "kwargs")}
    (ROOT / "diffusers_options.json").write_text(json.dumps(options, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_option_lists()
    write_configs()
    np.savez_compressed(ROOT / "core.npz", **core_arrays())
    print("wrote", ROOT / "configs", ROOT / "core.npz")
