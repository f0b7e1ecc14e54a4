"""Our compiled sampling loop against MindScience's own pipeline, on MindScience's docstring workload.

The workload of ``mindflow.cell.DDIMPipeline``'s docstring: a ``ConditionDiffusionTransformer``
16 → 256 hidden, 3 layers, 4 heads, sequences of L = 256, a 4-d condition, batch 8, here with 20
DDIM steps (η = 0, ε prediction) on MindScience's default DDIM schedule (``squaredcos_cap_v2``,
``leading`` spacing, clipped x̂0, ᾱ_final = 1). Both sides get the same weights (MindScience's
randomised model saved with ``ms.save_checkpoint`` and loaded into ours with
``strict_load=True``), the same condition and the same starting noise; the table reports the
samples' difference, MindScience's time (its Python loop over PyNative calls), our first call
(compilation included), our steady time and the speed-up.

Needs the reference stack (``pip install --no-deps mindflow-ascend==0.3.0 easydict``); MindScience's
``DDIMScheduler.step`` calls 1-D ``Tensor.repeat`` on its last step, which has no CPU kernel, so
that one call is patched to ``ops.tile`` here (its value is unchanged).

    python benchmarks/bench_mindscience.py [--steps 20] [--batch 8] [--reps 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mindscience_diffuser import ConditionDiffusionTransformer, DDIMPipeline, DDIMScheduler  # noqa: E402

WORKLOAD = dict(in_channels=16, out_channels=16, cond_channels=4, hidden_channels=256, layers=3, heads=4,
                time_token_cond=True)
SEQ_LEN = 256
SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True, clip_sample_range=1.0,
                prediction_type="epsilon")


def import_mindflow():
    # mindflow.cell imports matplotlib through its CFD visualisation module; nothing here plots.
    for name in ("matplotlib", "matplotlib.pyplot"):
        sys.modules.setdefault(name, types.ModuleType(name))
    import mindflow.cell as mindflow_cell

    return mindflow_cell


def patch_scalar_repeat() -> None:
    """MindScience's last DDIM step repeats the 0-d ᾱ_final with 1-D ``Tensor.repeat``, which has
    no CPU kernel; route that one case through ``ops.tile`` (same values)."""
    original = Tensor.repeat

    def repeat(self, *args, **kwargs):
        if self.ndim == 0 and len(args) == 1 and isinstance(args[0], int) and not kwargs:
            return ops.tile(self.reshape((1,)), (args[0],))
        return original(self, *args, **kwargs)

    Tensor.repeat = repeat


def build_reference(mf, seed: int):
    ms.set_seed(seed)
    net = mf.ConditionDiffusionTransformer(**WORKLOAD, compute_dtype=ms.float32)
    rng = np.random.default_rng(seed)
    for p in net.get_parameters():
        # MindScience zero-initialises output_proj: every sample would be the clipped noise.
        p.set_data(Tensor((rng.standard_normal(p.shape) * 0.05).astype(np.float32)))
    return net


def time_call(fn, reps: int):
    times = []
    out = None
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    mf = import_mindflow()
    ms.set_context(mode=ms.PYNATIVE_MODE)
    reference_net = build_reference(mf, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "model.ckpt")
        ms.save_checkpoint(reference_net, ckpt)
        ours_net = ConditionDiffusionTransformer(**WORKLOAD, sample_size=SEQ_LEN)
        not_loaded, _ = ms.load_param_into_net(ours_net, ms.load_checkpoint(ckpt), strict_load=True)
        assert not not_loaded, not_loaded

    reference_scheduler = mf.DDIMScheduler(**{k: v for k, v in SCHEDULE.items()})
    patch_scalar_repeat()
    reference = mf.DDIMPipeline(model=reference_net, scheduler=reference_scheduler, batch_size=args.batch,
                                seq_len=SEQ_LEN, num_inference_steps=args.steps)
    condition = np.random.default_rng(args.seed + 1).standard_normal((args.batch, 4)).astype(np.float32)

    # MindScience draws its starting noise from numpy's global stream: seed it, and draw the same
    # array for ours.
    np.random.seed(args.seed)
    noise = np.random.randn(args.batch, SEQ_LEN, WORKLOAD["in_channels"]).astype(np.float32)
    np.random.seed(args.seed)
    start = time.perf_counter()
    theirs = reference(Tensor(condition)).asnumpy()
    reference_s = time.perf_counter() - start

    pipe = DDIMPipeline(ours_net, DDIMScheduler(**SCHEDULE, set_alpha_to_one=True, steps_offset=0,
                                                timestep_spacing="leading"))
    pipe.set_progress_bar_config(disable=True)
    ms.set_context(mode=ms.GRAPH_MODE)

    def ours_call():
        return pipe(batch_size=args.batch, num_inference_steps=args.steps, latents=noise, condition=condition,
                    eta=0.0).images.asnumpy()

    first_start = time.perf_counter()
    ours = ours_call()
    first_s = time.perf_counter() - first_start
    _, steady = time_call(ours_call, args.reps)
    steady_s = statistics.median(steady)

    result = dict(
        workload=f"ConditionDiffusionTransformer {WORKLOAD}, L={SEQ_LEN}, batch {args.batch}, {args.steps} DDIM steps",
        max_abs_diff=float(np.abs(ours - theirs).max()),
        max_abs_sample=float(np.abs(theirs).max()),
        mindscience_s=reference_s,
        ours_first_call_s=first_s,
        ours_compile_s=first_s - steady_s,
        ours_steady_s=steady_s,
        speedup_steady=reference_s / steady_s,
        speedup_first_call=reference_s / first_s,
        load_average=os.getloadavg(),
    )
    print(json.dumps(result, indent=2))
    print()
    print("| workload | MindScience s | ours first call s (compile s) | ours steady s | speed-up steady (first call) "
          "| max abs diff |")
    print("|---|---|---|---|---|---|")
    print(f"| batch {args.batch}, {args.steps} steps | {reference_s:.2f} | {first_s:.2f} ({first_s - steady_s:.2f}) | "
          f"{steady_s:.3f} | **{reference_s / steady_s:.1f}×** ({reference_s / first_s:.1f}×) | "
          f"{result['max_abs_diff']:.1e} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
