"""DDIM and DDPM against diffusers 0.42.1 over the whole option grid (tests/golden/schedulers)."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import mindscience_diffuser as msd
import scheduler_harness as H

GRID = [(family, name) for family in ("ddim", "ddpm") for name in H.case_ids(family)]
IDS = [f"{f}-{n}" for f, n in GRID]


@pytest.mark.parametrize("family,name", GRID, ids=IDS)
def test_matches_diffusers_step_by_step_and_over_the_loop(family, name):
    assert max(H.replay(family, name, forced=True)) <= H.STEP_TOL
    assert max(H.replay(family, name, forced=False)) <= H.LOOP_TOL


# float16 on a subset that still covers every schedule, prediction type, spacing, variance type,
# thresholding, eta and rank: each float16 loop costs as much as a float32 one.
HALF = [
    (f, n) for f, n in GRID
    if n.endswith("-leading") and f == "ddim" or n.startswith("var-")
    or n.startswith(("threshold", "eta-", "rank", "zero-snr", "clipped", "custom", "trained"))
]


@pytest.mark.parametrize("family,name", HALF, ids=[f"{f}-{n}" for f, n in HALF])
def test_float16_loop_is_finite_and_close(family, name):
    assert max(H.replay(family, name, forced=False, compute_dtype=ms.float16)) <= H.HALF_TOL


def test_float16_default_ddim_50_steps_stays_finite():
    # squaredcos_cap_v2 puts 1/sqrt(abar) near t=T at about 2e4; the replay asserts finiteness per step.
    errors = H.replay("ddim", "default-50", forced=False, compute_dtype=ms.float16)
    assert len(errors) == 50 and max(errors) <= H.HALF_TOL


@pytest.mark.parametrize("family,name",
                         [("ddim", "eta-clipped-eps"), ("ddim", "threshold-v"), ("ddpm", "var-learned_range"),
                          ("ddpm", "custom-timesteps")])
def test_graph_mode_matches_diffusers_and_pynative(graph_mode, family, name):
    graph = H.replay(family, name, forced=True)
    assert max(graph) <= H.STEP_TOL
    ms.set_context(mode=ms.PYNATIVE_MODE)
    pynative = H.replay(family, name, forced=True)
    np.testing.assert_allclose(graph, pynative, atol=1e-6)


def _recorded_step(family, name, i):
    rec = H.record(family, name)
    return rec, Tensor(rec["samples"][i]), Tensor(rec["model_outputs"][i]), Tensor(rec["noise"][i, 0])


def test_step_compiles_under_jit():
    case = H.find_case("ddim", "eta-half")
    sched = H.build(case)
    rec, x, m, noise = _recorded_step("ddim", "eta-half", 3)

    @ms.jit
    def compiled(model_output, sample, timestep, z):
        return sched(model_output, sample, timestep, z, 0.5, False)

    prev, _ = compiled(m, x, Tensor(int(sched.timesteps[3]), ms.int32), noise)
    assert H.rel_err(prev.asnumpy(), rec["samples"][4]) <= H.STEP_TOL


@pytest.mark.parametrize("family,name,kwargs", [("ddim", "eta-half", {"eta": 0.5}), ("ddpm", "var-fixed_large", {})])
def test_per_sample_timesteps(family, name, kwargs):
    """A (B,) timestep steps each sample at its own timestep: row k of the batch equals the
    recorded step i_k of a one-sample run."""
    case = H.find_case(family, name)
    sched = H.build(case)
    rec = H.record(family, name)
    steps = [2, 7]
    pick = lambda key: np.stack([rec[key][i][k] for k, i in enumerate(steps)])  # noqa: E731
    out = sched.step(
        Tensor(pick("model_outputs")),
        Tensor(pick("samples")),
        Tensor(np.array([sched.timesteps[i] for i in steps]), ms.int32),
        variance_noise=Tensor(np.stack([rec["noise"][i, 0][k] for k, i in enumerate(steps)])),
        **kwargs,
    )
    expected = np.stack([rec["samples"][i + 1][k] for k, i in enumerate(steps)])
    assert H.rel_err(out.asnumpy(), expected) <= H.STEP_TOL


def test_fixed_large_log_is_the_fixed_large_variance():
    # diffusers 0.42.1 takes sqrt(log beta) here and returns NaN; the documented variance is beta_t.
    case = dict(H.find_case("ddpm", "var-fixed_large"))
    case["config"] = {**case["config"], "variance_type": "fixed_large_log"}
    sched = H.build(case)
    assert max(H.replay("ddpm", "var-fixed_large", forced=True, sched=sched)) <= H.STEP_TOL


def _diffusers_full_loop(**config):
    """diffusers' test_full_loop setup: 10 DDIM steps, eta 0, of m(x,t)=x·t/(t+1) from arange/768."""
    sched = msd.DDIMScheduler(**{"beta_schedule": "linear", "clip_sample": True, **config})
    sched.set_timesteps(10)
    sample = H.dummy_sample_deter()
    for t in sched.timesteps:
        sample = sched.step(H.dummy_model(sample, t), sample, int(t), eta=0.0)
    return float(np.abs(sample.asnumpy()).sum()), float(np.abs(sample.asnumpy()).mean())


@pytest.mark.parametrize(
    "config,expected_sum,expected_mean",
    [
        ({}, 172.0067, 0.223967),
        ({"prediction_type": "v_prediction"}, 52.5302, 0.0684),
        ({"set_alpha_to_one": True, "beta_start": 0.01}, 149.8295, 0.1951),
        ({"set_alpha_to_one": False, "beta_start": 0.01}, 149.0784, 0.1941),
    ],
)
def test_diffusers_published_ddim_full_loop(config, expected_sum, expected_mean):
    result_sum, result_mean = _diffusers_full_loop(**config)
    assert abs(result_sum - expected_sum) < 1e-2
    assert abs(result_mean - expected_mean) < 1e-3


def test_zero_snr_epsilon_at_terminal_timestep_is_rejected():
    sched = msd.DDIMScheduler(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    with pytest.raises(ValueError, match="epsilon"):
        sched.set_timesteps(10)
