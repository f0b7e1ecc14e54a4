"""UNet2DModel forward: mindscience_diffuser (MindSpore) against diffusers 0.42.1 (torch, CPU).

Both sides get the same weights (the golden generator's seeded weights) and the same input.
Timings are interleaved (ours, theirs, ours, theirs, ...) after warm-up so that machine load
hits both alike; the table reports medians. Ours runs in GRAPH_MODE (one compiled graph; the
compile time is the first call minus a steady call) and in PyNative; torch runs eagerly under
``torch.no_grad()`` with ``torch.set_num_threads(2)``.

FLOPs are counted analytically from the torch model with forward hooks: 2·MACs of every
Conv2d and Linear plus the two attention matmuls (2·2·B·heads·n²·d). GFLOP/s = FLOPs / median
time. Peak memory: each framework runs alone in a fresh subprocess and reports its peak
resident set (``VmHWM`` from /proc/self/status; it includes the framework and the weights) after
one forward (GRAPH_MODE for ours, so compilation is included), and the growth of that peak over
that forward pass.

Usage (from the repository root):
    python benchmarks/bench_unet.py                       # both layouts, batch 1 and 8
    python benchmarks/bench_unet.py --layouts small --batches 1 --reps 5
    python benchmarks/bench_unet.py --write-md docs/benchmarks.md
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYOUTS = {
    "small": dict(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=[32, 64, 64],
        down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        layers_per_block=2, norm_num_groups=32, attention_head_dim=None, norm_eps=1e-6,
    ),
    # google/ddpm-cifar10-32
    "cifar10": dict(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=[128, 256, 256, 256],
        down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        layers_per_block=2, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
        attention_head_dim=None, norm_eps=1e-6, norm_num_groups=32, act_fn="silu",
    ),
}


def _generator():
    spec = importlib.util.spec_from_file_location("gen_unet_golden", ROOT / "tools" / "gen_unet_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def inputs(layout: str, batch: int):
    size = LAYOUTS[layout]["sample_size"]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    t = rng.integers(0, 1000, size=batch).astype(np.int64)
    return x, t


def build_torch(layout: str):
    import torch
    from diffusers import UNet2DModel as TorchUNet

    model = TorchUNet(**LAYOUTS[layout]).eval()
    weights = _generator().seeded_weights({k: v.shape for k, v in model.state_dict().items()})
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    return model


def build_ours(layout: str):
    from mindscience_diffuser.models import UNet2DModel
    from mindscience_diffuser.models.weights import load_state_dict

    model = UNet2DModel(**LAYOUTS[layout])
    model.set_train(False)
    load_state_dict(model, _generator().seeded_weights({k: p.shape for k, p in model.parameters_and_names()}))
    return model


def count_flops(model, x, t) -> float:
    """2·MACs of Conv2d / Linear layers and attention matmuls in one forward, from torch hooks."""
    import torch
    from diffusers.models.attention_processor import Attention

    total = [0]

    def conv_hook(mod, inp, out):
        total[0] += 2 * out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]

    def linear_hook(mod, inp, out):
        total[0] += 2 * out.numel() * mod.in_features

    def attn_hook(mod, inp, out):
        b, c, h, w = inp[0].shape
        n, d = h * w, mod.inner_dim // mod.heads
        total[0] += 2 * 2 * b * mod.heads * n * n * d

    handles = []
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, torch.nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
        elif isinstance(mod, Attention):
            handles.append(mod.register_forward_hook(attn_hook))
    with torch.no_grad():
        model(torch.from_numpy(x), torch.from_numpy(t))
    for h in handles:
        h.remove()
    return float(total[0])


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_pair(layout: str, batch: int, reps: int, warmup: int = 2) -> dict:
    import mindspore as ms
    import torch

    torch.set_num_threads(2)
    x, t = inputs(layout, batch)
    theirs = build_torch(layout)
    ours = build_ours(layout)
    flops = count_flops(theirs, x, t)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    xm, tm = ms.Tensor(x), ms.Tensor(t)

    def run_theirs():
        with torch.no_grad():
            return theirs(xt, tt).sample.numpy()

    def run_ours():
        return ours(xm, tm).asnumpy()

    result = dict(layout=layout, batch=batch, gflop=flops / 1e9)
    ref = run_theirs()

    ms.set_context(mode=ms.GRAPH_MODE)
    first = timed(run_ours)
    out = run_ours()
    result["rel_err"] = float(np.abs(out - ref).max() / np.abs(ref).max())
    for _ in range(warmup):
        run_ours()
        run_theirs()
    graph_times, torch_times = [], []
    for _ in range(reps):  # interleaved, so load changes hit both sides alike
        graph_times.append(timed(run_ours))
        torch_times.append(timed(run_theirs))
    result["graph_s"] = statistics.median(graph_times)
    result["torch_s"] = statistics.median(torch_times)
    result["compile_s"] = first - result["graph_s"]

    ms.set_context(mode=ms.PYNATIVE_MODE)
    for _ in range(warmup):
        run_ours()
    pyn_times, torch2 = [], []
    for _ in range(max(3, reps // 2)):
        pyn_times.append(timed(run_ours))
        torch2.append(timed(run_theirs))
    result["pynative_s"] = statistics.median(pyn_times)
    result["torch_s_pyn"] = statistics.median(torch2)
    return result


def _maxrss_mib() -> float:
    """Peak resident set of this process in MiB: /proc/self/status VmHWM (Linux).

    ``getrusage().ru_maxrss`` is not usable here: a child started by fork+exec inherits the
    parent's high-water mark, so every child would report at least the parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_child(side: str, layout: str, batch: int) -> None:
    """Runs in its own process: build one side, one warm forward, print peak RSS numbers as JSON."""
    x, t = inputs(layout, batch)
    if side == "torch":
        import torch

        torch.set_num_threads(2)
        model = build_torch(layout)
        run = lambda: model(torch.from_numpy(x), torch.from_numpy(t)).sample  # noqa: E731
        with torch.no_grad():
            before = _maxrss_mib()
            run()
    else:
        import mindspore as ms

        ms.set_context(mode=ms.GRAPH_MODE if side == "graph" else ms.PYNATIVE_MODE)
        model = build_ours(layout)
        before = _maxrss_mib()
        model(ms.Tensor(x), ms.Tensor(t)).asnumpy()
    print(json.dumps(dict(peak_mib=_maxrss_mib(), forward_mib=_maxrss_mib() - before)))


def memory(side: str, layout: str, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", side, layout, str(batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, GLOG_v="3"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows) -> str:
    lines = [
        "| layout | batch | GFLOP | ours GRAPH ms | diffusers ms | ratio ours/diffusers "
        "| ours GFLOP/s | diffusers GFLOP/s "
        "| compile s | ours PyNative ms (ratio) | max rel diff | peak RSS MiB ours / diffusers (forward growth) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mem = "n/a"
        if "mem_graph" in r:
            mem = (f"{r['mem_graph']['peak_mib']:.0f} / {r['mem_torch']['peak_mib']:.0f} "
                   f"(+{r['mem_graph']['forward_mib']:.0f} / +{r['mem_torch']['forward_mib']:.0f})")
        lines.append(
            f"| {r['layout']} | {r['batch']} | {r['gflop']:.2f} | {r['graph_s'] * 1e3:.1f} | {r['torch_s'] * 1e3:.1f} "
            f"| **{r['graph_s'] / r['torch_s']:.2f}** | {r['gflop'] / r['graph_s']:.1f} "
            f"| {r['gflop'] / r['torch_s']:.1f} "
            f"| {r['compile_s']:.1f} | {r['pynative_s'] * 1e3:.1f} ({r['pynative_s'] / r['torch_s_pyn']:.2f}) "
            f"| {r['rel_err']:.1e} | {mem} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", nargs="*", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()

    rows = []
    for layout in args.layouts:
        for batch in args.batches:
            r = bench_pair(layout, batch, args.reps)
            if not args.no_memory:
                r["mem_graph"] = memory("graph", layout, batch)
                r["mem_torch"] = memory("torch", layout, batch)
            rows.append(r)
            print(json.dumps(r), flush=True)
    print()
    print(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
