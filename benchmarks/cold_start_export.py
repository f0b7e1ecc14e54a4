"""Cold start of the exported sampler against the pipeline's first call, each in a fresh process.

    python benchmarks/cold_start_export.py [--model DIR] [--batch-size 4] [--steps 25] [--repeats 3]

Exports the model folder's sampler (the shipped field model by default: DPM-Solver++, 32×32) once,
then runs, alternately and each ``--repeats`` times in a new Python process:

- pipeline: ``import`` + ``DiffusionPipeline.from_pretrained`` + GRAPH_MODE ``pipe(...)``
  (the first call builds the model, compiles the loop and samples), then a second call;
- exported: ``import`` + ``load_sampler`` (``mindspore.load`` + ``nn.GraphCell``) + ``sampler(seed)``
  (the first call compiles the stored graph and samples), then a second call.

Prints the median of each phase (seconds) and the largest difference between the two outputs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()


def child(kind: str, model: str, sampler_path: str, batch_size: int, steps: int, out: str) -> None:
    import mindspore as ms
    import numpy as np

    import mindscience_diffuser as msd
    from mindscience_diffuser.pipelines.export import load_sampler

    times = {"import": time.perf_counter() - START}
    t = time.perf_counter()
    if kind == "pipeline":
        ms.set_context(mode=ms.GRAPH_MODE)
        pipe = msd.DiffusionPipeline.from_pretrained(model)
        pipe.set_progress_bar_config(disable=True)

        def sample():
            return pipe(batch_size=batch_size, num_inference_steps=steps, generator=0,
                        output_type="latent").images.asnumpy()
    else:
        sampler = load_sampler(sampler_path)

        def sample():
            return sampler(0)
    times["load"] = time.perf_counter() - t
    t = time.perf_counter()
    result = sample()
    times["first call"] = time.perf_counter() - t
    times["cold start"] = time.perf_counter() - START
    t = time.perf_counter()
    sample()
    times["second call"] = time.perf_counter() - t
    np.save(out, result)
    print(json.dumps(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", choices=("pipeline", "exported"))
    parser.add_argument("--sampler")
    parser.add_argument("--out")
    args = parser.parse_args()
    from mindscience_diffuser import DEFAULT_MODEL_PATH

    model = args.model or str(DEFAULT_MODEL_PATH)
    if args.child:
        child(args.child, model, args.sampler, args.batch_size, args.steps, args.out)
        return
    import numpy as np

    from mindscience_diffuser import DiffusionPipeline
    from mindscience_diffuser.pipelines.export import export_sampler

    work = Path(tempfile.mkdtemp())
    sampler = work / "sampler.mindir"
    t = time.perf_counter()
    export_sampler(DiffusionPipeline.from_pretrained(model), sampler, batch_size=args.batch_size,
                   num_inference_steps=args.steps)
    print(f"export: {time.perf_counter() - t:.1f} s, {sampler.stat().st_size / 1e6:.2f} MB")
    runs = {"pipeline": [], "exported": []}
    for _ in range(args.repeats):
        for kind in runs:
            cmd = [sys.executable, __file__, "--child", kind, "--model", model, "--sampler", str(sampler),
                   "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--out", str(work / kind)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[kind].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    phases = list(runs["pipeline"][0])
    print(f"batch {args.batch_size}, {args.steps} steps, median of {args.repeats} fresh processes (s):")
    print("| phase | " + " | ".join(runs) + " |\n| --- | --- | --- |")
    for phase in phases:
        print(f"| {phase} | " + " | ".join(f"{statistics.median(r[phase] for r in runs[k]):.2f}" for k in runs) + " |")
    diff = np.abs(np.load(work / "pipeline.npy") - np.load(work / "exported.npy")).max()
    print(f"max |pipeline - exported| = {diff:.2e}")


if __name__ == "__main__":
    main()
