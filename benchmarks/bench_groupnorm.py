"""GroupNorm (+ SiLU) on UNet shapes: the ways to compute it in MindSpore GRAPH_MODE against torch.

Each variant is a Cell that applies ``--chain`` norms in a row inside one compiled graph, so the
per-call launch overhead is spread out and the figure is the per-norm cost. Variants:

- ``plain``: ``ops.group_norm`` (MindSpore's fused CPU kernel).
- ``layernorm``: the (B, G, Cg·S) reshape through ``ops.LayerNorm`` plus the affine.
- ``two_pass``: mean, then the mean of (x − mean)², by ``ReduceMean`` on the (B, G, Cg·S) view.
- ``one_pass``: mean and E[x²] by ``ReduceMean`` of x and x·x, var = E[x²] − mean².
- ``matmul``: mean and E[x²] as one matrix product [x; x·x] (2, B·G, n) @ 1/n (n, 1).
- ``cpu_kernel``: the C++ kernel of models/cpu_kernels.py (one pass, double accumulators).

With ``--silu`` every variant is followed by SiLU, and ``cpu_kernel_fused`` (SiLU inside the
kernel's pass) is added. torch (``F.group_norm``, 2 threads) is timed interleaved with them.

    python benchmarks/bench_groupnorm.py
    python benchmarks/bench_groupnorm.py --silu --shapes 8x128x32x32
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from timing import interleaved  # noqa: E402

EPS = 1e-6
GROUPS = 32
# Shapes of the small (32/64/64) and CIFAR-10 (128/256/256/256) layouts at batch 4 and 8.
SHAPES = ("4x64x32x32", "8x128x32x32", "8x256x16x16", "8x256x8x8")


def variants(chain: int, silu: bool):
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    from mindscience_diffuser.models.cpu_kernels import group_norm_op

    class Chain(nn.Cell):
        """``chain`` times x ← act(norm(x)), norm given by ``normalise(x, weight, bias)``."""

        def __init__(self, normalise, act: bool):
            super().__init__()
            self.normalise = normalise
            self.act = nn.SiLU() if act else nn.Identity()

        def construct(self, x, weight, bias):
            for _ in range(chain):
                x = self.act(self.normalise(x, weight, bias))
            return x

    def affine(y, x, weight, bias):
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        return y.reshape(x.shape) * weight.reshape(shape) + bias.reshape(shape)

    def grouped(x):
        return x.reshape(x.shape[0], GROUPS, -1)

    class Plain(nn.Cell):
        def construct(self, x, weight, bias):
            return ops.group_norm(x, GROUPS, weight, bias, EPS)

    class LayerNormReshape(nn.Cell):
        def __init__(self):
            super().__init__()
            self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=EPS)

        def construct(self, x, weight, bias):
            g = grouped(x)
            ones = ops.ones(g.shape[-1:], ms.float32)
            return affine(self.norm(g, ones, ops.zeros_like(ones))[0], x, weight, bias)

    class TwoPass(nn.Cell):
        def construct(self, x, weight, bias):
            g = grouped(x)
            centred = g - g.mean(-1, keep_dims=True)
            return affine(centred * ops.rsqrt((centred * centred).mean(-1, keep_dims=True) + EPS), x, weight, bias)

    class OnePass(nn.Cell):
        def construct(self, x, weight, bias):
            g = grouped(x)
            mean = g.mean(-1, keep_dims=True)
            var = (g * g).mean(-1, keep_dims=True) - mean * mean
            return affine((g - mean) * ops.rsqrt(var + EPS), x, weight, bias)

    class MatmulStats(nn.Cell):
        def construct(self, x, weight, bias):
            g = grouped(x)
            n = g.shape[-1]
            rows = g.reshape(-1, n)
            stats = ops.matmul(ops.stack((rows, rows * rows)), ops.full((n, 1), 1.0 / n, dtype=ms.float32))
            mean, mean_sq = stats[0].reshape(g.shape[0], GROUPS, 1), stats[1].reshape(g.shape[0], GROUPS, 1)
            return affine((g - mean) * ops.rsqrt(mean_sq - mean * mean + EPS), x, weight, bias)

    class CpuKernel(nn.Cell):
        def __init__(self, fused_silu: bool):
            super().__init__()
            self.op = group_norm_op(fused_silu)
            self.eps = Tensor([EPS], ms.float32)

        def construct(self, x, weight, bias):
            b, c = x.shape[0], x.shape[1]
            y = self.op(x.reshape(b, GROUPS, c // GROUPS, -1), weight.reshape(GROUPS, -1), bias.reshape(GROUPS, -1),
                        self.eps)
            return y.reshape(x.shape)

    cells = {
        "plain": Chain(Plain(), silu),
        "layernorm": Chain(LayerNormReshape(), silu),
        "two_pass": Chain(TwoPass(), silu),
        "one_pass": Chain(OnePass(), silu),
        "matmul": Chain(MatmulStats(), silu),
        "cpu_kernel": Chain(CpuKernel(False), silu),
    }
    if silu:
        cells["cpu_kernel_fused"] = Chain(CpuKernel(True), False)
    return cells


def bench_shape(text: str, cells: dict, names: list, args) -> str:
    """One table row: every variant and torch on a BxCxHxW input, interleaved."""
    import mindspore as ms
    import torch
    import torch.nn.functional as F

    shape = tuple(int(v) for v in text.split("x"))
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    w, b = rng.standard_normal(shape[1]).astype(np.float32), rng.standard_normal(shape[1]).astype(np.float32)
    xm, wm, bm = ms.Tensor(x), ms.Tensor(w), ms.Tensor(b)

    def torch_chain(x, w, b):
        with torch.no_grad():
            for _ in range(args.chain):
                x = F.group_norm(x, GROUPS, w, b, EPS)
                x = F.silu(x) if args.silu else x
            return x.numpy()

    xt, wt, bt = (torch.from_numpy(a) for a in (x, w, b))
    runs = {name: (lambda cell=cell: cell(xm, wm, bm).asnumpy()) for name, cell in cells.items()}
    runs["torch"] = lambda: torch_chain(xt, wt, bt)
    ref = torch_chain(xt.double(), wt.double(), bt.double())  # the same chain in float64
    worst = max(float(np.abs(run() - ref).max() / np.abs(ref).max()) for run in runs.values())
    med = {name: seconds / args.chain * 1e3 for name, seconds in interleaved(runs, args.reps).items()}
    cells_text = [f"{med[n]:.3f} ({med[n] / med['torch']:.2f}×)" for n in names[:-1]] + [f"{med['torch']:.3f}"]
    return f"| {text} | " + " | ".join(cells_text) + f" | {worst:.1e} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), help="BxCxHxW")
    parser.add_argument("--silu", action="store_true", help="time GroupNorm followed by SiLU")
    parser.add_argument("--chain", type=int, default=10, help="norms per compiled graph")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()

    import mindspore as ms
    import torch

    ms.set_context(mode=ms.GRAPH_MODE)
    torch.set_num_threads(2)
    load_start = os.getloadavg()[0]
    cells = variants(args.chain, args.silu)
    names = list(cells) + ["torch"]
    print(f"`python benchmarks/bench_groupnorm.py {' '.join(sys.argv[1:])}`, "
          f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load average {load_start:.1f} at the start")
    print("\nms per norm" + (" + SiLU" if args.silu else "") + ", median of interleaved runs; in brackets: / torch\n")
    print("| shape | " + " | ".join(names) + " | max rel diff to float64 |")
    print("|" + "---|" * (len(names) + 2))
    for text in args.shapes:
        print(bench_shape(text, cells, names, args), flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
