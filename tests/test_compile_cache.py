"""utils.enable_compile_cache: a second process with the same key reuses the first one's graph.

Each run is its own process (the compile cache is process-wide MindSpore state, so it is never
switched on inside the test process). No timings: what is checked is that the cached graph is
written, found again under the same key, kept apart under another key, and gives the same output.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "tests" / "golden" / "unet" / "learned_time"

CHILD = """
import json, sys
import mindspore as ms
import numpy as np
sys.path.insert(0, {root!r})
from mindscience_diffuser import UNet2DModel
from mindscience_diffuser.utils import enable_compile_cache

ms.set_context(mode=ms.GRAPH_MODE)
model = UNet2DModel.from_pretrained({case!r})
folder = enable_compile_cache(key=[model.config, "batch 2"], cache_root=sys.argv[1])
io = np.load({case!r} + "/io.npz")
out = model(ms.Tensor(io["sample"]), ms.Tensor(io["timesteps"]), ms.Tensor(io["class_labels"])).asnumpy()
print(json.dumps(dict(folder=str(folder), out=out.ravel()[:64].tolist())))
"""


def run_child(cache_root: Path, key_suffix: str = "") -> dict:
    # A script file, not ``python -c``: MindSpore's graph parser reads the source of what it compiles.
    script = cache_root / f"child{key_suffix.strip()}.py"
    script.write_text(CHILD.format(root=str(ROOT), case=str(CASE)).replace('"batch 2"', f'"batch 2{key_suffix}"'))
    done = subprocess.run([sys.executable, str(script), str(cache_root)], capture_output=True, text=True,
                          check=True, cwd=cache_root)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_reuses_the_cached_graph(tmp_path):
    first = run_child(tmp_path)
    folder = Path(first["folder"])
    assert folder.parent == tmp_path
    cached = {p: p.stat().st_mtime_ns for p in folder.rglob("*.mindir")}
    assert cached, "the first process wrote no compiled graph"
    second = run_child(tmp_path)
    assert second["folder"] == first["folder"]
    # Loaded, not compiled and written anew.
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*.mindir")} == cached
    assert np.allclose(second["out"], first["out"], rtol=0, atol=0)


def test_another_key_gets_another_folder(tmp_path):
    assert run_child(tmp_path)["folder"] != run_child(tmp_path, key_suffix=" other")["folder"]


def test_sample_command_reuses_its_compiled_loop_in_a_later_identical_job(tmp_path):
    """``sample --compile-cache``: the first job writes the compiled loop under a folder keyed by
    the model's files and the job, an identical second job loads it (files untouched) and writes
    the same samples; another batch size is another folder."""
    import mindscience_diffuser as msd

    model = tmp_path / "model"
    unet = msd.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                           layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    msd.DDIMPipeline(unet=unet, scheduler=msd.DDIMScheduler(num_train_timesteps=100)).save_pretrained(model)
    cache = tmp_path / "cache"
    env = {**os.environ, "MINDSCIENCE_DIFFUSER_COMPILE_CACHE": str(cache), "PYTHONPATH": str(ROOT)}

    def job(name: str, batch: int = 2) -> tuple:
        out = tmp_path / f"{name}.npy"
        done = subprocess.run([sys.executable, "-m", "mindscience_diffuser", "sample", "--model", str(model),
                               "--steps", "2", "--batch-size", str(batch), "--compile-cache", "--output",
                               str(tmp_path / f"{name}.png"), "--save-npy", str(out)],
                              capture_output=True, text=True, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        folder = Path(next(line for line in done.stdout.splitlines() if line.startswith("compile cache: "))[15:])
        return folder, np.load(out)

    folder, first = job("first")
    assert folder.parent == cache
    cached = {p: p.stat().st_mtime_ns for p in folder.rglob("*.mindir")}
    assert cached, "the first job wrote no compiled graph"
    again, second = job("second")
    assert again == folder and {p: p.stat().st_mtime_ns for p in folder.rglob("*.mindir")} == cached
    np.testing.assert_array_equal(second, first)
    assert job("other", batch=3)[0] != folder
