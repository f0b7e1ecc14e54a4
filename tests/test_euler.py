"""EulerDiscreteScheduler against diffusers 0.42.1 (tests/golden/schedulers/euler.*)."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

import mindscience_diffuser as msd
import scheduler_harness as H
from mindscience_diffuser import EulerDiscreteScheduler

FAMILY = "euler"
GRID = [c["name"] for c in H.cases(FAMILY) if "recorder" not in c]
# Free-running loops: every option value at least once, the 3x3x3 schedule/prediction/spacing grid as
# a Latin square (each pair once), plus the sigma schedules, churn, custom schedules and long loops.
_LATIN = [f"{b}-{p}-{s}" for i, b in enumerate(("linear", "scaled_linear", "squaredcos_cap_v2"))
          for j, p in enumerate(("epsilon", "sample", "v_prediction"))
          for s in [("linspace", "leading", "trailing")[(i + j) % 3]]]
LOOPS = _LATIN + [n for n in GRID if n.count("-") < 2
                  or not n.startswith(("linear-", "scaled_linear-", "squaredcos_cap_v2-"))]
FORCED = [n for n in GRID if n != "default-50"]  # the 50-step loop runs free-running (and in float16)
HALF = [
    "linear-epsilon-linspace", "scaled_linear-v_prediction-leading", "squaredcos_cap_v2-sample-trailing", "karras",
    "log-linear-v-karras", "exponential", "beta", "continuous-v", "zero-snr-v-trailing", "churn-window", "rank5-v",
    "default-50",
]

GOLDEN = H.golden_tests(FAMILY, forced=FORCED, loops=LOOPS, half=HALF, graph=["churn-karras-v", "final-sigma-min"])
test_each_step_matches_diffusers = GOLDEN.each_step
test_full_loop_matches_diffusers = GOLDEN.full_loop
test_float16_loop_is_finite_and_close = GOLDEN.float16
test_graph_mode_matches_diffusers_and_pynative = GOLDEN.graph_mode


def test_step_and_scaling_compile_under_jit():
    name = "churn-window"
    sched, rec = H.build(H.find_case(FAMILY, name)), H.record(FAMILY, name)
    i = 4
    gamma = sched.churn_gamma(i, s_churn=80.0, s_tmin=0.5, s_tmax=10.0)
    assert gamma > 0 and rec["noise_draws"][i] == 1

    @ms.jit
    def compiled(model_output, sample, index, noise, gamma):
        prev, _ = sched(model_output, sample, index, noise, gamma, 1.003)
        return prev, sched.scale_at(sample, index)

    prev, scaled = compiled(Tensor(rec["model_outputs"][i]), Tensor(rec["samples"][i]), Tensor(i, ms.int32),
                            Tensor(rec["noise"][i, 0]), Tensor(gamma, ms.float32))
    assert H.rel_err(prev.asnumpy(), rec["samples"][i + 1]) <= H.STEP_TOL
    assert H.rel_err(scaled.asnumpy(), rec["model_inputs"][i]) <= H.STEP_TOL


def test_schedule_tables_match_diffusers_including_init_noise_sigma():
    for name in ("linear-epsilon-leading", "log-linear", "continuous-v-karras", "custom-sigmas",
                 "zero-snr-v-trailing"):
        case, rec = H.find_case(FAMILY, name), H.record(FAMILY, name)
        sched = H.build(case)
        np.testing.assert_allclose(sched.timesteps, rec["timesteps"], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(sched.init_noise_sigma, float(rec["init_noise_sigma"]), rtol=1e-6)


# ----------------------------------------------------------------------------- diffusers' own full-loop tests

@pytest.mark.parametrize("name,expected_sum,expected_mean", [
    ("published-no-noise", 10.0807, 0.0131),
    ("published-v-prediction", 0.0002, 2.2676e-06),
    ("published-karras", 124.52299499511719, 0.16213932633399963),
])
def test_published_full_loops(name, expected_sum, expected_mean):
    # diffusers' test_full_loop_no_noise / _with_v_prediction / _device_karras_sigmas: the loop feeds the
    # *scaled* sample to step (as the published test does), no noise is drawn.
    case, rec = H.find_case(FAMILY, name), H.record(FAMILY, name)
    sched = H.build(case)
    sample = H.dummy_sample_deter() * sched.init_noise_sigma
    for t in sched.timesteps:
        sample = sched.scale_model_input(sample, t)
        sample = sched.step(H.dummy_model(sample, t), sample, t)
    result = np.abs(sample.asnumpy().astype(np.float64))
    assert abs(result.sum() - expected_sum) < 1e-2 and abs(result.mean() - expected_mean) < 1e-3
    assert H.rel_err(sample.asnumpy(), rec["final"]) <= H.LOOP_TOL


# ----------------------------------------------------------------------------- API behaviour

def test_swapping_configs_with_ddim():
    # diffusers 0.42.1: options the first scheduler took from its defaults are left to the second one's
    # defaults (Euler keeps linspace spacing after a default DDIM); explicitly set ones travel. The noise
    # process always travels here: this package's DDIM defaults to the MindScience seed's cosine betas.
    assert EulerDiscreteScheduler.from_config(msd.DDIMScheduler().config).config.timestep_spacing == "linspace"
    euler = EulerDiscreteScheduler.from_config(msd.DDIMScheduler(timestep_spacing="leading").config)
    assert euler.config.beta_schedule == "squaredcos_cap_v2" and euler.config.timestep_spacing == "leading"
    euler.set_timesteps(6)
    assert max(H.replay(FAMILY, "squaredcos_cap_v2-epsilon-leading", forced=True, sched=euler)) <= H.STEP_TOL
    back = msd.DDIMScheduler.from_config(EulerDiscreteScheduler(beta_schedule="scaled_linear").config)
    assert back.config.beta_schedule == "scaled_linear" and back.config.timestep_spacing == "leading"


def test_return_types_and_tensor_timesteps():
    name = "churn"
    rec = H.record(FAMILY, name)
    outs = []
    for return_dict in (None, True, False):
        sched = H.build(H.find_case(FAMILY, name))
        t = Tensor(np.full((2,), sched.timesteps[0], np.float32)) if return_dict else Tensor(sched.timesteps[0])
        outs.append(sched.step(Tensor(rec["model_outputs"][0]), Tensor(rec["samples"][0]), t, s_churn=1.0,
                               variance_noise=Tensor(rec["noise"][0, 0]), return_dict=return_dict))
    assert isinstance(outs[0], Tensor)
    assert isinstance(outs[1], msd.SchedulerOutput) and isinstance(outs[2], tuple) and len(outs[2]) == 2
    for out in (outs[0], outs[1].prev_sample, outs[2][0]):
        assert H.rel_err(out.asnumpy(), rec["samples"][1]) <= H.STEP_TOL
    np.testing.assert_allclose(outs[2][1].asnumpy(), rec["pred_original"][0], rtol=1e-5, atol=1e-6)


def test_generator_draws_only_when_churning():
    x = Tensor(np.ones((2, 3), np.float32))
    results = []
    for seed in (1, 2):
        sched = EulerDiscreteScheduler()
        sched.set_timesteps(5)
        results.append(sched.step(0.1 * x, x, sched.timesteps[0], generator=seed).asnumpy())
    np.testing.assert_array_equal(*results)  # no churn: deterministic whatever the seed
    churned = []
    for seed in (1, 1, 2):
        sched = EulerDiscreteScheduler()
        sched.set_timesteps(5)
        churned.append(sched.step(0.1 * x, x, sched.timesteps[0], s_churn=1.0,
                                  generator=np.random.default_rng(seed)).asnumpy())
    np.testing.assert_array_equal(churned[0], churned[1])
    assert not np.array_equal(churned[0], churned[2])


def test_step_index_first_and_second_match_and_begin_index():
    sched = EulerDiscreteScheduler()
    sched.set_timesteps(timesteps=[900.0, 500.0, 100.0])
    assert sched.index_for_timestep(500.0) == 1
    assert sched.index_for_timestep(500.0, schedule_timesteps=np.array([900.0, 500.0, 500.0, 0.0])) == 2
    name = "linear-epsilon-linspace"
    rec = H.record(FAMILY, name)
    sched = H.build(H.find_case(FAMILY, name))
    sched.set_begin_index(3)
    for i in (3, 4):
        out = sched.step(Tensor(rec["model_outputs"][i]), Tensor(rec["samples"][i]), sched.timesteps[i])
        assert H.rel_err(out.asnumpy(), rec["samples"][i + 1]) <= H.STEP_TOL
    assert sched.step_index == 5


def test_add_noise_and_config_round_trip(tmp_path):
    sched = EulerDiscreteScheduler(use_karras_sigmas=True, final_sigmas_type="sigma_min")
    sched.set_timesteps(6)
    noisy = sched.add_noise(Tensor(np.zeros((2, 3), np.float32)), Tensor(np.ones((2, 3), np.float32)),
                            Tensor(sched.timesteps[[1, 3]]))
    np.testing.assert_allclose(noisy.asnumpy()[:, 0], sched.sigmas[[1, 3]], rtol=1e-6)
    sched.save_config(tmp_path)
    again = EulerDiscreteScheduler.from_pretrained(tmp_path)
    assert dict(again.config) == dict(sched.config)


# ----------------------------------------------------------------------------- errors

def test_bad_options_raise_clear_errors():
    for kwargs, match in [
        ({"use_karras_sigmas": True, "use_beta_sigmas": True}, "only one of"),
        ({"use_exponential_sigmas": True, "use_karras_sigmas": True}, "only one of"),
        ({"interpolation_type": "cubic"}, "interpolation_type"),
        ({"timestep_type": "integer"}, "timestep_type"),
        ({"final_sigmas_type": "one"}, "final_sigmas_type"),
        ({"prediction_type": "flow"}, "prediction_type"),
        ({"timestep_spacing": "even"}, "timestep_spacing"),
        ({"beta_schedule": "sigmoid"}, "beta_schedule"),
        ({"sigma_min": -1.0}, "sigma_min"),
        ({"sigma_min": 5.0, "sigma_max": 1.0}, "sigma_min"),
    ]:
        with pytest.raises(ValueError, match=match):
            EulerDiscreteScheduler(**kwargs)
    with pytest.raises(TypeError, match="compute_dtype"):
        EulerDiscreteScheduler(compute_dtype=ms.int32)


def test_bad_calls_raise_clear_errors():
    x = Tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="not in the schedule"):  # before set_timesteps: the training schedule
        EulerDiscreteScheduler().step(x, x, 999.5)
    sched = EulerDiscreteScheduler(use_karras_sigmas=True)
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        sched.set_timesteps(timesteps=[900.0, 100.0])
    with pytest.raises(ValueError, match="continuous"):
        EulerDiscreteScheduler(timestep_type="continuous",
                               prediction_type="v_prediction").set_timesteps(timesteps=[900.0, 10.0])
    with pytest.raises(ValueError, match="exactly one"):
        sched.set_timesteps(5, sigmas=[3.0, 0.0])
    with pytest.raises(ValueError, match="exactly one"):
        sched.set_timesteps()
    with pytest.raises(ValueError, match="descending"):
        EulerDiscreteScheduler().set_timesteps(timesteps=[100.0, 500.0])
    with pytest.raises(ValueError, match="sigmas"):
        sched.set_timesteps(sigmas=[1.0, 2.0, 0.0])
    sched.set_timesteps(4)
    with pytest.raises(ValueError, match="integer indices"):
        sched.step(x, x, 0)
    with pytest.raises(ValueError, match="not in the schedule"):
        sched.step(x, x, 3.25)
    with pytest.raises(TypeError, match="order"):
        sched.step(x, float(sched.timesteps[0]), x)
    with pytest.raises(ValueError, match="s_churn"):
        sched.step(x, x, float(sched.timesteps[0]), s_churn=-1.0)
