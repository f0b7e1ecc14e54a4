"""Consistency-model golden cases: one-step and multistep, custom timesteps, every option, and
diffusers' published full-loop tests (their recorder is shared with the other sigma schedulers)."""
import numpy as np

FAMILY = "consistency"

SHAPE = [2, 3, 4, 4]
RANDN = ["diffusers.schedulers.scheduling_consistency_models"]


def _case(name, config=None, steps=10, timesteps=None, shape=SHAPE, seed=0):
    set_timesteps = {"timesteps": timesteps} if timesteps is not None else {"num_inference_steps": steps}
    return {
        "name": name,
        "cls": "CMStochasticIterativeScheduler",
        "config": dict(config or {}),
        "set_timesteps": set_timesteps,
        "step_kwargs": {},
        "shape": shape,
        "seed": seed,
        "randn_modules": RANDN,
    }


def cases():
    return [
        _case("default-10"),
        _case("one-step", steps=1),
        _case("two-step", steps=2),
        _case("all-40", steps=40),
        _case("custom-22-0", timesteps=[22, 0]),
        _case("custom-4", timesteps=[39, 30, 12, 0]),
        _case("custom-no-zero", timesteps=[35, 17, 5]),
        _case("custom-one", timesteps=[17]),
        _case("noclip-snoise", {"clip_denoised": False, "s_noise": 1.007}, steps=6),
        _case("sigma-data-rho", {"sigma_data": 0.3, "rho": 5.0, "sigma_min": 0.01, "sigma_max": 40.0}, steps=8),
        _case("T151", {"num_train_timesteps": 151}, steps=12),
        _case("T18-noclip", {"num_train_timesteps": 18, "clip_denoised": False}, steps=5),
        _case("rank2", shape=[4, 6], steps=5),
        _case("rank3", shape=[2, 5, 3], steps=5),
        _case("rank5", {"clip_denoised": False}, shape=[2, 2, 2, 3, 3], steps=5),
    ] + published_cases()


# ----------------------------------------------------------------------------- diffusers' published full-loop tests

def _dummy_sample_deter():
    import torch

    sample = torch.arange(4 * 3 * 8 * 8).reshape(3, 8, 8, 4) / (4 * 3 * 8 * 8)
    return sample.permute(3, 0, 1, 2)


def _dummy_model(sample, t):
    return sample * t / (t + 1)


def _published_loop(case, generator=None, tape=None):
    """The loop of diffusers' tests/schedulers full_loop tests: x = dummy_sample_deter·init_noise_sigma,
    then per timestep scale → model x·t/(t+1) → step. ``feed_scaled`` repeats the Euler test's quirk
    of stepping from the scaled sample."""
    import diffusers
    from golden_harness import patch_randn, restore_randn

    sched = getattr(diffusers, case["cls"]).from_config(case["config"])
    sched.set_timesteps(**case["set_timesteps"])
    originals = patch_randn(tape, case.get("randn_modules", [])) if tape is not None else {}
    noises = []
    try:
        sample = _dummy_sample_deter() * sched.init_noise_sigma
        for t in sched.timesteps:
            scaled = sched.scale_model_input(sample, t)
            if case["published"].get("feed_scaled"):
                sample = scaled
            out = sched.step(_dummy_model(scaled, t), t, sample, generator=generator, **case.get("step_kwargs", {}))
            sample = out.prev_sample
            if tape is not None:
                drawn = tape.take()
                noises.append(drawn[0] if drawn else np.zeros(tuple(sample.shape), np.float32))
    finally:
        restore_randn(originals)
    return sched, sample, noises


def record_published(case):
    """Run a published full-loop test twice in diffusers 0.42.1: with torch.manual_seed(0) noise
    (the published setting; its sum/mean are checked against the published numbers when those
    do not depend on torch's generator) and with taped numpy noise, whose sum/mean the tests
    reproduce without torch."""
    import torch
    from golden_harness import NoiseTape

    published = case["published"]
    _, torch_sample, _ = _published_loop(case, generator=torch.manual_seed(0))
    torch_sum, torch_mean = torch.sum(torch.abs(torch_sample)).item(), torch.mean(torch.abs(torch_sample)).item()
    if not published.get("uses_torch_noise"):
        close = abs(torch_sum - published["sum"]) < 1e-2 and abs(torch_mean - published["mean"]) < 1e-3
        assert close, (case["name"], torch_sum, torch_mean)
    sched, sample, noises = _published_loop(case, tape=NoiseTape(case.get("seed", 0) + 1000))
    return {
        "timesteps": sched.timesteps.numpy().astype(np.float64),
        "final": sample.numpy(),
        "noise": np.stack(noises) if noises else np.zeros((0,), np.float32),
        "result_sum": np.array(torch.sum(torch.abs(sample)).item()),
        "result_mean": np.array(torch.mean(torch.abs(sample)).item()),
        "torch_seed_sum": np.array(torch_sum),
        "torch_seed_mean": np.array(torch_mean),
    }


def published_case(name, cls, config, set_timesteps, expected_sum, expected_mean, randn_modules=(),
                   uses_torch_noise=False, feed_scaled=False):
    """A published full-loop test as a golden case (see :func:`record_published`)."""
    return {
        "name": name,
        "cls": cls,
        "config": config,
        "set_timesteps": set_timesteps,
        "recorder": "golden_cases.consistency:record_published",
        "published": {"sum": expected_sum, "mean": expected_mean, "uses_torch_noise": uses_torch_noise,
                      "feed_scaled": feed_scaled},
        "randn_modules": list(randn_modules),
    }


def published_cases():
    config = {"num_train_timesteps": 201, "sigma_min": 0.002, "sigma_max": 80.0}
    cls = "CMStochasticIterativeScheduler"
    return [
        published_case("published-onestep", cls, config, {"num_inference_steps": 1}, 192.7614, 0.2510, RANDN),
        # Two steps draw torch noise between them: the published 347.6357 needs torch's generator.
        published_case("published-multistep", cls, config, {"timesteps": [106, 0]}, 347.6357, 0.4527, RANDN,
                       uses_torch_noise=True),
    ]
