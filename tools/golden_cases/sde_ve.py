"""Score-SDE-VE golden cases. Each sampling step is a predictor-corrector block (diffusers'
ScoreSdeVePipeline loop): ``correct_steps`` × (model, step_correct) then (model, step_pred), so one
step draws 1 + correct_steps noises; :func:`record_pc_loop` records every sub-step."""
import numpy as np

FAMILY = "sde_ve"

SHAPE = [2, 3, 4, 4]
RANDN = ["diffusers.schedulers.scheduling_sde_ve"]
RECORDER = "golden_cases.sde_ve:record_pc_loop"


def score_model(x, sigma, kind="score"):
    """A smooth stand-in for a score network: s(x, σ) = -(x + 0.3·tanh(x))/(σ²+1), the score of
    unit-variance data with a nonlinear perturbation that shrinks like the score itself (so the
    chain stays bounded at every σ); ``kind="published"``: diffusers' test model x·σ/(σ+1)."""
    import torch

    sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape((-1,) + (1,) * (x.ndim - 1))
    if kind == "published":
        return x * sigma / (sigma + 1)
    return -(x + 0.3 * torch.tanh(x)) / (sigma * sigma + 1)


def _published_with_torch_generator(case):
    """diffusers' own test loop with torch.manual_seed(0): the published sum/mean."""
    import diffusers
    import torch

    sched = diffusers.ScoreSdeVeScheduler.from_config(case["config"])
    sched.set_sigmas(case["steps"])
    sched.set_timesteps(case["steps"])
    x = (torch.arange(4 * 3 * 8 * 8).reshape(3, 8, 8, 4) / (4 * 3 * 8 * 8)).permute(3, 0, 1, 2)
    generator = torch.manual_seed(0)
    for i, t in enumerate(sched.timesteps):
        sigma_t = sched.sigmas[i]
        for _ in range(sched.config.correct_steps):
            x = sched.step_correct(score_model(x, sigma_t, "published"), x, generator=generator).prev_sample
        x = sched.step_pred(score_model(x, sigma_t, "published"), t, x, generator=generator).prev_sample
    return torch.sum(torch.abs(x)).item(), torch.mean(torch.abs(x)).item()


def record_pc_loop(case):
    import diffusers
    import torch
    from golden_harness import NoiseTape, patch_randn, restore_randn, sample_for

    sched = diffusers.ScoreSdeVeScheduler.from_config(case["config"])
    n = case["steps"]
    if case.get("published"):
        # diffusers' test_full_loop_no_noise: set_sigmas before set_timesteps, x = dummy_sample_deter.
        sched.set_sigmas(n)
        sched.set_timesteps(n)
        x = (torch.arange(4 * 3 * 8 * 8).reshape(3, 8, 8, 4) / (4 * 3 * 8 * 8)).permute(3, 0, 1, 2).contiguous()
    else:
        sched.set_timesteps(n)
        sched.set_sigmas(n)
        x = torch.from_numpy(sample_for(case["shape"], case.get("seed", 0))) * sched.init_noise_sigma
    kind = "published" if case.get("published") else "score"
    k = sched.config.correct_steps
    tape = NoiseTape(case.get("seed", 0) + 1000)
    originals = patch_randn(tape, RANDN)
    rec = {key: [] for key in ("sub_inputs", "sub_model_outputs", "sub_outputs", "noise", "prev_mean")}
    xs = [x.numpy().copy()]
    try:
        for i, t in enumerate(sched.timesteps):
            sigma_t = sched.sigmas[i] * torch.ones(x.shape[0])
            ins, outs, nexts = [], [], []
            for _ in range(k):
                m = score_model(x, sigma_t, kind)
                ins.append(x.numpy().copy())
                outs.append(m.numpy().copy())
                x = sched.step_correct(m, x).prev_sample
                nexts.append(x.numpy().copy())
            m = score_model(x, sigma_t, kind)
            ins.append(x.numpy().copy())
            outs.append(m.numpy().copy())
            out = sched.step_pred(m, t, x)
            x = out.prev_sample
            nexts.append(x.numpy().copy())
            drawn = tape.take()
            assert len(drawn) == k + 1, (case["name"], len(drawn))
            rec["sub_inputs"].append(np.stack(ins))
            rec["sub_model_outputs"].append(np.stack(outs))
            rec["sub_outputs"].append(np.stack(nexts))
            rec["noise"].append(np.stack(drawn))
            rec["prev_mean"].append(out.prev_sample_mean.numpy().copy())
            xs.append(x.numpy().copy())
    finally:
        restore_randn(originals)
    arrays = {key: np.stack(value) for key, value in rec.items()}
    arrays.update(
        timesteps=sched.timesteps.numpy().astype(np.float64),
        model_sigmas=sched.sigmas.numpy(),
        discrete_sigmas=sched.discrete_sigmas.numpy(),
        samples=np.stack(xs),
        noise_draws=np.full(n, k + 1, np.int64),
        init_noise_sigma=np.array(float(sched.init_noise_sigma)),
        result_sum=np.array(torch.sum(torch.abs(x)).item()),
        result_mean=np.array(torch.mean(torch.abs(x)).item()),
    )
    if case.get("published"):
        torch_sum, torch_mean = _published_with_torch_generator(case)
        assert np.isclose(torch_sum, 14372758528.0) and np.isclose(torch_mean, 18714530.0), (torch_sum, torch_mean)
        arrays.update(torch_seed_sum=np.array(torch_sum), torch_seed_mean=np.array(torch_mean))
    return arrays


def _case(name, config=None, steps=8, shape=SHAPE, seed=0, published=False):
    return {
        "name": name,
        "cls": "ScoreSdeVeScheduler",
        "config": dict(config or {}),
        "steps": steps,
        "shape": shape if not published else [4, 3, 8, 8],
        "seed": seed,
        "recorder": RECORDER,
        "published": published,
    }


def cases():
    return [
        _case("default"),
        _case("no-corrector", {"correct_steps": 0}),
        _case("two-correctors-snr", {"correct_steps": 2, "snr": 0.16}, steps=6),
        _case("sigmas-eps", {"sigma_min": 0.002, "sigma_max": 80.0, "sampling_eps": 1e-3}),
        _case("T1000-long", {"num_train_timesteps": 1000}, steps=16),
        _case("one-step", steps=1),
        _case("rank2", shape=[4, 6], steps=5),
        _case("rank3", shape=[2, 5, 3], steps=5),
        _case("rank5", {"correct_steps": 2}, shape=[2, 2, 2, 3, 3], steps=4),
        # diffusers' test_full_loop_no_noise: published 14372758528.0 / 18714530.0 with torch.manual_seed(0).
        _case("published",
              {"num_train_timesteps": 2000, "snr": 0.15, "sigma_min": 0.01, "sigma_max": 1348, "sampling_eps": 1e-5},
              steps=3, published=True),
    ]
