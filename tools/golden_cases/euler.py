"""Euler golden cases: the whole option grid of diffusers' EulerDiscreteScheduler, churn with taped
noise, custom timesteps/sigmas, ranks 2-5, long and one-step loops, and diffusers' published
full-loop tests."""
from golden_cases.consistency import published_case

FAMILY = "euler"

SHAPE = [2, 3, 4, 4]
RANDN = ["diffusers.schedulers.scheduling_euler_discrete"]


def _case(name, config=None, steps=10, step_kwargs=None, shape=SHAPE, seed=0, set_timesteps=None):
    return {
        "name": name,
        "cls": "EulerDiscreteScheduler",
        "config": dict(config or {}),
        "set_timesteps": set_timesteps or {"num_inference_steps": steps},
        "step_kwargs": step_kwargs or {},
        "shape": shape,
        "seed": seed,
        "randn_modules": RANDN,
    }


def cases():
    out = []
    for schedule in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        for prediction in ("epsilon", "sample", "v_prediction"):
            for spacing in ("linspace", "leading", "trailing"):
                config = {"beta_schedule": schedule, "prediction_type": prediction, "timestep_spacing": spacing}
                if schedule == "scaled_linear":
                    config.update(beta_start=0.00085, beta_end=0.012)
                out.append(_case(f"{schedule}-{prediction}-{spacing}", config, steps=6))
    out += [
        _case("steps-offset-leading", {"timestep_spacing": "leading", "steps_offset": 1}),
        _case("log-linear", {"interpolation_type": "log_linear"}),
        _case("log-linear-v-karras",
              {"interpolation_type": "log_linear", "prediction_type": "v_prediction", "use_karras_sigmas": True}),
        _case("karras", {"use_karras_sigmas": True}),
        _case("karras-leading-scaled",
              {"use_karras_sigmas": True, "timestep_spacing": "leading", "beta_schedule": "scaled_linear",
               "beta_start": 0.00085, "beta_end": 0.012}),
        _case("karras-bounds", {"use_karras_sigmas": True, "sigma_min": 0.05, "sigma_max": 20.0}),
        _case("exponential", {"use_exponential_sigmas": True}),
        _case("exponential-sigma-min-trailing",
              {"use_exponential_sigmas": True, "sigma_min": 0.1, "timestep_spacing": "trailing"}),
        _case("beta", {"use_beta_sigmas": True}),
        _case("beta-sample-cos",
              {"use_beta_sigmas": True, "prediction_type": "sample", "beta_schedule": "squaredcos_cap_v2"}),
        _case("continuous-v", {"timestep_type": "continuous", "prediction_type": "v_prediction"}),
        _case("continuous-v-karras",
              {"timestep_type": "continuous", "prediction_type": "v_prediction", "use_karras_sigmas": True}),
        _case("continuous-eps", {"timestep_type": "continuous"}),
        _case("final-sigma-min", {"final_sigmas_type": "sigma_min"}),
        _case("final-sigma-min-karras", {"final_sigmas_type": "sigma_min", "use_karras_sigmas": True}),
        _case("zero-snr-v-trailing",
              {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}),
        _case("zero-snr-eps-scaled",
              {"rescale_betas_zero_snr": True, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
               "beta_end": 0.012}),
        _case("trained-betas", {"num_train_timesteps": 50, "trained_betas": [0.0005 + 0.0008 * i for i in range(50)]},
              steps=7),
        _case("churn", step_kwargs={"s_churn": 1.0}),
        _case("churn-window", step_kwargs={"s_churn": 80.0, "s_tmin": 0.5, "s_tmax": 10.0, "s_noise": 1.003}),
        _case("churn-karras-v", {"use_karras_sigmas": True, "prediction_type": "v_prediction"},
              step_kwargs={"s_churn": 5.0, "s_noise": 0.9}),
        _case("custom-timesteps", set_timesteps={"timesteps": [999.0, 850.0, 700.5, 400.0, 120.0, 33.0, 0.0]}),
        _case("custom-sigmas", set_timesteps={"sigmas": [14.6, 8.0, 4.0, 2.0, 1.0, 0.5, 0.2, 0.05, 0.0]}),
        _case("custom-sigmas-v", {"prediction_type": "v_prediction"},
              set_timesteps={"sigmas": [30.0, 10.0, 3.0, 1.0, 0.3, 0.1, 0.03]}),
        _case("rank2", shape=[4, 6]),
        _case("rank3-karras", {"use_karras_sigmas": True}, shape=[2, 5, 3], step_kwargs={"s_churn": 1.0}),
        _case("rank5-v", {"prediction_type": "v_prediction"}, shape=[2, 2, 2, 3, 3]),
        _case("default-50", steps=50),
        _case("one-step", steps=1),
        _case("T16-all", {"num_train_timesteps": 16}, steps=16),
    ]
    config = {"num_train_timesteps": 1100, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}
    cls = "EulerDiscreteScheduler"
    steps = {"num_inference_steps": 10}
    out += [
        published_case("published-no-noise", cls, config, steps, 10.0807, 0.0131, RANDN, feed_scaled=True),
        published_case("published-v-prediction", cls, {**config, "prediction_type": "v_prediction"}, steps, 0.0002,
                       2.2676e-06, RANDN, feed_scaled=True),
        published_case("published-karras", cls, {**config, "use_karras_sigmas": True}, steps, 124.52299499511719,
                       0.16213932633399963, RANDN, feed_scaled=True),
    ]
    return out
