"""DDPM golden cases: all six variance types, prediction types, spacings, custom timesteps."""
FAMILY = "ddpm"

SHAPE = [2, 3, 4, 4]
RANDN = ["diffusers.schedulers.scheduling_ddpm"]


def _case(name, config=None, steps=10, shape=SHAPE, model="plain", timesteps=None, seed=0):
    return {
        "name": name,
        "cls": "DDPMScheduler",
        "config": {"num_train_timesteps": 1000, **(config or {})},
        "set_timesteps": {"timesteps": timesteps} if timesteps is not None else {"num_inference_steps": steps},
        "step_kwargs": {},
        "shape": shape,
        "model": model,
        "seed": seed,
        "randn_modules": RANDN,
    }


def cases():
    out = []
    for variance in ("fixed_small", "fixed_small_log", "fixed_large", "learned", "learned_range"):
        model = variance if variance.startswith("learned") else "plain"
        out.append(_case(f"var-{variance}", {"variance_type": variance}, model=model))
    for prediction in ("epsilon", "sample", "v_prediction"):
        for spacing in ("leading", "linspace", "trailing"):
            out.append(_case(f"{prediction}-{spacing}",
                             {"prediction_type": prediction, "timestep_spacing": spacing,
                              "beta_schedule": "scaled_linear"}))
    out += [
        _case("cosine", {"beta_schedule": "squaredcos_cap_v2"}),
        _case("sigmoid", {"beta_schedule": "sigmoid"}),
        _case("learned-range-v-threshold",
              {"variance_type": "learned_range", "prediction_type": "v_prediction", "thresholding": True},
              model="learned_range"),
        _case("threshold", {"thresholding": True, "sample_max_value": 1.5}),
        _case("noclip-range", {"clip_sample": False}),
        _case("clip-range", {"clip_sample_range": 0.5}),
        _case("offset", {"steps_offset": 1}),
        _case("zero-snr-v",
              {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}),
        _case("custom-timesteps", timesteps=[937, 700, 512, 300, 111, 40, 3, 0]),
        _case("full-T", {"num_train_timesteps": 30, "beta_start": 0.001, "beta_end": 0.1}, steps=30),
        _case("trained-betas", {"num_train_timesteps": 20, "trained_betas": [0.01 + 0.02 * i for i in range(20)]},
              steps=20),
        _case("rank2", shape=[3, 5]),
        _case("rank5-learned-range", {"variance_type": "learned_range"}, shape=[2, 2, 2, 2, 3], model="learned_range"),
    ]
    return out
