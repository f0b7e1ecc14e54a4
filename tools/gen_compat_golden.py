"""Golden file for drop-in compatibility with diffusers' scheduler API: what diffusers 0.42.1 does
when a config moves from one scheduler class to another, which classes it calls compatible, and
the length of the tuple each ``step`` returns with ``return_dict=False``, and what each scheduler
does when stepped before ``set_timesteps`` (raises, or walks its training schedule: then the first
steps and the last one, with the noise they draw).

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
OUR_PIPELINES = ["DDIMPipeline", "DDPMPipeline", "DPMSolverPipeline", "ScoreSdeVePipeline", "ConsistencyModelPipeline"]
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


# Schedulers stepped before set_timesteps, with options that change their training schedule.
BEFORE_SET_TIMESTEPS = {
    "DDPMScheduler": {}, "DDPMScheduler-fixed_large": {"variance_type": "fixed_large"},
    "DDIMScheduler": {}, "DPMSolverMultistepScheduler": {}, "DPMSolverMultistepInverseScheduler": {},
    "EulerDiscreteScheduler": {},
    "EulerDiscreteScheduler-continuous_v": {"prediction_type": "v_prediction", "timestep_type": "continuous"},
    "CMStochasticIterativeScheduler": {},
}


def before_set_timesteps() -> dict:
    """Per case: ``{"raises": True}``, or the training timesteps it starts from and a short walk
    (steps 0, 1, 2 and then the last one) from a fixed sample with a fixed model output."""
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 1, 4, 4, generator=gen)
    model_output = torch.randn(2, 1, 4, 4, generator=gen)
    cases = {}
    for key, options in BEFORE_SET_TIMESTEPS.items():
        sched = getattr(diffusers, key.split("-")[0])(**options)
        case = {"options": options, "timesteps": [float(t) for t in sched.timesteps]}
        try:
            sched.step(model_output, sched.timesteps[0], sample)
        except ValueError:
            cases[key] = dict(case, raises=True)
            continue
        sched = getattr(diffusers, key.split("-")[0])(**options)
        x, walk = sample, []
        for index in (0, 1, 2, len(sched.timesteps) - 1):
            if hasattr(sched, "_step_index") and index > 2:
                sched._step_index = index
            t = sched.timesteps[index]
            scaled = sched.scale_model_input(x, t)
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(index))
            x = sched.step(model_output, t, x, generator=torch.Generator().manual_seed(index)).prev_sample
            walk.append({"index": index, "scaled": scaled.flatten().tolist(), "noise": noise.flatten().tolist(),
                         "prev_sample": x.flatten().tolist()})
        cases[key] = dict(case, raises=False, sample=sample.flatten().tolist(),
                          model_output=model_output.flatten().tolist(), walk=walk)
    return cases


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
            "step_tuple_lengths": step_tuple_lengths(), "before_set_timesteps": before_set_timesteps(),
            # which of this package's pipeline class names diffusers has (a folder must name one of them)
            "pipelines": {name: hasattr(diffusers, name) for name in OUR_PIPELINES}}
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
