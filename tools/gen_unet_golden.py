"""Generate the UNet2DModel golden files with torch + diffusers 0.42.1 (the reference stack).

For every case below: build diffusers' ``UNet2DModel`` from the config, overwrite every
parameter with seeded random values (:func:`seeded_weights`: numpy only, so the tests can
regenerate them without torch: this module imports torch only inside functions), save the model with
diffusers' ``save_pretrained`` (``config.json`` + ``diffusion_pytorch_model.safetensors``) under
``tests/golden/unet/<case>/`` and store the inputs and diffusers' output in ``io.npz``.

Cases flagged ``store_weights=False`` (the full-width DDPM-CIFAR10 model, 143 MB of weights)
keep only ``config.json`` and ``io.npz``: the test rebuilds the weights from the seed.

Afterwards (unless ``--no-roundtrip``) every case is loaded with mindscience_diffuser, saved
with its ``save_pretrained`` and loaded back with diffusers' ``from_pretrained``; the script
reports the output difference, so diffusers reading our files is checked against diffusers.

Run from the repository root:  python tools/gen_unet_golden.py [--only CASE ...]
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "unet"

CIFAR10_BLOCKS = dict(
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    layers_per_block=2,
    downsample_padding=0,
    flip_sin_to_cos=False,
    freq_shift=1,
    attention_head_dim=None,
    norm_eps=1e-6,
    act_fn="silu",
    mid_block_scale_factor=1,
    center_input_sample=False,
    time_embedding_type="positional",
    in_channels=3,
    out_channels=3,
)

# name -> (config, inputs) ; inputs: batch, height, width, timesteps, class_labels kind
CASES = {
    # google/ddpm-cifar10-32's block structure at reduced width (4 levels, attention at 16→8).
    "ddpm_cifar10_small": dict(
        config=dict(CIFAR10_BLOCKS, sample_size=16, block_out_channels=[8, 16, 16, 16], norm_num_groups=4),
        batch=2, size=(16, 16), timesteps=[10, 500],
    ),
    # google/ddpm-cifar10-32 at full width: weights from the seed only (no safetensors stored).
    "ddpm_cifar10_full": dict(
        config=dict(CIFAR10_BLOCKS, sample_size=32, block_out_channels=[128, 256, 256, 256], norm_num_groups=32),
        batch=1, size=(32, 32), timesteps=[250], store_weights=False,
    ),
    # NCSN++ (google/ncsnpp-*): fourier σ-embedding, FIR skip blocks, sqrt(2) scaling, groups min(C/4, 32).
    "ncsnpp_small": dict(
        config=dict(
            sample_size=16, in_channels=3, out_channels=3, block_out_channels=[32, 32, 32],
            down_block_types=["SkipDownBlock2D", "AttnSkipDownBlock2D", "SkipDownBlock2D"],
            up_block_types=["SkipUpBlock2D", "AttnSkipUpBlock2D", "SkipUpBlock2D"],
            layers_per_block=1, time_embedding_type="fourier", flip_sin_to_cos=True, freq_shift=0,
            mid_block_scale_factor=math.sqrt(2.0), norm_num_groups=None, norm_eps=1e-6,
            attention_head_dim=None, downsample_padding=1, act_fn="silu", center_input_sample=False,
        ),
        batch=2, size=(16, 16), timesteps=[0.5, 20.0], float_timesteps=True, store_dtype="float16",
    ),
    # A one-channel scientific field: scale_shift time conditioning (mid attention without norm),
    # centred input, mish activation, multi-head attention.
    "field_scale_shift": dict(
        config=dict(
            sample_size=16, in_channels=1, out_channels=1, block_out_channels=[8, 16],
            down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
            layers_per_block=1, resnet_time_scale_shift="scale_shift", norm_num_groups=4, attention_head_dim=4,
            center_input_sample=True, act_fn="mish", norm_eps=1e-5,
        ),
        batch=2, size=(16, 16), timesteps=[3, 999], scalar_timestep=50,
    ),
    # Class-conditional (num_class_embeds) with resnet down/upsampling in the attention blocks.
    "class_conditional": dict(
        config=dict(
            sample_size=8, in_channels=3, out_channels=3, block_out_channels=[8, 16],
            down_block_types=["AttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "AttnUpBlock2D"],
            layers_per_block=1, norm_num_groups=4, attention_head_dim=4, num_class_embeds=10,
            downsample_type="resnet", upsample_type="resnet", time_embedding_dim=24, flip_sin_to_cos=False,
            freq_shift=1, act_fn="gelu",
        ),
        batch=3, size=(8, 8), timesteps=[0, 17, 999], class_labels="int", num_classes=10,
    ),
    # Learned time embedding with class_embed_type="timestep" and a mid block without attention.
    "learned_time": dict(
        config=dict(
            sample_size=8, in_channels=2, out_channels=2, block_out_channels=[8, 16],
            down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
            layers_per_block=1, norm_num_groups=4, time_embedding_type="learned", num_train_timesteps=100,
            class_embed_type="timestep", add_attention=False, act_fn="relu",
        ),
        batch=2, size=(8, 8), timesteps=[5, 99], class_labels="int", num_classes=100,
    ),
    # ResnetDownsampleBlock2D / ResnetUpsampleBlock2D, non-square samples, identity class
    # embedding, attn_norm_num_groups and dropout (inactive at inference).
    "resnet_nonsquare": dict(
        config=dict(
            sample_size=[8, 16], in_channels=3, out_channels=4, block_out_channels=[8, 8, 16],
            down_block_types=["ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "AttnDownBlock2D"],
            up_block_types=["AttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"],
            layers_per_block=1, norm_num_groups=4, attn_norm_num_groups=2, attention_head_dim=8,
            class_embed_type="identity", dropout=0.1, norm_eps=1e-5,
        ),
        batch=2, size=(8, 16), timesteps=[1, 600], class_labels="identity",
    ),
    # class_embed_type="projection" (UNet2DConditionModel's vector conditioning, this package's
    # extension of UNet2DModel): diffusers' UNet2DModel with that TimestepEmbedding attached as
    # its class embedding, which its forward applies to the vector as is.
    "projection": dict(
        config=dict(
            sample_size=8, in_channels=2, out_channels=1, block_out_channels=[8, 16],
            down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
            layers_per_block=1, norm_num_groups=4, attention_head_dim=4,
        ),
        batch=2, size=(8, 8), timesteps=[7, 700], class_labels="projection", projection_dim=3,
    ),
    # No mid block at all (mid_block_type=None), "swish" activation, 2 heads of 6.
    "no_mid": dict(
        config=dict(
            sample_size=8, in_channels=3, out_channels=3, block_out_channels=[8, 12],
            down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
            layers_per_block=2, norm_num_groups=4, attention_head_dim=6, mid_block_type=None,
            act_fn="swish", freq_shift=1,
        ),
        batch=1, size=(8, 8), timesteps=[321],
    ),
}

SEED = 1234


def seeded_weights(shapes: dict, seed: int = SEED) -> dict:
    """Deterministic float32 weights for every key, from numpy only (the tests rebuild them).

    Keys are visited in sorted order; matrices/kernels ~ N(0, 1/fan_in), norm scales
    1 + 0.1·N(0,1), every other vector (biases, Fourier frequencies) 0.1·N(0,1).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        z = rng.standard_normal(shape, dtype=np.float32)
        if len(shape) >= 2:
            out[key] = z / np.float32(math.sqrt(int(np.prod(shape[1:]))))
        elif "norm" in key and key.endswith(".weight"):
            out[key] = 1.0 + np.float32(0.1) * z
        else:
            out[key] = np.float32(0.1) * z
    return out


def make_inputs(case: dict, in_channels: int, time_embed_dim: int, seed: int = SEED + 1):
    rng = np.random.default_rng(seed)
    b, (h, w) = case["batch"], case["size"]
    sample = rng.standard_normal((b, in_channels, h, w)).astype(np.float32)
    dtype = np.float32 if case.get("float_timesteps") else np.int64
    timesteps = np.asarray(case["timesteps"], dtype=dtype)
    io = {"sample": sample, "timesteps": timesteps}
    kind = case.get("class_labels")
    if kind == "int":
        io["class_labels"] = rng.integers(0, case["num_classes"], size=b).astype(np.int64)
    elif kind == "identity":
        io["class_labels"] = rng.standard_normal((b, time_embed_dim)).astype(np.float32)
    elif kind == "projection":
        io["class_labels"] = rng.standard_normal((b, case["projection_dim"])).astype(np.float32)
    return io


def torch_forward(model, io, timestep=None):
    import torch

    with torch.no_grad():
        labels = torch.from_numpy(io["class_labels"]) if "class_labels" in io else None
        t = torch.from_numpy(io["timesteps"]) if timestep is None else timestep
        return model(torch.from_numpy(io["sample"]), t, class_labels=labels).sample.numpy()


def build_case(name: str, case: dict) -> None:
    import torch
    from diffusers import UNet2DModel as TorchUNet2DModel

    config = case["config"]
    model = TorchUNet2DModel(**config).eval()
    time_embed_dim = config.get("time_embedding_dim") or config["block_out_channels"][0] * 4
    if "projection_dim" in case:
        from diffusers.models.embeddings import TimestepEmbedding

        model.class_embedding = TimestepEmbedding(case["projection_dim"], time_embed_dim)
    state = model.state_dict()
    weights = seeded_weights({k: v.shape for k, v in state.items()})
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)

    out_dir = GOLDEN / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    if case.get("store_weights", True):
        # A float16 file (as diffusers writes for torch_dtype=float16) keeps the larger NCSN++
        # case small; the reference then runs in float32 on the float16-rounded weights.
        if case.get("store_dtype") == "float16":
            weights = {k: v.astype(np.float16).astype(np.float32) for k, v in weights.items()}
            model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
            model.to(torch.float16).save_pretrained(out_dir, safe_serialization=True)
            model.to(torch.float32)
        else:
            model.save_pretrained(out_dir, safe_serialization=True)
    else:
        model.save_config(out_dir)
    if "projection_dim" in case:
        # diffusers' config has no key for the attached projection: record it as this package does.
        stored = json.loads((out_dir / "config.json").read_text())
        stored.update(class_embed_type="projection", projection_class_embeddings_input_dim=case["projection_dim"])
        (out_dir / "config.json").write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")

    io = make_inputs(case, config.get("in_channels", 3), time_embed_dim)
    io["out"] = torch_forward(model, io)
    if "scalar_timestep" in case:
        import torch

        t = case["scalar_timestep"]
        io["scalar_timestep"] = np.asarray(t)
        io["out_scalar"] = torch_forward(model, io, timestep=int(t))
        # A fractional timestep as a float tensor (diffusers truncates a Python float).
        io["float_timestep"] = np.asarray(t + 0.5, dtype=np.float32)
        io["out_float"] = torch_forward(model, io, timestep=torch.full((case["batch"],), t + 0.5))
    io["seed"] = np.asarray(SEED)
    np.savez_compressed(out_dir / "io.npz", **io)
    size = sum(p.stat().st_size for p in out_dir.iterdir())
    print(f"{name}: {sum(v.size for v in weights.values())} params, out |max| {np.abs(io['out']).max():.3g}, "
          f"{size / 1024:.0f} KiB")


ENCODER_BLOCK = dict(in_channels=8, out_channels=16, num_layers=2, resnet_groups=4, attention_head_dim=8,
                     resnet_eps=1e-6, downsample_padding=0, add_downsample=True)


def build_encoder_block() -> None:
    """diffusers' UNet2DModel cannot run AttnDownEncoderBlock2D (it returns no skip states), so
    that VAE-encoder block gets a block-level golden: its state dict, input and output."""
    import torch
    from diffusers.models.unets.unet_2d_blocks import AttnDownEncoderBlock2D
    from safetensors.numpy import save_file

    block = AttnDownEncoderBlock2D(**ENCODER_BLOCK).eval()
    weights = seeded_weights({k: v.shape for k, v in block.state_dict().items()})
    block.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    sample = np.random.default_rng(SEED + 2).standard_normal((2, 8, 8, 8)).astype(np.float32)
    with torch.no_grad():
        out = block(torch.from_numpy(sample)).numpy()
    out_dir = GOLDEN / "attn_down_encoder_block"
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out_dir / "block.safetensors"))
    np.savez_compressed(out_dir / "io.npz", sample=sample, out=out)
    (out_dir / "block.json").write_text(json.dumps(ENCODER_BLOCK, indent=2, sort_keys=True) + "\n")
    print(f"attn_down_encoder_block: out |max| {np.abs(out).max():.3g}")


def roundtrip_through_ours(name: str, case: dict) -> float:
    """Load the golden with our from_pretrained, save it with our save_pretrained, load that with
    diffusers and return max|diff| / max|ref| of diffusers' output against the stored golden."""
    from diffusers import UNet2DModel as TorchUNet2DModel

    sys.path.insert(0, str(ROOT))
    from mindscience_diffuser.models import UNet2DModel
    from mindscience_diffuser.models.weights import load_state_dict

    src = GOLDEN / name
    io = dict(np.load(src / "io.npz"))
    if case.get("store_weights", True):
        ours = UNet2DModel.from_pretrained(src)
    else:
        ours = UNet2DModel.from_config(UNet2DModel.load_config(src))
        load_state_dict(ours, seeded_weights({k: p.shape for k, p in ours.parameters_and_names()}))
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        theirs = TorchUNet2DModel.from_pretrained(tmp).eval()
        out = torch_forward(theirs, io)
    return float(np.abs(out - io["out"]).max() / np.abs(io["out"]).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="case names to (re)generate")
    parser.add_argument("--no-roundtrip", action="store_true",
                        help="skip loading our save_pretrained output in diffusers")
    args = parser.parse_args()
    import torch
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    torch.set_num_threads(2)
    names = args.only or list(CASES)
    for name in names:
        build_case(name, CASES[name])
    if not args.only:
        build_encoder_block()
    total = sum(p.stat().st_size for p in GOLDEN.rglob("*") if p.is_file())
    print(f"tests/golden/unet: {total / 1024 / 1024:.2f} MiB")
    if not args.no_roundtrip:
        # diffusers' UNet2DModel has no vector projection to load a projection case into.
        for name in (n for n in names if "projection_dim" not in CASES[n]):
            print(f"diffusers loads our save_pretrained of {name}: max|diff|/max|ref| = "
                  f"{roundtrip_through_ours(name, CASES[name]):.2e}")


if __name__ == "__main__":
    main()
