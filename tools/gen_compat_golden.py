"""Golden file for drop-in compatibility with diffusers' scheduler API: what diffusers 0.42.1 does
when a config moves from one scheduler class to another, which classes it calls compatible, and
the length of the tuple each ``step`` returns with ``return_dict=False``.

Writes ``tests/golden/compat.json``. Needs the reference stack (``pip install -e ".[ref]"``):

    python tools/gen_compat_golden.py
"""
from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "compat.json"
OURS = [
    "DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "DPMSolverMultistepInverseScheduler",
    "EulerDiscreteScheduler", "CMStochasticIterativeScheduler", "ScoreSdeVeScheduler",
]
# Each chain starts from a class built with the given options and moves its config on with from_config.
CHAINS = {
    "dpm-inverse-dpm": (
        ["DPMSolverMultistepScheduler", "DPMSolverMultistepInverseScheduler", "DPMSolverMultistepScheduler"],
        dict(final_sigmas_type="sigma_min", lower_order_final=False, solver_order=3, use_lu_lambdas=True),
    ),
    "dpm-ddim-dpm": (["DPMSolverMultistepScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler"],
                     dict(final_sigmas_type="sigma_min", algorithm_type="dpmsolver", beta_schedule="scaled_linear")),
    "euler-ddpm-euler": (["EulerDiscreteScheduler", "DDPMScheduler", "EulerDiscreteScheduler"],
                         dict(use_karras_sigmas=True, interpolation_type="log_linear",
                              prediction_type="v_prediction")),
    "ddpm-dpm-ddpm": (["DDPMScheduler", "DPMSolverMultistepScheduler", "DDPMScheduler"],
                      dict(variance_type="fixed_large", clip_sample=False, beta_schedule="squaredcos_cap_v2")),
    "ddim-euler-dpm": (["DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler"],
                       # this package's DDIM defaults to the cosine schedule (MindScience's default): name the schedule
                       dict(set_alpha_to_one=False, steps_offset=1, timestep_spacing="trailing",
                            beta_schedule="linear")),
}


def public(config) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")}


def step_tuple_lengths() -> dict:
    x = torch.ones(1, 1, 4, 4)
    lengths = {}
    for name in OURS:
        sched = getattr(diffusers, name)()
        if name == "ScoreSdeVeScheduler":
            sched.set_timesteps(3)
            sched.set_sigmas(3)
            predicted = sched.step_pred(x, sched.timesteps[0], x, return_dict=False)
            lengths["ScoreSdeVeScheduler.step_pred"] = len(predicted)
            lengths["ScoreSdeVeScheduler.step_correct"] = len(sched.step_correct(x, x, return_dict=False))
            continue
        sched.set_timesteps(3)
        t = sched.timesteps[0]
        lengths[name] = len(sched.step(0.1 * x, t, x, return_dict=False))
    return lengths


def main() -> None:
    torch.manual_seed(0)
    chains = {}
    for key, (names, options) in CHAINS.items():
        sched = getattr(diffusers, names[0])(**options)
        for name in names[1:]:
            sched = getattr(diffusers, name).from_config(sched.config)
        chains[key] = {"classes": names, "options": options, "config": public(sched.config)}
    compatibles = {
        name: sorted(c.__name__ for c in getattr(diffusers, name)().compatibles if c.__name__ in OURS) for name in OURS
    }
    data = {"diffusers_version": diffusers.__version__, "chains": chains, "compatibles": compatibles,
            "step_tuple_lengths": step_tuple_lengths()}
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
