"""Record diffusers' scheduler loops as golden files (needs the ``ref`` extra: torch, diffusers).

A *case* names a diffusers scheduler class, its config, how to call ``set_timesteps`` and
``step``, a sample shape and a deterministic model. :func:`record_loop` runs the loop in
diffusers and stores, per step i, the model input x_i, the model output m_i, the noise the
step drew, and x_{i+1}; the project's tests replay the same loop without torch
(``tests/scheduler_harness.py``).

The model is a fixed smooth function of the (scaled) input and the timestep, written once
for torch here and once for MindSpore in the tests:
    m(x, t) = 0.5·tanh(x) + 0.05·x·cos(0.003·t)
with, for 2C-channel outputs, a variance channel block appended: tanh(x) (``learned_range``,
a value in [-1, 1]) or 0.01 + 0.005·tanh(x) (``learned``, a positive variance).

Noise: every ``randn_tensor`` a scheduler module calls is answered from a seeded numpy
stream and recorded, so stochastic steps are replayed exactly with ``variance_noise``.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "tests" / "golden" / "schedulers"


def model_fn(x: torch.Tensor, t, kind: str = "plain") -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float32)
    if t.ndim == 1:
        t = t.reshape((-1,) + (1,) * (x.ndim - 1))
    out = 0.5 * torch.tanh(x) + 0.05 * x * torch.cos(0.003 * t)
    if kind == "learned_range":
        out = torch.cat([out, torch.tanh(x)], dim=1)
    elif kind == "learned":
        out = torch.cat([out, 0.01 + 0.005 * torch.tanh(x)], dim=1)
    return out


class NoiseTape:
    """Stands in for ``randn_tensor`` in scheduler modules: seeded numpy normals, recorded."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.drawn: List[np.ndarray] = []

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None, **_):
        value = self.rng.standard_normal(tuple(shape)).astype(np.float32)
        self.drawn.append(value)
        return torch.from_numpy(value.copy()).to(dtype or torch.float32)

    def take(self) -> List[np.ndarray]:
        drawn, self.drawn = self.drawn, []
        return drawn


def patch_randn(tape: NoiseTape, module_names: List[str]):
    originals = {}
    for name in module_names:
        module = importlib.import_module(name)
        originals[name] = module.randn_tensor
        module.randn_tensor = tape
    return originals


def restore_randn(originals):
    for name, fn in originals.items():
        importlib.import_module(name).randn_tensor = fn


def sample_for(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def record_loop(case: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Run one case in diffusers and return the arrays to store.

    case keys: ``name``, ``cls`` (diffusers class name), ``config``, ``set_timesteps``
    (kwargs), ``step_kwargs``, ``shape``, ``model`` (plain/learned/learned_range),
    ``seed``, optional ``init`` (``"sigma"``: x_T = noise·init_noise_sigma, the default) and
    ``randn_modules`` (modules whose randn_tensor to tape).
    """
    if case.get("recorder"):
        # A family whose loop is not the plain one (several noise draws or step functions per
        # step, another model) names its own recorder, "module:function", returning the same arrays.
        module_name, _, function = case["recorder"].partition(":")
        return getattr(importlib.import_module(module_name), function)(case)
    import diffusers

    cls = getattr(diffusers, case["cls"])
    sched = cls.from_config(case["config"])
    sched.set_timesteps(**case["set_timesteps"])
    tape = NoiseTape(case.get("seed", 0) + 1000)
    originals = patch_randn(tape, case.get("randn_modules", []))
    try:
        x = torch.from_numpy(sample_for(case["shape"], case.get("seed", 0))) * float(sched.init_noise_sigma)
        xs, inputs, outs, noises, x0s = [x.numpy().copy()], [], [], [], []
        timesteps = sched.timesteps.clone()
        for t in timesteps:
            model_in = sched.scale_model_input(x, t)
            m = model_fn(model_in, t, case.get("model", "plain"))
            step_kwargs = dict(case.get("step_kwargs", {}))
            if step_kwargs.pop("pass_variance_noise", False):
                noise = tape(x.shape)
                step_kwargs["variance_noise"] = noise
            out = sched.step(m, t, x, **step_kwargs, return_dict=True)
            drawn = tape.take()
            noises.append(np.stack(drawn) if drawn else np.zeros((0,) + tuple(x.shape), np.float32))
            x = out.prev_sample
            inputs.append(model_in.numpy().copy())
            outs.append(m.numpy().copy())
            xs.append(x.numpy().copy())
            x0 = getattr(out, "pred_original_sample", None)
            x0s.append(x0.numpy().copy() if x0 is not None else np.full(tuple(x.shape), np.nan, np.float32))
    finally:
        restore_randn(originals)
    max_draws = max(n.shape[0] for n in noises)
    noise_arr = np.zeros((len(noises), max_draws) + tuple(case["shape"]), np.float32)
    for i, n in enumerate(noises):
        noise_arr[i, : n.shape[0]] = n
    return {
        "timesteps": timesteps.numpy().astype(np.float64),
        "samples": np.stack(xs),
        "model_inputs": np.stack(inputs),
        "model_outputs": np.stack(outs),
        "noise": noise_arr,
        "noise_draws": np.array([n.shape[0] for n in noises], np.int64),
        "pred_original": np.stack(x0s),
        "init_noise_sigma": np.array(float(sched.init_noise_sigma)),
    }


def write_cases(family: str, cases: List[Dict[str, Any]]) -> Path:
    """Record every case and store them in ``tests/golden/schedulers/<family>.npz`` plus a
    JSON index of the cases (config and call arguments), which the tests iterate over."""
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    arrays, index = {}, []
    for case in cases:
        rec = record_loop(case)
        for key, value in rec.items():
            arrays[f"{case['name']}/{key}"] = value
        index.append({k: v for k, v in case.items() if k != "randn_modules"})
    np.savez_compressed(GOLDEN_DIR / f"{family}.npz", **arrays)
    (GOLDEN_DIR / f"{family}.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return GOLDEN_DIR / f"{family}.npz"
