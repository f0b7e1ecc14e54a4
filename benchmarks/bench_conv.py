"""3×3 stride-1 convolutions on UNet shapes: MindSpore's ``nn.Conv2d`` against the Winograd layer of
``models/cpu_kernels.py``, in GRAPH_MODE, against torch.

Each variant is a Cell that applies ``--chain`` convolutions with their own weights to the same
input inside one compiled graph and sums them, so the per-call launch overhead is spread out and
the figure is the per-convolution cost. Variants:

- ``plain``: ``nn.Conv2d`` (MindSpore's oneDNN im2col + GEMM on CPU).
- ``winograd``: :class:`~mindscience_diffuser.models.cpu_kernels.WinogradConv3x3` (F(2×2, 3×3):
  C++ transforms, one BatchMatMul for the channel sums), whatever the map size.

torch (``F.conv2d``, 2 threads) is timed interleaved with them. Shapes are BxCinxCoutxHxW.

    python benchmarks/bench_conv.py
    python benchmarks/bench_conv.py --shapes 1x32x32x32x32 4x32x32x32x32
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

# The small layout's (32/64/64) Winograd-shaped convolutions at batch 1 and 4 (ResNet convs at
# 32×32 and 16×16, the up path's concatenated inputs).
SHAPES = ("1x32x32x32x32", "1x64x32x32x32", "1x64x64x16x16", "1x128x64x16x16",
          "4x32x32x32x32", "4x64x64x16x16")


def parse_shape(text: str) -> tuple:
    values = tuple(int(v) for v in text.split("x"))
    if len(values) != 5 or min(values) < 1:
        raise ValueError(f"--shapes takes BxCinxCoutxHxW with positive sizes, got {text!r}")
    return values


def variants(weights: list, biases: list):
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    from mindscience_diffuser.models.cpu_kernels import WinogradConv3x3

    class Plain(nn.Cell):
        def __init__(self):
            super().__init__()
            self.weights = [Tensor(w) for w in weights]
            self.biases = [Tensor(b) for b in biases]
            self.conv = ops.Conv2D(weights[0].shape[0], 3, pad_mode="pad", pad=1)
            self.add_bias = ops.BiasAdd()

        def construct(self, x):
            total = None
            for w, b in zip(self.weights, self.biases):
                y = self.add_bias(self.conv(x, w), b)
                total = y if total is None else total + y
            return total

    class Winograd(nn.Cell):
        def __init__(self):
            super().__init__()
            self.weights = [Tensor(w) for w in weights]
            self.biases = [Tensor(b) for b in biases]
            self.conv = WinogradConv3x3(weights[0].shape[0])

        def construct(self, x):
            total = None
            for w, b in zip(self.weights, self.biases):
                y = self.conv(x, w, b)
                total = y if total is None else total + y
            return total

    del ms
    return {"plain": Plain(), "winograd": Winograd()}


def bench_shape(text: str, args) -> str:
    """One table row: both variants and torch on one shape, interleaved."""
    import mindspore as ms
    import torch
    import torch.nn.functional as F

    batch, cin, cout, h, w = parse_shape(text)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, cin, h, w)).astype(np.float32)
    weights = [(rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
               for _ in range(args.chain)]
    biases = [rng.standard_normal(cout).astype(np.float32) for _ in range(args.chain)]
    cells = variants(weights, biases)
    xm = ms.Tensor(x)
    xt, wt, bt = torch.from_numpy(x), [torch.from_numpy(a) for a in weights], [torch.from_numpy(a) for a in biases]

    def torch_chain(x, ws, bs):
        with torch.no_grad():
            return sum(F.conv2d(x, w_, b_, padding=1) for w_, b_ in zip(ws, bs)).numpy()

    runs = {name: (lambda cell=cell: cell(xm).asnumpy()) for name, cell in cells.items()}
    runs["torch"] = lambda: torch_chain(xt, wt, bt)
    ref = torch_chain(xt.double(), [a.double() for a in wt], [a.double() for a in bt])
    worst = max(float(np.abs(run() - ref).max() / np.abs(ref).max()) for run in runs.values())
    med = {name: seconds / args.chain * 1e3 for name, seconds in interleaved(runs, args.reps).items()}
    return (f"| {text} | {med['plain']:.3f} ({med['plain'] / med['torch']:.2f}×) | "
            f"{med['winograd']:.3f} ({med['winograd'] / med['torch']:.2f}×) | {med['torch']:.3f} | "
            f"{med['winograd'] / med['plain']:.2f} | {worst:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), help="BxCinxCoutxHxW")
    parser.add_argument("--chain", type=int, default=5, help="convolutions per compiled graph")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    for text in args.shapes:
        parse_shape(text)

    import mindspore as ms
    import torch

    ms.set_context(mode=ms.GRAPH_MODE)
    torch.set_num_threads(2)
    load_start = os.getloadavg()[0]
    print(f"`python benchmarks/bench_conv.py {' '.join(sys.argv[1:])}`, "
          f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, load average {load_start:.1f} at the start")
    print("\nms per 3×3 convolution (bias included), median of interleaved runs; in brackets: / torch\n")
    print("| shape BxCinxCoutxHxW | plain | winograd | torch | winograd / plain | max rel diff to float64 |")
    print("|---|---|---|---|---|---|")
    for text in args.shapes:
        print(bench_shape(text, args), flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
