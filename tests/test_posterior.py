"""The exact posterior of a Gaussian random field and the calibration metrics: the posterior against
the information form, Matheron samples against the closed-form moments, and the metrics on exact
samples (calibrated) and on wrong ones (prior samples, halved or shifted spread), which must fail."""
import numpy as np
import pytest

from mindscience_diffuser.normalization import DataNormalization
from mindscience_diffuser.observations import BlockAverage, MaskOperator, MatrixOperator, Observation
from mindscience_diffuser.training.fields import gaussian_random_field
from mindscience_diffuser.training.posterior import (
    GaussianFieldPrior,
    calibration_floor,
    calibration_metrics,
    linear_gaussian_posterior,
)

SIZE = 16
NUM_SAMPLES = 400


@pytest.fixture(scope="module")
def prior():
    return GaussianFieldPrior.from_spectrum(SIZE, 2.5, 0.3)


def sparse_mask(fraction=0.1, seed=0):
    mask = np.zeros((1, SIZE, SIZE))
    rng = np.random.default_rng(seed)
    mask.reshape(-1)[rng.choice(SIZE * SIZE, int(fraction * SIZE * SIZE), replace=False)] = 1
    return mask


def test_prior_covariance_is_the_generators(prior):
    fields = gaussian_random_field(4000, SIZE, 2.5, 0.3, generator=0).reshape(4000, -1).astype(np.float64)
    empirical = np.cov(fields, rowvar=False)
    assert np.abs(empirical - prior.covariance()).max() < 0.01  # entries of order 0.09
    draws = prior.sample(4000, 1).reshape(4000, -1)
    assert np.abs(np.cov(draws, rowvar=False) - prior.covariance()).max() < 0.01
    assert prior.pixel_std() == pytest.approx(0.3)


def test_prior_in_model_units():
    norm = DataNormalization(mean=[2.0], std=[0.5])
    scaled = GaussianFieldPrior.from_spectrum(8, 2.5, 0.3, data_normalization=norm)
    assert scaled.mean == pytest.approx(-4.0) and scaled.pixel_std() == pytest.approx(0.6)


def test_posterior_matches_the_information_form(prior):
    """With σ_y > 0 on a full-rank prior (add a small variance to the k = 0 mode, which the GRF
    leaves at 0), Cov = (Σ⁻¹ + AᵀA/σ²)⁻¹ and mean = Cov·(Σ⁻¹μ + Aᵀy/σ²)."""
    variance = prior.mode_variance.copy()
    variance[0, 0] = 0.01
    full_rank = GaussianFieldPrior(variance, mean=0.2)
    truth = full_rank.sample(1, 2)
    obs = Observation.from_truth(truth, BlockAverage(4), noise_std=0.05, generator=3)
    post = linear_gaussian_posterior(full_rank, obs)
    a = BlockAverage(4).as_matrix(full_rank.sample_shape)
    precision = np.linalg.inv(full_rank.covariance()) + a.T @ a / 0.05 ** 2
    cov = np.linalg.inv(precision)
    mean = cov @ (np.linalg.solve(full_rank.covariance(), np.full(SIZE * SIZE, 0.2))
                  + a.T @ obs.values_array.reshape(-1).astype(np.float64) / 0.05 ** 2)
    np.testing.assert_allclose(post.covariance, cov, atol=1e-8)
    np.testing.assert_allclose(post.mean.reshape(-1), mean, atol=1e-6)


def test_noise_free_mask_pins_the_observed_pixels(prior):
    half = np.zeros((1, SIZE, SIZE))
    half[..., : SIZE // 2] = 1
    truth = prior.sample(1, 4)
    post = linear_gaussian_posterior(prior, Observation.from_truth(truth, MaskOperator(half), 0.0))
    observed = half == 1
    np.testing.assert_allclose(post.mean[observed], truth[0][observed], atol=1e-8)
    assert post.std[observed].max() < 1e-6 and post.std[~observed].min() > 0.01
    samples = post.sample(8, 5)
    np.testing.assert_allclose(samples[:, observed], np.broadcast_to(truth[0][observed], (8, observed.sum())),
                               atol=1e-8)


def test_exact_samples_have_the_exact_moments(prior):
    truth = prior.sample(1, 6)
    # Block averages of zero-mean fields: A Σ Aᵀ is singular (the averages sum to 0), so the
    # pseudo-inverse path is exercised too.
    for operator, noise in [(MaskOperator(sparse_mask()), 0.05), (BlockAverage(4), 0.0)]:
        post = linear_gaussian_posterior(prior, Observation.from_truth(truth, operator, noise, generator=7))
        draws = post.sample(20000, 8).reshape(20000, -1)
        assert np.abs(draws.mean(axis=0) - post.mean.reshape(-1)).max() < 5 * post.std.max() / np.sqrt(20000)
        assert np.abs(np.cov(draws, rowvar=False) - post.covariance).max() < 0.002


def test_nonlinear_or_batched_observations_are_refused(prior):
    from mindspore import nn

    class Identity(nn.Cell):
        def construct(self, x):
            return x

    with pytest.raises(ValueError, match="linear operator"):
        linear_gaussian_posterior(prior, Observation(np.zeros((1, 1, SIZE, SIZE)), Identity()))
    with pytest.raises(ValueError, match="values must have shape"):
        linear_gaussian_posterior(prior, Observation(np.zeros((2, 1, SIZE, SIZE)), MaskOperator(sparse_mask())))


@pytest.fixture(scope="module")
def sparse_case(prior):
    truth = prior.sample(1, 9)
    obs = Observation.from_truth(truth, MaskOperator(sparse_mask(0.05)), 0.05, generator=10)
    return truth, linear_gaussian_posterior(prior, obs)


def test_exact_samples_are_calibrated(sparse_case):
    truth, post = sparse_case
    floor = calibration_floor(post, NUM_SAMPLES, generator=11, truth=truth)
    # Sampling noise alone: mean error ≈ 1/√N, two independent sets ≈ √(2/N).
    assert floor["mean_error"] == pytest.approx(1 / np.sqrt(NUM_SAMPLES), rel=0.25)
    assert floor["two_set_mean_error"] == pytest.approx(np.sqrt(2 / NUM_SAMPLES), rel=0.25)
    assert floor["variance_ratio"] == pytest.approx(1.0, abs=0.05)
    assert 0.87 < floor["interval_coverage"] < 0.91
    assert 0.87 < floor["samples_in_exact_interval"] < 0.93
    assert 0.8 < floor["truth_coverage"] <= 1.0
    assert floor["num_uncertain"] == SIZE * SIZE and np.isnan(floor["determined_rmse"])


def test_wrong_samples_fail(prior, sparse_case):
    truth, post = sparse_case
    exact = post.sample(NUM_SAMPLES, 12)
    ignoring_the_data = calibration_metrics(prior.sample(NUM_SAMPLES, 13), post, truth)
    assert ignoring_the_data["mean_error"] > 0.5 and ignoring_the_data["variance_ratio"] > 1.5
    assert ignoring_the_data["samples_in_exact_interval"] < 0.8
    overconfident = calibration_metrics(post.mean + 0.5 * (exact - post.mean), post, truth)
    assert overconfident["variance_ratio"] == pytest.approx(0.25, abs=0.03)
    assert overconfident["interval_coverage"] < 0.65
    biased = calibration_metrics(exact + 0.5 * post.std, post, truth)
    assert biased["mean_error"] == pytest.approx(0.5, abs=0.07) and biased["interval_coverage"] < 0.86


def test_metrics_check_their_arguments(sparse_case):
    _, post = sparse_case
    with pytest.raises(ValueError, match="samples must have shape"):
        calibration_metrics(np.zeros((4, SIZE, SIZE)), post)
    with pytest.raises(ValueError, match="at least 2"):
        calibration_metrics(np.zeros((1, 1, SIZE, SIZE)), post)
    with pytest.raises(ValueError, match="level"):
        calibration_metrics(np.zeros((4, 1, SIZE, SIZE)), post, level=90)


def test_dense_matrix_observation(prior):
    rng = np.random.default_rng(14)
    operator = MatrixOperator(rng.standard_normal((20, SIZE * SIZE)) / SIZE, sample_shape=prior.sample_shape)
    truth = prior.sample(1, 15)
    post = linear_gaussian_posterior(prior, Observation.from_truth(truth, operator, 0.01, generator=16))
    # Observing 20 projections shrinks the total variance.
    assert np.trace(post.covariance) < np.trace(prior.covariance())


def test_posterior_check_tool_scores_registered_methods():
    """tools/posterior_check.py: the three patterns, the registration point and the table, with
    the exact denoiser only and few samples (the shipped model's rows take about a minute)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import posterior_check

    methods = {name: posterior_check.METHODS[name] for name in posterior_check.METHODS if "exact" in name}
    rows = posterior_check.evaluate(methods, {"exact": 32}, seed=0)
    scored = [row for row in rows if "mean_error" in row]
    assert [row["pattern"] for row in scored] == [p.name for p in posterior_check.build_problems(
        posterior_check.PRIOR.sample(1, 0))]
    assert all(0.75 < row["interval_coverage"] < 0.95 and row["mean_error"] < 0.35 for row in scored)
    table = posterior_check.markdown_table(rows)
    assert table.count("\n| ") == 4 and "√(2/N)" in table
