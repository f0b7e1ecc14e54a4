"""Fields in physical units (issue 13): the trainer records the data's per-channel mean and
std, stores them with the model (``model_index.json``'s ``"_data_normalization"``, and its
checkpoints), sampling returns the data's units (``output_type="field"``, ``sample --save-npy``),
unnormalised data far from [-1, 1] warn, and field PNGs carry a colour bar over a fitted or given
value range."""
import json
import warnings

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

import mindscience_diffuser as msd
from mindscience_diffuser import DDIMPipeline, DDIMScheduler, DiffusionPipeline, ScoreSdeVePipeline, cli, imaging
from mindscience_diffuser.configuration import FrozenConfig
from mindscience_diffuser.normalization import MODEL_INDEX_KEY, DataNormalization, far_from_unit_range
from mindscience_diffuser.training import DiffusionTrainer, SyntheticFieldDataset


def tiny_unet(channels=1):
    ms.set_seed(0)
    return msd.UNet2DModel(
        sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(8,),
        down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), mid_block_type=None, layers_per_block=1,
        norm_num_groups=4,
    )


class AnalyticModel(nn.Cell):
    """m(x, t) = 0.5·tanh(x): cheap, with the config fields a pipeline reads."""

    def __init__(self, channels=2):
        super().__init__()
        self.config = FrozenConfig(sample_size=4, in_channels=channels, out_channels=channels)

    def construct(self, x, t, class_labels=None):
        return 0.5 * ops.tanh(x)


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def field_data(n=16, mean=300.0, std=20.0, seed=0):
    return (mean + std * np.random.default_rng(seed).standard_normal((n, 1, 8, 8))).astype(np.float32)


def no_clip_scheduler():
    return DDIMScheduler(num_train_timesteps=100, clip_sample=False)


# ---- the statistics themselves ------------------------------------------------------------------

def test_statistics_are_per_channel_and_map_exactly_both_ways():
    rng = np.random.default_rng(1)
    temperature = 300 + 20 * rng.standard_normal((50, 1, 6, 6))
    pressure = 1e5 + 3e3 * rng.standard_normal((50, 1, 6, 6))
    data = np.concatenate([temperature, pressure], axis=1)
    norm = DataNormalization.from_data(data)
    np.testing.assert_allclose(norm.mean, data.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(norm.std, data.std(axis=(0, 2, 3)), rtol=1e-12)
    z = norm.to_model_units(data)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, atol=1e-4)
    x = Tensor(np.array([[[[0.0]], [[1.0]]]], np.float32))
    np.testing.assert_allclose(norm.to_data_units(x).asnumpy().ravel(), [norm.mean[0], norm.mean[1] + norm.std[1]],
                               rtol=1e-6)
    assert DataNormalization.from_data(np.full((3, 1, 2, 2), 7.0)).std == (1.0,)  # constant channel: shift only


@pytest.mark.parametrize("mean,std,message", [
    ([0.0], [0.0], "std must be > 0"),
    ([0.0], [-1.0], "std must be > 0"),
    ([np.nan], [1.0], "mean must be finite"),
    ([0.0], [np.inf], "std must be finite"),
    ([0.0, 1.0], [1.0], "one entry per channel"),
    ([], [], "one number per channel"),
])
def test_bad_statistics_are_value_errors(mean, std, message):
    with pytest.raises(ValueError, match=message):
        DataNormalization(mean=mean, std=std)


def test_far_from_unit_range():
    assert far_from_unit_range(DataNormalization([300.0], [20.0]))
    assert far_from_unit_range(DataNormalization([0.0], [1e-4]))
    assert not far_from_unit_range(DataNormalization([0.0], [0.3]))  # the synthetic GRF fields
    assert not far_from_unit_range(DataNormalization([0.0], [1.0]))


# ---- pipelines: attribute, output types, folder round trip ----------------------------------------

def test_output_type_field_is_the_exact_affine_map_of_latent_and_latent_stays_model_space():
    pipe = quiet(DDIMPipeline(AnalyticModel(channels=2), DDIMScheduler(num_train_timesteps=100)))
    plain = pipe(batch_size=2, num_inference_steps=4, generator=0, output_type="latent").images.asnumpy()
    np.testing.assert_array_equal(pipe(batch_size=2, num_inference_steps=4, generator=0, output_type="field")
                                  .images.asnumpy(), plain)  # no statistics: identity
    pipe.data_normalization = {"mean": [300.0, -5.0], "std": [20.0, 0.5]}
    latent = pipe(batch_size=2, num_inference_steps=4, generator=0, output_type="latent").images
    field = pipe(batch_size=2, num_inference_steps=4, generator=0, output_type="field").images
    np.testing.assert_array_equal(latent.asnumpy(), plain)
    assert isinstance(field, Tensor) and field.dtype == ms.float32
    expected = plain * np.array([20.0, 0.5]).reshape(1, 2, 1, 1) + np.array([300.0, -5.0]).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(field.asnumpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(pipe.to_model_units(field).asnumpy(), plain, atol=1e-4)
    np.testing.assert_allclose(pipe.to_data_units(plain), expected, rtol=1e-6)  # numpy in, numpy out


def test_field_output_of_a_sampler_that_ends_in_unit_interval_goes_through_model_space():
    pipe = quiet(ScoreSdeVePipeline(AnalyticModel(channels=1), msd.ScoreSdeVeScheduler(num_train_timesteps=20)))
    pipe.data_normalization = DataNormalization([300.0], [20.0])
    latent = pipe(batch_size=1, num_inference_steps=3, generator=0, output_type="latent").images.asnumpy()
    field = pipe(batch_size=1, num_inference_steps=3, generator=0, output_type="field").images.asnumpy()
    np.testing.assert_allclose(field, (latent * 2 - 1) * 20 + 300, rtol=1e-6)


def test_statistics_round_trip_through_the_folder(tmp_path):
    pipe = DDIMPipeline(tiny_unet(), no_clip_scheduler())
    pipe.data_normalization = DataNormalization([300.0], [20.0])
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index[MODEL_INDEX_KEY] == {"mean": [300.0], "std": [20.0]}
    assert pipe.config[MODEL_INDEX_KEY] == {"mean": [300.0], "std": [20.0]}
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    assert loaded.data_normalization == DataNormalization([300.0], [20.0])
    # A folder without statistics, like the shipped default model: identity.
    assert DiffusionPipeline.from_pretrained(msd.DEFAULT_MODEL_PATH).data_normalization is None


@pytest.mark.parametrize("stored,message", [
    ({"mean": [300.0], "std": [0.0]}, "std must be > 0"),
    ({"mean": [300.0, 1.0], "std": [20.0, 1.0]}, "2 channel"),
    ({"mean": [300.0]}, "exactly the keys"),
    ("300", "must be None"),
])
def test_bad_stored_statistics_are_value_errors_naming_the_file(tmp_path, stored, message):
    DDIMPipeline(tiny_unet(), no_clip_scheduler()).save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    index[MODEL_INDEX_KEY] = stored
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=message) as info:
        DiffusionPipeline.from_pretrained(tmp_path)
    assert "model_index.json" in str(info.value)


def test_statistics_must_fit_the_unet_and_the_samples():
    pipe = DDIMPipeline(tiny_unet(), no_clip_scheduler())
    with pytest.raises(ValueError, match="2 channel"):
        pipe.data_normalization = {"mean": [0.0, 0.0], "std": [1.0, 1.0]}
    pipe.data_normalization = {"mean": [1.0], "std": [2.0]}
    with pytest.raises(ValueError, match="C = 1"):
        pipe.to_data_units(np.zeros((1, 3, 2, 2), np.float32))


# ---- the trainer ------------------------------------------------------------------------------

def test_trainer_records_normalises_and_stores_the_statistics(tmp_path):
    data = field_data()
    trainer = DiffusionTrainer(tiny_unet(), no_clip_scheduler(), batch_size=4, output_dir=tmp_path / "run")
    seen = []
    step = trainer.train_step
    trainer.train_step = lambda batch: (seen.append(np.array(batch)), step(batch))[1]
    trainer.train(data, 2)
    norm = trainer.data_normalization
    np.testing.assert_allclose(norm.mean, [data.mean(dtype=np.float64)], rtol=1e-9)
    np.testing.assert_allclose(norm.std, [data.std(dtype=np.float64)], rtol=1e-9)
    batches = np.concatenate(seen)
    assert abs(batches.mean()) < 0.5 and 0.5 < batches.std() < 1.5  # the model saw standardised data
    # In the checkpoint and the exported folder.
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["data_normalization"] == norm.to_dict()
    trainer.save_pretrained(tmp_path / "final")
    assert DiffusionPipeline.from_pretrained(tmp_path / "final").data_normalization == norm


def test_a_model_trained_on_data_near_300_samples_fields_near_300(tmp_path):
    trainer = DiffusionTrainer(tiny_unet(), no_clip_scheduler(), batch_size=8, learning_rate=3e-3, ema_decay=None)
    trainer.train(field_data(n=64), 30)
    trainer.save_pretrained(tmp_path)
    pipe = quiet(DiffusionPipeline.from_pretrained(tmp_path))
    fields = pipe(batch_size=4, num_inference_steps=10, generator=0, output_type="field").images.asnumpy()
    latent = pipe(batch_size=4, num_inference_steps=10, generator=0, output_type="latent").images.asnumpy()
    assert abs(fields.mean() - 300) < 40 and 5 < fields.std() < 100, (fields.mean(), fields.std())
    assert abs(latent.mean()) < 2  # model space stays normalised


def test_resume_keeps_the_checkpoints_statistics(tmp_path):
    data = field_data()
    first = DiffusionTrainer(tiny_unet(), no_clip_scheduler(), batch_size=4, output_dir=tmp_path)
    first.train(data, 2)
    resumed = DiffusionTrainer(tiny_unet(), no_clip_scheduler(), batch_size=4, output_dir=tmp_path)
    resumed.train(data[:8] + 50, 3, resume_from="latest")  # other data: the stored statistics win
    assert resumed.step == 3 and resumed.data_normalization == first.data_normalization
    for bad in ({"normalize": False}, {"data_mean": 0.0, "data_std": 1.0}):
        other = DiffusionTrainer(tiny_unet(), no_clip_scheduler(), batch_size=4, output_dir=tmp_path, **bad)
        with pytest.raises(ValueError, match="was trained with mean"):
            other.load_checkpoint(tmp_path / "checkpoint-3")


def test_given_statistics_are_used_and_checked():
    trainer = DiffusionTrainer(tiny_unet(), no_clip_scheduler(), batch_size=4, data_mean=[290.0], data_std=10.0)
    trainer.train(field_data(), 1)
    assert trainer.data_normalization == DataNormalization([290.0], [10.0])
    assert trainer.config.hparams()["data_mean"] == (290.0,)
    with pytest.raises(ValueError, match="go together"):
        DiffusionTrainer(tiny_unet(), no_clip_scheduler(), data_mean=1.0)
    with pytest.raises(ValueError, match="normalize=False"):
        DiffusionTrainer(tiny_unet(), no_clip_scheduler(), data_mean=1.0, data_std=1.0, normalize=False)
    with pytest.raises(ValueError, match="std must be > 0"):
        DiffusionTrainer(tiny_unet(), no_clip_scheduler(), data_mean=1.0, data_std=0.0)
    with pytest.raises(ValueError, match="2 channel"):
        DiffusionTrainer(tiny_unet(), no_clip_scheduler(), data_mean=[1.0, 2.0], data_std=[1.0, 1.0])
    with pytest.raises(ValueError, match="normalize must be one of"):
        DiffusionTrainer(tiny_unet(), no_clip_scheduler(), normalize="yes")


def test_unnormalised_training_far_from_unit_range_warns():
    trainer = DiffusionTrainer(tiny_unet(), no_clip_scheduler(), batch_size=4, normalize=False)
    with pytest.warns(UserWarning, match=r"far from \[-1, 1\] without normalisation.*normalize=True"):
        trainer.train(field_data(), 1)
    assert trainer.data_normalization is None


def test_data_scaled_for_diffusion_trains_as_before_and_stores_nothing(tmp_path):
    """The synthetic fields (std 0.3) and images in [-1, 1]: 'auto' leaves them alone, no warning,
    and the exported folder has no statistics, like the shipped default model."""
    grf = SyntheticFieldDataset("grf", num_samples=8, size=8, seed=3)
    trainer = DiffusionTrainer(tiny_unet(), no_clip_scheduler(), batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer.train(grf, 1)
    assert trainer.data_normalization is None
    trainer.save_pretrained(tmp_path)
    assert MODEL_INDEX_KEY not in json.loads((tmp_path / "model_index.json").read_text())
    forced = DiffusionTrainer(tiny_unet(), no_clip_scheduler(), batch_size=4, normalize=True)
    forced.train(grf, 1)
    assert forced.data_normalization is not None


def test_shipping_a_clipping_scheduler_with_statistics_warns(tmp_path):
    trainer = DiffusionTrainer(tiny_unet(), DDIMScheduler(num_train_timesteps=100, clip_sample=True), batch_size=4)
    trainer.train(field_data(), 1)
    with pytest.warns(UserWarning, match="clip_sample=False"):
        trainer.save_pretrained(tmp_path)


# ---- PNG pictures ---------------------------------------------------------------------------

_TOP, _BOTTOM = np.array([253, 231, 37]), np.array([68, 1, 84])  # the colour map's ends


def bar_columns(picture, grid_width):
    """Columns right of the grid whose pixels run the colour map from top to bottom."""
    found = []
    for x in range(grid_width, picture.shape[1]):
        column = picture[:, x].astype(int)
        if np.abs(column - _TOP).sum(axis=1).min() < 40 and np.abs(column - _BOTTOM).sum(axis=1).min() < 40:
            top = np.argmin(np.abs(column - _TOP).sum(axis=1))
            bottom = np.argmin(np.abs(column - _BOTTOM).sum(axis=1))
            if top < bottom:
                found.append(x)
    return found


def test_fitted_range_is_robust_and_validated():
    values = np.concatenate([np.linspace(280, 320, 1000), [1e6]])
    low, high = imaging.fitted_range(values)
    assert 280 <= low < 281 and 319 < high <= 320  # the one outlier does not set the range
    assert imaging.fitted_range(values, vmin=250.0, vmax=350.0) == (250.0, 350.0)
    assert imaging.fitted_range(np.full(4, 5.0)) == (4.95, 5.05)
    with pytest.raises(ValueError, match="vmin must be smaller than vmax"):
        imaging.fitted_range(values, vmin=2.0, vmax=1.0)
    with pytest.raises(ValueError, match="finite"):
        imaging.fitted_range(values, vmin=float("nan"))


def test_field_png_has_a_colour_bar_right_of_the_grid(tmp_path):
    from PIL import Image

    fields = field_data(n=4)
    vmin, vmax = imaging.save_field_png(tmp_path / "f.png", fields, scale=2)
    picture = np.asarray(Image.open(tmp_path / "f.png").convert("RGB"))
    grid = imaging.image_grid(np.zeros((4, 8, 8, 1)))
    grid_width = grid.shape[1] * 2
    assert picture.shape[0] >= grid.shape[0] * 2 and picture.shape[1] > grid_width + 40  # room for bar and labels
    assert len(bar_columns(picture, grid_width)) >= 10
    # label pixels (black text) right of the bar
    assert (picture[:, grid_width + 30:] < 60).all(axis=-1).sum() > 20
    assert vmin < fields.mean() < vmax and 200 < vmin and vmax < 400


# ---- the command line ------------------------------------------------------------------------

def run(*args):
    return cli.main([str(a) for a in args])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The same weights twice: without statistics and with mean 300 / std 20; and an RGB model."""
    plain, physical, rgb = (tmp_path_factory.mktemp(name) for name in ("plain", "physical", "rgb"))
    DDIMPipeline(tiny_unet(), no_clip_scheduler()).save_pretrained(plain)
    pipe = DDIMPipeline(tiny_unet(), no_clip_scheduler())
    pipe.data_normalization = DataNormalization([300.0], [20.0])
    pipe.save_pretrained(physical)
    DDIMPipeline(tiny_unet(channels=3), no_clip_scheduler()).save_pretrained(rgb)
    return {"plain": plain, "physical": physical, "rgb": rgb}


def sample(folder, out, *extra):
    return run("sample", "--model", folder, "--steps", 3, "--batch-size", 2, "--output", out, "--mode", "pynative",
               "--quiet", *extra)


def test_sample_save_npy_writes_the_data_units(folders, tmp_path):
    assert sample(folders["plain"], tmp_path / "a.png", "--save-npy", tmp_path / "a.npy") == 0
    assert sample(folders["physical"], tmp_path / "b.png", "--save-npy", tmp_path / "b.npy") == 0
    model_units, data_units = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    np.testing.assert_allclose(data_units, model_units * 20 + 300, rtol=1e-6)


def test_sample_png_of_a_field_model_has_a_colour_bar_and_an_rgb_model_stays_as_it_was(folders, tmp_path, capsys):
    from PIL import Image

    assert sample(folders["physical"], tmp_path / "f.png", "--scale", 2) == 0
    assert "colour range [" in capsys.readouterr().out
    picture = np.asarray(Image.open(tmp_path / "f.png").convert("RGB"))
    grid_width = imaging.image_grid(np.zeros((2, 8, 8, 1))).shape[1] * 2
    assert picture.shape[1] > grid_width + 40 and len(bar_columns(picture, grid_width)) >= 10

    assert sample(folders["rgb"], tmp_path / "rgb.png", "--scale", 2) == 0
    rgb = np.asarray(Image.open(tmp_path / "rgb.png").convert("RGB"))
    assert rgb.shape[:2] == tuple(2 * n for n in imaging.image_grid(np.zeros((2, 8, 8, 3))).shape[:2])


def test_vmin_vmax_set_the_colour_range(folders, tmp_path, capsys):
    from PIL import Image

    assert sample(folders["physical"], tmp_path / "fit.png") == 0
    assert sample(folders["physical"], tmp_path / "set.png", "--vmin", 0, "--vmax", 1000) == 0
    assert "colour range [0, 1000]" in capsys.readouterr().out
    fit = np.asarray(Image.open(tmp_path / "fit.png").convert("RGB"))
    wide = np.asarray(Image.open(tmp_path / "set.png").convert("RGB"))
    assert not np.array_equal(fit, wide)


@pytest.mark.parametrize("extra,message", [
    (("--vmin", 5, "--vmax", 5), "--vmin must be smaller than --vmax"),
    (("--vmin", 10, "--vmax", 1), "--vmin must be smaller than --vmax"),
    (("--vmin", "nan"), "finite"),
    (("--vmin", "abc"), "must be a number"),
])
def test_bad_vmin_vmax_are_usage_errors_before_any_output(folders, tmp_path, capsys, extra, message):
    assert sample(folders["physical"], tmp_path / "g.png", *extra) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_vmin_for_an_rgb_model_is_refused(folders, tmp_path, capsys):
    assert sample(folders["rgb"], tmp_path / "g.png", "--vmin", 0) == 2
    assert "RGB images" in capsys.readouterr().err


def test_train_normalize_option_parses_flags_and_job_files(tmp_path):
    assert cli.parse(["train"]).normalize == "auto"
    assert cli.parse(["train", "--normalize", "off"]).normalize is False
    job = tmp_path / "job.yaml"
    job.write_text("normalize: on\n")  # YAML's True
    assert cli.parse(["train", "--config", str(job)]).normalize is True
    assert run("train", "--normalize", "sometimes") == 2


def test_invert_takes_and_reconstructs_data_units(folders, tmp_path):
    """Inverting fields in data units with the model that stores mean 300 / std 20 is inverting
    their model units with the same weights: the same latents, the reconstruction mapped back."""
    fields = field_data(n=2)
    np.save(tmp_path / "data.npy", fields)
    np.save(tmp_path / "model.npy", (fields - 300) / 20)
    for name, source in (("physical", "data.npy"), ("plain", "model.npy")):
        assert run("invert", "--model", folders[name], "--input", tmp_path / source, "--steps", 3, "--output",
                   tmp_path / f"lat-{name}.npy", "--reconstruct", tmp_path / f"rec-{name}.npy", "--quiet", "--mode",
                   "pynative") == 0
    np.testing.assert_allclose(np.load(tmp_path / "lat-physical.npy"), np.load(tmp_path / "lat-plain.npy"), atol=1e-4)
    np.testing.assert_allclose(np.load(tmp_path / "rec-physical.npy"), np.load(tmp_path / "rec-plain.npy") * 20 + 300,
                               rtol=1e-5)
