"""DDIM golden cases: every option value, the interesting combinations, ranks 2-5, long loops."""
FAMILY = "ddim"

BASE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}
SHAPE = [2, 3, 4, 4]


def _case(name, config=None, steps=10, step_kwargs=None, shape=SHAPE, seed=0):
    return {
        "name": name,
        "cls": "DDIMScheduler",
        "config": {**BASE, **(config or {})},
        "set_timesteps": {"num_inference_steps": steps},
        "step_kwargs": step_kwargs or {},
        "shape": shape,
        "seed": seed,
    }


def cases():
    out = []
    for schedule in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        for prediction in ("epsilon", "sample", "v_prediction"):
            for spacing in ("leading", "linspace", "trailing"):
                out.append(_case(f"{schedule}-{prediction}-{spacing}",
                                 {"beta_schedule": schedule, "prediction_type": prediction,
                                  "timestep_spacing": spacing}))
    noisy = {"eta": 0.5, "pass_variance_noise": True}
    out += [
        _case("default-50", steps=50),
        _case("noclip", {"clip_sample": False, "beta_schedule": "linear"}),
        _case("clip-range-2", {"clip_sample_range": 2.0}),
        _case("threshold", {"thresholding": True, "sample_max_value": 1.5, "dynamic_thresholding_ratio": 0.9}),
        _case("threshold-v", {"thresholding": True, "prediction_type": "v_prediction", "sample_max_value": 2.0}),
        _case("alpha-to-zero", {"set_alpha_to_one": False, "beta_schedule": "linear"}),
        _case("steps-offset", {"steps_offset": 1, "beta_schedule": "scaled_linear"}),
        _case("zero-snr-v-trailing",
              {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing",
               "beta_schedule": "linear"}),
        _case("zero-snr-eps-leading", {"rescale_betas_zero_snr": True, "beta_schedule": "scaled_linear"}),
        _case("trained-betas", {"num_train_timesteps": 50, "trained_betas": [0.0005 + 0.0008 * i for i in range(50)]},
              steps=7),
        _case("eta-half", step_kwargs=noisy),
        _case("eta-one-linear", {"beta_schedule": "linear"}, step_kwargs={"eta": 1.0, "pass_variance_noise": True}),
        _case("eta-clipped-eps", step_kwargs={**noisy, "use_clipped_model_output": True}),
        _case("clipped-v", {"prediction_type": "v_prediction"}, step_kwargs={"use_clipped_model_output": True}),
        _case("clipped-sample-threshold", {"prediction_type": "sample", "thresholding": True},
              step_kwargs={**noisy, "use_clipped_model_output": True}),
        _case("rank2", shape=[4, 6]),
        _case("rank3-v", {"prediction_type": "v_prediction"}, shape=[2, 5, 3],
              step_kwargs={**noisy, "use_clipped_model_output": True}),
        _case("rank5-threshold", {"thresholding": True, "sample_max_value": 1.2}, shape=[2, 2, 2, 3, 3]),
        _case("steps-1000-T", {"num_train_timesteps": 40, "beta_schedule": "linear"}, steps=40),
        _case("one-step", steps=1),
    ]
    return out
