"""DPM-Solver / DPM-Solver++ multistep sampling (Lu et al. 2022, "DPM-Solver" and "DPM-Solver++")."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import mindspore as ms
import numpy as np

from ..configuration import register_to_config
from ..utils import check_choice
from . import schedules
from .dpmsolver_common import DPMSolverMultistepBase, clipped_index, step_orders

FINAL_SIGMAS_TYPES = ("zero", "sigma_min")
TIME_SHIFT_TYPES = ("exponential",)


class DPMSolverMultistepScheduler(DPMSolverMultistepBase):
    """Multistep DPM-Solver (orders 1-3) on a descending noise schedule, deterministic (ODE) or
    stochastic (``sde-*``). The update formulas live in :mod:`.dpmsolver_common` and are shared
    with :class:`DPMSolverMultistepInverseScheduler`.

    The schedule: N timesteps spaced by ``timestep_spacing`` (N+1 points, the last dropped),
    or noise levels from Karras/exponential/beta/Lu (uniform log-SNR)/flow-matching sigmas
    mapped back to timesteps, then a final σ of 0 (``final_sigmas_type="zero"``, which forces a
    first-order last step and needs a ++ algorithm) or σ at t=0 (``"sigma_min"``).

    Example:
        >>> import mindspore as ms, numpy as np
        >>> from mindscience_diffuser import DPMSolverMultistepScheduler
        >>> scheduler = DPMSolverMultistepScheduler(solver_order=2)
        >>> scheduler.set_timesteps(10)
        >>> x = ms.Tensor(np.random.default_rng(0).standard_normal((1, 3, 8, 8)), ms.float32)
        >>> for t in scheduler.timesteps:
        ...     eps = 0.1 * x  # stands in for a trained model
        ...     x = scheduler.step(eps, x, int(t))
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
        use_lu_lambdas: bool = False,
        use_flow_sigmas: bool = False,
        flow_shift: float = 1.0,
        final_sigmas_type: str = "zero",
        lambda_min_clipped: float = -float("inf"),
        variance_type: Optional[str] = None,
        timestep_spacing: str = "linspace",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        use_dynamic_shifting: bool = False,
        time_shift_type: str = "exponential",
        compute_dtype=ms.float32,
    ):
        super().__init__(compute_dtype)
        check_choice("final_sigmas_type", final_sigmas_type, FINAL_SIGMAS_TYPES)
        check_choice("time_shift_type", time_shift_type, TIME_SHIFT_TYPES)
        self._init_solver()
        if use_lu_lambdas and (self.sigma_schedule is not None or use_flow_sigmas):
            other = f"use_{self.sigma_schedule}_sigmas" if self.sigma_schedule else "use_flow_sigmas"
            raise ValueError(f"use_lu_lambdas cannot be combined with {other}: choose one noise-level schedule")
        if final_sigmas_type == "zero" and not self.config["algorithm_type"].endswith("++"):
            raise ValueError(
                "final_sigmas_type='zero' needs algorithm_type 'dpmsolver++' or 'sde-dpmsolver++' "
                f"(got {self.config.algorithm_type!r}); use final_sigmas_type='sigma_min'"
            )
        self._zero_final = final_sigmas_type == "zero"
        self._flow_shift = float(flow_shift)

    def set_timesteps(
        self,
        num_inference_steps: Optional[int] = None,
        device=None,
        mu: Optional[float] = None,
        timesteps: Optional[Sequence[int]] = None,
    ) -> None:
        """Build the schedule for ``num_inference_steps`` steps, or adopt a descending list of
        ``timesteps``. ``mu`` (with ``use_dynamic_shifting``) sets the flow shift to exp(mu).
        ``device`` is accepted for diffusers compatibility and ignored."""
        cfg = self.config
        if mu is not None:
            if not cfg.use_dynamic_shifting:
                raise ValueError("mu is only used with use_dynamic_shifting=True (time_shift_type='exponential')")
            self._flow_shift = math.exp(float(mu))
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps or timesteps")
        special = (self.sigma_schedule or ("lu" if cfg.use_lu_lambdas else None)
                   or ("flow" if self.config["use_flow_sigmas"] else None))
        full = self._train_sigmas()
        if timesteps is not None:
            if special is not None:
                raise ValueError(f"custom timesteps cannot be used with {special} sigmas: those set their own "
                                 "timesteps")
            ts = self._check_custom_timesteps(timesteps).astype(np.float64)
            n = len(ts)
        else:
            n = self._check_num_inference_steps(num_inference_steps, cfg.num_train_timesteps)
            last = cfg.num_train_timesteps - clipped_index(self.alphas_cumprod.astype(np.float32),
                                                           cfg.lambda_min_clipped)
            ts = schedules.spaced_timesteps(cfg.timestep_spacing, cfg.num_train_timesteps, n, cfg.steps_offset,
                                            last_timestep=last, extra_point=True)
        if special in ("karras", "exponential", "beta", "lu"):
            # Lu et al.'s uniform-λ steps are, for a VP schedule, uniform in log σ.
            make = schedules.SIGMA_SCHEDULES["exponential" if special == "lu" else special]
            sig = make(float(full[0]), float(full[-1]), n)
            rounded = special in ("karras", "lu") and cfg.beta_schedule != "squaredcos_cap_v2"
            ts = self._sigma_schedule_timesteps(sig, rounded)
        elif special == "flow":
            sig = schedules.flow_sigmas(cfg.num_train_timesteps, n, self._flow_shift)
            ts = sig * cfg.num_train_timesteps
        else:
            sig = np.interp(ts, np.arange(len(full)), full)
        final = float(full[0]) if cfg.final_sigmas_type == "sigma_min" else 0.0
        ts = ts.astype(np.int64)
        orders = step_orders(len(ts), self.config["solver_order"], cfg.lower_order_final, cfg.euler_at_final,
                             self._zero_final)
        self._install_knots(ts, np.append(sig, final), orders)
