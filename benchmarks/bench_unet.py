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

Ours is built once per ``--kernels`` choice (default both: ``auto`` = the C++ CPU kernels of
``models/cpu_kernels.py``, group norm and Winograd 3×3 convolution; ``plain`` = MindSpore's own
ops), and every choice is timed interleaved with torch, so the table shows what they buy in the
same run.

Usage (from the repository root):
    python benchmarks/bench_unet.py                       # both layouts, batch 1, 4 and 8
    python benchmarks/bench_unet.py --layouts small --batches 1 --reps 5 --pynative
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from timing import interleaved, timed  # noqa: E402

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


def build_ours(layout: str, kernels: str = "auto"):
    from mindscience_diffuser.models import UNet2DModel
    from mindscience_diffuser.models.cpu_kernels import set_cpu_kernels
    from mindscience_diffuser.models.weights import load_state_dict

    set_cpu_kernels(kernels)
    try:
        model = UNet2DModel(**LAYOUTS[layout])
    finally:
        set_cpu_kernels(None)
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




def bench_pair(layout: str, batch: int, reps: int, kernel_choices, pynative: bool, warmup: int = 2) -> dict:
    import mindspore as ms
    import torch

    torch.set_num_threads(2)
    x, t = inputs(layout, batch)
    theirs = build_torch(layout)
    flops = count_flops(theirs, x, t)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    xm, tm = ms.Tensor(x), ms.Tensor(t)

    def run_theirs():
        with torch.no_grad():
            return theirs(xt, tt).sample.numpy()

    result = dict(layout=layout, batch=batch, gflop=flops / 1e9, ours={})
    ref = run_theirs()
    ms.set_context(mode=ms.GRAPH_MODE)
    runs = {}
    for choice in kernel_choices:
        model = build_ours(layout, choice)
        runs[choice] = lambda model=model: model(xm, tm).asnumpy()
        first = timed(runs[choice])  # compiles this model's graph
        out = runs[choice]()
        result["ours"][choice] = dict(first_s=first, rel_err=float(np.abs(out - ref).max() / np.abs(ref).max()))
    runs["torch"] = run_theirs
    for _ in range(warmup):
        for run in runs.values():
            run()
    medians = interleaved(runs, reps)
    result["torch_s"] = medians.pop("torch")
    for choice, seconds in medians.items():
        entry = result["ours"][choice]
        entry.update(graph_s=seconds, compile_s=entry["first_s"] - seconds)

    if pynative:
        ms.set_context(mode=ms.PYNATIVE_MODE)
        eager = {f"pynative {c}": runs[c] for c in kernel_choices}
        for run in eager.values():
            run()
        medians = interleaved(dict(eager, torch=run_theirs), max(3, reps // 2))
        result["torch_s_pyn"] = medians.pop("torch")
        for choice in kernel_choices:
            result["ours"][choice]["pynative_s"] = medians[f"pynative {choice}"]
        ms.set_context(mode=ms.GRAPH_MODE)
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
    """Runs in its own process: build one side, one forward, print peak RSS numbers as JSON.

    ``side``: ``torch``, or ``graph-CHOICE`` / ``pynative-CHOICE`` with CHOICE a ``--kernels`` value."""
    x, t = inputs(layout, batch)
    if side == "torch":
        import torch

        torch.set_num_threads(2)
        model = build_torch(layout)
        with torch.no_grad():
            before = _maxrss_mib()
            model(torch.from_numpy(x), torch.from_numpy(t))
    else:
        import mindspore as ms

        mode, choice = side.split("-")
        ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
        model = build_ours(layout, choice)
        before = _maxrss_mib()
        model(ms.Tensor(x), ms.Tensor(t)).asnumpy()
    print(json.dumps(dict(peak_mib=_maxrss_mib(), forward_mib=_maxrss_mib() - before)))


def memory(side: str, layout: str, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", side, layout, str(batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, GLOG_v="3"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_header(argv, load_start: float, load_end: float) -> str:
    """The exact command, the UTC date and the machine's load, to print next to a table."""
    return (f"`python {shlex.join(argv)}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average "
            f"{load_start:.1f} at the start and {load_end:.1f} at the end on {os.cpu_count()} cores")


def table(rows) -> str:
    choices = list(rows[0]["ours"])
    has_pyn = "pynative_s" in rows[0]["ours"][choices[0]]
    head = ["layout", "batch", "GFLOP", "diffusers ms"]
    for c in choices:
        head += [f"ours GRAPH ms ({c})", f"ratio ours/diffusers ({c})", f"compile s ({c})"]
    head += ["ours GFLOP/s (first)", "diffusers GFLOP/s", "max rel diff"]
    if has_pyn:
        head += [f"PyNative ms ({c})" for c in choices]
    if "mem" in rows[0]:
        head += ["peak RSS MiB ours / diffusers (forward growth)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ours = r["ours"]
        cells = [r["layout"], str(r["batch"]), f"{r['gflop']:.2f}", f"{r['torch_s'] * 1e3:.1f}"]
        for c in choices:
            cells += [f"{ours[c]['graph_s'] * 1e3:.1f}", f"**{ours[c]['graph_s'] / r['torch_s']:.2f}**",
                      f"{ours[c]['compile_s']:.1f}"]
        cells += [f"{r['gflop'] / ours[choices[0]]['graph_s']:.1f}", f"{r['gflop'] / r['torch_s']:.1f}",
                  f"{max(ours[c]['rel_err'] for c in choices):.1e}"]
        if has_pyn:
            cells += [f"{ours[c]['pynative_s'] * 1e3:.1f}" for c in choices]
        if "mem" in r:
            mine, theirs = r["mem"]["ours"], r["mem"]["torch"]
            cells.append(f"{mine['peak_mib']:.0f} / {theirs['peak_mib']:.0f} "
                         f"(+{mine['forward_mib']:.0f} / +{theirs['forward_mib']:.0f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        memory_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", nargs="*", default=list(LAYOUTS), choices=list(LAYOUTS))
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 4, 8])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--kernels", nargs="+", default=["auto", "plain"], choices=["auto", "plain", "cpu"],
                        help="our layer implementations to time (models/cpu_kernels.py)")
    parser.add_argument("--pynative", action="store_true", help="also time ours in PyNative")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    print(f"load average at start: {load_start:.1f} on {os.cpu_count()} cores", flush=True)
    rows = []
    for layout in args.layouts:
        for batch in args.batches:
            r = bench_pair(layout, batch, args.reps, args.kernels, args.pynative)
            if not args.no_memory:  # ours with the first --kernels choice
                r["mem"] = dict(ours=memory(f"graph-{args.kernels[0]}", layout, batch),
                                torch=memory("torch", layout, batch))
            rows.append(r)
            print(json.dumps(r), flush=True)
    header = run_header(sys.argv, load_start, os.getloadavg()[0])
    print()
    print(header)
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(header=header, rows=rows), indent=1))


if __name__ == "__main__":
    main()
