"""Two checkouts of this project, same machine, same run: the compiled DDIMPipeline loop of each,
interleaved, to see whether a change moved compile time or speed.

Each repetition starts one fresh process per checkout (alternating which goes first), builds the
bench layout's UNet with the same seeded weights and a DDIM scheduler, and under GRAPH_MODE
times the first call (compile + run) and then ``--calls`` further calls. The table gives the
medians over repetitions and the ratio new/old. Machine load hits both sides alike because the
processes alternate.

Usage (from the repository root; OLD is another checkout, e.g. ``git worktree add ../old HEAD~3``):
    python benchmarks/compare_checkouts.py --old ../old --new . --batches 1 4 --steps 20 --reps 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
import numpy as np
import mindspore as ms
root, layout, batch, steps, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, root)
import importlib.util
spec = importlib.util.spec_from_file_location("bench_unet", root + "/benchmarks/bench_unet.py")
bench_unet = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_unet)
import mindscience_diffuser
from mindscience_diffuser import DDIMPipeline, DDIMScheduler
assert mindscience_diffuser.__file__.startswith(root), mindscience_diffuser.__file__
ms.set_context(mode=ms.GRAPH_MODE)
pipe = DDIMPipeline(bench_unet.build_ours(layout), DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear"))
pipe.set_progress_bar_config(disable=True)
kwargs = dict(batch_size=batch, num_inference_steps=steps, generator=0, output_type="latent")
start = time.perf_counter()
first = pipe(**kwargs).images.asnumpy()
first_call = time.perf_counter() - start
times = []
for _ in range(calls):
    start = time.perf_counter()
    pipe(**kwargs).images.asnumpy()
    times.append(time.perf_counter() - start)
median = sorted(times)[len(times) // 2]
print(json.dumps({"first_call": first_call, "call": median, "checksum": float(np.abs(first).sum())}))
"""


def run(root: Path, layout: str, batch: int, steps: int, calls: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), layout, str(batch), str(steps), str(calls)],
                         capture_output=True, text=True, env=env, cwd=str(root), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--layouts", nargs="+", default=["small"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--steps", nargs="+", type=int, default=[20])
    parser.add_argument("--reps", type=int, default=3, help="fresh processes per checkout and configuration")
    parser.add_argument("--calls", type=int, default=3, help="timed calls after the first, per process (median kept)")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    args = parser.parse_args()
    sides = {"old": args.old.resolve(), "new": args.new.resolve()}
    rows, raw = [], []
    for layout in args.layouts:
        for batch in args.batches:
            for steps in args.steps:
                results = {"old": [], "new": []}
                for rep in range(args.reps):
                    order = ("old", "new") if rep % 2 == 0 else ("new", "old")
                    for side in order:
                        results[side].append(run(sides[side], layout, batch, steps, args.calls))
                raw.append({"layout": layout, "batch": batch, "steps": steps, **results})
                med = {side: {k: statistics.median(r[k] for r in runs) for k in ("first_call", "call")}
                       for side, runs in results.items()}
                same = results["old"][0]["checksum"] == results["new"][0]["checksum"]
                old, new = med["old"], med["new"]
                rows.append((layout, batch, steps, old["call"], new["call"], new["call"] / old["call"],
                             old["first_call"], new["first_call"], same))
    print("| layout | batch | steps | old call s | new call s | new/old | old first call s | new first call s "
          "| same output |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for layout, batch, steps, old, new, ratio, old_first, new_first, same in rows:
        print(f"| {layout} | {batch} | {steps} | {old:.3f} | {new:.3f} | {ratio:.2f} | {old_first:.2f} "
              f"| {new_first:.2f} | {'yes' if same else 'NO'} |")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
