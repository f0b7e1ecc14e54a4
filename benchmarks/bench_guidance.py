"""Cost per posterior sample against unconditional sampling, with the shipped field model.

    python benchmarks/bench_guidance.py [--batch 8] [--steps 25] [--calls 2]

GRAPH_MODE, DPM-Solver++(2M) (the shipped sampler; RePaint on DDIM), one observation of 5% of the
pixels with σ_y = 0.05 (a noise-free left half for the replacement methods). Each method is called
``--calls`` times; the first call includes compiling its loop, the figure is the fastest later call.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mindscience_diffuser import DEFAULT_MODEL_PATH, DDIMPipeline, DDIMScheduler, DiffusionPipeline  # noqa: E402
from mindscience_diffuser.guidance import MMPS, Replace  # noqa: E402
from mindscience_diffuser.observations import MaskOperator, Observation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--calls", type=int, default=2)
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    pipe = DiffusionPipeline.from_pretrained(DEFAULT_MODEL_PATH)
    pipe.set_progress_bar_config(disable=True)
    ddim = DDIMPipeline(unet=pipe.unet, scheduler=DDIMScheduler.from_config(pipe.scheduler.config))
    ddim.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((1, 1, 32, 32)).astype(np.float32) * 0.3
    sensors = Observation.from_truth(truth, MaskOperator((rng.random((1, 32, 32)) < 0.05).astype(np.float32)), 0.05)
    half = np.zeros((1, 32, 32), np.float32)
    half[..., :16] = 1
    inpainting = Observation.from_truth(truth, MaskOperator(half), 0.0)
    runs = [("unconditional", pipe, {}), ("replace", pipe, dict(observation=inpainting, guidance="replace")),
            ("RePaint (DDIM, j = 5, r = 4)", ddim,
             dict(observation=inpainting, guidance=Replace(jump_length=5, resample_count=4))),
            ("unconditional DDIM", ddim, {}),
            ("DPS", pipe, dict(observation=sensors, guidance="dps")),
            ("ΠGDM", pipe, dict(observation=sensors, guidance="pigdm")),
            ("MMPS (3 CG steps)", pipe, dict(observation=sensors, guidance=MMPS(cg_iterations=3)))]
    base = None
    print("| method | first call s | call s | s / sample | × unconditional |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, runner, kwargs in runs:
        times = []
        for call in range(args.calls):
            begun = time.perf_counter()
            runner(batch_size=args.batch, generator=call, num_inference_steps=args.steps, output_type="latent",
                   **kwargs).images.asnumpy()
            times.append(time.perf_counter() - begun)
        best = min(times[1:] or times)
        base = best if base is None else base
        print(f"| {name} | {times[0]:.1f} | {best:.2f} | {best / args.batch:.3f} | {best / base:.1f} |", flush=True)


if __name__ == "__main__":
    main()
