"""How wrong is a posterior sampler? Checked against the exact posterior of Gaussian random fields.

The shipped default model's fields are Gaussian random fields (tools/train_default_model.py), so
for linear-Gaussian observations y = A x + σ_y η the posterior is Gaussian and known in closed form
(mindscience_diffuser/training/posterior.py). This tool draws one true field like the model's
training data, observes it in the three patterns of issue 12, computes the exact posterior of
each, and scores every registered method's samples against it, twice: with the exact Wiener
denoiser (GaussianFieldDenoiser: the method's own error) and with the shipped model (the method's
error plus the model's). It prints a markdown table (the one in docs/inverse_problems.md).

    python tools/posterior_check.py [--num-samples 256] [--num-samples-shipped 64] [--steps 25]
                                    [--denoisers exact shipped]
                                    [--methods NAME ...] [--seed 3] [--json figures.json]

Columns (per pixel where the posterior is uncertain, then averaged; see posterior.py):
mean error = RMS of (sample mean − exact mean) / exact std (sampling noise alone: ≈ 1/√N);
variance ratio = sample variance / exact variance; exact mass = the exact posterior probability
of the samples' 90% interval; in exact 90% = the fraction of samples inside the exact 90%
interval; truth cov. = the fraction of pixels whose true value lies in the samples' 90% interval.

Adding a method: see METHODS below.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List

import mindspore as ms
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

import train_default_model as recipe  # noqa: E402

from mindscience_diffuser import (  # noqa: E402
    DEFAULT_MODEL_PATH,
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
)
from mindscience_diffuser.guidance import DPS, MMPS, PiGDM, Replace, matched_data_std  # noqa: E402
from mindscience_diffuser.normalization import MODEL_INDEX_KEY, DataNormalization  # noqa: E402
from mindscience_diffuser.observations import BlockAverage, MaskOperator, Observation  # noqa: E402
from mindscience_diffuser.pipelines import DDIMPipeline, DPMSolverPipeline  # noqa: E402
from mindscience_diffuser.training.fields import gaussian_random_field  # noqa: E402
from mindscience_diffuser.training.posterior import (  # noqa: E402
    GaussianFieldPrior,
    GaussianPosterior,
    calibration_floor,
    calibration_metrics,
    linear_gaussian_posterior,
)

#: The true field's seed: the training data used 0, the held-out set 1, the floor's true set 2.
TRUTH_SEED = 3
#: Seeds of the observation patterns' random parts (sensor positions, measurement noise).
PATTERN_SEED = 4
FIELD_KWARGS = {k: v for k, v in recipe.FIELDS.items() if k != "kind"}


def shipped_data_normalization():
    """The shipped folder's stored statistics (None: the model works in the data's units)."""
    index = json.loads((Path(DEFAULT_MODEL_PATH) / "model_index.json").read_text())
    return DataNormalization.coerce(index.get(MODEL_INDEX_KEY))


#: The prior of the shipped model's training fields, in the model's units.
PRIOR = GaussianFieldPrior.from_spectrum(**FIELD_KWARGS, data_normalization=shipped_data_normalization())


# -- methods ---------------------------------------------------------------------------------------
#: A method maps (observation, pipe, num_samples, generator) to posterior samples (N, C, H, W) in
#: model units (numpy). ``pipe`` is a DPMSolverPipeline whose ``unet`` is the denoiser under test
#: (GaussianFieldDenoiser or the shipped UNet) and whose ``scheduler`` matches its prediction type;
#: ``generator`` a numpy Generator seeded the same for every method. A method that never calls the
#: denoiser sets the attribute ``needs_denoiser = False`` (run once per pattern and sample count); one that ignores
#: the observation sets ``needs_observation = False`` (run once per denoiser, scored on every pattern).
Method = Callable[[Observation, DiffusionPipeline, int, np.random.Generator], np.ndarray]


def exact_posterior_samples(observation: Observation, pipe, num_samples: int, generator) -> np.ndarray:
    """The reference row: exact posterior samples (Matheron's rule). Its mean error is the
    sampling-noise floor of the table, ≈ 1/√N."""
    return linear_gaussian_posterior(PRIOR, observation).sample(num_samples, generator)


exact_posterior_samples.needs_denoiser = False


def unconditional_samples(observation: Observation, pipe, num_samples: int, generator) -> np.ndarray:
    """A control that must fail: the pipeline's samples without the observation (the prior)."""
    return pipe(batch_size=num_samples, generator=generator, num_inference_steps=NUM_INFERENCE_STEPS,
                output_type="latent").images.asnumpy()


unconditional_samples.needs_observation = False


def guided(guidance, one_step_scheduler: bool = False) -> Method:
    """A loop-based method: the pipeline's posterior samples with ``guidance`` (a name or a
    configured object of mindscience_diffuser.guidance); ``one_step_scheduler``: run it with DDIM
    on the same schedule and model instead of the multistep DPM-Solver (RePaint's jumps need a
    scheduler without history)."""
    def method(observation: Observation, pipe, num_samples: int, generator) -> np.ndarray:
        if one_step_scheduler:
            pipe = ddim_twin(pipe)
        return pipe(batch_size=num_samples, generator=generator, num_inference_steps=NUM_INFERENCE_STEPS,
                    observation=observation, guidance=guidance, output_type="latent").images.asnumpy()

    return method


def pigdm_matched_to_operator(observation: Observation, pipe, num_samples: int, generator) -> np.ndarray:
    """ΠGDM with σ_d = matched_data_std(A, exact prior covariance): σ_d² A Aᵀ carries the prior
    variance of A x0 (0.3 for the sensors, 0.97 for the block averages)."""
    data_std = matched_data_std(observation.operator, covariance=PRIOR.covariance(), sample_shape=PRIOR.sample_shape)
    return guided(PiGDM(data_std=data_std))(observation, pipe, num_samples, generator)


def with_nominal_noise(guidance, noise_std: float) -> Method:
    """A likelihood method on noise-free data: the observation given a small nominal σ_y (the
    samples are still scored against the noise-free posterior). ΠGDM and MMPS refuse σ_y = 0,
    whose likelihood covariance is singular at the end of sampling."""
    def method(observation: Observation, pipe, num_samples: int, generator) -> np.ndarray:
        if observation.noise_std == 0:
            observation = Observation(observation.values_array, observation.operator, noise_std)
        return guided(guidance)(observation, pipe, num_samples, generator)

    return method


_DDIM_TWINS: Dict[int, DDIMPipeline] = {}


def ddim_twin(pipe) -> DDIMPipeline:
    """A DDIM pipeline with ``pipe``'s model and schedule (kept, so its loops compile once)."""
    if id(pipe) not in _DDIM_TWINS:
        twin = DDIMPipeline(unet=pipe.unet, scheduler=DDIMScheduler.from_config(pipe.scheduler.config))
        twin.set_progress_bar_config(disable=True)
        _DDIM_TWINS[id(pipe)] = twin
    return _DDIM_TWINS[id(pipe)]


#: The registration point: each row of the table is one (pattern, method, denoiser). A method
#: that refuses a pattern (a ValueError: e.g. replacement of noisy data, a Gaussian likelihood
#: for noise-free data) gets a row saying so.
METHODS: Dict[str, Method] = {
    "exact posterior samples (floor)": exact_posterior_samples,
    "unconditional (ignores y: must fail)": unconditional_samples,
    "replace": guided("replace"),
    "RePaint (DDIM, j = 5, r = 4)": guided(Replace(jump_length=5, resample_count=4), one_step_scheduler=True),
    "DPS (ζ = 1)": guided(DPS(step_size=1.0)),
    "ΠGDM": guided("pigdm"),
    "ΠGDM (σ_d = prior std)": guided(PiGDM(data_std=PRIOR.pixel_std())),  # 0.3, the fields' std in model units
    "ΠGDM (σ_d matched to A)": pigdm_matched_to_operator,
    "MMPS (3 CG steps)": guided(MMPS(cg_iterations=3)),  # safeguarded (the default)
    "MMPS (3 CG steps, no safeguard)": guided(MMPS(cg_iterations=3, safeguard=False)),
    "MMPS (16 CG steps; noise-free data: nominal σ_y = 1e-3)": with_nominal_noise(MMPS(cg_iterations=16), 1e-3),
}
#: The number of sampler steps every loop-based method uses (--steps).
NUM_INFERENCE_STEPS = recipe.SAMPLE_STEPS


# -- observation patterns --------------------------------------------------------------------------
@dataclass
class Problem:
    name: str
    observation: Observation
    posterior: GaussianPosterior


def random_pixels(fraction: float, rng: np.random.Generator) -> np.ndarray:
    size = FIELD_KWARGS["size"]
    mask = np.zeros((1, size, size), np.float32)
    mask.reshape(-1)[rng.choice(size * size, round(fraction * size * size), replace=False)] = 1
    return mask


def left_half() -> np.ndarray:
    size = FIELD_KWARGS["size"]
    mask = np.zeros((1, size, size), np.float32)
    mask[..., : size // 2] = 1
    return mask


def build_problems(truth: np.ndarray) -> List[Problem]:
    """The three patterns of issue 12. Block averages get a small σ_y = 0.01 (3% of the field's
    std) so that likelihood-based guidance is defined; the masked half is noise-free, the case of
    hard data consistency (replacement, RePaint)."""
    rng = np.random.default_rng(PATTERN_SEED)
    patterns = [
        ("5% random pixels, σ_y = 0.05", MaskOperator(random_pixels(0.05, rng)), 0.05),
        ("4× block averages, σ_y = 0.01", BlockAverage(4), 0.01),
        ("left half observed, noise-free", MaskOperator(left_half()), 0.0),
    ]
    problems = []
    for name, operator, noise_std in patterns:
        observation = Observation.from_truth(truth, operator, noise_std, generator=rng)
        problems.append(Problem(name, observation, linear_gaussian_posterior(PRIOR, observation)))
    return problems


# -- denoisers ------------------------------------------------------------------------------------
def exact_pipeline() -> DPMSolverPipeline:
    """The shipped sampler (DPM-Solver++(2M), uniform log-SNR) driving the exact denoiser."""
    scheduler = DPMSolverMultistepScheduler(**{**recipe.SAMPLER, "prediction_type": "sample"})
    return DPMSolverPipeline(unet=PRIOR.denoiser(scheduler), scheduler=scheduler)


def shipped_pipeline() -> DiffusionPipeline:
    return DiffusionPipeline.from_pretrained(DEFAULT_MODEL_PATH)


DENOISERS = {"exact": exact_pipeline, "shipped": shipped_pipeline}


# -- the check ------------------------------------------------------------------------------------
def evaluate(methods: Dict[str, Method], sample_counts: Dict[str, int], seed: int, patterns=None) -> List[dict]:
    """Score every method on every pattern with every denoiser; ``sample_counts`` maps each
    denoiser to use ("exact", "shipped") to its number of samples per row; ``patterns``: the
    indices (0, 1, 2) of the patterns to run, all by default."""
    truth = gaussian_random_field(1, generator=TRUTH_SEED, **FIELD_KWARGS).astype(np.float64)
    normalization = shipped_data_normalization()
    if normalization is not None:  # observations and samples live in the model's units
        truth = normalization.to_model_units(truth).astype(np.float64)
    problems = build_problems(truth)
    if patterns is not None:
        problems = [problems[k] for k in patterns]
    pipes = {name: DENOISERS[name]() for name in sample_counts}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    reference_count = max(sample_counts.values())
    cache = {}  # (method, denoiser) -> (samples, seconds) for methods that ignore the observation
    rows = []
    for problem in problems:
        for method_name, method in methods.items():
            if getattr(method, "needs_denoiser", True):
                runs = [(name, pipe, sample_counts[name]) for name, pipe in pipes.items()]
            else:  # once per sample count, so each row has its finite-N floor beside it
                runs = [("—", None, n) for n in sorted(set(sample_counts.values()), reverse=True)]
            for denoiser_name, pipe, num_samples in runs:
                key = (method_name, denoiser_name, num_samples)
                if key not in cache:
                    begun = time.time()
                    try:
                        samples = method(problem.observation, pipe, num_samples, np.random.default_rng(seed))
                    except ValueError as err:
                        print(f"  {problem.name} | {method_name} | {denoiser_name}: refused: {err}", file=sys.stderr,
                              flush=True)
                        rows.append(dict(pattern=problem.name, method=method_name, denoiser=denoiser_name,
                                         num_samples=num_samples, refused=str(err)))
                        continue
                    seconds = time.time() - begun
                    print(f"  {problem.name} | {method_name} | {denoiser_name}: {seconds:.1f} s", file=sys.stderr,
                          flush=True)
                    if not getattr(method, "needs_observation", True):
                        cache[key] = samples, seconds
                else:
                    samples, seconds = cache[key]
                figures = calibration_metrics(np.asarray(samples), problem.posterior, truth=truth[0])
                print(f"    mean error {figures['mean_error']:.3f}, variance ratio {figures['variance_ratio']:.3f}, "
                      f"in exact 90% {figures['samples_in_exact_interval']:.3f}, truth cov. "
                      f"{figures['truth_coverage']:.3f}", file=sys.stderr, flush=True)
                rows.append(dict(pattern=problem.name, method=method_name, denoiser=denoiser_name,
                                 seconds_per_sample=seconds / num_samples, **figures))
        floor = calibration_floor(problem.posterior, reference_count, generator=seed + 1)
        rows.append(dict(pattern=problem.name, method="two sets of exact samples", denoiser="—",
                         num_samples=reference_count, two_set_mean_error=floor["two_set_mean_error"]))
    return rows


def markdown_table(rows: List[dict]) -> str:
    lines = ["| pattern | method | denoiser | N | mean error (σ) | floor 1/√N | variance ratio | exact mass in 90% "
             "| in exact 90% | truth cov. | s / sample |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    floors = []
    for row in rows:
        if "two_set_mean_error" in row:
            floors.append(f"{row['pattern']}: {row['two_set_mean_error']:.3f}")
            continue
        n = row["num_samples"]
        if "refused" in row:
            reason = row["refused"].split(";")[0].split(":")[0]
            lines.append(f"| {row['pattern']} | {row['method']} | {row['denoiser']} | {n} | refused: {reason} "
                         "| | | | | | |")
            continue
        lines.append(f"| {row['pattern']} | {row['method']} | {row['denoiser']} | {n} | {row['mean_error']:.3f} | "
                     f"{1 / math.sqrt(n):.3f} | "
                     f"{row['variance_ratio']:.3f} | {row['interval_coverage']:.3f} | "
                     f"{row['samples_in_exact_interval']:.3f} | {row['truth_coverage']:.3f} | "
                     f"{row['seconds_per_sample']:.4f} |")
    lines.append("")
    n = max(row["num_samples"] for row in rows if "num_samples" in row)
    lines.append(f"Sampling noise alone gives a mean error of about 1/√N (the floor column). Means of two "
                 f"independent sets of N = {n} exact samples differ by (RMS, in σ; ≈ √(2/N) = "
                 f"{math.sqrt(2 / n):.3f}): " + "; ".join(floors) + ".")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-samples", type=int, default=256, help="samples per row with the exact denoiser")
    parser.add_argument("--num-samples-shipped", type=int, default=64,
                        help="samples per row with the shipped model (its sampling costs ~100x more)")
    parser.add_argument("--steps", type=int, default=recipe.SAMPLE_STEPS, help="sampler steps of loop-based methods")
    parser.add_argument("--denoisers", nargs="+", choices=sorted(DENOISERS), default=["exact", "shipped"])
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=None, help="default: all")
    parser.add_argument("--seed", type=int, default=0, help="seed of every method's generator")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    parser.add_argument("--patterns", type=int, nargs="+", choices=(0, 1, 2), default=None,
                        help="only these patterns (0: random pixels, 1: block averages, 2: left half); default: all")
    parser.add_argument("--dps-step-sizes", type=float, nargs="+", default=(),
                        help="also rows of DPS with these step sizes ζ (a sweep)")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    global NUM_INFERENCE_STEPS
    NUM_INFERENCE_STEPS = args.steps
    methods = {name: METHODS[name] for name in (args.methods or METHODS)}
    methods.update({f"DPS (ζ = {zeta:g})": guided(DPS(step_size=zeta)) for zeta in args.dps_step_sizes})
    counts = {"exact": args.num_samples, "shipped": args.num_samples_shipped}
    rows = evaluate(methods, {name: counts[name] for name in args.denoisers}, args.seed, args.patterns)
    print(markdown_table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
