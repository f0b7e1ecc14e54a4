"""DPM-Solver multistep inversion: the DPM-Solver ODE integrated from data towards noise."""
from __future__ import annotations

from typing import Optional, Sequence

import mindspore as ms
import numpy as np

from ..configuration import register_to_config
from . import schedules
from .dpmsolver_common import DPMSolverMultistepBase, clipped_index, step_orders


def ascending_timesteps(spacing: str, num_train_timesteps: int, num_inference_steps: int, steps_offset: int,
                        noisiest: int) -> np.ndarray:
    """Inversion timesteps, ascending up to ``noisiest``: linspace/leading place N+1 points on
    [0, noisiest] and drop the noisiest one; trailing counts back from noisiest+1 by T/N."""
    if spacing == "trailing":
        return schedules.spaced_timesteps("trailing", num_train_timesteps, num_inference_steps,
                                          last_timestep=noisiest + 1)[::-1].copy()
    points = schedules.spaced_timesteps(spacing, num_train_timesteps, num_inference_steps + 1, steps_offset,
                                        last_timestep=noisiest + 1)
    return points[::-1][:-1].copy()


class DPMSolverMultistepInverseScheduler(DPMSolverMultistepBase):
    """Multistep DPM-Solver run backwards in time: from a clean sample x_0 up the ascending
    timesteps to the latent x_T that the forward :class:`DPMSolverMultistepScheduler` maps back
    to x_0 (DDIM-style inversion as in Null-text Inversion, Mokady et al. 2023, with DPM-Solver
    steps). The solver is the same code as the forward scheduler's (:mod:`.dpmsolver_common`);
    h = λ_t - λ_s is negative here.

    Schedule (diffusers 0.42.1): ascending timesteps, de-duplicated keeping first occurrences;
    the σ list is not de-duplicated and ends with σ at the noisiest timestep (Karras /
    exponential / beta / flow: the last σ repeated, so that step has h = 0). Karras,
    exponential and beta sigmas ascend from σ_min to σ_max (not flipped). ``use_flow_sigmas``
    keeps diffusers' descending flow σ list, so that "inversion" in fact denoises.

    The SDE variants are rejected: their noise scale is σ_t·sqrt(1 - e^{-2h}) (or
    σ_t·sqrt(e^{2h} - 1)), the square root of a negative number for h < 0, so diffusers returns
    NaN for every step.

    Example:
        >>> import mindspore as ms, numpy as np
        >>> from mindscience_diffuser import DPMSolverMultistepInverseScheduler
        >>> inverse = DPMSolverMultistepInverseScheduler()
        >>> inverse.set_timesteps(10)
        >>> x = ms.Tensor(np.random.default_rng(0).standard_normal((1, 3, 8, 8)), ms.float32)
        >>> for t in inverse.timesteps:
        ...     x = inverse.step(0.1 * x, x, int(t))
        >>> x.shape
        (1, 3, 8, 8)
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Optional[Sequence[float]] = None,
        solver_order: int = 2,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        algorithm_type: str = "dpmsolver++",
        solver_type: str = "midpoint",
        lower_order_final: bool = True,
        euler_at_final: bool = False,
        use_karras_sigmas: bool = False,
        use_exponential_sigmas: bool = False,
        use_beta_sigmas: bool = False,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        lambda_min_clipped: float = -float("inf"),
        variance_type: Optional[str] = None,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        compute_dtype=ms.float32,
    ):
        super().__init__(compute_dtype)
        self._init_solver()
        if self.stochastic:
            raise ValueError(
                f"algorithm_type={self.config.algorithm_type!r} cannot run in reverse: its noise scale is "
                "the square root of a negative number when λ decreases (diffusers returns NaN); "
                "use 'dpmsolver++' or 'dpmsolver'"
            )
        self._flow_shift = float(flow_shift)
        # Before set_timesteps the schedule runs upwards, as inversion does.
        self.timesteps = self.timesteps[::-1].copy()

    def set_timesteps(self, num_inference_steps: Optional[int] = None, device=None) -> None:
        """Build the ascending inversion schedule. ``device`` is accepted for diffusers compatibility and ignored."""
        cfg = self.config
        n = self._check_num_inference_steps(num_inference_steps, cfg.num_train_timesteps)
        noisiest = cfg.num_train_timesteps - 1 - clipped_index(self.alphas_cumprod.astype(np.float32),
                                                               cfg.lambda_min_clipped)
        ts = ascending_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, n, cfg.steps_offset, noisiest)
        full = self._train_sigmas()
        if self.sigma_schedule is not None:
            # Passing (σ_max, σ_min) where the makers expect (σ_min, σ_max) yields an ascending list.
            sig = schedules.SIGMA_SCHEDULES[self.sigma_schedule](float(full[-1]), float(full[0]), n)
            ts = self._sigma_schedule_timesteps(sig, self.sigma_schedule == "karras")
            sigmas = np.append(sig, sig[-1])
        elif self.config["use_flow_sigmas"]:
            sig = schedules.flow_sigmas(cfg.num_train_timesteps, n, self._flow_shift)
            ts = sig * cfg.num_train_timesteps
            sigmas = np.append(sig, sig[-1])
        else:
            sigmas = np.append(np.interp(ts, np.arange(len(full)), full), full[noisiest])
        _, first = np.unique(ts, return_index=True)
        ts = ts[np.sort(first)].astype(np.int64)
        orders = step_orders(len(ts), self.config["solver_order"], cfg.lower_order_final, cfg.euler_at_final,
                             zero_final=False)
        self._install_knots(ts, sigmas, orders)
