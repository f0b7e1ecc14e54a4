"""DPM-Solver multistep golden cases, forward and inverse: every option value, the
combinations where the order logic changes (warm-up, lower_order_final below 15 steps,
euler_at_final, a zero final σ), every σ schedule, and a few longer loops."""
FAMILY = "dpmsolver"

SHAPE = [2, 3, 4, 4]
NOISE = {"pass_variance_noise": True}


def _case(name, cls, config=None, steps=10, shape=SHAPE, model="plain", step_kwargs=None, set_timesteps=None, seed=0):
    return {
        "name": name,
        "cls": cls,
        "config": dict(config or {}),
        "set_timesteps": set_timesteps or {"num_inference_steps": steps},
        "step_kwargs": step_kwargs or {},
        "shape": shape,
        "model": model,
        "seed": seed,
    }


def fwd(name, config=None, **kw):
    return _case("fwd-" + name, "DPMSolverMultistepScheduler", config, **kw)


def inv(name, config=None, **kw):
    return _case("inv-" + name, "DPMSolverMultistepInverseScheduler", config, **kw)


def forward_cases():
    out = []
    # algorithm x solver_type x order (sde-dpmsolver has no third order; the non-++ ones need sigma_min).
    for algorithm in ("dpmsolver++", "dpmsolver", "sde-dpmsolver++", "sde-dpmsolver"):
        for solver_type in ("midpoint", "heun"):
            for order in (1, 2, 3):
                if algorithm == "sde-dpmsolver" and order == 3:
                    continue
                if order == 1 and solver_type == "heun":
                    continue
                config = {"algorithm_type": algorithm, "solver_type": solver_type, "solver_order": order}
                if not algorithm.endswith("++"):
                    config["final_sigmas_type"] = "sigma_min"
                kw = {"step_kwargs": NOISE} if algorithm.startswith("sde") else {}
                out.append(fwd(f"{algorithm}-{solver_type}-o{order}", config, **kw))
    sigma_min = {"final_sigmas_type": "sigma_min"}
    out += [
        fwd("default-25", steps=25),
        fwd("o3-16-steps", {"solver_order": 3}, steps=16),
        fwd("o3-nolof", {"solver_order": 3, "lower_order_final": False}, steps=12),
        fwd("o3-sigma-min-nolof", {"solver_order": 3, "lower_order_final": False, **sigma_min}, steps=12),
        fwd("euler-at-final-sde",
            {"algorithm_type": "sde-dpmsolver++", "euler_at_final": True, "lower_order_final": False, **sigma_min},
            steps=16, step_kwargs=NOISE),
        fwd("sample-pred", {"prediction_type": "sample"}),
        fwd("v-pred",
            {"prediction_type": "v_prediction", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
             "beta_end": 0.012}),
        fwd("dpmsolver-v-heun",
            {"algorithm_type": "dpmsolver", "prediction_type": "v_prediction", "solver_type": "heun", **sigma_min}),
        fwd("dpmsolver-sample-o3",
            {"algorithm_type": "dpmsolver", "prediction_type": "sample", "solver_order": 3, **sigma_min}),
        fwd("threshold-sample",
            {"prediction_type": "sample", "thresholding": True, "sample_max_value": 1.5,
             "dynamic_thresholding_ratio": 0.9}),
        fwd("threshold-eps-o3", {"thresholding": True, "solver_order": 3}),
        fwd("threshold-dpmsolver",
            {"algorithm_type": "dpmsolver", "thresholding": True, "sample_max_value": 1.2, **sigma_min}),
        fwd("karras", {"use_karras_sigmas": True}),
        fwd("karras-v-o3",
            {"use_karras_sigmas": True, "prediction_type": "v_prediction", "solver_order": 3,
             "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
        fwd("karras-cosine-dup", {"use_karras_sigmas": True, "beta_schedule": "squaredcos_cap_v2", **sigma_min},
            steps=20),
        fwd("exponential", {"use_exponential_sigmas": True}),
        fwd("beta", {"use_beta_sigmas": True, "solver_order": 3}),
        fwd("lu-lambdas-v", {"use_lu_lambdas": True, "prediction_type": "v_prediction"}),
        fwd("flow", {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "flow_prediction"}),
        fwd("flow-sde-o3",
            {"use_flow_sigmas": True, "flow_shift": 1.0, "prediction_type": "flow_prediction",
             "algorithm_type": "sde-dpmsolver++", "solver_order": 3}, step_kwargs=NOISE),
        fwd("flow-dynamic-mu",
            {"use_flow_sigmas": True, "use_dynamic_shifting": True, "prediction_type": "flow_prediction"},
            set_timesteps={"num_inference_steps": 10, "mu": 0.8}),
        fwd("cosine-lambda-clip", {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}),
        fwd("cosine-lambda-clip-trailing",
            {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1, "timestep_spacing": "trailing"}),
        fwd("learned-range", {"variance_type": "learned_range"}, model="learned_range"),
        fwd("learned-dpmsolver", {"variance_type": "learned", "algorithm_type": "dpmsolver", **sigma_min},
            model="learned"),
        fwd("leading-offset", {"timestep_spacing": "leading", "steps_offset": 1}),
        fwd("trailing", {"timestep_spacing": "trailing"}),
        fwd("trained-betas", {"num_train_timesteps": 50, "trained_betas": [0.0005 + 0.0008 * i for i in range(50)]},
            steps=8),
        fwd("zero-snr-v-trailing",
            {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}),
        fwd("zero-snr-eps",
            {"rescale_betas_zero_snr": True, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
             "beta_end": 0.012}),
        fwd("sigma-min", sigma_min),
        fwd("custom-timesteps", set_timesteps={"timesteps": [901, 700, 555, 320, 150, 40, 5]}),
        fwd("rank2", {"solver_order": 3}, shape=[4, 6]),
        fwd("rank3-sde", {"algorithm_type": "sde-dpmsolver++"}, shape=[2, 5, 3], step_kwargs=NOISE),
        fwd("rank5-threshold", {"thresholding": True, "sample_max_value": 1.2}, shape=[2, 2, 2, 3, 3]),
        fwd("one-step", steps=1),
        fwd("two-steps-o3", {"solver_order": 3}, steps=2),
    ]
    return out


def inverse_cases():
    out = []
    for algorithm in ("dpmsolver++", "dpmsolver"):
        for solver_type in ("midpoint", "heun"):
            for order in (1, 2, 3):
                if order == 1 and solver_type == "heun":
                    continue
                out.append(inv(f"{algorithm}-{solver_type}-o{order}",
                               {"algorithm_type": algorithm, "solver_type": solver_type, "solver_order": order}))
    out += [
        inv("default-25", steps=25),
        inv("o3-16-steps", {"solver_order": 3}, steps=16),
        inv("o3-nolof", {"solver_order": 3, "lower_order_final": False}, steps=12),
        inv("euler-at-final", {"euler_at_final": True, "lower_order_final": False}, steps=16),
        inv("sample-pred", {"prediction_type": "sample"}),
        inv("v-pred",
            {"prediction_type": "v_prediction", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
             "beta_end": 0.012}),
        inv("threshold-sample",
            {"prediction_type": "sample", "thresholding": True, "sample_max_value": 1.5,
             "dynamic_thresholding_ratio": 0.9}),
        inv("threshold-dpmsolver", {"algorithm_type": "dpmsolver", "thresholding": True, "sample_max_value": 1.2}),
        inv("karras-v", {"use_karras_sigmas": True, "prediction_type": "v_prediction"}),
        inv("karras-cosine-dedup", {"use_karras_sigmas": True, "beta_schedule": "squaredcos_cap_v2"}, steps=20),
        inv("exponential", {"use_exponential_sigmas": True}),
        inv("beta", {"use_beta_sigmas": True}),
        inv("flow", {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "flow_prediction"}),
        inv("cosine-lambda-clip", {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}),
        inv("learned-range", {"variance_type": "learned_range"}, model="learned_range"),
        inv("learned", {"variance_type": "learned", "algorithm_type": "dpmsolver"}, model="learned"),
        inv("leading-offset", {"timestep_spacing": "leading", "steps_offset": 1}),
        inv("trailing", {"timestep_spacing": "trailing"}),
        inv("trained-betas", {"num_train_timesteps": 50, "trained_betas": [0.0005 + 0.0008 * i for i in range(50)]},
            steps=8),
        inv("rank3", {"solver_order": 3}, shape=[2, 5, 3]),
        inv("one-step", steps=1),
    ]
    return out


def cases():
    return forward_cases() + inverse_cases()
