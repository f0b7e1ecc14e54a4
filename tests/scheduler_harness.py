"""Replay diffusers' recorded scheduler loops (``tests/golden/schedulers``) without torch.

``tools/golden_harness.py`` wrote, per case and step i: the model input x_i, the model
output m_i, the noise the step drew, x_{i+1} and x̂0. Two replays check a scheduler:

- teacher-forced (:func:`replay`, ``forced=True``): every step gets diffusers' own x_i and
  m_i, so each step is checked on its own (float32: 1e-5 relative);
- free-running (``forced=False``): the scheduler runs its own loop with the same model,
  written here in MindSpore, so errors compound over the loop (float32: 2e-4 relative;
  float16: 3e-2 and finite).

:func:`golden_tests` builds the four parametrised tests a family module runs on these replays.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops

import mindscience_diffuser as msd

GOLDEN = Path(__file__).resolve().parent / "golden" / "schedulers"
STEP_TOL, LOOP_TOL, HALF_TOL = 1e-5, 2e-4, 3e-2


def model_fn(x: Tensor, t, kind: str = "plain") -> Tensor:
    """The recorded model, m(x, t) = 0.5·tanh(x) + 0.05·x·cos(0.003·t) (see tools/golden_harness.py)."""
    t = Tensor(np.asarray(t, np.float32)) if not isinstance(t, Tensor) else t.astype(ms.float32)
    if t.ndim == 1:
        t = t.reshape((-1,) + (1,) * (x.ndim - 1))
    out = 0.5 * ops.tanh(x) + 0.05 * x * ops.cos(0.003 * t).astype(x.dtype)
    if kind == "learned_range":
        out = ops.concat([out, ops.tanh(x)], axis=1)
    elif kind == "learned":
        out = ops.concat([out, 0.01 + 0.005 * ops.tanh(x)], axis=1)
    return out


@lru_cache(maxsize=None)
def load_family(family: str):
    index = json.loads((GOLDEN / f"{family}.json").read_text())
    with np.load(GOLDEN / f"{family}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return index, arrays


def cases(family: str) -> List[Dict[str, Any]]:
    return load_family(family)[0]


def case_ids(family: str) -> List[str]:
    return [c["name"] for c in cases(family)]


def record(family: str, name: str) -> Dict[str, np.ndarray]:
    _, arrays = load_family(family)
    prefix = name + "/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def find_case(family: str, name: str) -> Dict[str, Any]:
    return next(c for c in cases(family) if c["name"] == name)


def build(case: Dict[str, Any], compute_dtype=ms.float32):
    cls = getattr(msd, case["cls"])
    sched = cls.from_config(case["config"], compute_dtype=compute_dtype)
    sched.set_timesteps(**case["set_timesteps"])
    return sched


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - b| / max |b| (a loop-level scale, robust to elements that cross zero)."""
    return float(np.max(np.abs(actual.astype(np.float64) - expected)) / max(np.max(np.abs(expected)), 1e-6))


def default_step(sched, model_output, sample, timestep, noise: Optional[Tensor], step_kwargs):
    kwargs = dict(step_kwargs)
    kwargs.pop("pass_variance_noise", None)
    if noise is not None:
        kwargs["variance_noise"] = noise
    return sched.step(model_output, sample, timestep, **kwargs)


def host_timestep(value):
    value = value.item() if hasattr(value, "item") else value
    return int(value) if float(value).is_integer() and isinstance(value, (int, np.integer)) else value


def replay(
    family: str,
    name: str,
    forced: bool,
    compute_dtype=ms.float32,
    step_fn: Callable = default_step,
    sched=None,
) -> List[float]:
    """Run one recorded case; return the per-step relative errors of x_{i+1} (float32 view)."""
    case, rec = find_case(family, name), record(family, name)
    sched = sched if sched is not None else build(case, compute_dtype)
    ours = np.asarray(sched.timesteps, dtype=np.float64)
    np.testing.assert_allclose(ours, rec["timesteps"], rtol=1e-6, atol=1e-6, err_msg=f"{name}: timesteps differ")
    kind = case.get("model", "plain")
    x = Tensor(rec["samples"][0], compute_dtype)
    errors = []
    for i, t in enumerate(sched.timesteps):
        t = t.item() if hasattr(t, "item") else t
        if forced:
            x = Tensor(rec["samples"][i], compute_dtype)
            m = Tensor(rec["model_outputs"][i], compute_dtype)
        else:
            m = model_fn(sched.scale_model_input(x, t), t, kind).astype(compute_dtype)
        draws = int(rec["noise_draws"][i])
        noise = Tensor(rec["noise"][i, 0], compute_dtype) if draws == 1 else None
        assert draws <= 1, f"{name}: step {i} drew {draws} noises; give replay a step_fn that takes them"
        x = step_fn(sched, m, x, t, noise, case.get("step_kwargs", {}))
        out = x.astype(ms.float32).asnumpy()
        assert np.all(np.isfinite(out)), f"{name}: non-finite sample after step {i} ({compute_dtype})"
        errors.append(rel_err(out, rec["samples"][i + 1]))
    return errors


class GoldenTests(NamedTuple):
    """The golden tests of one family; a field is None where the family gave no case list."""

    each_step: Optional[Callable]
    full_loop: Optional[Callable]
    float16: Optional[Callable]
    graph_mode: Optional[Callable]


def golden_tests(
    family: str,
    *,
    forced: Optional[Sequence[str]] = None,
    loops: Optional[Sequence[str]] = None,
    half: Optional[Sequence[str]] = None,
    graph: Optional[Sequence[str]] = None,
) -> GoldenTests:
    """The four replay tests of ``family``, each parametrised over ``name`` in its case list:

    - ``each_step``: teacher-forced float32 replay of ``forced``, every step within STEP_TOL;
    - ``full_loop``: free-running float32 replay of ``loops``, within LOOP_TOL;
    - ``float16``: free-running float16 replay of ``half``, finite and within HALF_TOL;
    - ``graph_mode``: teacher-forced replay of ``graph`` under GRAPH_MODE (the ``graph_mode``
      fixture of conftest.py), within STEP_TOL and equal to the PyNative replay to 1e-7.

    pytest collects test functions by their module-level name, so a test module assigns the
    ones it uses, e.g. ``test_full_loop_matches_diffusers = GOLDEN.full_loop``; a family with
    its own version of a check leaves that list out and defines the test itself.
    """

    def replay_test(test_name, names, tol, **replay_kwargs):
        @pytest.mark.parametrize("name", names)
        def test(name):
            errors = replay(family, name, **replay_kwargs)
            assert max(errors) <= tol, f"{family}/{name}: per-step relative errors {errors} (tolerance {tol})"

        test.__name__ = test.__qualname__ = test_name
        return test

    def graph_test(names):
        @pytest.mark.parametrize("name", names)
        def test_graph_mode_matches_diffusers_and_pynative(graph_mode, name):
            graph = replay(family, name, forced=True)
            assert max(graph) <= STEP_TOL, f"{family}/{name}: GRAPH_MODE per-step relative errors {graph}"
            ms.set_context(mode=ms.PYNATIVE_MODE)
            np.testing.assert_allclose(graph, replay(family, name, forced=True), atol=1e-7)

        return test_graph_mode_matches_diffusers_and_pynative

    return GoldenTests(
        each_step=(None if forced is None
                   else replay_test("test_each_step_matches_diffusers", forced, STEP_TOL, forced=True)),
        full_loop=(None if loops is None
                   else replay_test("test_full_loop_matches_diffusers", loops, LOOP_TOL, forced=False)),
        float16=None if half is None else replay_test(
            "test_float16_loop_is_finite_and_close", half, HALF_TOL, forced=False, compute_dtype=ms.float16
        ),
        graph_mode=None if graph is None else graph_test(graph),
    )


def dummy_sample_deter() -> Tensor:
    """diffusers' deterministic test sample: arange(768)/768 laid out as (4, 3, 8, 8)."""
    sample = np.arange(4 * 3 * 8 * 8).reshape(3, 8, 8, 4) / (4 * 3 * 8 * 8)
    return Tensor(sample.transpose(3, 0, 1, 2).astype(np.float32))


def dummy_model(sample: Tensor, t) -> Tensor:
    """diffusers' test model m(x, t) = x·t/(t+1)."""
    t = float(t.item() if hasattr(t, "item") else t)
    return sample * (t / (t + 1))
