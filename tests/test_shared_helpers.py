"""The helpers every module shares: the argument check, atomic file and folder writes, the
``model_index.json`` writer."""
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from mindscience_diffuser.io_utils import atomic_file, atomic_folder
from mindscience_diffuser.utils import ArgumentTypeError, check_positive

# ---- check_positive ----------------------------------------------------------------------------


@pytest.mark.parametrize("value,kind,expected", [
    (3, {}, 3.0),
    (np.float32(0.5), {}, 0.5),
    (np.int64(4), {"integer": True}, 4),
    (0, {"allow_zero": True}, 0.0),
    (0, {"integer": True, "allow_zero": True}, 0),
    (2, {"integer": True, "minimum": 2}, 2),
])
def test_check_positive_accepts_and_normalises(value, kind, expected):
    result = check_positive("x", value, **kind)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize("value,kind,allowed", [
    ("3", {}, "a positive number"),
    (None, {}, "a positive number"),
    (True, {}, "a positive number"),
    (2.0, {"integer": True}, "a positive int"),
    (np.float64(2), {"integer": True, "allow_zero": True}, "a non-negative int"),
])
def test_check_positive_wrong_type_is_a_type_error_naming_the_argument(value, kind, allowed):
    with pytest.raises(TypeError, match=f"^steps must be {allowed}, got {type(value).__name__}") as err:
        check_positive("steps", value, **kind)
    # Also a ValueError: callers that caught the ValueError of the former checks still do.
    assert isinstance(err.value, ArgumentTypeError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("value,kind,allowed", [
    (0, {}, "a positive number"),
    (-1, {"integer": True}, "a positive int"),
    (-0.5, {"allow_zero": True}, "a non-negative number"),
    (math.nan, {}, "a positive number"),
    (math.inf, {}, "a positive number"),
    (np.float32("inf"), {"allow_zero": True}, "a non-negative number"),
    (math.inf, {"minimum": 1.0}, "a number >= 1.0"),
    (1, {"integer": True, "minimum": 2}, "an int >= 2"),
])
def test_check_positive_wrong_value_is_a_value_error(value, kind, allowed):
    with pytest.raises(ValueError, match=f"^rate must be {allowed}, got") as err:
        check_positive("rate", value, **kind)
    assert not isinstance(err.value, TypeError)


def test_every_former_copy_uses_the_one_policy():
    """Pipelines, UNet config, field generators and trainer options: a float where an int belongs
    is a TypeError (that is also a ValueError), a zero is a ValueError."""
    from mindscience_diffuser import DDIMScheduler
    from mindscience_diffuser.models import UNet2DModel
    from mindscience_diffuser.training import TrainerConfig, gaussian_random_field

    calls = [
        lambda v: DDIMScheduler().set_timesteps(v),
        lambda v: UNet2DModel(layers_per_block=v),
        lambda v: gaussian_random_field(v),
        lambda v: TrainerConfig(batch_size=v),
    ]
    for call in calls:
        with pytest.raises(ArgumentTypeError):
            call(2.5)
        with pytest.raises(ValueError) as err:
            call(0)
        assert not isinstance(err.value, TypeError)


# ---- atomic writes -----------------------------------------------------------------------------


@pytest.fixture
def umask():
    """Run with a group-writable umask, so a file left at mkstemp's 0o600 shows."""
    previous = os.umask(0o002)
    try:
        yield 0o002
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_file_gets_the_mode_open_would_give(tmp_path, umask):
    reference = tmp_path / "reference.txt"
    with open(reference, "w"):
        pass
    with atomic_file(tmp_path / "new.txt") as tmp:
        tmp.write_text("x")
    assert mode(tmp_path / "new.txt") == mode(reference) == 0o666 & ~umask
    # Replacing a file keeps its permission bits, as writing it in place would.
    (tmp_path / "new.txt").chmod(0o640)
    with atomic_file(tmp_path / "new.txt") as tmp:
        tmp.write_text("y")
    assert mode(tmp_path / "new.txt") == 0o640 and (tmp_path / "new.txt").read_text() == "y"


def test_atomic_folder_gets_the_mode_mkdir_would_give(tmp_path, umask):
    os.mkdir(tmp_path / "reference")
    with atomic_folder(tmp_path / "new") as tmp:
        (tmp / "a").write_text("a")
    assert mode(tmp_path / "new") == mode(tmp_path / "reference") == 0o777 & ~umask


def test_saved_configs_and_weights_carry_the_umask(tmp_path, umask):
    from mindscience_diffuser import DDIMPipeline, DDIMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1,
                       down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), mid_block_type=None,
                       norm_num_groups=4)
    out = DDIMPipeline(unet, DDIMScheduler()).save_pretrained(tmp_path / "pipe")
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                       "unet/diffusion_pytorch_model.safetensors"]
    assert {mode(out / name) for name in written} == {0o666 & ~umask}


def test_a_failed_file_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "data.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "fresh.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]


def test_a_failed_folder_write_leaves_the_old_folder_and_no_temporary(tmp_path):
    target = tmp_path / "checkpoint-1"
    with atomic_folder(target) as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(target) as tmp:
            (tmp / "new.txt").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1"]
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    # A successful write replaces the folder as a whole.
    with atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1"]


def test_errors_name_the_path_the_caller_gave(tmp_path):
    target = tmp_path / "no_such_folder" / "config.json"
    with pytest.raises(FileNotFoundError) as err:
        with atomic_file(target) as tmp:
            tmp.write_text("x")
    assert str(target) in str(err.value) and ".tmp-" not in str(err.value)

    def full_disk(path):
        raise OSError(28, "No space left on device", str(path))

    with pytest.raises(OSError, match="No space left") as err:
        with atomic_file(tmp_path / "weights.bin") as tmp:
            full_disk(tmp)
    assert err.value.errno == 28 and err.value.filename == str(tmp_path / "weights.bin")
    with pytest.raises(OSError) as err:
        with atomic_file(tmp_path / "weights.bin"):
            raise OSError("disk full")
    assert str(err.value) == f"cannot write {tmp_path / 'weights.bin'}: disk full"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---- model_index.json ------------------------------------------------------------------------


def test_pipeline_and_trainer_write_the_same_model_index(tmp_path):
    from mindscience_diffuser import DDIMPipeline, DDIMScheduler, UNet2DModel
    from mindscience_diffuser.pipelines.pipeline_utils import model_index
    from mindscience_diffuser.training import DiffusionTrainer

    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), layers_per_block=1,
                       down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), mid_block_type=None,
                       norm_num_groups=4)
    scheduler = DDIMScheduler(num_train_timesteps=100)
    pipe = DDIMPipeline(unet, scheduler)
    by_pipeline = json.loads((pipe.save_pretrained(tmp_path / "a") / "model_index.json").read_text())
    trainer = DiffusionTrainer(unet, scheduler, ema_decay=None)
    by_trainer = json.loads((trainer.save_pretrained(tmp_path / "b") / "model_index.json").read_text())
    assert by_pipeline == by_trainer == dict(pipe.config) == model_index("DDIMPipeline", pipe.components)
    assert by_trainer["unet"] == ["diffusers", "UNet2DModel"] and by_trainer["_class_name"] == "DDIMPipeline"
