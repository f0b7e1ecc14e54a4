"""Data-parallel training with MindSpore's own launcher: two CPU worker processes under msrun.

Runs tools/distributed_train_check.py on 2 ranks (a one-level UNet, 3 steps; about 30 s on an
idle 2-core machine, most of it two graph compilations) and checks that gradients were
all-reduced: both ranks end with bit-identical weights although each saw different data and
started from a different random init.
"""
import os
import shutil
import signal
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


def run_process_group(cmd, env, cwd, timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group and, if it overruns ``timeout``, end the whole group:
    killing msrun alone would leave its workers running."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"msrun did not finish in {timeout:.0f} s: {out[-2000:]}{err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def tiny_model_folder(folder: Path) -> Path:
    import mindscience_diffuser as msd

    unet = msd.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8,), down_block_types=("DownBlock2D",),
        up_block_types=("UpBlock2D",), mid_block_type=None, layers_per_block=1, norm_num_groups=4,
    )
    msd.DDIMPipeline(unet, msd.DDIMScheduler(num_train_timesteps=100)).save_pretrained(folder)
    return folder


@pytest.mark.skipif(not MSRUN.exists() and shutil.which("msrun") is None, reason="msrun not installed")
def test_sampling_job_sharded_over_two_processes_writes_the_single_process_file(tmp_path):
    """`msrun ... python -m mindscience_diffuser sample --num-samples 4 --batch-size 2`: each worker
    samples one batch, worker 0 gathers them and alone writes the outputs, which are those of the
    same command in one process, to the bit (eta = 1: every step draws noise, per sample)."""
    from mindscience_diffuser import cli

    model = tiny_model_folder(tmp_path / "model")
    job = ["sample", "--model", str(model), "--steps", "2", "--eta", "1", "--num-samples", "4", "--batch-size", "2",
           "--seed", "3", "--quiet"]
    single = tmp_path / "single"
    single.mkdir()
    assert cli.main(job + ["--output", str(single / "grid.png"), "--save-npy", str(single / "out.npy")]) == 0

    msrun = str(MSRUN) if MSRUN.exists() else shutil.which("msrun")
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")  # this checkout, not an installed copy
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    cmd = [msrun, "--worker_num=2", "--local_worker_num=2", f"--master_port={free_port()}",
           f"--log_dir={tmp_path / 'logs'}", "--join=True", "python", "-m", "mindscience_diffuser", *job,
           "--output", str(sharded / "grid.png"), "--save-npy", str(sharded / "out.npy")]
    proc = run_process_group(cmd, env, tmp_path, timeout=300)
    logs = "".join(p.read_text(errors="replace")[-2000:] for p in sorted((tmp_path / "logs").glob("worker_*.log")))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs
    assert "on 2 workers" in logs and "handed to worker 0" in logs

    np.testing.assert_array_equal(np.load(sharded / "out.npy"), np.load(single / "out.npy"))
    # Worker 0 wrote the two outputs; the shard of worker 1 is gone.
    assert sorted(p.name for p in sharded.iterdir()) == ["grid.png", "out.npy"]


def test_worker_zero_gathers_the_shards_by_index_and_removes_them(tmp_path):
    from mindscience_diffuser.pipelines import sharded_sampling as shards

    out = tmp_path / "out.npy"
    batches = shards.batch_indices(4, 1)  # 4 batches over 3 workers: worker 0 gets two
    assert [[list(b) for b in shards.batches_of_worker(batches, r, 3)] for r in range(3)] == [[[0], [3]], [[1]], [[2]]]
    samples = np.arange(4 * 2, dtype=np.float32).reshape(4, 2)
    for rank in (1, 2):
        indices = np.asarray([i for b in shards.batches_of_worker(batches, rank, 3) for i in b])
        shards.write_shard(shards.shard_path(out, "job", rank, 3), indices, samples[indices])
    gathered = shards.gather_shards(out, "job", 3, 4, (np.asarray([0, 3]), samples[[0, 3]]))
    np.testing.assert_array_equal(gathered, samples)
    assert list(tmp_path.iterdir()) == []  # the shards are read and removed

    # A worker with no batch (more workers than batches) hands over an empty shard.
    shards.write_shard(shards.shard_path(out, "job", 1, 2), np.zeros(0, np.int64), None)
    np.testing.assert_array_equal(shards.gather_shards(out, "job", 2, 1, (np.asarray([0]), samples[:1])),
                                  samples[:1])
    with pytest.raises(TimeoutError, match="worker 1"):
        shards.gather_shards(out, "job", 2, 1, (np.asarray([0]), samples[:1]), timeout=0.3)
    with pytest.raises(ValueError, match="RANK_ID"):
        shards.worker_rank_and_count({"RANK_ID": "2", "RANK_SIZE": "2"}, join_cluster=False)
