"""utils.enable_compile_cache: a second process with the same key reuses the first one's graph.

Each run is its own process (the compile cache is process-wide MindSpore state, so it is never
switched on inside the test process). No timings: what is checked is that the cached graph is
written, found again under the same key, kept apart under another key, and gives the same output.
"""
from __future__ import annotations

import json
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
