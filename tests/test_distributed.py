"""Data-parallel training with MindSpore's own launcher: two CPU worker processes under msrun.

Runs tools/distributed_train_check.py on 2 ranks (a one-level UNet, 3 steps; about 30 s on an
idle 2-core machine, most of it two graph compilations) and checks that gradients were
all-reduced: both ranks end with bit-identical weights although each saw different data and
started from a different random init.
"""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MSRUN = Path(sys.executable).with_name("msrun")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not MSRUN.exists() and shutil.which("msrun") is None, reason="msrun not installed")
def test_two_process_data_parallel(tmp_path):
    msrun = str(MSRUN) if MSRUN.exists() else shutil.which("msrun")
    env = dict(os.environ)
    # msrun starts the workers with the `python` found on PATH: make it this interpreter.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    cmd = [msrun, "--worker_num=2", "--local_worker_num=2", f"--master_port={free_port()}",
           f"--log_dir={tmp_path / 'logs'}", "--join=True",
           str(ROOT / "tools" / "distributed_train_check.py"), str(tmp_path), "3"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    logs = "".join(p.read_text(errors="replace")[-2000:] for p in sorted((tmp_path / "logs").glob("worker_*.log")))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs

    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert int(r0["world_size"]) == int(r1["world_size"]) == 2
    names = [k for k in r0.files if k != "world_size"]
    assert names and all(np.array_equal(r0[k], r1[k]) for k in names)
    # Only rank 0 writes checkpoints.
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["checkpoint-3"]
