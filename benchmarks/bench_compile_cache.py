"""First-call time and peak memory of a fresh process, with and without MindSpore's compile cache.

Each measurement is its own Python process (the cache only matters across processes): one
DDIMPipeline call (or one UNet forward with ``--unet``) in GRAPH_MODE, timed from just before the
call, so the figure is compile + run without the imports and model building. Three runs per
configuration, in this order:

- ``no cache``: MindSpore compiles the graph;
- ``cold cache``: ``utils.enable_compile_cache`` on an empty folder (compiles and writes it);
- ``warm cache``: the same key again in a new process (loads the graph written by the run before).

Ours only: diffusers compiles nothing. The steady call time printed beside is a second call in
the warm process.

    python benchmarks/bench_compile_cache.py --layouts small cifar10 --batch 4 --steps 20
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(layout: str, batch: int, steps: int, unet: bool, cache_root: str) -> None:
    """One fresh process: build, maybe enable the cache, time the first and a second call."""
    import mindspore as ms
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_pipeline
    import bench_unet

    from mindscience_diffuser.utils import enable_compile_cache

    ms.set_context(mode=ms.GRAPH_MODE)
    if unet:
        model = bench_unet.build_ours(layout)
        x, t = bench_unet.inputs(layout, batch)
        key = [dict(model.config), batch]

        def call():
            return model(ms.Tensor(x), ms.Tensor(t)).asnumpy()
    else:
        pipe = bench_pipeline.build_our_pipe(layout)
        key = [dict(pipe.unet.config), batch, steps]

        def call():
            return pipe(batch_size=batch, num_inference_steps=steps, generator=0, output_type="np",
                        return_dict=True).images
    if cache_root:
        enable_compile_cache(key, cache_root)
    start = time.perf_counter()
    out = call()
    first = time.perf_counter() - start
    start = time.perf_counter()
    call()
    steady = time.perf_counter() - start
    peak = bench_unet._maxrss_mib()
    print(json.dumps(dict(first_s=first, steady_s=steady, peak_mib=peak, checksum=float(np.abs(out).sum()))))


def run(layout: str, batch: int, steps: int, unet: bool, cache_root: str = "") -> dict:
    cmd = [sys.executable, __file__, "--child", layout, str(batch), str(steps), str(int(unet)), cache_root]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, GLOG_v="3"))
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        layout, batch, steps, unet, cache_root = sys.argv[2:7]
        child(layout, int(batch), int(steps), bool(int(unet)), cache_root)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", nargs="+", default=["small", "cifar10"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--unet", action="store_true", help="one UNet forward instead of a pipeline call")
    args = parser.parse_args()

    from bench_unet import run_header

    load_start = os.getloadavg()[0]
    what = "UNet forward" if args.unet else f"DDIMPipeline, {args.steps} steps"
    rows = []
    for layout in args.layouts:
        with tempfile.TemporaryDirectory() as cache_root:
            runs = {"no cache": run(layout, args.batch, args.steps, args.unet),
                    "cold cache": run(layout, args.batch, args.steps, args.unet, cache_root),
                    "warm cache": run(layout, args.batch, args.steps, args.unet, cache_root)}
        same = len({r["checksum"] for r in runs.values()}) == 1
        rows.append((layout, runs, same))
        print(json.dumps(dict(layout=layout, runs=runs)), flush=True)
    print()
    print(run_header(sys.argv, load_start, os.getloadavg()[0]))
    print()
    print(f"| layout | batch | {what}: first call s, no cache / cold cache / warm cache | steady call s "
          "| peak RSS MiB no cache / warm cache | same output |")
    print("|---|---|---|---|---|---|")
    for layout, runs, same in rows:
        print(f"| {layout} | {args.batch} | {runs['no cache']['first_s']:.2f} / {runs['cold cache']['first_s']:.2f} / "
              f"**{runs['warm cache']['first_s']:.2f}** | {runs['warm cache']['steady_s']:.2f} "
              f"| {runs['no cache']['peak_mib']:.0f} / {runs['warm cache']['peak_mib']:.0f} "
              f"| {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "benchmarks"))
    main()
