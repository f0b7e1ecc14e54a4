"""The spectrum error a *perfect* model would have under each sampler, for the default model's fields.

The training fields are Gaussian random fields, so the exact denoiser is known in closed form:
each Fourier mode k of x_t = √ᾱ·x0 + √(1-ᾱ)·ε is Gaussian with signal variance S(k), and

    E[x0 | x_t](k) = √ᾱ·S(k) / (ᾱ·S(k) + 1 - ᾱ) · x_t(k)          (the Wiener filter)

Feeding that posterior mean to a scheduler (``prediction_type="sample"``) isolates the sampler's
own discretisation error from the model's: whatever spectrum error remains is the floor no amount
of training removes. The table it prints is the one in docs/scientific_workflow.md.

    python tools/sampler_floor.py [--samples 512] [--steps 15 20 25 50]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mindspore as ms
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

import train_default_model as recipe  # noqa: E402

from mindscience_diffuser import DDIMScheduler, DPMSolverMultistepScheduler  # noqa: E402
from mindscience_diffuser.training import evaluate  # noqa: E402
from mindscience_diffuser.training.fields import grf_mode_variance  # noqa: E402

SCHEDULE = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample")
SAMPLERS = {
    "DDIM (eta 0)": lambda: DDIMScheduler(**SCHEDULE, clip_sample=False),
    "DPM-Solver++(2M)": lambda: DPMSolverMultistepScheduler(**SCHEDULE),
    "DPM-Solver++(2M), Karras σ": lambda: DPMSolverMultistepScheduler(**SCHEDULE, use_karras_sigmas=True),
    "DPM-Solver++(2M), uniform log-SNR "
    "(shipped)": lambda: DPMSolverMultistepScheduler(**SCHEDULE, use_lu_lambdas=True),
    "DPM-Solver++(3M), uniform "
    "log-SNR": lambda: DPMSolverMultistepScheduler(**SCHEDULE, use_lu_lambdas=True, solver_order=3),
}


def mode_variance() -> np.ndarray:
    """S(k) on the FFT grid, in units of the unit white noise ε (the generator's normalisation)."""
    return grf_mode_variance(recipe.FIELDS["size"], recipe.FIELDS["spectrum"], recipe.FIELDS["std"])


def posterior_mean(x_t: np.ndarray, alpha_bar: float, signal: np.ndarray) -> np.ndarray:
    gain = np.sqrt(alpha_bar) * signal / (alpha_bar * signal + 1.0 - alpha_bar)
    return np.fft.ifft2(np.fft.fft2(x_t) * gain).real


def sample_with_exact_denoiser(scheduler, steps: int, num_samples: int, seed: int = 0) -> np.ndarray:
    signal = mode_variance()
    size = recipe.FIELDS["size"]
    scheduler.set_timesteps(steps)
    alphas_cumprod = np.asarray(scheduler.alphas_cumprod, np.float64)
    x = np.random.default_rng(seed).standard_normal((num_samples, 1, size, size)) * float(scheduler.init_noise_sigma)
    for t in np.asarray(scheduler.timesteps):
        # The timestep is what a trained model is told, so the denoiser assumes ᾱ at that t.
        x0 = posterior_mean(x, alphas_cumprod[int(round(float(t)))], signal)
        x = scheduler.step(ms.Tensor(x0, ms.float32), ms.Tensor(x, ms.float32),
                           ms.Tensor(t)).asnumpy().astype(np.float64)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--steps", type=int, nargs="+", default=[15, 20, 25, 50])
    args = parser.parse_args()
    reference = recipe.heldout_fields()
    print("| sampler (exact denoiser) | " + " | ".join(f"{n} steps" for n in args.steps) + " |")
    print("| --- |" + " ---: |" * len(args.steps))
    for name, build in SAMPLERS.items():
        errors = [evaluate(sample_with_exact_denoiser(build(), n, args.samples), reference)["spectrum_rel_error"]
                  for n in args.steps]
        print(f"| {name} | " + " | ".join(f"{100 * e:.1f}%" for e in errors) + " |", flush=True)
    true_pair = evaluate(recipe.SyntheticFieldDataset(num_samples=args.samples, seed=5, **recipe.FIELDS).data,
                         reference)
    print(f"\ntwo independent sets of true fields: {100 * true_pair['spectrum_rel_error']:.1f}%")


if __name__ == "__main__":
    main()
