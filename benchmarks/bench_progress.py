"""What GRAPH_MODE progress costs: the compiled loop run whole (bar off) against in 10 chunks of the
same graph (bar on), interleaved in one process.

    python benchmarks/bench_progress.py [--steps 20] [--batch 4] [--reps 7]

The small benchmark layout (UNet 32/64/64, 32×32×3) under DDIM and DPM-Solver (whose history is
carried between chunks). Prints the median time of each and their ratio.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import mindspore as ms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mindscience_diffuser import DDIMPipeline, DDIMScheduler, DPMSolverMultistepScheduler, UNet2DModel  # noqa: E402

SMALL = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(32, 64, 64),
             down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
             up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=2, norm_num_groups=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    devnull = open(os.devnull, "w")
    print("| scheduler | whole loop ms (bar off) | 10 chunks ms (bar on) | ratio |")
    print("|---|---|---|---|")
    for name, scheduler in (("DDIM", DDIMScheduler()), ("DPM-Solver++ 2M", DPMSolverMultistepScheduler())):
        pipe = DDIMPipeline(UNet2DModel(**SMALL), DDIMScheduler())
        pipe.scheduler = scheduler
        times = {"off": [], "on": []}
        for rep in range(args.reps + 1):
            for mode in ("off", "on"):
                pipe.set_progress_bar_config(disable=mode == "off", file=devnull)
                start = time.perf_counter()
                pipe(batch_size=args.batch, generator=rep, num_inference_steps=args.steps, output_type="latent")
                if rep:  # the first round compiles
                    times[mode].append(time.perf_counter() - start)
        off, on = (statistics.median(times[m]) * 1000 for m in ("off", "on"))
        print(f"| {name} | {off:.0f} | {on:.0f} | {on / off:.3f} |")
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
