"""The shipped conditional model (GRF_SLOPE_MODEL_PATH) and the exact reference it is measured
against: the expected spectrum of the slope-α Gaussian random fields and the unbiased slope fit."""
import json

import numpy as np
import pytest

import mindscience_diffuser as msd
from mindscience_diffuser.training import (
    fit_power_law_exponent,
    gaussian_random_field,
    power_law_grf_spectrum,
    radial_power_spectrum,
)

MODEL = msd.GRF_SLOPE_MODEL_PATH


def test_the_exact_spectrum_is_the_mean_periodogram_of_the_fields():
    """E[P̂(k)] from the formula against 4096 drawn fields: within their sampling error."""
    for alpha in (1.5, 3.5):
        exact = power_law_grf_spectrum(alpha, size=32, std=0.3)
        measured = radial_power_spectrum(gaussian_random_field(4096, 32, spectrum=alpha, std=0.3, generator=0))[1]
        assert exact.shape == (16,)
        np.testing.assert_allclose(measured, exact, rtol=0.03)


def test_the_slope_fit_is_unbiased_and_the_plain_regression_is_not():
    for alpha in (1.5, 2.37, 3.5):
        exact = power_law_grf_spectrum(alpha, size=32, std=0.3)
        assert fit_power_law_exponent(exact) == pytest.approx(alpha, abs=1e-6)
        k = np.arange(2, 13)
        assert -np.polyfit(np.log(k), np.log(exact[1:12]), 1)[0] < alpha - 0.03  # the grid bends a line fit
        fields = gaussian_random_field(256, 32, spectrum=alpha, std=0.3, generator=1)
        assert abs(fit_power_law_exponent(fields) - alpha) < 0.02
    with pytest.raises(ValueError, match="positive"):
        fit_power_law_exponent(np.zeros(16))


def test_the_shipped_model_is_small_and_conditioned_on_one_number():
    unet = json.loads((MODEL / "unet" / "config.json").read_text())
    assert (unet["class_embed_type"], unet["projection_class_embeddings_input_dim"]) == ("projection", 1)
    assert (unet["sample_size"], unet["in_channels"], unet["out_channels"]) == (32, 1, 1)
    scheduler = json.loads((MODEL / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["_class_name"], scheduler["prediction_type"]) == ("DPMSolverMultistepScheduler", "v_prediction")
    assert json.loads((MODEL / "model_index.json").read_text())["_null_condition"] == "zeros"
    assert sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file()) <= 10 * 2 ** 20


def test_the_shipped_model_makes_fields_of_the_requested_slope():
    """Eight fields at α = 3.2 (far from the 2.5 a model that ignored α would make) have a fitted
    slope within 0.3; a true set of eight fits within 0.03."""
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        pipe = msd.DiffusionPipeline.from_pretrained(MODEL)
        pipe.set_progress_bar_config(disable=True)
        fields = pipe(8, generator=0, num_inference_steps=10, condition=[3.2], output_type="field").images
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert abs(fit_power_law_exponent(fields.asnumpy()) - 3.2) < 0.3
