"""Multistep DPM-Solver, shared by :class:`DPMSolverMultistepScheduler` (denoising, descending
timesteps) and :class:`DPMSolverMultistepInverseScheduler` (inversion, ascending timesteps).

Both run the same solver; only the schedule differs. The schedule is a list of noise levels
σ_0..σ_M, each with α = 1/sqrt(σ²+1), σ_t = σ·α (flow matching: α = 1-σ, σ_t = σ) and
the half log-SNR λ = log α - log σ_t. A step goes from knot i (λ_s0) to knot i+1 (λ_t), with
h = λ_t - λ_s0, reusing the converted model outputs of knots i-1, i-2 (λ_s1, λ_s2).

Writing the solution of the diffusion ODE with variation of constants (Lu et al. 2022,
DPM-Solver, eq. 3.4; DPM-Solver++, eq. 8) and Taylor-expanding the model output in λ gives,
for every variant, one shape of update

    x_t = A·x_s + c0·D0 + c1·D1 + c2·D2 + B·z

with D0 the newest converted output, D1/D2 its first/second divided differences in λ
(DPM-Solver++ Algorithm 2 / DPM-Solver eq. 3.7 multistep form) and z Gaussian noise for the
SDE variants (Lu et al. 2022b, §5). :func:`solver_coefficients` gives (A, B, c0, c1, c2) per
algorithm; the first/second/third-order updates below only differ in which D's they use.

Graph-mode contract: every coefficient that depends on the schedule is a device table
indexed by the step index (built on the host by ``set_timesteps``), and the multistep
history is an explicit state tuple ``(step_index, lower_order_nums, history)`` that
``construct`` takes and returns, so a compiled sampling loop can carry it.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from ..outputs import SchedulerOutput
from ..utils import GeneratorLike, check_choice
from . import schedules
from .base import StepIndexMixin, TimestepLike, VPSchedulerBase, as_float32, dynamic_threshold, predict_x0_and_eps

ALGORITHM_TYPES = ("dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++")
SOLVER_TYPES = ("midpoint", "heun")
DPM_PREDICTION_TYPES = ("epsilon", "sample", "v_prediction", "flow_prediction")
DPM_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
LEARNED_VARIANCES = ("learned", "learned_range")
# A DDPM config's fixed variance types mean the model predicts no variance (diffusers ignores them too).
VARIANCE_TYPES = (None, *LEARNED_VARIANCES, "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")
# Older diffusers configs (DEIS, UniPC) name options DPM-Solver does not have; diffusers maps them.
ALGORITHM_ALIASES = {"deis": "dpmsolver++"}
SOLVER_ALIASES = {"logrho": "midpoint", "bh1": "midpoint", "bh2": "midpoint"}

DPMState = Tuple[Tensor, Tensor, Tensor]
# Columns of the per-step table: solver coefficients (see step_tables), then α, σ_t and raw σ at knot i.
COLUMNS = ("A", "B", "c0", "c1", "c1_3", "c2", "r0", "r1", "alpha_s", "sigma_t_s", "sigma_s")
A, B, C0, C1, C1_3, C2, R0, R1 = range(8)


# ----------------------------------------------------------------------------- pure solver math

def solver_coefficients(algorithm_type: str, alpha_t, sigma_t, alpha_s, sigma_s, h):
    """(A, B, c0, c1_heun, c2) of x_t = A·x + B·z + c0·D0 + c1·D1 + c2·D2 for a step of size h in λ.

    - dpmsolver++ (data prediction, DPM-Solver++ eq. 9): A = σ_t/σ_s, c0 = α_t(1 - e^{-h}),
      c1 = α_t((e^{-h}-1)/h + 1), c2 = -α_t((e^{-h}-1+h)/h² - 1/2);
    - dpmsolver (noise prediction, DPM-Solver eq. 3.7): A = α_t/α_s, c0 = -σ_t(e^h - 1),
      c1 = -σ_t((e^h-1)/h - 1), c2 = -σ_t((e^h-1-h)/h² - 1/2);
    - sde-dpmsolver++: A = σ_t/σ_s·e^{-h}, c0 = α_t(1 - e^{-2h}), c1 = α_t((1-e^{-2h})/(-2h) + 1),
      c2 = α_t((1-e^{-2h}-2h)/(2h)² - 1/2), B = σ_t·sqrt(1 - e^{-2h});
    - sde-dpmsolver: A = α_t/α_s, c0 = -2σ_t(e^h - 1), c1 = -2σ_t((e^h-1)/h - 1), no third order
      (c2 is None), B = σ_t·sqrt(e^{2h} - 1).
    B is None for the ODE variants. The midpoint second-order rule uses c1 = c0/2 for every
    algorithm. The third-order c2 of the SDE variant follows diffusers 0.42.1 term for term.

    Host-side numpy: these depend only on the schedule, so ``set_timesteps`` tabulates them per
    step. Pass float32 arrays to reproduce diffusers' float32 arithmetic (the first inversion
    step cancels two terms of size σ_t/σ_s·x, so its result moves with the last bit of A and
    c0; MindSpore's CPU ``exp`` is only good to ~5e-6, hence the host).
    """
    if algorithm_type == "dpmsolver++":
        em1 = np.exp(-h) - 1
        return (sigma_t / sigma_s, None, -(alpha_t * em1), alpha_t * (em1 / h + 1),
                -(alpha_t * ((em1 + h) / h**2 - 0.5)))
    if algorithm_type == "dpmsolver":
        ep1 = np.exp(h) - 1
        return (alpha_t / alpha_s, None, -(sigma_t * ep1), -(sigma_t * (ep1 / h - 1)),
                -(sigma_t * ((ep1 - h) / h**2 - 0.5)))
    if algorithm_type == "sde-dpmsolver++":
        one_m = 1 - np.exp(-2 * h)
        return (
            sigma_t / sigma_s * np.exp(-h),
            sigma_t * np.sqrt(1 - np.exp(-2 * h)),
            alpha_t * one_m,
            alpha_t * (one_m / (-2 * h) + 1),
            alpha_t * ((one_m - 2 * h) / (2 * h) ** 2 - 0.5),
        )
    ep1 = np.exp(h) - 1
    return (alpha_t / alpha_s, sigma_t * np.sqrt(np.exp(2 * h) - 1), -2 * (sigma_t * ep1),
            -2 * (sigma_t * (ep1 / h - 1)), None)


def step_tables(algorithm_type: str, solver_type: str, alpha: np.ndarray, sigma_t: np.ndarray, lam: np.ndarray,
                orders: np.ndarray):
    """Per-step solver coefficients for steps i = 0..M-1 (knot i to knot i+1), float32.

    Returns a dict of arrays: ``A``, ``B``, ``c0``, ``c1`` (second order: c0/2 for midpoint,
    the Heun weight otherwise), ``c1_3``/``c2`` (third order) and ``r0`` = h_{i-1}/h_i,
    ``r1`` = h_{i-2}/h_i. Entries a step can never use (order above ``orders[i]``, or the
    history before knot 0) are set to neutral finite values, so the tables hold no inf/NaN
    from a zero final σ (h = ∞).
    """
    m = len(orders)
    i = np.arange(m)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        h = lam[i + 1] - lam[i]
        a, b, c0, c1_heun, c2 = solver_coefficients(algorithm_type, alpha[i + 1], sigma_t[i + 1], alpha[i], sigma_t[i],
                                                    h)
        c1 = np.float32(0.5) * c0 if solver_type == "midpoint" else c1_heun
        r0 = (lam[i] - lam[np.maximum(i - 1, 0)]) / h
        r1 = (lam[np.maximum(i - 1, 0)] - lam[np.maximum(i - 2, 0)]) / h
    zeros = np.zeros(m, np.float32)
    usable2 = (orders >= 2) & (i >= 1)
    usable3 = (orders >= 3) & (i >= 2)
    return {
        "A": a,
        "B": zeros if b is None else b,
        "c0": c0,
        "c1": np.where(usable2, c1, 0),
        "c1_3": np.where(usable3, c1_heun, 0),
        "c2": np.where(usable3, zeros if c2 is None else c2, 0),
        "r0": np.where(usable2, r0, 1),
        "r1": np.where(usable3, r1, 1),
    }


def first_order_update(coefs, sample: Tensor, d0: Tensor, noise: Optional[Tensor]) -> Tensor:
    """x_t = A·x + c0·D0 (+ B·z): DPM-Solver-1, i.e. DDIM in the λ variable (DPM-Solver eq. 3.7, k=1)."""
    x = coefs[A] * sample + coefs[C0] * d0
    if noise is not None:
        x = x + coefs[B] * noise
    return x


def second_order_update(coefs, first: Tensor, m0: Tensor, m1: Tensor) -> Tensor:
    """Multistep second order (DPM-Solver++ Algorithm 2) on top of the first-order result
    ``first``: + c1·D1 with D1 = (m0 - m1)/r0, r0 = h_{i-1}/h_i (c1 = c0/2 for the midpoint
    rule, the Heun weight otherwise)."""
    return first + coefs[C1] * ((1.0 / coefs[R0]) * (m0 - m1))


def third_order_update(coefs, first: Tensor, m0: Tensor, m1: Tensor, m2: Tensor) -> Tensor:
    """Multistep third order on top of ``first``: divided differences D1_0 = (m0-m1)/r0,
    D1_1 = (m1-m2)/r1, D1 = D1_0 + r0/(r0+r1)·(D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r0+r1)."""
    r0, r1 = coefs[R0], coefs[R1]
    d1_0 = (1.0 / r0) * (m0 - m1)
    d1_1 = (1.0 / r1) * (m1 - m2)
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (1.0 / (r0 + r1)) * (d1_0 - d1_1)
    return first + coefs[C1_3] * d1 + coefs[C2] * d2


def convert_model_output(
    algorithm_type: str,
    prediction_type: str,
    model_output: Tensor,
    sample: Tensor,
    alpha: Tensor,
    sigma_t: Tensor,
    sigma: Tensor,
    threshold: Optional[Tuple[float, float]],
) -> Tensor:
    """What the solver integrates: x̂0 for the ++ variants, ε̂ for the others (float32).

    flow_prediction (x0 = x - σ·v) is a ++-only data parametrisation. ``threshold`` is
    (ratio, max_value) for Imagen's dynamic thresholding of x̂0; the noise-prediction
    variants threshold x̂0 and convert back, ε = (x - α·x̂0)/σ_t.
    """
    if algorithm_type.endswith("++"):
        if prediction_type == "flow_prediction":
            x0 = sample - sigma * model_output
        else:
            x0, _ = predict_x0_and_eps(prediction_type, model_output, sample, alpha, sigma_t)
        return dynamic_threshold(x0, *threshold) if threshold is not None else x0
    _, eps = predict_x0_and_eps(prediction_type, model_output, sample, alpha, sigma_t)
    if threshold is not None:
        x0 = dynamic_threshold((sample - sigma_t * eps) / alpha, *threshold)
        eps = (sample - alpha * x0) / sigma_t
    return eps


# ----------------------------------------------------------------------------- host helpers

def float32_alpha_sigma_t(sigma: np.ndarray, flow: bool = False):
    """(α, σ_t) of noise levels σ in float32 arithmetic: α = 1/sqrt(σ²+1), σ_t = σ·α (flow: α = 1-σ, σ_t = σ)."""
    sigma = np.asarray(sigma, np.float32)
    one = np.float32(1.0)
    if flow:
        return one - sigma, sigma
    alpha = one / np.sqrt(sigma * sigma + one)
    return alpha, sigma * alpha


def half_log_snr(alpha: np.ndarray, sigma_t: np.ndarray) -> np.ndarray:
    """λ = log α - log σ_t (+inf where σ_t = 0, the clean end of a ``final_sigmas_type="zero"`` schedule)."""
    with np.errstate(divide="ignore"):
        return np.log(alpha) - np.log(sigma_t)


def clipped_index(abar32: np.ndarray, lambda_min_clipped: float) -> int:
    """How many of the noisiest training timesteps have λ below ``lambda_min_clipped`` (left bisection
    on ascending λ, computed in float32 from the float32 ᾱ as diffusers does)."""
    with np.errstate(divide="ignore"):
        lam = np.log(np.sqrt(abar32)) - np.log(np.sqrt(np.float32(1.0) - abar32))
    return int(np.searchsorted(lam[::-1], lambda_min_clipped, side="left"))


def step_orders(num_steps: int, solver_order: int, lower_order_final: bool, euler_at_final: bool,
                zero_final: bool) -> np.ndarray:
    """The highest order step i may use (warm-up on ``lower_order_nums`` is applied on top, in the step).

    First order at the last step with ``euler_at_final``, with ``lower_order_final`` below 15
    steps, or when the last σ is 0 (the λ step is infinite); at most second order at the
    second-to-last step with ``lower_order_final`` below 15 steps.
    """
    orders = np.full(num_steps, solver_order, np.int32)
    short = lower_order_final and num_steps < 15
    if num_steps >= 2 and short:
        orders[-2] = min(orders[-2], 2)
    if euler_at_final or short or zero_final:
        orders[-1] = 1
    return orders


class DPMSolverMultistepBase(StepIndexMixin, VPSchedulerBase):
    """The solver Cell both DPM-Solver multistep schedulers share. Subclasses build the schedule
    (``_build_schedule``) and set ``self._zero_final`` for the order table.

    State: ``(step_index, lower_order_nums, history)`` with int32 0-d counters and ``history``
    the last ``solver_order`` converted model outputs stacked oldest first, float32, shape
    ``(solver_order,) + sample.shape``. :meth:`construct` maps ``(model_output, sample, noise,
    state)`` to ``(prev_sample, pred_original_sample, new_state)`` and never branches on Tensor
    values, so it compiles alone or inside a ``while`` loop. :meth:`step` keeps the state on the
    object for diffusers-style loops, together with a host copy of its step index (as the σ-table
    schedulers keep theirs), so an eager step checks the index without reading the device.
    """

    order = 1
    beta_schedules = DPM_BETA_SCHEDULES
    pins_terminal_snr = True
    integer_timesteps = True

    def _init_solver(self) -> None:
        """Validate the solver options of ``self.config``, write diffusers' aliases (DEIS/UniPC
        names) as the options they stand for into it, and build the β/ᾱ tables."""
        cfg = self.config
        if isinstance(cfg.solver_order, bool) or cfg.solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be one of [1, 2, 3], got {cfg.solver_order!r}")
        self._update_config(
            algorithm_type=ALGORITHM_ALIASES.get(cfg.algorithm_type, cfg.algorithm_type),
            solver_type=SOLVER_ALIASES.get(cfg.solver_type, cfg.solver_type),
        )
        cfg = self.config
        check_choice("algorithm_type", cfg.algorithm_type, ALGORITHM_TYPES)
        check_choice("solver_type", cfg.solver_type, SOLVER_TYPES)
        check_choice("prediction_type", cfg.prediction_type, DPM_PREDICTION_TYPES)
        check_choice("variance_type", cfg.variance_type, VARIANCE_TYPES)
        check_choice("timestep_spacing", cfg.timestep_spacing, schedules.TIMESTEP_SPACINGS)
        if cfg.prediction_type == "flow_prediction" and not cfg.algorithm_type.endswith("++"):
            raise ValueError("prediction_type='flow_prediction' needs algorithm_type 'dpmsolver++' or "
                             f"'sde-dpmsolver++', got {cfg.algorithm_type!r}")
        if cfg.algorithm_type == "sde-dpmsolver" and cfg.solver_order == 3:
            raise ValueError("algorithm_type='sde-dpmsolver' has no third-order update; use solver_order 1 or 2, or "
                             "'sde-dpmsolver++'")
        self.sigma_schedule = schedules.chosen_sigma_schedule(cfg.use_karras_sigmas, cfg.use_exponential_sigmas,
                                                              cfg.use_beta_sigmas)
        if cfg.use_flow_sigmas and self.sigma_schedule is not None:
            raise ValueError(f"use_flow_sigmas cannot be combined with use_{self.sigma_schedule}_sigmas")
        if isinstance(cfg.lambda_min_clipped, bool) or not isinstance(cfg.lambda_min_clipped, (int, float)):
            raise TypeError(f"lambda_min_clipped must be a float, got {type(cfg.lambda_min_clipped).__name__}")
        # float32 β and ᾱ exactly as diffusers holds them: near t=0, 1-ᾱ ≈ β_0 keeps only a few float32
        # digits, and σ_min of every Karras/exponential/beta schedule is exactly that value.
        self._init_betas()
        self._threshold = (float(cfg.dynamic_thresholding_ratio),
                           float(cfg.sample_max_value)) if cfg.thresholding else None
        self.sigmas = None
        self._state: Optional[DPMState] = None
        self._step_index = None  # == int(self._state[0]) whenever _state is set

    @property
    def stochastic(self) -> bool:
        """Whether the steps draw noise (the SDE variants)."""
        return self.config["algorithm_type"].startswith("sde-")

    # -- schedule ------------------------------------------------------------------------------
    def _install_knots(self, timesteps: np.ndarray, sigmas: np.ndarray, orders: np.ndarray) -> None:
        """Adopt the timesteps (M) and noise levels (≥ M+1) and build the step-indexed tables."""
        # diffusers keeps σ in float32 and derives α, σ_t, λ in float32. The first inversion step
        # (and any step from a tiny σ) cancels two terms of size σ_t/σ_s·x, so its result moves with
        # the last bit of these coefficients: derive them with the same float32 operations.
        sigmas = sigmas.astype(np.float32)
        alpha, sigma_t = float32_alpha_sigma_t(sigmas, flow=self.config["use_flow_sigmas"])
        self.timesteps = timesteps.astype(np.int64)
        self.sigmas = sigmas
        self.num_inference_steps = m = len(self.timesteps)
        self._set_table("order_table", orders, ms.int32)
        columns = step_tables(self.config["algorithm_type"], self.config["solver_type"], alpha, sigma_t,
                              half_log_snr(alpha, sigma_t), orders)
        columns.update(alpha_s=alpha[:m], sigma_t_s=sigma_t[:m], sigma_s=sigmas[:m])
        # One (M, 11) table: a step gathers its whole row with one op.
        self._set_table("step_table", np.stack([columns[name] for name in COLUMNS], axis=1).astype(np.float32))
        self._state = None
        self._step_index = None
        self._begin_index = None

    def _train_sigmas(self) -> np.ndarray:
        """The training σ (float32 values, as diffusers has them) in float64 for the host schedule arithmetic."""
        return self.train_sigmas().astype(np.float64)

    def _sigma_schedule_timesteps(self, sigmas: np.ndarray, round_timesteps: bool) -> np.ndarray:
        """Fractional training timesteps of ``sigmas`` (log-σ interpolation), rounded if asked."""
        t = schedules.sigma_to_t(sigmas, np.log(self._train_sigmas()))
        return t.round() if round_timesteps else t

    # -- state ---------------------------------------------------------------------------------
    def initial_state(self, sample: Tensor, begin_index: Optional[int] = None) -> DPMState:
        """Fresh solver state for a loop over ``sample``-shaped latents, starting at ``begin_index``
        (default: ``set_begin_index``'s value, else 0)."""
        self._check_ready()
        start = begin_index if begin_index is not None else (self._begin_index or 0)
        return (
            Tensor(int(start), ms.int32),
            Tensor(0, ms.int32),
            ops.zeros((self.config["solver_order"],) + tuple(sample.shape), ms.float32),
        )

    @property
    def lower_order_nums(self) -> int:
        return 0 if self._state is None else int(self._state[1].asnumpy())

    @property
    def model_outputs(self) -> list:
        """The stored converted model outputs, oldest first (diffusers' ``model_outputs``; None before a step)."""
        if self._state is None:
            return [None] * self.config["solver_order"]
        count = int(self._state[1].asnumpy())
        history = [self._state[2][k] for k in range(self.config["solver_order"])]
        return [None] * (self.config["solver_order"] - count) + history[self.config["solver_order"] - count:]

    # -- the compiled step ---------------------------------------------------------------------
    def _knots(self, index: Tensor):
        """The step-``index`` row of the step table: ``(coefs, α_s, σ_t at s, σ_s)`` with ``coefs``
        the tuple (A, B, c0, c1, c1_3, c2, r0, r1) of 0-d Tensors."""
        row = ops.unstack(ops.gather(self.step_table, index, 0), 0)
        return row[:8], row[8], row[9], row[10]

    def _converted(self, model_output: Tensor, sample: Tensor, alpha_s0, sigma_s0, sigma_raw) -> Tensor:
        if self.config["variance_type"] in LEARNED_VARIANCES:
            # The model predicts [ε, v] as 2C channels; the solver uses the first C.
            model_output = model_output[:, : sample.shape[1]]
        return convert_model_output(self.config["algorithm_type"], self.config["prediction_type"], model_output,
                                    sample, alpha_s0, sigma_s0, sigma_raw, self._threshold)

    def construct(self, model_output: Tensor, sample: Tensor, noise: Tensor, state: DPMState):
        """One multistep DPM-Solver step: ``(prev_sample, pred_original_sample, new_state)``.

        The order used is min(order_table[i], lower_order_nums + 1); the three candidate
        updates are all evaluated and chosen with ``where`` (not blended arithmetically: the
        unused ones may be non-finite, e.g. r0 = 0 during warm-up or h = ∞ at a zero final σ).
        """
        index, lower_order_nums, history = state
        coefs, alpha_s0, sigma_s0, sigma_raw = self._knots(index)
        x = as_float32(sample)
        m0 = self._converted(as_float32(model_output), x, alpha_s0, sigma_s0, sigma_raw)
        first = prev = first_order_update(coefs, x, m0, as_float32(noise) if self.stochastic else None)
        past = ops.unstack(history, 0)
        if self.config["solver_order"] >= 2:
            order = ops.minimum(ops.gather(self.order_table, index, 0), lower_order_nums + 1)
            prev = ops.where(order >= 2, second_order_update(coefs, first, m0, past[-1]), prev)
            if self.config["solver_order"] == 3:
                prev = ops.where(order >= 3, third_order_update(coefs, first, m0, past[-1], past[-2]), prev)
        x0 = m0 if self.config["algorithm_type"].endswith("++") else (x - sigma_s0 * m0) / alpha_s0
        new_history = ops.stack(past[1:] + (m0,), 0)
        # Counts up to solver_order; written as Tensor arithmetic so a while loop keeps it a Tensor.
        new_count = lower_order_nums + (lower_order_nums < self.config["solver_order"]).astype(ms.int32)
        new_state = (index + 1, new_count, new_history)
        return self._cast(prev), self._cast(x0), new_state

    # -- the sampling loop's part ---------------------------------------------------------------
    def loop_plan(self, num_inference_steps=None, **options):
        """Noise only for the SDE variants."""
        return super().loop_plan(num_inference_steps, **options)._replace(stochastic=self.stochastic)

    def loop_state(self, sample: Tensor) -> tuple:
        """``(lower_order_nums, history)``; the step index is the loop's own iteration index."""
        return ops.zeros((), ms.int32), ops.zeros((self.config["solver_order"],) + sample.shape, ms.float32)

    def loop_denoised(self, model_output, sample, i, timestep):
        _, alpha_s0, sigma_s0, sigma_raw = self._knots(i)
        prediction = as_float32(model_output)[:, : sample.shape[1]]
        return convert_model_output("dpmsolver++", self.config["prediction_type"], prediction, as_float32(sample),
                                    alpha_s0, sigma_s0, sigma_raw, None)

    def loop_update(self, model_output, sample, i, timestep, noise, knob, state, constants):
        prev, _, (_, lower_order_nums, history) = self.construct(model_output, sample, noise, (i, state[0], state[1]))
        return prev, (lower_order_nums, history)

    # -- host API --------------------------------------------------------------------------------
    def _resolve_state(self, sample: Tensor, timestep: TimestepLike) -> Tuple[DPMState, int]:
        """The state this step starts from and its step index, a host int (no device read)."""
        self._check_ready()
        state = self._state
        if state is not None and tuple(state[2].shape[1:]) != tuple(sample.shape):
            raise ValueError(f"sample shape {tuple(sample.shape)} changed mid-loop (was {tuple(state[2].shape[1:])}); "
                             "call set_timesteps again")
        index = self._step_index_for(timestep, sample.shape[0])
        return (self.initial_state(sample, index) if state is None else state), index

    def step(
        self,
        model_output: Tensor,
        sample: Tensor,
        timestep: TimestepLike,
        generator: GeneratorLike = None,
        variance_noise: Optional[Tensor] = None,
        return_dict: Optional[bool] = None,
    ):
        """Advance the sample one step; the solver state lives on the scheduler between calls.

        The first call finds its step index from ``timestep`` (or ``set_begin_index``); later
        calls increment it. SDE variants draw their noise from ``generator`` unless
        ``variance_noise`` is given. Returns the sample (``return_dict=None``), a
        :class:`SchedulerOutput` (``True``) or ``(prev_sample,)`` (``False``, as diffusers).
        """
        self._check_ready()
        learned = self.config["variance_type"] in LEARNED_VARIANCES
        self._check_tensors(model_output, sample, channel_multiple=(2,) if learned else (1,))
        state, index = self._resolve_state(sample, timestep)
        if self.stochastic:
            noise = self._noise_like(sample, generator, variance_noise)
        else:
            noise = self._zeros_like(sample)
        # mutable: a tuple of Tensors is otherwise a compile-time constant in GRAPH_MODE (one graph per step).
        prev, x0, new_state = self(self._cast(model_output), self._cast(sample), noise, ms.mutable(tuple(state)))
        self._state = tuple(new_state)
        self._step_index = index + 1  # what construct wrote into new_state[0]
        # diffusers' tuple is (prev_sample,); the dataclass also carries the x0 estimate.
        return (prev,) if return_dict is False else self._pack(return_dict, SchedulerOutput, prev, x0)

    # -- diffusers' building blocks, at the current step index -----------------------------------
    def _current_knots(self, order: int = 1):
        """Table rows at the current step index, for diffusers' building-block methods."""
        self._check_ready()
        if self._state is None and self._begin_index is None:
            raise ValueError("step_index is not set: call step once, or set_begin_index, before the solver building "
                             "blocks")
        index = self._step_index if self._state is not None else self._begin_index
        if index >= self.num_inference_steps:
            raise ValueError(f"all {self.num_inference_steps} steps are done; call set_timesteps again")
        if order > 1 and (index < order - 1 or int(self.order_table.asnumpy()[index]) < order):
            raise ValueError(f"step {index} cannot take an order-{order} update (schedule allows "
                             f"{int(self.order_table.asnumpy()[index])}, history starts at step 0)")
        return self._knots(Tensor(index, ms.int32))

    def convert_model_output(self, model_output: Tensor, sample: Tensor) -> Tensor:
        """The solver's parametrisation of ``model_output`` at the current step index: x̂0 for
        the ++ variants, ε̂ otherwise (thresholded when ``thresholding``)."""
        _, alpha_s0, sigma_s0, sigma_raw = self._current_knots()
        return self._cast(self._converted(as_float32(model_output), as_float32(sample), alpha_s0, sigma_s0, sigma_raw))

    def _block_noise(self, noise):
        if not self.stochastic:
            return None
        if noise is None:
            raise ValueError(f"algorithm_type={self.config.algorithm_type!r} needs noise")
        return as_float32(noise)

    def dpm_solver_first_order_update(self, model_output: Tensor, sample: Tensor,
                                      noise: Optional[Tensor] = None) -> Tensor:
        """First-order step from the current step index with a converted ``model_output``."""
        coefs = self._current_knots()[0]
        return self._cast(first_order_update(coefs, as_float32(sample), as_float32(model_output),
                                             self._block_noise(noise)))

    def multistep_dpm_solver_second_order_update(self, model_output_list: Sequence[Tensor], sample: Tensor,
                                                 noise: Optional[Tensor] = None) -> Tensor:
        """Second-order multistep step; ``model_output_list`` ends with the newest converted output."""
        coefs = self._current_knots(order=2)[0]
        m0, m1 = (as_float32(m) for m in (model_output_list[-1], model_output_list[-2]))
        first = first_order_update(coefs, as_float32(sample), m0, self._block_noise(noise))
        return self._cast(second_order_update(coefs, first, m0, m1))

    def multistep_dpm_solver_third_order_update(self, model_output_list: Sequence[Tensor], sample: Tensor,
                                                noise: Optional[Tensor] = None) -> Tensor:
        """Third-order multistep step; ``model_output_list`` ends with the newest converted output."""
        if self.config["algorithm_type"] == "sde-dpmsolver":
            raise ValueError("algorithm_type='sde-dpmsolver' has no third-order update")
        coefs = self._current_knots(order=3)[0]
        m0, m1, m2 = (as_float32(m) for m in (model_output_list[-1], model_output_list[-2], model_output_list[-3]))
        first = first_order_update(coefs, as_float32(sample), m0, self._block_noise(noise))
        return self._cast(third_order_update(coefs, first, m0, m1, m2))

    # -- noise -----------------------------------------------------------------------------------
    def _scales_of_sigmas(self, sigmas: np.ndarray):
        """(α, σ_t) of the schedule's own noise levels, so ``add_noise`` follows Karras/flow σ."""
        return schedules.sigma_to_alpha_sigma_t(sigmas, flow=self.config["use_flow_sigmas"])
