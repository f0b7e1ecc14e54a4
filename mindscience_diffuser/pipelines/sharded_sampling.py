"""One sampling job over several processes (``msrun``), with the result of a single process.

The contract: sample ``i`` of a job with seed ``s`` is a function of ``(s, i)`` and the job's
options only. Its noise (latents and every step's) comes from its own generator
``numpy.random.default_rng([s, i])`` (:func:`sample_generators`), and the samples are computed
in the same batches whatever the number of processes: batch ``j`` holds samples
``j·B .. min((j+1)·B, N) − 1`` (:func:`batch_indices`), and the batches are dealt out to the
workers round-robin (:func:`batches_of_worker`). The batch matters beyond the noise: each batch
is one compiled call, and a batch-wide quantity (score-SDE's corrector uses batch-averaged
norms) or a kernel's summation order may depend on it, so the same batches make the same bits.

Gathering: every worker but the first writes its samples, with their indices, to a hidden shard
file next to the output (written whole, then renamed: see :mod:`..io_utils`); worker 0 waits for
them, puts every sample at its index and is the only one to write the outputs. The shard's name
carries a digest of the job, so a shard left by an interrupted run of another job is never read.
The output folder must be one every worker sees (any local folder on one machine; a shared
file system across machines).

Workers are told apart by the variables MindSpore's launcher ``msrun`` sets (``RANK_ID``,
``RANK_SIZE``). They join the cluster (``mindspore.communication.init``) only so that msrun sees
them finish; no collective is used (the CPU backend has no Barrier kernel, and eager AllGather is
unregistered there), so the samples travel through files.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..io_utils import atomic_file

#: how long worker 0 waits for the other shards once its own are done (the workers have the same
#: work, to one batch, so a longer wait means a worker failed)
SHARD_TIMEOUT_SECONDS = 3600.0
_POLL_SECONDS = 0.2


def worker_rank_and_count(environ: Mapping[str, str] = os.environ, join_cluster: bool = True) -> Tuple[int, int]:
    """``(rank, number of workers)`` under ``msrun`` (its ``RANK_ID`` / ``RANK_SIZE``), ``(0, 1)`` otherwise.

    With several workers, each also joins the cluster (``mindspore.communication.init``) unless
    ``join_cluster`` is False: msrun's scheduler process waits for every worker to register and
    sign off, and without it the launcher outlives the finished workers until its topology
    timeout (600 s).

    >>> worker_rank_and_count({}), worker_rank_and_count({"RANK_ID": "1", "RANK_SIZE": "2"}, join_cluster=False)
    ((0, 1), (1, 2))
    """
    if "RANK_SIZE" not in environ and "MS_WORKER_NUM" not in environ:
        return 0, 1
    try:
        count = int(environ.get("RANK_SIZE", environ.get("MS_WORKER_NUM")))
        rank = int(environ.get("RANK_ID", "0"))
    except ValueError as err:
        raise ValueError(f"a distributed launch needs integer RANK_ID and RANK_SIZE variables: {err}") from err
    if not 0 <= rank < count:
        raise ValueError(f"RANK_ID {rank} is outside 0 .. RANK_SIZE-1 = {count - 1}")
    if count > 1 and join_cluster:
        from mindspore.communication import init
        from mindspore.communication.management import GlobalComm

        if not GlobalComm.INITED:
            init()
    return rank, count


def batch_indices(num_samples: int, batch_size: int) -> List[range]:
    """The job's batches: consecutive runs of ``batch_size`` sample indices (the last may be shorter).

    >>> [list(b) for b in batch_indices(5, 2)]
    [[0, 1], [2, 3], [4]]
    """
    return [range(start, min(start + batch_size, num_samples)) for start in range(0, num_samples, batch_size)]


def batches_of_worker(batches: Sequence[range], rank: int, count: int) -> List[range]:
    """Worker ``rank``'s batches, dealt round-robin (one batch more than another worker at most).

    >>> [list(b) for b in batches_of_worker(batch_indices(5, 2), 1, 2)]
    [[2, 3]]
    """
    return list(batches[rank::count])


def sample_generators(seed: int, indices: Sequence[int]) -> List[np.random.Generator]:
    """One generator per sample, ``default_rng([seed, i])``: independent streams keyed by (seed, index)."""
    return [np.random.default_rng([seed, int(i)]) for i in indices]


def sample_batches(pipe, batches: Sequence[range], seed: int, num_samples: Optional[int] = None,
                   **call) -> Tuple[np.ndarray, np.ndarray]:
    """``(indices, samples)``: ``pipe(batch_size=len(b), generator=sample_generators(seed, b), **call)``
    for each batch ``b``, concatenated as numpy (``call`` should ask for ``output_type="latent"``);
    a per-sample ``condition`` in ``call`` is sliced to each batch (:func:`condition_of_batch`)."""
    condition = call.pop("condition", None)
    indices, samples = [], []
    for batch in batches:
        if condition is not None:
            call["condition"] = condition_of_batch(condition, batch, num_samples)
        out = pipe(batch_size=len(batch), generator=sample_generators(seed, batch), **call).images
        samples.append(out.asnumpy() if hasattr(out, "asnumpy") else np.asarray(out))
        indices.extend(batch)
    if not samples:
        return np.zeros((0,), np.int64), None
    return np.asarray(indices, np.int64), np.concatenate(samples)


def condition_of_batch(condition, batch: Sequence[int], num_samples: Optional[int]):
    """The rows of a per-sample ``condition`` (at least 2-D, one row per sample of the job's
    ``num_samples``) that ``batch`` holds; any other condition (one for every sample) as it is."""
    array = np.asarray(condition)
    if num_samples is not None and array.ndim >= 2 and array.shape[0] == num_samples:
        return array[list(batch)]
    return condition


def job_digest(job: Mapping[str, Any]) -> str:
    """A short digest of what determines the samples (model, sampler, seed, counts, options)."""
    text = json.dumps(dict(job), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def shard_path(output: Path, digest: str, rank: int, count: int) -> Path:
    return output.with_name(f".{output.name}.shard-{digest}-{rank}-of-{count}.npz")


def write_shard(path: Path, indices: np.ndarray, samples: Optional[np.ndarray]) -> None:
    """Write a worker's ``(indices, samples)`` whole under ``path`` (an empty shard when it had no batch)."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as handle:  # a handle: np.savez would append ".npz" to the name
            if samples is None:
                np.savez(handle, indices=indices)
            else:
                np.savez(handle, indices=indices, samples=samples)


def gather_shards(output: Path, digest: str, count: int, num_samples: int, own: Tuple[np.ndarray, np.ndarray],
                  timeout: float = SHARD_TIMEOUT_SECONDS) -> np.ndarray:
    """Worker 0: its own ``(indices, samples)`` and every other worker's shard, each sample at its
    index; the shards are removed once read. ``TimeoutError`` if one is missing after ``timeout`` s."""
    parts = [own]
    for rank in range(1, count):
        path = shard_path(output, digest, rank, count)
        if not _wait_until_exists(path, timeout):
            raise TimeoutError(f"no samples from worker {rank} after {timeout:.0f} s (expected {path}): did it "
                               "fail? see its log")
        with np.load(path) as shard:
            parts.append((shard["indices"], shard["samples"] if "samples" in shard.files else None))
        path.unlink()
    filled = [(i, s) for i, s in parts if s is not None]
    first = filled[0][1]
    result = np.empty((num_samples,) + first.shape[1:], first.dtype)
    seen = np.zeros(num_samples, bool)
    for indices, samples in filled:
        result[indices] = samples
        seen[indices] = True
    if not seen.all():
        raise RuntimeError(f"samples {np.flatnonzero(~seen)[:8].tolist()} came from no worker")
    return result


def _wait_until_exists(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True
