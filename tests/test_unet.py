"""UNet2DModel against diffusers 0.42.1 goldens (tests/golden/unet, made by tools/gen_unet_golden.py).

No torch here: every expected value is a stored diffusers output; the models are loaded from the
files diffusers' ``save_pretrained`` wrote.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mindscience_diffuser.models import AttnDownEncoderBlock2D, UNet2DModel
from mindscience_diffuser.models.weights import WEIGHTS_NAME, load_state_dict
from mindscience_diffuser.outputs import UNet2DOutput

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "unet"
STORED = sorted(p.parent.name for p in GOLDEN.glob(f"*/{WEIGHTS_NAME}"))
PARITY_RTOL = 1e-4


def _generator():
    """tools/gen_unet_golden.py (for its torch-free ``seeded_weights``), imported by path."""
    spec = importlib.util.spec_from_file_location("gen_unet_golden", ROOT / "tools" / "gen_unet_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rel_err(out, ref) -> float:
    """max |out − ref| / max |ref|."""
    out = out.asnumpy() if isinstance(out, ms.Tensor) else np.asarray(out)
    return float(np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max())


def io_of(case: str) -> dict:
    return dict(np.load(GOLDEN / case / "io.npz"))


def run(model, io, timestep=None, **kwargs):
    labels = ms.Tensor(io["class_labels"]) if "class_labels" in io else None
    t = ms.Tensor(io["timesteps"]) if timestep is None else timestep
    return model(ms.Tensor(io["sample"]), t, labels, **kwargs)


_MODELS = {}


def loaded(case: str) -> UNet2DModel:
    """The golden model loaded with from_pretrained (cached: loading is not what most tests test)."""
    if case not in _MODELS:
        _MODELS[case] = UNet2DModel.from_pretrained(GOLDEN / case)
    return _MODELS[case]


def test_golden_folder_is_small_and_complete():
    total = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file())
    assert total < 4 * 1024 * 1024
    assert len(STORED) >= 7
    for case in STORED:
        assert (GOLDEN / case / "config.json").is_file() and (GOLDEN / case / "io.npz").is_file()


# ---- parity with diffusers ----------------------------------------------------------------


@pytest.mark.parametrize("case", STORED)
def test_parity_with_diffusers(case):
    """Weights from diffusers' save_pretrained, same input -> diffusers' output within 1e-4."""
    io = io_of(case)
    out = run(loaded(case), io)
    assert out.shape == io["out"].shape and out.dtype == ms.float32
    assert rel_err(out, io["out"]) < PARITY_RTOL


def test_parity_full_width_ddpm_cifar10():
    """google/ddpm-cifar10-32's exact config at full width (35.7M parameters); the weights are
    rebuilt from the generator's seed, so only the config and the output are stored."""
    case = GOLDEN / "ddpm_cifar10_full"
    config = UNet2DModel.load_config(case)
    assert config["block_out_channels"] == [128, 256, 256, 256]
    model = UNet2DModel.from_config(config)
    shapes = {name: p.shape for name, p in model.parameters_and_names()}
    load_state_dict(model, _generator().seeded_weights(shapes))
    io = io_of("ddpm_cifar10_full")
    assert rel_err(run(model, io), io["out"]) < PARITY_RTOL


def test_attn_down_encoder_block_parity():
    """The VAE-encoder block (not usable inside UNet2DModel, in diffusers either) against diffusers."""
    folder = GOLDEN / "attn_down_encoder_block"
    kwargs = json.loads((folder / "block.json").read_text())
    block = AttnDownEncoderBlock2D(**kwargs)
    load_state_dict(block, load_file(str(folder / "block.safetensors")))
    io = io_of("attn_down_encoder_block")
    out = block(ms.Tensor(io["sample"]))
    assert rel_err(out, io["out"]) < PARITY_RTOL


def test_golden_cases_cover_the_issue_layouts():
    """Guard that the parity cases keep exercising every block type and option the issue lists."""
    configs = [json.loads((GOLDEN / c / "config.json").read_text()) for c in STORED]
    blocks = {b for c in configs for b in c["down_block_types"] + c["up_block_types"]}
    assert blocks == {
        "DownBlock2D", "AttnDownBlock2D", "SkipDownBlock2D", "AttnSkipDownBlock2D", "ResnetDownsampleBlock2D",
        "UpBlock2D", "AttnUpBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D", "ResnetUpsampleBlock2D",
    }
    assert {c["time_embedding_type"] for c in configs} == {"positional", "fourier", "learned"}
    assert {c["resnet_time_scale_shift"] for c in configs} == {"default", "scale_shift"}
    assert {c["class_embed_type"] for c in configs} == {None, "timestep", "identity", "projection"}
    assert any(c["num_class_embeds"] for c in configs)
    assert any(c["in_channels"] == 1 for c in configs)
    assert any(isinstance(c["sample_size"], list) and c["sample_size"][0] != c["sample_size"][1] for c in configs)
    assert any(c["mid_block_type"] is None for c in configs) and any(not c["add_attention"] for c in configs)
    assert {c["downsample_type"] for c in configs} == {"conv", "resnet"}


# ---- timesteps and return values -----------------------------------------------------------


@pytest.mark.parametrize(
    "make_t",
    [
        lambda t: int(t),
        lambda t: float(t),
        lambda t: ms.Tensor(int(t), ms.int64),
        lambda t: ms.Tensor(float(t), ms.float32),
        lambda t: ms.Tensor([int(t)], ms.int32),
        lambda t: ms.Tensor([int(t), int(t)], ms.int64),
        lambda t: np.int64(t),
        lambda t: np.array([int(t), int(t)]),
    ],
    ids=["int", "float", "0d-int64", "0d-float32", "(1,)", "(B,)", "numpy-int64", "numpy-(B,)"],
)
def test_timestep_forms(make_t):
    io = io_of("field_scale_shift")
    out = run(loaded("field_scale_shift"), io, timestep=make_t(io["scalar_timestep"]))
    assert rel_err(out, io["out_scalar"]) < PARITY_RTOL


def test_python_float_timestep_stays_fractional():
    """50.5 is embedded as 50.5 (diffusers' float-tensor result), not truncated to 50."""
    io = io_of("field_scale_shift")
    out = run(loaded("field_scale_shift"), io, timestep=float(io["float_timestep"]))
    assert rel_err(out, io["out_float"]) < PARITY_RTOL
    assert rel_err(io["out_float"], io["out_scalar"]) > 1e-3  # the two really differ


def test_return_dict_forms():
    io = io_of("learned_time")
    model = loaded("learned_time")
    plain = run(model, io)
    as_dict = run(model, io, return_dict=True)
    as_tuple = run(model, io, return_dict=False)
    assert isinstance(plain, ms.Tensor)
    assert isinstance(as_dict, UNet2DOutput) and rel_err(as_dict.sample, io["out"]) < PARITY_RTOL
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1 and rel_err(as_tuple[0], io["out"]) < PARITY_RTOL


# ---- execution modes and dtypes -------------------------------------------------------------


def test_graph_mode_and_jit_match_pynative(graph_mode):
    """One compiled GRAPH_MODE call and one ms.jit function give PyNative's output (and diffusers')."""
    case = "learned_time"
    io = io_of(case)
    model = UNet2DModel.from_pretrained(GOLDEN / case)
    graph_out = run(model, io).asnumpy()

    ms.set_context(mode=ms.PYNATIVE_MODE)
    eager_out = run(model, io).asnumpy()

    @ms.jit
    def jitted(sample, timesteps, labels):
        return model(sample, timesteps, labels)

    jit_out = jitted(ms.Tensor(io["sample"]), ms.Tensor(io["timesteps"]), ms.Tensor(io["class_labels"])).asnumpy()
    assert rel_err(graph_out, io["out"]) < PARITY_RTOL
    assert rel_err(graph_out, eager_out) < 1e-6
    assert rel_err(jit_out, eager_out) < 1e-6


def test_float16_is_finite_and_close():
    case = "field_scale_shift"
    io = io_of(case)
    model = UNet2DModel.from_pretrained(GOLDEN / case, compute_dtype=ms.float16)
    assert all(p.dtype == ms.float16 for p in model.get_parameters())
    out = run(model, io)
    assert out.dtype == ms.float16
    out = out.asnumpy().astype(np.float32)
    assert np.isfinite(out).all()
    assert rel_err(out, io["out"]) < 3e-2


def test_float16_weight_file_loads_into_float32_model():
    """ncsnpp_small's golden file holds float16 tensors (diffusers' fp16 save); parity above
    used it, so check the file really is float16 and the model float32."""
    arrays = load_file(str(GOLDEN / "ncsnpp_small" / WEIGHTS_NAME))
    assert {a.dtype for a in arrays.values()} == {np.dtype(np.float16)}
    assert all(p.dtype == ms.float32 for p in loaded("ncsnpp_small").get_parameters())


@pytest.mark.parametrize("bad", [ms.float64, ms.bfloat16, "float32", None])
def test_compute_dtype_rejected(bad):
    with pytest.raises(TypeError, match="compute_dtype"):
        UNet2DModel(block_out_channels=(8,), down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",),
                    norm_num_groups=4, compute_dtype=bad)


# ---- save_pretrained ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["class_conditional", "resnet_nonsquare"])
def test_save_pretrained_writes_what_diffusers_writes(case, tmp_path):
    model = loaded(case)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", WEIGHTS_NAME]

    ours_cfg = json.loads((tmp_path / "config.json").read_text())
    theirs_cfg = json.loads((GOLDEN / case / "config.json").read_text())
    assert sorted(ours_cfg) == sorted(theirs_cfg)
    assert ours_cfg == theirs_cfg

    ours = load_file(str(tmp_path / WEIGHTS_NAME))
    theirs = load_file(str(GOLDEN / case / WEIGHTS_NAME))
    assert sorted(ours) == sorted(theirs)
    for key, ref in theirs.items():
        assert ours[key].shape == ref.shape and ours[key].dtype == ref.dtype, key
        np.testing.assert_array_equal(ours[key], ref)

    from safetensors import safe_open

    with safe_open(str(tmp_path / WEIGHTS_NAME), framework="numpy") as handle:
        assert handle.metadata() == {"format": "pt"}

    io = io_of(case)
    reloaded = UNet2DModel.from_pretrained(tmp_path)
    assert rel_err(run(reloaded, io), io["out"]) < PARITY_RTOL


def test_save_pretrained_float16_writes_float16(tmp_path):
    model = UNet2DModel.from_pretrained(GOLDEN / "field_scale_shift", compute_dtype=ms.float16)
    model.save_pretrained(tmp_path / "fp16")
    arrays = load_file(str(tmp_path / "fp16" / WEIGHTS_NAME))
    assert {a.dtype for a in arrays.values()} == {np.dtype(np.float16)}


def test_save_pretrained_is_atomic(tmp_path, monkeypatch):
    """A failing write leaves the previous file intact and no temporary file behind."""
    import safetensors.numpy

    model = loaded("no_mid")
    model.save_pretrained(tmp_path)
    before = (tmp_path / WEIGHTS_NAME).read_bytes()

    def broken_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half-written")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", broken_save_file)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path)
    assert (tmp_path / WEIGHTS_NAME).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", WEIGHTS_NAME]


# ---- errors -------------------------------------------------------------------------------------


def test_missing_directory_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(OSError, match="nowhere"):
        UNet2DModel.from_pretrained(missing)


def test_missing_weight_file_names_the_path(tmp_path):
    shutil.copy(GOLDEN / "no_mid" / "config.json", tmp_path / "config.json")
    with pytest.raises(OSError, match=WEIGHTS_NAME.replace(".", r"\.")) as err:
        UNet2DModel.from_pretrained(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_subfolder_and_corrupt_file(tmp_path):
    unet_dir = tmp_path / "unet"
    shutil.copytree(GOLDEN / "no_mid", unet_dir)
    io = io_of("no_mid")
    assert rel_err(run(UNet2DModel.from_pretrained(tmp_path, subfolder="unet"), io), io["out"]) < PARITY_RTOL
    (unet_dir / WEIGHTS_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(OSError, match="cannot read weight file"):
        UNet2DModel.from_pretrained(tmp_path, subfolder="unet")


def test_mismatched_weights_list_every_offending_key(tmp_path):
    shutil.copy(GOLDEN / "no_mid" / "config.json", tmp_path / "config.json")
    arrays = load_file(str(GOLDEN / "no_mid" / WEIGHTS_NAME))
    del arrays["conv_in.bias"]
    arrays["extra.weight"] = np.zeros(3, np.float32)
    arrays["conv_out.weight"] = np.zeros((3, 8, 1, 1), np.float32)
    save_file(arrays, str(tmp_path / WEIGHTS_NAME))
    with pytest.raises(ValueError) as err:
        UNet2DModel.from_pretrained(tmp_path)
    message = str(err.value)
    for fragment in ("missing keys", "conv_in.bias", "unexpected keys", "extra.weight", "wrong shapes",
                     "conv_out.weight"):
        assert fragment in message


def test_weights_of_another_config_are_rejected(tmp_path):
    """A config that does not fit the file (one more layer per block) -> ValueError, not a half-loaded model."""
    config = json.loads((GOLDEN / "learned_time" / "config.json").read_text())
    config["layers_per_block"] = 2
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(GOLDEN / "learned_time" / WEIGHTS_NAME, tmp_path / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="missing keys"):
        UNet2DModel.from_pretrained(tmp_path)


TINY = dict(block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, layers_per_block=1)


@pytest.mark.parametrize(
    "override, argument",
    [
        (dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D")), "down_block_types"),
        (dict(up_block_types=("UpBlock2D", "NopeUpBlock2D")), "up_block_types"),
        (dict(up_block_types=("UpBlock2D",)), "up_block_types"),
        (dict(block_out_channels=(8, 16, 32)), "block_out_channels"),
        (dict(down_block_types=("AttnDownEncoderBlock2D", "DownBlock2D")), "AttnDownEncoderBlock2D"),
        (dict(act_fn="tanh"), "act_fn"),
        (dict(time_embedding_type="sinusoidal"), "time_embedding_type"),
        (dict(time_embedding_type="learned"), "num_train_timesteps"),
        (dict(class_embed_type="projection"), "class_embed_type"),
        (dict(mid_block_type="UNetMidBlock2DCrossAttn"), "mid_block_type"),
        (dict(resnet_time_scale_shift="spatial"), "resnet_time_scale_shift"),
        (dict(downsample_type="pool"), "downsample_type"),
        (dict(upsample_type="transpose"), "upsample_type"),
        (dict(sample_size=(8, 8, 8)), "sample_size"),
        (dict(layers_per_block=0), "layers_per_block"),
        (dict(norm_num_groups=3), "groups"),
        (dict(attention_head_dim=0), "attention_head_dim"),
        (dict(down_block_types=("SkipDownBlock2D", "DownBlock2D"), in_channels=1), "in_channels"),
    ],
)
def test_bad_config_values_raise(override, argument):
    with pytest.raises(ValueError, match=argument):
        UNet2DModel(**dict(TINY, **override))


def test_class_label_errors():
    io = io_of("class_conditional")
    with pytest.raises(ValueError, match="class_labels"):
        loaded("class_conditional")(ms.Tensor(io["sample"]), 3)
    io = io_of("no_mid")
    with pytest.raises(ValueError, match="class_labels"):
        loaded("no_mid")(ms.Tensor(io["sample"]), 3, ms.Tensor([1], ms.int32))


def test_config_roundtrip_and_unet_res_prefix():
    model = UNet2DModel(**dict(TINY, down_block_types=("UNetResDownBlock2D", "AttnDownBlock2D")))
    assert model.config["down_block_types"] == ["UNetResDownBlock2D", "AttnDownBlock2D"]
    clone = UNet2DModel.from_config(model.config)
    assert sorted(n for n, _ in clone.parameters_and_names()) == sorted(n for n, _ in model.parameters_and_names())


def test_scheduler_timestep_goes_straight_in():
    """A diffusers loop passes ``scheduler.timesteps[i]`` (a numpy integer here) to the UNet."""
    from mindscience_diffuser import DDIMScheduler

    scheduler = DDIMScheduler()
    scheduler.set_timesteps(4)
    model = UNet2DModel(**TINY)
    t = scheduler.timesteps[0]
    assert isinstance(t, np.integer)
    x = ms.Tensor(np.zeros((2, 3, 8, 8), np.float32))
    np.testing.assert_array_equal(model(x, t).asnumpy(), model(x, int(t)).asnumpy())


@pytest.mark.parametrize(
    "make_input, error, message",
    [
        (lambda c: np.zeros((1, c, 8, 8), np.float32), TypeError, r"mindspore Tensor \(batch, \d, H, W\)"),
        (lambda c: ms.Tensor(np.zeros((1, c + 1, 8, 8), np.float32)), ValueError, r"got \(1, \d, 8, 8\)"),
        (lambda c: ms.Tensor(np.zeros((1, c, 8), np.float32)), ValueError, "must have shape"),
        (lambda c: ms.Tensor(np.zeros((1, c, 6, 8), np.float32)), ValueError, "multiples of 4"),
    ],
    ids=["numpy", "channels", "rank", "size"],
)
def test_bad_sample_is_named_before_any_kernel(make_input, error, message):
    model = UNet2DModel(**dict(TINY, down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                               block_out_channels=(8, 8, 8)))
    with pytest.raises(error, match=message):
        model(make_input(3), 3)


def test_bad_timestep_shape_and_type():
    model = UNet2DModel(**TINY)
    x = ms.Tensor(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(1,\) or \(2,\)"):
        model(x, ms.Tensor(np.zeros((3,), np.int32)))
    with pytest.raises(TypeError, match="timestep"):
        model(x, "10")
