"""DDIMPipeline end to end: mindscience_diffuser (GRAPH_MODE, one compiled loop) against
diffusers 0.42.1's DDIMPipeline (torch CPU eager, ``torch.set_num_threads(2)``), same run.

Both pipelines get the same UNet weights (the UNet golden generator's seeded weights, as
``benchmarks/bench_unet.py``) and the same DDIM scheduler config. Timings are interleaved
(ours, theirs, ours, theirs, ...) after a warm-up call of each, so machine load hits both
alike; the table reports medians. "first call" is ours' first call in a fresh pipeline: it
compiles the whole loop (compile ≈ first call - median call). Peak memory: each side runs
alone in a fresh subprocess (one warm-up-free pipeline call, so ours includes compilation) and
reports its peak resident set (VmHWM: framework + weights + activations).

Ours is built once per ``--kernels`` choice (``auto``: the C++ CPU kernels of
models/cpu_kernels.py; ``plain``: MindSpore's own ops), each timed interleaved with diffusers.

``--pynative`` also times our pipeline in PyNative (the same loop Cell run eagerly, one Python
iteration per step) on the first configuration, to show what compiling the loop buys.

Usage (from the repository root):
    python benchmarks/bench_pipeline.py --quick                     # small layout only, 1 rep
    python benchmarks/bench_pipeline.py --layouts small cifar10 --batches 1 4 8 --steps 20 --kernels auto plain
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from timing import interleaved, timed  # noqa: E402

SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True, set_alpha_to_one=True,
                 steps_offset=0)
MD_HEADER = "## Pipelines"


def _bench_unet():
    spec = importlib.util.spec_from_file_location("bench_unet", ROOT / "benchmarks" / "bench_unet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_torch_pipe(layout: str):
    import torch
    from diffusers import DDIMPipeline, DDIMScheduler

    torch.set_num_threads(2)
    pipe = DDIMPipeline(_bench_unet().build_torch(layout), DDIMScheduler(**SCHEDULER))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_our_pipe(layout: str, kernels: str = "auto"):
    from mindscience_diffuser import DDIMPipeline, DDIMScheduler

    pipe = DDIMPipeline(_bench_unet().build_ours(layout, kernels), DDIMScheduler(**SCHEDULER))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def bench_config(layout: str, batch: int, steps: int, reps: int, theirs, ours: dict,
                 warm_up_theirs: bool = True) -> dict:
    """``ours``: {kernel choice: pipeline}. Each first call compiles its loop; then all are interleaved."""
    import torch

    def run_theirs():
        with torch.no_grad():
            theirs(batch_size=batch, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                   output_type="np")

    def runner(pipe):
        return lambda: pipe(batch_size=batch, num_inference_steps=steps, generator=0, output_type="np")

    runs = {choice: runner(pipe) for choice, pipe in ours.items()}
    first = {choice: timed(run) for choice, run in runs.items()}  # compiles the loop for this (shape, steps)
    if warm_up_theirs:  # torch compiles nothing; one warm-up per pipeline settles its allocator and threads
        run_theirs()
    runs["torch"] = run_theirs
    medians = interleaved(runs, reps)
    torch_s = medians.pop("torch")
    mine = {}
    for choice, ours_s in medians.items():
        mine[choice] = dict(ours_s=ours_s, ratio=ours_s / torch_s, first_s=first[choice],
                            compile_s=max(first[choice] - ours_s, 0.0))
    return dict(layout=layout, batch=batch, steps=steps, torch_s=torch_s, ours=mine, reps=reps)


def bench_pynative(layout: str, batch: int, steps: int, ours) -> dict:
    import mindspore as ms

    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        eager = timed(lambda: ours(batch_size=batch, num_inference_steps=steps, generator=0, output_type="np"))
        ours.use_jit = True
        jit_first = timed(lambda: ours(batch_size=batch, num_inference_steps=steps, generator=0, output_type="np"))
        jit_s = timed(lambda: ours(batch_size=batch, num_inference_steps=steps, generator=0, output_type="np"))
        ours.use_jit = False
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    return dict(layout=layout, batch=batch, steps=steps, pynative_s=eager, jit_first_s=jit_first, jit_s=jit_s)


# ----------------------------------------------------------------------------- memory (subprocess)

def memory_child(side: str, layout: str, batch: int, steps: int) -> None:
    """Runs in its own process: ``side`` is ``torch`` or ``ours-CHOICE`` (a ``--kernels`` value)."""
    peak = _bench_unet()._maxrss_mib
    if side == "torch":
        import torch

        pipe = build_torch_pipe(layout)
        before = peak()
        with torch.no_grad():
            pipe(batch_size=batch, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                 output_type="np")
    else:
        import mindspore as ms

        ms.set_context(mode=ms.GRAPH_MODE)
        pipe = build_our_pipe(layout, side.split("-")[1])
        before = peak()
        pipe(batch_size=batch, num_inference_steps=steps, generator=0, output_type="np")
    print(json.dumps(dict(peak_mib=peak(), call_mib=peak() - before)))


def memory(side: str, layout: str, batch: int, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", side, layout, str(batch), str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, GLOG_v="3"))
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report

def table(rows, memories) -> str:
    choices = list(rows[0]["ours"])
    head = ["layout", "batch", "steps", "diffusers s", "diffusers ms/step"]
    for c in choices:
        head += [f"ours GRAPH s ({c})", f"ratio ours/diffusers ({c})", f"ours ms/step ({c})",
                 f"ours first call s (compile s) ({c})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["layout"], str(r["batch"]), str(r["steps"]), f"{r['torch_s']:.2f}",
                 f"{r['torch_s'] / r['steps'] * 1e3:.1f}"]
        for c in choices:
            o = r["ours"][c]
            cells += [f"{o['ours_s']:.2f}", f"**{o['ratio']:.2f}**", f"{o['ours_s'] / r['steps'] * 1e3:.1f}",
                      f"{o['first_s']:.1f} ({o['compile_s']:.1f})"]
        lines.append("| " + " | ".join(cells) + " |")
    if memories:
        lines += [
            "",
            f"| layout | batch | steps | peak RSS MiB ours ({choices[0]}, GRAPH, incl. compile) "
            "| peak RSS MiB diffusers | growth during the call ours / diffusers |",
            "|---|---|---|---|---|---|",
        ]
        for (layout, batch, steps), m in memories.items():
            lines.append(f"| {layout} | {batch} | {steps} | {m['ours']['peak_mib']:.0f} "
                         f"| {m['torch']['peak_mib']:.0f} "
                         f"| +{m['ours']['call_mib']:.0f} / +{m['torch']['call_mib']:.0f} |")
    return "\n".join(lines)


def chart(rows, path: Path) -> None:
    """Time per step against batch size, one panel per layout, ours and diffusers per step count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layouts = sorted({r["layout"] for r in rows}, key=lambda s: s != "small")
    fig, axes = plt.subplots(1, len(layouts), figsize=(5 * len(layouts), 3.8), squeeze=False)
    for ax, layout in zip(axes[0], layouts):
        for steps, style in zip(sorted({r["steps"] for r in rows}), ("-", "--", ":")):
            sel = sorted((r for r in rows if r["layout"] == layout and r["steps"] == steps), key=lambda r: r["batch"])
            if not sel:
                continue
            b = [r["batch"] for r in sel]
            choice = next(iter(sel[0]["ours"]))
            ax.plot(b, [r["ours"][choice]["ours_s"] / steps * 1e3 for r in sel], style, marker="o", color="tab:blue",
                    label=f"ours GRAPH ({choice}), {steps} steps")
            ax.plot(b, [r["torch_s"] / steps * 1e3 for r in sel], style, marker="s", color="tab:orange",
                    label=f"diffusers torch, {steps} steps")
        ax.set_title(f"DDIMPipeline, {layout} layout")
        ax.set_xlabel("batch size")
        ax.set_ylabel("ms per step")
        ax.set_xticks(sorted({r["batch"] for r in rows}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_md(path: Path, text: str) -> None:
    """Replace (or append) the "## Pipelines" section, leaving every other section alone."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    start = old.find(MD_HEADER)
    if start >= 0:
        end = old.find("\n## ", start + len(MD_HEADER))
        old = old[:start].rstrip() + "\n" + (old[end:] if end >= 0 else "")
    path.write_text(old.rstrip() + "\n\n" + text.strip() + "\n")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", nargs="+", default=["small", "cifar10"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--steps", nargs="+", type=int, default=[20, 50])
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per side (median reported)")
    parser.add_argument("--quick", action="store_true", help="small layout, 1 rep, no memory runs")
    parser.add_argument("--pynative", action="store_true", help="also time our pipeline in PyNative and under ms.jit")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-steps", type=int,
                        help="steps of the peak-memory runs (default: the fewest benchmarked)")
    parser.add_argument("--kernels", nargs="+", default=["auto"], choices=["auto", "plain", "cpu"],
                        help="our layer implementations to time (models/cpu_kernels.py)")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--chart", type=Path, help="write the time-per-step chart (PNG) here")
    args = parser.parse_args()
    if args.quick:
        args.layouts, args.reps, args.no_memory = ["small"], 1, True

    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    load = os.getloadavg()[0]
    print(f"load average at start: {load:.2f}", flush=True)
    rows, pyn, memories = [], [], {}
    for layout in args.layouts:
        theirs = build_torch_pipe(layout)
        ours = {choice: build_our_pipe(layout, choice) for choice in args.kernels}
        for k, steps in enumerate(args.steps):
            for j, batch in enumerate(args.batches):
                row = bench_config(layout, batch, steps, args.reps, theirs, ours, warm_up_theirs=(k == 0 and j == 0))
                rows.append(row)
                print(json.dumps(row), flush=True)
        if args.pynative and layout == args.layouts[0]:
            pyn.append(bench_pynative(layout, args.batches[0], args.steps[0], ours[args.kernels[0]]))
            print(json.dumps(pyn[-1]), flush=True)
        if not args.no_memory:
            key = (layout, max(args.batches), args.memory_steps or min(args.steps))
            memories[key] = {"ours": memory(f"ours-{args.kernels[0]}", *key), "torch": memory("torch", *key)}
            print(json.dumps({"memory": list(key), **memories[key]}), flush=True)
    header = _bench_unet().run_header(sys.argv, load, os.getloadavg()[0])
    result = dict(header=header, rows=rows, pynative=pyn,
                  memory={"/".join(map(str, k)): v for k, v in memories.items()})
    print()
    print(header)
    print()
    print(table(rows, memories))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.chart:
        chart(rows, args.chart)


if __name__ == "__main__":
    main()
