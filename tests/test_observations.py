"""Observations (operators, checks, the npz format) and the exact Gaussian-field denoiser, in
PyNative and GRAPH_MODE, against dense matrices and the numpy Wiener filter of tools/sampler_floor.py."""
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from mindscience_diffuser import DDIMPipeline, DDIMScheduler
from mindscience_diffuser.models import GaussianFieldDenoiser
from mindscience_diffuser.observations import (
    BlockAverage,
    CellOperator,
    MaskOperator,
    MatrixOperator,
    Observation,
)
from mindscience_diffuser.training.fields import grf_mode_variance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import sampler_floor  # noqa: E402

MODES = [ms.PYNATIVE_MODE, ms.GRAPH_MODE]
SAMPLE_SHAPE = (2, 4, 6)


@pytest.fixture(params=MODES, ids=["pynative", "graph"])
def mode(request):
    ms.set_context(mode=request.param)
    try:
        yield request.param
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


class Adjoint(nn.Cell):
    """Aᵀ as a Cell's construct, so GRAPH_MODE compiles it."""

    def __init__(self, operator):
        super().__init__()
        self.operator = operator

    def construct(self, y):
        return self.operator.adjoint(y)


def random_mask(shape, seed=0):
    mask = (np.random.default_rng(seed).random(shape) < 0.3).astype(np.float32)
    mask.reshape(-1)[0] = 1.0
    return mask


def linear_operators():
    rng = np.random.default_rng(1)
    n = int(np.prod(SAMPLE_SHAPE))
    return {
        "mask": MaskOperator(random_mask(SAMPLE_SHAPE)),
        "mask_broadcast": MaskOperator(random_mask(SAMPLE_SHAPE[1:]) > 0),
        "block": BlockAverage(2),
        "matrix": MatrixOperator(rng.standard_normal((5, n)), sample_shape=SAMPLE_SHAPE),
    }


@pytest.mark.parametrize("name", list(linear_operators()))
def test_linear_operator_matches_its_matrix_and_adjoint(name, mode):
    op = linear_operators()[name]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3,) + SAMPLE_SHAPE).astype(np.float32)
    out_shape = op.output_shape(SAMPLE_SHAPE)
    y = rng.standard_normal((3,) + out_shape).astype(np.float32)
    matrix = op.as_matrix(SAMPLE_SHAPE)
    assert op.is_linear and matrix.shape == (int(np.prod(out_shape)), int(np.prod(SAMPLE_SHAPE)))
    ax = op(Tensor(x)).asnumpy()
    aty = Adjoint(op)(Tensor(y)).asnumpy()
    assert ax.shape == (3,) + out_shape and aty.shape == x.shape
    np.testing.assert_allclose(ax.reshape(3, -1), x.reshape(3, -1) @ matrix.T, atol=1e-5)
    np.testing.assert_allclose(aty.reshape(3, -1), y.reshape(3, -1) @ matrix, atol=1e-5)
    # <A x, y> = <x, Aᵀ y>
    np.testing.assert_allclose((ax * y).sum(), (x * aty).sum(), rtol=1e-4)


def test_operators_take_other_ranks():
    x = Tensor(np.ones((2, 8, 8), np.float32))  # (B, H, W): no channel axis
    assert BlockAverage(4)(x).shape == (2, 2, 2)
    assert MaskOperator(np.eye(8))(x).shape == (2, 8, 8)
    assert MatrixOperator(np.ones((3, 64)))(x).shape == (2, 3)
    assert MatrixOperator(np.ones((3, 64))).adjoint(Tensor(np.ones((2, 3), np.float32))).shape == (2, 64)


def test_block_average_values_and_shape_errors():
    x = np.arange(2 * 16, dtype=np.float32).reshape(1, 2, 4, 4)
    out = BlockAverage(2)(Tensor(x)).asnumpy()
    np.testing.assert_allclose(out, x.reshape(1, 2, 2, 2, 2, 2).mean(axis=(3, 5)))
    with pytest.raises(ValueError, match="divisible by 3"):
        BlockAverage(3).output_shape((1, 4, 6))
    with pytest.raises(ValueError, match="factor"):
        BlockAverage(0)
    with pytest.raises(TypeError, match="factor"):
        BlockAverage(2.0)


class Cubic(nn.Cell):
    def construct(self, x):
        return ops.pow(x, 3).mean(axis=(-2, -1))


def test_cell_operator_is_nonlinear_and_differentiable(mode):
    op = CellOperator(Cubic())
    assert not op.is_linear and op.output_shape((1, 4, 4)) == (1,)
    obs = Observation(np.full((1, 1), 1.0), op, noise_std=0.1)
    x = Tensor(np.full((2, 1, 4, 4), 2.0, np.float32))

    def loss(sample):
        return obs.squared_error(sample).sum()

    grad = ms.grad(loss)(x).asnumpy()
    # d/dx (1 − mean(x³))² = −2 (1 − 8) · 3x²/16 at x = 2
    np.testing.assert_allclose(grad, np.full(grad.shape, 2 * 7 * 3 * 4 / 16), rtol=1e-5)
    with pytest.raises(TypeError, match="cell must be"):
        CellOperator(lambda x: x)
    assert isinstance(Observation(np.zeros((1, 1)), Cubic()).operator, CellOperator)


@pytest.mark.parametrize("mask, message", [
    (np.array([[0.0, 0.5]]), "only 0 and 1"),
    (np.zeros((2, 2)), "observes nothing"),
    (np.float32(1.0), "at least one dimension"),
])
def test_mask_rejects_bad_masks(mask, message):
    with pytest.raises(ValueError, match=message):
        MaskOperator(mask)


def test_mask_shape_must_fit_the_sample():
    with pytest.raises(ValueError, match="does not fit samples"):
        MaskOperator(np.ones((3, 3))).output_shape((1, 4, 4))
    with pytest.raises(TypeError, match="mask must hold numbers"):
        MaskOperator(np.array(["a", "b"]))


def test_matrix_operator_errors():
    with pytest.raises(ValueError, match="2-D"):
        MatrixOperator(np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        MatrixOperator(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="sample_shape"):
        MatrixOperator(np.ones((2, 5)), sample_shape=(1, 2, 2))
    with pytest.raises(ValueError, match="4 columns"):
        MatrixOperator(np.ones((2, 4))).output_shape((1, 3, 3))


def test_observation_checks_its_arguments():
    op = BlockAverage(2)
    good = np.zeros((1, 1, 2, 2))
    with pytest.raises(ValueError, match="noise_std"):
        Observation(good, op, noise_std=-0.1)
    with pytest.raises(ValueError, match="noise_std"):
        Observation(good, op, noise_std=float("inf"))
    with pytest.raises(TypeError, match="noise_std"):
        Observation(good, op, noise_std="0.1")
    with pytest.raises(ValueError, match="values contain 1 NaN"):
        Observation(np.where(np.arange(4).reshape(good.shape) == 0, np.nan, good), op)
    with pytest.raises(TypeError, match="operator must be"):
        Observation(good, np.eye(4))
    obs = Observation(good, op, 0.1)
    assert obs.check((1, 4, 4)) == (1, 2, 2) and obs.check((1, 4, 4), batch_size=8) == (1, 2, 2)
    with pytest.raises(ValueError, match=r"values must have shape \(1, 1, 3, 3\)"):
        obs.check((1, 6, 6))
    with pytest.raises(ValueError, match="values\\[None\\]"):
        Observation(np.zeros((1, 2, 2)), op).check((1, 4, 4))
    per_sample = Observation(np.zeros((3, 1, 2, 2)), op)
    assert per_sample.check((1, 4, 4), batch_size=3) == (1, 2, 2)
    with pytest.raises(ValueError, match=r"\(1, 1, 2, 2\) or \(4, 1, 2, 2\)"):
        per_sample.check((1, 4, 4), batch_size=4)


def test_observation_residual_in_both_modes(mode):
    op = MaskOperator(random_mask((1, 4, 4)))
    values = np.random.default_rng(3).standard_normal((1, 1, 4, 4)) * op.mask_array
    obs = Observation(values, op, 0.05)
    x = np.random.default_rng(4).standard_normal((2, 1, 4, 4)).astype(np.float32)
    expected = values - x * op.mask_array
    np.testing.assert_allclose(obs(Tensor(x)).asnumpy(), expected, atol=1e-6)
    np.testing.assert_allclose(obs.squared_error(Tensor(x)).asnumpy(), (expected ** 2).sum(axis=(1, 2, 3)),
                               rtol=1e-5)


def test_from_truth_adds_noise_only_where_observed():
    op = MaskOperator(random_mask((1, 8, 8)))
    truth = np.ones((1, 1, 8, 8), np.float32)
    obs = Observation.from_truth(truth, op, noise_std=0.1, generator=0)
    unobserved = op.mask_array == 0
    assert np.all(obs.values_array[0][unobserved] == 0)
    residual = obs.values_array[0][~unobserved] - 1.0
    assert 0.05 < residual.std() < 0.15


def test_npz_round_trip_and_errors(tmp_path):
    mask = random_mask((1, 4, 4))
    values = np.where(mask == 1, 0.5, np.nan)  # unobserved entries may be NaN in the file
    np.savez(tmp_path / "obs.npz", values=values, mask=mask, noise_std=0.05)
    obs = Observation.from_npz(tmp_path / "obs.npz")
    assert obs.noise_std == 0.05 and obs.check((1, 4, 4)) == (1, 4, 4)
    np.testing.assert_array_equal(obs.values_array[0], np.where(mask == 1, 0.5, 0.0))
    written = obs.to_npz(tmp_path / "again")
    assert written.name == "again.npz"
    again = Observation.from_npz(written)
    np.testing.assert_array_equal(again.values_array, obs.values_array)
    np.testing.assert_array_equal(again.operator.mask_array, mask)

    np.savez(tmp_path / "no_mask.npz", values=values, noise_std=0.05)
    with pytest.raises(ValueError, match="no 'mask' array"):
        Observation.from_npz(tmp_path / "no_mask.npz")
    np.savez(tmp_path / "bad_shape.npz", values=values, mask=mask[..., :2], noise_std=0.05)
    with pytest.raises(ValueError, match="mask .* must have the shape of values"):
        Observation.from_npz(tmp_path / "bad_shape.npz")
    np.savez(tmp_path / "bad_noise.npz", values=values, mask=mask, noise_std=[0.1, 0.2])
    with pytest.raises(ValueError, match="noise_std .* single number"):
        Observation.from_npz(tmp_path / "bad_noise.npz")
    np.savez(tmp_path / "nan.npz", values=np.full((1, 4, 4), np.nan), mask=mask, noise_std=0.1)
    with pytest.raises(ValueError, match="NaN or infinite at"):
        Observation.from_npz(tmp_path / "nan.npz")
    with pytest.raises(OSError, match="not found"):
        Observation.from_npz(tmp_path / "missing.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not an archive")
    with pytest.raises(OSError, match="cannot read"):
        Observation.from_npz(tmp_path / "garbage.npz")
    with pytest.raises(ValueError, match="mask observations only"):
        Observation(np.zeros((1, 1, 2, 2)), BlockAverage(2)).to_npz(tmp_path / "x.npz")


# -- the exact denoiser -------------------------------------------------------------------------

def floor_denoiser():
    scheduler = DDIMScheduler(**sampler_floor.SCHEDULE)
    return GaussianFieldDenoiser.from_scheduler(sampler_floor.mode_variance(), scheduler), scheduler


def test_denoiser_matches_the_numpy_wiener_filter(mode):
    denoiser, scheduler = floor_denoiser()
    x_t = np.random.default_rng(5).standard_normal((3, 1, 32, 32))
    timesteps = np.array([0, 250, 999])
    out = denoiser(Tensor(x_t.astype(np.float32)), Tensor(timesteps.astype(np.float32))).asnumpy()
    for i, t in enumerate(timesteps):
        reference = sampler_floor.posterior_mean(x_t[i:i + 1], float(scheduler.alphas_cumprod[t]),
                                                 sampler_floor.mode_variance())
        np.testing.assert_allclose(out[i:i + 1], reference, atol=2e-5 * np.abs(reference).max() + 1e-7)
    scalar = denoiser(Tensor(x_t[1:2].astype(np.float32)), 250).asnumpy()
    np.testing.assert_allclose(scalar, out[1:2], atol=1e-6)


def test_denoiser_with_a_mean_and_several_channels():
    variance = grf_mode_variance(8, 2.5, 0.3)
    abar = np.array([0.5, 0.9])
    denoiser = GaussianFieldDenoiser(variance, abar, in_channels=2, mean=1.5)
    x_t = np.random.default_rng(6).standard_normal((1, 2, 8, 8))
    out = denoiser(Tensor(x_t.astype(np.float32)), 1).asnumpy()
    for c in range(2):
        centred = x_t[0, c] - np.sqrt(0.9) * 1.5
        expected = 1.5 + sampler_floor.posterior_mean(centred, 0.9, variance)
        np.testing.assert_allclose(out[0, c], expected, atol=1e-5)
    assert dict(denoiser.config) == {"sample_size": 8, "in_channels": 2, "out_channels": 2}
    with pytest.raises(ValueError, match=r"sample must have shape \(B, 2, 8, 8\)"):
        denoiser(Tensor(np.zeros((1, 1, 8, 8), np.float32)), 1)
    with pytest.raises(ValueError, match="mode_variance"):
        GaussianFieldDenoiser(-variance, abar)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        GaussianFieldDenoiser(variance, np.array([1.5]))


def test_denoiser_from_a_scheduler_config_matches_the_scheduler():
    config = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    from_config = GaussianFieldDenoiser.from_scheduler(grf_mode_variance(8), config)
    from_scheduler = GaussianFieldDenoiser.from_scheduler(grf_mode_variance(8), DDIMScheduler(**config))
    np.testing.assert_array_equal(from_config.alphas_cumprod, from_scheduler.alphas_cumprod)


class DpsGradient(nn.Cell):
    """∇_{x_t} ‖y − A(x̂₀(x_t))‖²: the DPS direction (Chung et al. 2023), compiled whole."""

    def __init__(self, observation, denoiser):
        super().__init__()
        self.observation = observation
        self.denoiser = denoiser
        self.grad = ms.grad(self.loss)

    def loss(self, x_t, t):
        return self.observation.squared_error(self.denoiser(x_t, t)).sum()

    def construct(self, x_t, t):
        return self.grad(x_t, t)


@pytest.mark.parametrize("operator", ["mask", "block"])
def test_dps_gradient_through_the_denoiser(operator, mode):
    denoiser, scheduler = floor_denoiser()
    rng = np.random.default_rng(7)
    op = MaskOperator(random_mask((1, 32, 32))) if operator == "mask" else BlockAverage(4)
    values = rng.standard_normal((1,) + op.output_shape((1, 32, 32)))
    obs = Observation(values, op, 0.05)
    x_t = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    t = Tensor(np.array([400.0, 400.0], np.float32))
    grad = DpsGradient(obs, denoiser)(Tensor(x_t), t).asnumpy()
    # The Wiener filter is a symmetric linear map M: the gradient is −2 M Aᵀ (y − A M x_t).
    a = op.as_matrix((1, 32, 32))
    gain = denoiser.filter_gain(400)

    def wiener(v):
        return np.fft.ifft2(np.fft.fft2(v.reshape(-1, 32, 32)) * gain).real.reshape(v.shape)

    x0 = wiener(x_t.reshape(2, -1).astype(np.float64))
    expected = -2 * wiener((values.reshape(1, -1) - x0 @ a.T) @ a)
    np.testing.assert_allclose(grad.reshape(2, -1), expected, atol=1e-4 * np.abs(expected).max())


def test_a_pipeline_samples_with_the_exact_denoiser(graph_mode):
    denoiser, scheduler = floor_denoiser()
    pipe = DDIMPipeline(unet=denoiser, scheduler=DDIMScheduler(**sampler_floor.SCHEDULE, clip_sample=False))
    samples = pipe(batch_size=64, generator=0, num_inference_steps=10, output_type="latent").images.asnumpy()
    assert samples.shape == (64, 1, 32, 32)
    # The prior's pixel std is 0.3; ten deterministic DDIM steps lose some small-scale power.
    assert 0.2 < samples.std() < 0.33 and abs(samples.mean(axis=(1, 2, 3))).max() < 1e-4


def test_denoiser_in_float16_and_from_the_prior():
    from mindscience_diffuser.training.posterior import GaussianFieldPrior

    prior = GaussianFieldPrior.from_spectrum(32, 2.5, 0.3)
    scheduler = DDIMScheduler(**sampler_floor.SCHEDULE)
    full, half = prior.denoiser(scheduler), prior.denoiser(scheduler, compute_dtype=ms.float16)
    np.testing.assert_array_equal(full.mode_variance_array, sampler_floor.mode_variance())
    x_t = Tensor(np.random.default_rng(8).standard_normal((2, 1, 32, 32)).astype(np.float32))
    reference = full(x_t, 500).asnumpy()
    low = half(x_t, 500)
    assert low.dtype == ms.float16
    assert np.abs(low.asnumpy().astype(np.float32) - reference).max() < 0.02 * np.abs(reference).max()
