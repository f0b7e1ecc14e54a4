"""Posterior sampling in the one loop (mindscience_diffuser.guidance), against hand-written loops.

Each reference is a Python loop over ``scheduler.step`` with the guidance written out from the
paper (DPS's gradient by ``ms.grad`` of ‖y − A(x̂0)‖, ΠGDM's Tweedie correction, RePaint's
replacement and jumps), so the compiled loop is checked against the algorithms, in PyNative and
GRAPH_MODE. With the exact Wiener denoiser, MMPS must reach the exact posterior (training.posterior).
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from mindscience_diffuser import (
    CMStochasticIterativeScheduler,
    ConsistencyModelPipeline,
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverPipeline,
    EulerDiscreteScheduler,
)
from mindscience_diffuser.guidance import DPS, MMPS, PiGDM, Replace, matched_data_std, repaint_schedule
from mindscience_diffuser.observations import BlockAverage, CellOperator, MaskOperator, MatrixOperator, Observation
from mindscience_diffuser.training.posterior import GaussianFieldPrior, calibration_metrics, linear_gaussian_posterior

SIZE = 8
SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")


@pytest.fixture(scope="module")
def prior():
    return GaussianFieldPrior.from_spectrum(SIZE, 2.5, 1.0)


@pytest.fixture(scope="module")
def truth(prior):
    return prior.sample(1, 5)


def sensor_mask(fraction=0.2, seed=0):
    return (np.random.default_rng(seed).random((1, SIZE, SIZE)) < fraction).astype(np.float32)


class EpsilonDenoiser(nn.Cell):
    """The exact x̂0-denoiser re-expressed as an ε-prediction, ε = (x − √ᾱ·x̂0)/√(1−ᾱ), so the
    loop's x̂0 conversion is exercised."""

    def __init__(self, denoiser, alphas_cumprod):
        super().__init__()
        self.denoiser = denoiser
        self.sqrt_abar = Tensor(np.sqrt(alphas_cumprod).astype(np.float32))
        self.sqrt_one_minus = Tensor(np.sqrt(1.0 - alphas_cumprod).astype(np.float32))
        self.config = denoiser.config

    def construct(self, sample, timestep):
        x0 = self.denoiser(sample, timestep)
        t = timestep.astype(ms.int32)
        a = ops.gather(self.sqrt_abar, t, 0).reshape((-1, 1, 1, 1))
        s = ops.gather(self.sqrt_one_minus, t, 0).reshape((-1, 1, 1, 1))
        return (sample - a * x0) / s


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_modes(call):
    """``call()`` in PyNative and under GRAPH_MODE."""
    results = []
    for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
        ms.set_context(mode=mode)
        try:
            results.append(call())
        finally:
            ms.set_context(mode=ms.PYNATIVE_MODE)
    return results


# ----------------------------------------------------------------------------- reference loops

def test_dps_with_ddim_matches_chung_et_al_algorithm_1(prior, truth):
    scheduler = DDIMScheduler(**SCHEDULE, prediction_type="epsilon")
    model = EpsilonDenoiser(prior.denoiser(scheduler), scheduler.alphas_cumprod)
    observation = Observation.from_truth(truth, MaskOperator(sensor_mask()), 0.05, generator=1)
    zeta, steps, shape = 0.7, 6, (3, 1, SIZE, SIZE)
    pipe = quiet(DDIMPipeline(unet=model, scheduler=scheduler))
    outputs = run_modes(lambda: pipe(batch_size=3, generator=0, num_inference_steps=steps, observation=observation,
                                     guidance=DPS(step_size=zeta), output_type="latent").images.asnumpy())

    reference = DDIMScheduler(**SCHEDULE, prediction_type="epsilon")
    reference.set_timesteps(steps)
    abar = reference.alphas_cumprod

    def residual_norm(x, t):
        eps = model(x, t)
        a = float(np.sqrt(abar[int(t[0])]))
        x0 = (x - float(np.sqrt(1 - abar[int(t[0])])) * eps) / a
        r = observation.residual(x0)
        return ops.sqrt((r * r).reshape((x.shape[0], -1)).sum(axis=1)).sum(), eps

    grad = ms.grad(residual_norm, grad_position=0, has_aux=True)
    x = Tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    for t in reference.timesteps:
        t_batch = Tensor(np.full(shape[0], int(t), np.int32))
        gradient, (eps,) = grad(x, t_batch)
        x = reference.step(eps, x, int(t)) - zeta * gradient  # x_{i-1} = x'_{i-1} - ζ ∇‖y - A(x̂0)‖
    for out in outputs:
        np.testing.assert_allclose(out, x.asnumpy(), atol=2e-4)


@pytest.mark.parametrize("data_std", [1.0, 0.3])
def test_pigdm_with_dpm_solver_matches_the_tweedie_correction(prior, truth, data_std):
    scheduler = DPMSolverMultistepScheduler(**SCHEDULE, prediction_type="sample")
    model = prior.denoiser(scheduler)
    noise_std, steps, shape = 0.1, 6, (2, 1, SIZE, SIZE)
    mask = sensor_mask()
    observation = Observation.from_truth(truth, MaskOperator(mask), noise_std, generator=1)
    pipe = quiet(DPMSolverPipeline(unet=model, scheduler=scheduler))
    outputs = run_modes(lambda: pipe(batch_size=2, generator=0, num_inference_steps=steps, observation=observation,
                                     guidance="pigdm" if data_std == 1.0 else PiGDM(data_std=data_std),
                                     output_type="latent").images.asnumpy())

    reference = DPMSolverMultistepScheduler(**SCHEDULE, prediction_type="sample")
    reference.set_timesteps(steps)

    def weighted(x, t, u):
        return (u * observation.operator(model(x, t))).sum()

    vjp = ms.grad(weighted, grad_position=0)
    x = Tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    for i, t in enumerate(reference.timesteps):
        sigma = float(reference.sigmas[i])  # σ = s/a of x = a·x0 + s·ε
        alpha = float(1.0 / np.sqrt(sigma ** 2 + 1.0))
        s = sigma * alpha
        t_batch = Tensor(np.full(shape[0], int(t), np.int32))
        x0 = model(x, t_batch)
        r_sq = data_std ** 2 * sigma ** 2 / (data_std ** 2 + sigma ** 2)  # ΠGDM eq. 8 for data of std σ_d
        u = observation.residual(x0) / (r_sq + noise_std ** 2)  # (r²AAᵀ + σ_y²I)⁻¹ r for a mask
        score = vjp(x, t_batch, u)  # ∇ log p(y | x_t)
        x = reference.step(x0 + (s * s / alpha) * score, x, int(t))
    for out in outputs:
        np.testing.assert_allclose(out, x.asnumpy(), atol=2e-4)


def test_repaint_with_ddim_matches_lugmayr_et_al(prior, truth):
    scheduler = DDIMScheduler(**SCHEDULE, prediction_type="sample")
    model = prior.denoiser(scheduler)
    mask = np.zeros((1, SIZE, SIZE), np.float32)
    mask[..., : SIZE // 2] = 1
    observation = Observation.from_truth(truth, MaskOperator(mask), 0.0)
    steps, jump, resample, shape = 6, 2, 3, (2, 1, SIZE, SIZE)
    pipe = quiet(DDIMPipeline(unet=model, scheduler=scheduler))
    outputs = run_modes(lambda: pipe(batch_size=2, generator=0, num_inference_steps=steps, observation=observation,
                                     guidance=Replace(jump_length=jump, resample_count=resample),
                                     output_type="latent").images.asnumpy())

    reference = DDIMScheduler(**SCHEDULE, prediction_type="sample")
    reference.set_timesteps(steps)
    timesteps = [int(t) for t in reference.timesteps]
    abar = [float(reference.alphas_cumprod[t]) for t in timesteps] + [float(reference.final_alpha_cumprod)]
    order, jumps = repaint_schedule(steps, jump, resample)
    assert len(order) == steps + (steps // jump - (steps % jump == 0)) * (resample - 1) * jump
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    extra = rng.standard_normal((len(order), 2) + shape).astype(np.float32)  # drawn after the sampler's (none)
    y = observation.values_array
    for k, (step, up) in enumerate(zip(order, jumps)):
        t = timesteps[step]
        x = reference.step(model(Tensor(x), Tensor(np.full(shape[0], t, np.int32))), Tensor(x), t).asnumpy()
        level = abar[step + 1]
        known = np.sqrt(level) * y + np.sqrt(1 - level) * extra[k, 0]
        x = np.where(mask > 0, known, x)  # RePaint Algorithm 1, lines 5-8
        if up >= 0:
            ratio = abar[up] / level  # q(x_up | x): the forward process from `level` back to `up`
            x = np.sqrt(ratio) * x + np.sqrt(1 - ratio) * extra[k, 1]
    for out in outputs:
        np.testing.assert_allclose(out, x, atol=2e-4)


def test_repaint_schedule_jumps_back_resample_count_minus_one_times():
    steps, jumps = repaint_schedule(10, 5, 3)
    assert steps.tolist() == [0, 1, 2, 3, 4] * 3 + [5, 6, 7, 8, 9]
    assert jumps.tolist().count(0) == 2 and (jumps >= 0).sum() == 2
    assert repaint_schedule(4, 1, 1)[0].tolist() == [0, 1, 2, 3]


# ----------------------------------------------------------------------------- exactness

def test_mmps_with_the_exact_denoiser_samples_the_exact_posterior(prior, truth):
    scheduler = DPMSolverMultistepScheduler(**SCHEDULE, prediction_type="sample")
    observation = Observation.from_truth(truth, MaskOperator(sensor_mask()), 0.1, generator=1)
    posterior = linear_gaussian_posterior(prior, observation)
    pipe = quiet(DPMSolverPipeline(unet=prior.denoiser(scheduler), scheduler=scheduler))
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        samples = pipe(batch_size=64, generator=0, num_inference_steps=20, observation=observation,
                       guidance=MMPS(cg_iterations=5), output_type="latent").images.asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    figures = calibration_metrics(samples, posterior, truth=truth[0])
    assert figures["mean_error"] < 0.2  # the floor at N = 64 is 1/√64 = 0.125
    assert 0.75 < figures["variance_ratio"] < 1.25
    assert 0.8 < figures["samples_in_exact_interval"] < 0.97


def attached_mmps(truth, **options):
    mask = sensor_mask(0.5)
    guide = MMPS(cg_iterations=3, **options).attach(Observation.from_truth(truth, MaskOperator(mask), 0.1,
                                                                           generator=1))
    residual = mask * np.random.default_rng(0).standard_normal((3, 1, SIZE, SIZE)).astype(np.float32)
    return guide, Tensor(residual), Tensor(np.float32(0.8)), Tensor(np.float32(0.6))


def test_mmps_safeguard_bounds_the_applied_correction_to_what_an_exact_one_can_do(truth):
    """An exact (PSD-covariance) correction moves A x̂0 toward y by at most |r|: a move 3×|r| is
    scaled back to |r|, a move away from the data dropped, a move of 0.5·r kept."""
    guide, r, a, s = attached_mmps(truth)
    moves = np.array([3.0, -1.0, 0.5], np.float32).reshape(3, 1, 1, 1)
    gradient = r * Tensor(moves) / (s * s / a)  # the correction (s²/a)·g then moves A x̂0 by moves·r
    out = guide.safeguarded_gradient(gradient, r, a, s).asnumpy()
    np.testing.assert_allclose(out, gradient.asnumpy() * np.array([1 / 3, 0, 1]).reshape(3, 1, 1, 1), rtol=1e-5,
                               atol=1e-7)
    plain, *_ = attached_mmps(truth, safeguard=False)
    np.testing.assert_array_equal(plain.safeguarded_gradient(gradient, r, a, s).asnumpy(), gradient.asnumpy())


def test_mmps_safeguard_falls_back_to_pigdm_where_cg_does_not_move_toward_the_data(truth):
    """CG's predicted move r − σ_y² u − (r − M u): toward the data keeps CG's u; zero (a
    breakdown at the first step, u = 0) or away takes ΠGDM's weights with data_std."""
    guide, r, a, s = attached_mmps(truth, data_std=0.5)
    residual = r.asnumpy()
    # σ_y² u = c·r with a converged CG: the move is (1 − c)·r: toward for c = 0.5, away for c = 2
    u = (np.array([0.5, 0.0, 2.0], np.float32).reshape(3, 1, 1, 1) * residual / 0.01).astype(np.float32)
    cg_residual = np.zeros_like(u)
    cg_residual[1] = residual[1]  # u = 0: the recursion's residual is r itself, the move 0
    out = guide.safeguarded_weights(Tensor(u), Tensor(cg_residual), r, a, s).asnumpy()
    r_sq = 0.25 * (0.6 / 0.8) ** 2 / (0.25 + (0.6 / 0.8) ** 2)  # ΠGDM's r_t² with σ_d = 0.5
    pigdm = residual / (r_sq + 0.01)
    np.testing.assert_allclose(out[0], u[0], rtol=1e-6)
    np.testing.assert_allclose(out[1:], pigdm[1:], rtol=1e-5)


def test_mmps_options_and_bad_safeguard():
    assert MMPS().key() == ("MMPS", ("cg_iterations", 5), ("data_std", 1.0), ("safeguard", True))
    assert MMPS(safeguard=False).key() == ("MMPS", ("cg_iterations", 5), ("safeguard", False))
    with pytest.raises(TypeError, match="safeguard must be True or False"):
        MMPS(safeguard="yes")
    with pytest.raises(ValueError, match="data_std"):
        MMPS(data_std=float("inf"))


def test_mmps_solves_a_dense_operator_by_conjugate_gradients(prior, truth):
    scheduler = DDIMScheduler(**SCHEDULE, prediction_type="sample")
    matrix = np.random.default_rng(2).standard_normal((6, SIZE * SIZE)) / SIZE
    observation = Observation.from_truth(truth, MatrixOperator(matrix), 0.05, generator=1)
    pipe = quiet(DDIMPipeline(unet=prior.denoiser(scheduler), scheduler=scheduler))
    ms.set_context(mode=ms.GRAPH_MODE)  # the unrolled CG is hundreds of small ops: slow eagerly
    try:
        samples = pipe(batch_size=16, generator=0, num_inference_steps=8, observation=observation, guidance="mmps",
                       output_type="latent").images.asnumpy()
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    posterior = linear_gaussian_posterior(prior, observation)
    # The samples' mean is much nearer the exact posterior mean than the prior mean (0) is.
    error = np.abs(samples.mean(axis=0) - posterior.mean).mean()
    assert error < 0.5 * np.abs(posterior.mean).mean()


@pytest.mark.parametrize("scheduler_cls", [DDPMScheduler, EulerDiscreteScheduler])
def test_every_vp_scheduler_keeps_noise_free_data(prior, truth, scheduler_cls):
    scheduler = scheduler_cls(**SCHEDULE, prediction_type="sample")
    if scheduler_cls is DDPMScheduler:
        scheduler = DDPMScheduler(**SCHEDULE, prediction_type="sample", clip_sample=False)
    mask = sensor_mask(0.3)
    observation = Observation.from_truth(truth, MaskOperator(mask), 0.0)
    pipe = quiet(DDPMPipeline(unet=prior.denoiser(scheduler), scheduler=scheduler))
    samples = pipe(batch_size=4, generator=0, num_inference_steps=10, observation=observation, guidance="replace",
                   output_type="latent").images.asnumpy()
    np.testing.assert_allclose((samples * mask), np.broadcast_to(observation.values_array, samples.shape),
                               atol=0.05)
    assert samples[:, :, mask[0] == 0].std(axis=0).mean() > 0.1  # the unknown part is still sampled


# ----------------------------------------------------------------------------- consistency models

class ExactConsistencyFunction(nn.Cell):
    """F_θ whose consistency function c_skip·x + c_out·F is the exact Wiener denoiser of the
    prior at σ (x = x0 + σ·ε): x̂0 = V diag(λ/(λ+σ²)) Vᵀ x."""

    def __init__(self, prior, sigma_min=0.002, sigma_data=0.5):
        super().__init__()
        eigenvalues, vectors = np.linalg.eigh(prior.covariance())
        self.vectors = Tensor(vectors.astype(np.float32))
        self.eigenvalues = Tensor(np.maximum(eigenvalues, 0).astype(np.float32))
        self.sigma_min, self.sigma_data = sigma_min, sigma_data
        self.config = {"sample_size": SIZE, "in_channels": 1, "out_channels": 1}

    def construct(self, scaled, timestep):
        sigma = ops.exp(timestep.astype(ms.float32) / 250.0).reshape((-1, 1))
        flat = scaled.reshape((scaled.shape[0], -1)) * ops.sqrt(sigma * sigma + self.sigma_data ** 2)
        gain = self.eigenvalues / (self.eigenvalues + sigma * sigma)
        x0 = ops.matmul(ops.matmul(flat, self.vectors) * gain, self.vectors.T)
        c_skip = self.sigma_data ** 2 / ((sigma - self.sigma_min) ** 2 + self.sigma_data ** 2)
        c_out = (sigma - self.sigma_min) * self.sigma_data / ops.sqrt(sigma * sigma + self.sigma_data ** 2)
        return ((x0 - c_skip * flat) / c_out).reshape(scaled.shape)


@pytest.mark.parametrize("operator", [MaskOperator(np.pad(np.ones((1, SIZE, SIZE // 2), np.float32),
                                                          ((0, 0), (0, 0), (0, SIZE // 2)))), BlockAverage(2)],
                         ids=["inpainting", "super-resolution"])
def test_consistency_model_zero_shot_editing(prior, truth, operator):
    scheduler = CMStochasticIterativeScheduler(sigma_max=80.0)
    pipe = quiet(ConsistencyModelPipeline(unet=ExactConsistencyFunction(prior), scheduler=scheduler))
    observation = Observation.from_truth(truth, operator, 0.0)
    samples = [pipe(batch_size=8, generator=0, num_inference_steps=4, observation=observation, guidance="replace",
                    output_type="latent").images.asnumpy() for _ in run_modes(lambda: None)]
    for sample in samples:
        observed = operator(Tensor(sample)).asnumpy()
        np.testing.assert_allclose(observed, np.broadcast_to(observation.values_array, observed.shape), atol=0.01)
        assert sample.std(axis=0).mean() > 0.05


# ----------------------------------------------------------------------------- errors

class Square(nn.Cell):
    def construct(self, x):
        return x * x


@pytest.mark.parametrize("observation_args, guidance, message", [
    ((MaskOperator(sensor_mask()), 0.1), "nope", "unknown guidance method"),
    ((CellOperator(Square()), 0.1), "pigdm", "needs a linear operator"),
    ((MaskOperator(sensor_mask()), 0.0), "mmps", "noise-free"),
    ((MaskOperator(sensor_mask()), 0.1), "replace", "hard data consistency"),
    ((MaskOperator(sensor_mask()), 0.1), None, "needs guidance="),
    ((MaskOperator(np.ones((1, 4, 4), np.float32)), 0.1), "dps", "does not fit samples"),
])
def test_bad_guidance_is_refused_before_sampling(prior, truth, observation_args, guidance, message):
    scheduler = DDIMScheduler(**SCHEDULE, prediction_type="sample")
    pipe = quiet(DDIMPipeline(unet=prior.denoiser(scheduler), scheduler=scheduler))
    operator, noise = observation_args
    values = operator(Tensor(truth.astype(np.float32))).asnumpy() if not isinstance(operator, MaskOperator) \
        or operator.mask_array.shape[-1] == SIZE else np.zeros((1, 1, 4, 4), np.float32)
    observation = Observation(values, operator, noise)
    with pytest.raises(ValueError, match=message):
        pipe(batch_size=2, generator=0, num_inference_steps=3, observation=observation, guidance=guidance)


def test_guidance_without_observation_and_resampling_a_multistep_solver_are_refused(prior, truth):
    scheduler = DPMSolverMultistepScheduler(**SCHEDULE, prediction_type="sample")
    pipe = quiet(DPMSolverPipeline(unet=prior.denoiser(scheduler), scheduler=scheduler))
    with pytest.raises(ValueError, match="needs an observation"):
        pipe(batch_size=1, num_inference_steps=3, guidance="dps")
    observation = Observation.from_truth(truth, MaskOperator(sensor_mask()), 0.0)
    with pytest.raises(ValueError, match="multistep history"):
        pipe(batch_size=1, num_inference_steps=6, observation=observation,
             guidance=Replace(jump_length=2, resample_count=2))
    with pytest.raises(TypeError, match="must be an Observation"):
        pipe(batch_size=1, num_inference_steps=3, observation=np.zeros((1, 1, SIZE, SIZE)), guidance="dps")
    with pytest.raises(ValueError, match="jump_length"):
        Replace(jump_length=0)
    for bad in (0.0, -0.3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="data_std"):
            PiGDM(data_std=bad)
    with pytest.raises(TypeError, match="data_std"):
        PiGDM(data_std="0.3")


def test_matched_data_std_is_the_prior_variance_of_what_is_observed(prior):
    """σ_d² = mean_i (A Σ Aᵀ)_ii / (A Aᵀ)_ii: the pixel variance for sensors, the (larger) variance
    of the smooth part for block averages of this correlated prior; the estimate from prior draws
    agrees with the exact value from the covariance."""
    covariance, shape = prior.covariance(), prior.sample_shape
    draws = prior.sample(20000, np.random.default_rng(0))
    block = BlockAverage(2)
    exact_block = matched_data_std(block, covariance=covariance, sample_shape=shape)
    matrix = block.as_matrix(shape)
    expected = np.sqrt(np.mean(np.diag(matrix @ covariance @ matrix.T) / (matrix ** 2).sum(axis=1)))
    assert exact_block == pytest.approx(expected, rel=1e-12)
    assert exact_block > 1.3 * prior.pixel_std()
    sensors = MaskOperator(sensor_mask())
    assert matched_data_std(sensors, covariance=covariance, sample_shape=shape) == pytest.approx(prior.pixel_std())
    for operator in (block, sensors):
        exact = matched_data_std(operator, covariance=covariance, sample_shape=shape)
        assert matched_data_std(operator, draws) == pytest.approx(exact, rel=0.03)
    with pytest.raises(ValueError, match="exactly one of fields"):
        matched_data_std(block)
    with pytest.raises(ValueError, match="N >= 2"):
        matched_data_std(block, draws[:1])
    with pytest.raises(ValueError, match="covariance must be"):
        matched_data_std(block, covariance=np.eye(3), sample_shape=shape)
    with pytest.raises(TypeError, match="as_matrix"):
        matched_data_std(CellOperator(Square()), draws)


def test_conjugate_gradient_solves_spd_systems_and_stays_finite_on_indefinite_ones():
    from mindscience_diffuser.guidance import conjugate_gradient

    rng = np.random.default_rng(0)
    root = rng.standard_normal((6, 6))
    spd, indefinite = root @ root.T + 6 * np.eye(6), np.diag([1.0, -2.0, 3.0, -4.0, 5.0, 0.5])
    b = rng.standard_normal((2, 6))
    for matrix, exact in ((spd, True), (indefinite, False)):
        m = Tensor(matrix.astype(np.float32))
        u = conjugate_gradient(lambda v, m=m: ops.matmul(v, m), Tensor(b.astype(np.float32)), 6).asnumpy()
        assert np.isfinite(u).all()
        if exact:
            np.testing.assert_allclose(u, np.linalg.solve(matrix, b.T).T, rtol=1e-3, atol=1e-4)
