"""Synthetic fields (GRF, Darcy) and the evaluation metrics, checked against closed forms."""
import json
from pathlib import Path

import numpy as np
import pytest

from mindscience_diffuser import DEFAULT_MODEL_PATH as DEFAULT_MODEL
from mindscience_diffuser.training import (
    SyntheticFieldDataset,
    darcy_permeability,
    evaluate,
    gaussian_random_field,
    generate_fields,
    histogram_l1,
    radial_power_spectrum,
    spectrum_relative_error,
    wasserstein1,
)
from mindscience_diffuser.training.fields import power_law_spectrum, wavenumber_grid


def test_grf_has_the_prescribed_spectrum_and_std():
    fields = gaussian_random_field(2000, 32, spectrum=2.5, std=0.3, generator=0)
    assert fields.shape == (2000, 1, 32, 32) and fields.dtype == np.float32
    assert abs(fields.std() - 0.3) < 0.01 and abs(fields.mean()) < 0.01
    k, p = radial_power_spectrum(fields)
    # Expected shell power: the same shell average of the prescribed P(k), rescaled like the fields.
    grid = wavenumber_grid(32)
    prescribed = power_law_spectrum(2.5)(grid)
    scale = 0.3 ** 2 * 32 ** 2 / prescribed.sum()
    shell = np.rint(grid).astype(int)
    expected = np.array([prescribed[shell == kk].mean() for kk in k]) * scale
    np.testing.assert_allclose(p, expected, rtol=0.06)
    # Log-log slope over the resolved range is -2.5.
    slope = np.polyfit(np.log(k[2:]), np.log(p[2:]), 1)[0]
    assert abs(slope + 2.5) < 0.1


def test_grf_reproducible_and_custom_spectrum():
    a = gaussian_random_field(3, 16, generator=7)
    assert np.array_equal(a, gaussian_random_field(3, 16, generator=np.random.default_rng(7)))
    assert not np.array_equal(a, gaussian_random_field(3, 16, generator=8))
    band = gaussian_random_field(200, 16, spectrum=lambda k: ((k > 3) & (k < 5)).astype(float), generator=0)
    k, p = radial_power_spectrum(band)
    assert p[k == 4][0] > 1e3 * p[k == 1][0]
    assert np.array_equal(generate_fields("grf", 3, 16, generator=7), a)


def test_darcy_is_binary_with_both_phases():
    a = darcy_permeability(8, 32, generator=0)
    assert a.shape == (8, 1, 32, 32)
    assert set(np.unique(a).tolist()) == {-1.0, 1.0}
    assert 0.2 < (a > 0).mean() < 0.8
    b = darcy_permeability(2, 16, low=3.0, high=12.0, generator=0)
    assert set(np.unique(b).tolist()) <= {3.0, 12.0}
    assert SyntheticFieldDataset("darcy", num_samples=4, size=16, seed=1).data.shape == (4, 1, 16, 16)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: gaussian_random_field(0), ValueError, "n must be"),
    (lambda: gaussian_random_field(2, size=1), ValueError, "size must be"),
    (lambda: gaussian_random_field(2, std=0), ValueError, "std must be"),
    (lambda: gaussian_random_field(2, spectrum="flat"), TypeError, "spectrum must be"),
    (lambda: gaussian_random_field(2, spectrum=lambda k: -k), ValueError, "non-negative"),
    (lambda: gaussian_random_field(2, spectrum=lambda k: 0 * k), ValueError, "zero everywhere"),
    (lambda: darcy_permeability(2, low=1, high=0), ValueError, "low must be < high"),
    (lambda: generate_fields("turbulence", 2), ValueError, "kind must be one of"),
    (lambda: gaussian_random_field(2, generator="seed"), TypeError, "generator"),
])
def test_field_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_radial_spectrum_of_a_single_mode():
    n = 16
    x = np.arange(n)
    field = np.cos(2 * np.pi * 3 * x / n)[None, :] * np.ones((n, 1))  # k = (0, ±3)
    k, p = radial_power_spectrum(field[None, None])
    assert k.tolist() == list(range(1, 9))
    assert np.all(p[k != 3] < 1e-20) and p[k == 3][0] > 0
    # Parseval: the shells hold all the variance of a zero-mean field (mode on the axis, shell of 4 cells).
    assert p[2] * np.sum(np.rint(wavenumber_grid(n)) == 3) / n ** 2 == pytest.approx(field.var())


def test_evaluate_same_and_different_distributions():
    ref = gaussian_random_field(400, 32, spectrum=2.5, generator=1)
    same = gaussian_random_field(400, 32, spectrum=2.5, generator=2)
    steeper = gaussian_random_field(400, 32, spectrum=3.5, generator=2)
    zero = evaluate(ref, ref)
    assert zero["spectrum_rel_error"] == 0 and zero["wasserstein1"] == 0 and zero["histogram_l1"] == 0
    ok = evaluate(same, ref[:, 0])  # (N, H, W) accepted too
    assert ok["spectrum_rel_error"] < 0.06 and ok["wasserstein1"] < 0.01 and ok["histogram_l1"] < 0.05
    bad = evaluate(steeper, ref)
    assert bad["spectrum_rel_error"] > 0.5 and bad["spectrum_max_rel_error"] > bad["spectrum_rel_error"]
    json.dumps(ok)  # JSON-serialisable, as the command line prints it
    assert len(ok["k"]) == len(ok["spectrum_generated"]) == 16
    assert spectrum_relative_error(steeper, ref) == pytest.approx(bad["spectrum_rel_error"])
    assert spectrum_relative_error(steeper, ref, reduce="max") == pytest.approx(bad["spectrum_max_rel_error"])


def test_histogram_distances():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 1, 8, 8))
    assert wasserstein1(a + 0.25, a) == pytest.approx(0.25, abs=1e-9)
    assert histogram_l1(a + 100, a) == pytest.approx(2.0, abs=0.01)  # disjoint but for the top edge bin
    assert histogram_l1(a, a) == 0


@pytest.mark.parametrize("gen,ref,exc,match", [
    (np.zeros((2, 1, 8, 8)), np.zeros((2, 1, 16, 16)), ValueError, "same"),
    (np.zeros((8, 8)), np.zeros((2, 1, 8, 8)), ValueError, "generated must be shaped"),
    (np.full((2, 1, 8, 8), np.nan), np.zeros((2, 1, 8, 8)), ValueError, "NaN"),
    (np.zeros((2, 1, 8, 8)), np.zeros((0, 1, 8, 8)), ValueError, "reference is empty"),
    (np.array([["a"]]), np.zeros((2, 1, 8, 8)), TypeError, "numbers"),
])
def test_evaluate_errors(gen, ref, exc, match):
    with pytest.raises(exc, match=match):
        evaluate(gen, ref)


def test_spectrum_reduce_error():
    with pytest.raises(ValueError, match="reduce must be one of"):
        spectrum_relative_error(np.zeros((1, 1, 4, 4)) + 1, np.ones((1, 1, 4, 4)), reduce="median")


def test_default_model_files():
    """The shipped model: diffusers pipeline layout, small, loadable, with the sampler it was measured with."""
    from mindscience_diffuser import DiffusionPipeline

    index = json.loads((DEFAULT_MODEL / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline"  # diffusers' DDPMPipeline drives the stored DPM-Solver as is
    assert index["unet"] == ["diffusers", "UNet2DModel"]
    assert index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    weights = DEFAULT_MODEL / "unet" / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size <= 10 * 2 ** 20
    pipe = DiffusionPipeline.from_pretrained(DEFAULT_MODEL)
    assert pipe.unet.config.in_channels == 1 and pipe.unet.config.sample_size == 32
    config = pipe.scheduler.config
    assert config.prediction_type == "v_prediction" and config.beta_schedule == "squaredcos_cap_v2"
    assert config.use_lu_lambdas and config.solver_order == 2 and config.algorithm_type == "dpmsolver++"
    metrics_file = Path(__file__).resolve().parents[1] / "docs" / "workflow_default_model_metrics.json"
    recorded = json.loads(metrics_file.read_text())
    assert recorded["sampler"] == "DPMSolverMultistepScheduler" and recorded["num_generated"] == 512
    assert recorded["spectrum_rel_error"] <= 0.10


def test_default_model_reproduces_the_field_statistics(graph_mode):
    """64 fields from the shipped model and sampler, 25 steps, against 512 held-out GRFs. Measured
    (seeds 0/1/2): spectrum error 0.096/0.098/0.090, where two sets of true fields of these sizes
    score 0.02 and the same weights under 20 DDIM steps about 0.28; histogram L1 0.023-0.030."""
    import mindscience_diffuser as msd
    from mindscience_diffuser.training import generate_samples

    pipe = msd.DiffusionPipeline.from_pretrained(msd.DEFAULT_MODEL_PATH)
    generated = generate_samples(pipe.unet, pipe.scheduler, 64, num_inference_steps=25, seed=0, batch_size=64)
    reference = SyntheticFieldDataset("grf", num_samples=512, size=32, seed=1, spectrum=2.5, std=0.3).data
    result = evaluate(generated, reference)
    assert result["spectrum_rel_error"] < 0.15 and result["spectrum_max_rel_error"] < 0.35
    assert result["histogram_l1"] < 0.06 and abs(result["std_generated"] / result["std_reference"] - 1) < 0.05
