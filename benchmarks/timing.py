"""Wall-clock helpers the benchmarks share: one timed call, and medians of interleaved calls."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(runs: Dict[str, Callable[[], object]], reps: int) -> Dict[str, float]:
    """Median seconds of each callable, timed in turn (a, b, c, a, b, c, ...) so load hits all alike."""
    times = {name: [] for name in runs}
    for _ in range(reps):
        for name, run in runs.items():
            times[name].append(timed(run))
    return {name: statistics.median(t) for name, t in times.items()}
