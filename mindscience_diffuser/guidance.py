r"""Posterior sampling from observations inside the one compiled sampling loop.

An :class:`~mindscience_diffuser.observations.Observation` y = A(x) + σ_y·η turns the prior the
model learned into a posterior p(x | y). The methods here are small Cells the loop calls at the
two points the design gives them (docs/inverse_problems.md):

- after the model call, before the update: a correction of the model's x̂0 by the likelihood
  score (``corrects_denoised``: ΠGDM, MMPS) — converted back into a correction of the model
  output, so every scheduler's own update integrates the posterior score;
- after the update: a step on the sample (``steps_after_update``: DPS) or hard data consistency
  (``replaces``: ``replace`` / RePaint, consistency models' zero-shot editing).

Notation: the sample entering an iteration is x_t = a·x0 + s·ε (a, s from the scheduler's
``loop_noise_levels``: a = sqrt(ᾱ_t), s = sqrt(1−ᾱ_t) for DDIM/DDPM/DPM-Solver, a = 1, s = σ
for Euler and consistency models); x̂0(x_t) is the model's denoised estimate and
J = ∂x̂0/∂x_t its Jacobian; r = y − A(x̂0) the residual. Each differentiable method gives
weights u(r) in y's space (held constant), and the loop computes g = Jᵀ Aᵀ u, one
vector–Jacobian product through the denoiser (``ms.grad`` of Σ (Aᵀu)·x̂0 inside the compiled
loop). For a Gaussian likelihood with covariance Σ_y, u = Σ_y⁻¹ r and g = ∇_{x_t} log p(y | x_t).

Everything that depends only on the schedule (the levels, RePaint's jump schedule) is built on
the host by :func:`plan_observation`; the device side is pure MindSpore.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from .observations import BlockAverage, MaskOperator, Observation
from .utils import BatchGenerator, check_positive

#: columns of the per-iteration guidance table built on the host
LEVEL_COLUMNS = ("a", "s", "a_next", "s_next", "jump_keep", "jump_noise")


def _per_sample_sum(x: Tensor) -> Tensor:
    """Σ over every axis but the batch, kept broadcastable: shape (B, 1, ..., 1)."""
    return x.reshape((x.shape[0], -1)).sum(axis=1).reshape((x.shape[0],) + (1,) * (x.ndim - 1))


def conjugate_gradient(matvec, b: Tensor, iterations: int, return_residual: bool = False):
    """u ≈ M⁻¹ b for a symmetric positive definite M given as ``matvec``, by ``iterations`` steps
    of conjugate gradients (Hestenes & Stiefel 1952), independently per sample (inner products
    over the non-batch axes). A fixed count, unrolled: the compiled graph has no data-dependent
    trip count, and a few steps suffice for the well-conditioned σ_y² I + A C Aᵀ systems here.

    Safeguarded as truncated CG (Steihaug 1983): a sample whose search direction meets
    non-positive curvature dᵀMd ≤ 0 keeps its current iterate from then on. MMPS's M contains a
    learned denoiser's Jacobian, which need not be symmetric positive definite (with the shipped
    model, unguarded CG divided by such curvatures and returned NaN).

    ``return_residual``: also return the recursion's residual b − M u, which MMPS's safeguard
    reads (it costs no further product with M)."""
    u = ops.zeros_like(b)
    residual = b
    direction = b
    rr = _per_sample_sum(residual * residual)
    active = ops.ones_like(rr)
    for _ in range(iterations):
        m_direction = matvec(direction)
        curvature = _per_sample_sum(direction * m_direction)
        active = active * (curvature > 0).astype(rr.dtype)
        step = active * rr / ops.maximum(ops.abs(curvature), 1e-30)
        u = u + step * direction
        residual = residual - step * m_direction
        rr_next = _per_sample_sum(residual * residual)
        direction = residual + (rr_next / ops.maximum(rr, 1e-30)) * direction
        rr = rr_next
    if return_residual:
        return u, residual
    return u


def gram_scale(operator) -> Optional[float]:
    """c with A Aᵀ = c·I on A's range, where it is known in closed form (a mask: 1, a block
    average of factor f: 1/f²); None for a general operator (solved by conjugate gradients)."""
    if isinstance(operator, MaskOperator):
        return 1.0
    if isinstance(operator, BlockAverage):
        return 1.0 / operator.factor ** 2
    return None


class Guidance(nn.Cell):
    """Base of the observation-guidance methods: what a method needs of the observation, and
    its device-side pieces (all no-ops here).

    A subclass sets the class flags and overrides the pieces it uses. ``key()`` names the
    compile-time configuration (a loop is compiled once per key and observation operator).
    """

    #: the name ``guidance=`` takes
    name = ""
    #: needs a linear operator (adjoint, Gram solves)
    needs_linear = False
    #: hard data consistency: the observation must be noise-free
    needs_noise_free = False
    #: a Gaussian likelihood: σ_y must be > 0
    needs_noise = False
    #: the loop differentiates x̂0(x_t) through the denoiser for this method
    differentiable = False
    corrects_denoised = False
    steps_after_update = False
    replaces = False
    #: CG solves with vector–Jacobian products of the denoiser (MMPS)
    uses_jacobian = False
    #: the host schedule of RePaint jumps (Replace only)
    jump_length = 1
    resample_count = 1

    def __init__(self):
        super().__init__()
        self.operator = None
        self.noise_std = 0.0

    def options(self) -> dict:
        """The constructor arguments (compile-time constants of the loop)."""
        return {}

    def key(self) -> tuple:
        return (type(self).__name__,) + tuple(sorted(self.options().items()))

    def check(self, observation: Observation) -> None:
        """``ValueError`` / ``TypeError`` when this method cannot use ``observation``."""
        if self.needs_linear and not observation.is_linear:
            raise ValueError(f"guidance={self.name!r} needs a linear operator (MaskOperator, BlockAverage, "
                             f"MatrixOperator); got the nonlinear {type(observation.operator).__name__}: use "
                             "guidance='dps'")
        if self.needs_noise_free and observation.noise_std > 0:
            raise ValueError(f"guidance={self.name!r} is hard data consistency for noise-free observations; this one "
                             f"has noise_std={observation.noise_std:g}: use guidance='pigdm', 'mmps' or 'dps'")
        if self.needs_noise and observation.noise_std == 0:
            raise ValueError(f"guidance={self.name!r} uses a Gaussian likelihood with variance σ_y² + ..., which a "
                             "noise-free observation (noise_std=0) makes singular near the end of sampling: give "
                             "the measurement noise, or use guidance='replace' for a noise-free mask")

    def attach(self, observation: Observation) -> "Guidance":
        """Take the observation's operator and σ_y (constants of the compiled loop)."""
        self.check(observation)
        self.operator = observation.operator
        self.noise_std = float(observation.noise_std)
        return self

    # -- device pieces -------------------------------------------------------------------------
    def weights(self, residual: Tensor, a: Tensor, s: Tensor) -> Tensor:
        """u(r): the likelihood's weights of the residual, shaped like y (held constant)."""
        return residual

    def denoised_correction(self, gradient: Tensor, a: Tensor, s: Tensor) -> Tensor:
        """δx̂0 from the likelihood gradient g = Jᵀ Aᵀ u (for ``corrects_denoised``)."""
        return ops.zeros_like(gradient)

    def after_update(self, sample: Tensor, gradient: Tensor) -> Tensor:
        """The sample after the scheduler's update, moved along g (for ``steps_after_update``)."""
        return sample

    # -- shared linear algebra -----------------------------------------------------------------
    def solve_gram(self, v: Tensor, scale, shift: float, iterations: int) -> Tensor:
        """u = (scale·A Aᵀ + shift·I)⁻¹ v in A's output space; closed form where A Aᵀ = c·I, else CG."""
        c = gram_scale(self.operator)
        if c is not None:
            return v / (scale * c + shift)
        operator = self.operator

        def gram(w):
            return scale * operator(operator.adjoint(w)) + shift * w

        return conjugate_gradient(gram, v, iterations)

    def pseudo_inverse(self, v: Tensor, iterations: int = 20) -> Tensor:
        """A⁺ v = Aᵀ (A Aᵀ)⁻¹ v: the smallest change of x with A x = v."""
        return self.operator.adjoint(self.solve_gram(v, 1.0, 0.0, iterations))


class Replace(Guidance):
    r"""Hard data consistency for noise-free linear observations, with RePaint's resampling.

    After each update to the level (a', s'), the observed part of the sample is replaced by the
    observation noised to that level (Lugmayr et al. 2022, Algorithm 1, lines 5–8, where x_{t−1}
    = m ⊙ x^known_{t−1} + (1 − m) ⊙ x^unknown_{t−1}):

        x ← x + A⁺(a'·y + s'·A ε' − A x),    ε' ~ N(0, I),

    which for a mask is exactly RePaint's replacement and for a block average replaces each
    block's mean (the orthogonal projection onto A's row space; s'·A ε' has the covariance the
    forward process gives A x). Resampling (RePaint §4.2): every ``jump_length`` steps the sample
    jumps back up ``jump_length`` levels, x_u = (a_u/a_b)·x_b + sqrt(s_u² − (a_u/a_b)²·s_b²)·z
    (q(x_u | x_b) of the forward process, the composition of RePaint's one-step "up" moves),
    ``resample_count − 1`` times, on a host-side schedule the one loop runs.

    With a :class:`ConsistencyModelPipeline` this is zero-shot editing (Song et al. 2023,
    Algorithm 4): each denoising f_θ is followed by re-noising and by the replacement of the
    known part ((A y) ⊙ (1 − Ω) with Ω the unknown entries, A the identity for inpainting and a
    block-mean transform for super-resolution); replacing after re-noising with fresh noise is
    the same in distribution, as the noise is independent per entry.
    """

    name = "replace"
    needs_linear = True
    needs_noise_free = True
    replaces = True

    def __init__(self, jump_length: int = 1, resample_count: int = 1):
        super().__init__()
        self.jump_length = check_positive("jump_length", jump_length, integer=True)
        self.resample_count = check_positive("resample_count", resample_count, integer=True)

    def options(self) -> dict:
        return {"jump_length": self.jump_length, "resample_count": self.resample_count}

    def replace(self, sample: Tensor, values: Tensor, noise: Tensor, a_next: Tensor, s_next: Tensor) -> Tensor:
        target = a_next * values + s_next * self.operator(noise)
        return sample + self.pseudo_inverse(target - self.operator(sample))


class DPS(Guidance):
    r"""Diffusion posterior sampling (Chung et al. 2023, Algorithm 1): after the unconditional
    update, x_{i−1} ← x'_{i−1} − ζ_i ∇_{x_i} ‖y − A(x̂0(x_i))‖² with ζ_i = ζ/‖y − A(x̂0)‖
    (the step size normalised by the residual norm, §C.2). ζ_i·∇‖r‖² = 2ζ·∇‖r‖; this class
    takes the official implementation's form x ← x' − ``step_size``·∇_{x_i}‖r‖, per sample.

    The gradient goes through the denoiser (``ms.grad`` inside the compiled loop). Any
    differentiable operator (a :class:`CellOperator` too); σ_y enters only through ζ.
    """

    name = "dps"
    differentiable = True
    steps_after_update = True

    def __init__(self, step_size: float = 1.0):
        super().__init__()
        self.step_size = check_positive("step_size", step_size)

    def options(self) -> dict:
        return {"step_size": self.step_size}

    def weights(self, residual, a, s):
        # ∇‖r‖ = −Jᵀ Aᵀ r/‖r‖: the weights are the unit residual.
        return residual / ops.sqrt(ops.maximum(_per_sample_sum(residual * residual), 1e-30))

    def after_update(self, sample, gradient):
        # gradient = Jᵀ Aᵀ u = −∇‖r‖
        return sample + self.step_size * gradient.astype(sample.dtype)


class PiGDM(Guidance):
    r"""Pseudoinverse-guided diffusion (ΠGDM, Song et al. 2023, eq. 7–8) for linear-Gaussian
    observations: p(x0 | x_t) ≈ N(x̂0, r_t² I), so p(y | x_t) ≈ N(A x̂0, r_t² A Aᵀ + σ_y² I) and

        ∇_{x_t} log p(y | x_t) = Jᵀ Aᵀ (r_t² A Aᵀ + σ_y² I)⁻¹ (y − A x̂0),

    one vector–Jacobian product; the Gram system is solved in closed form for masks and block
    averages and by ``cg_iterations`` conjugate-gradient steps otherwise. The score correction
    enters through Tweedie's formula, x̂0(x_t, y) = x̂0 + (s²/a)·∇ log p(y | x_t).

    r_t² is the posterior variance of x0 given x_t under a white prior of standard deviation
    σ_d (``data_std``): r_t² = σ_d² σ_t² / (σ_d² + σ_t²) with σ_t = s/a. The paper's eq. 8,
    σ_t²/(1 + σ_t²), is the case σ_d = 1, which assumes data scaled to unit variance; for data
    of another scale (the shipped field model's fields have σ_d = 0.3) the unit value
    overstates r_t at the end of sampling, so the observations pull too weakly. What matters is
    that σ_d² A Aᵀ carry the prior variance of A x0: :func:`matched_data_std` estimates that σ_d
    from training fields (for block averages of a correlated field it is far above the pixel std).
    """

    name = "pigdm"
    needs_linear = True
    needs_noise = True
    differentiable = True
    corrects_denoised = True

    def __init__(self, cg_iterations: int = 10, data_std: float = 1.0):
        super().__init__()
        self.cg_iterations = check_positive("cg_iterations", cg_iterations, integer=True)
        self.data_std = check_positive("data_std", data_std)

    def options(self) -> dict:
        return {"cg_iterations": self.cg_iterations, "data_std": self.data_std}

    def weights(self, residual, a, s):
        ve_sigma_sq = (s / a) ** 2
        data_var = self.data_std ** 2
        r_sq = data_var * ve_sigma_sq / (data_var + ve_sigma_sq)
        return self.solve_gram(residual, r_sq, self.noise_std ** 2, self.cg_iterations)

    def denoised_correction(self, gradient, a, s):
        return (s * s / a) * gradient


def matched_data_std(operator, fields=None, covariance=None, sample_shape=None) -> float:
    r"""ΠGDM's ``data_std`` matched to what ``operator`` observes:

        σ_d² = mean_i Var[(A x0)_i] / (A Aᵀ)_ii   over the observed rows i,

    so that σ_d² A Aᵀ has the prior variance of A x0 on its diagonal. Var[A x0] comes either from
    ``fields`` (N, ...), N ≥ 2 draws of x0 in the model's units (training fields), or from the
    prior's dense ``covariance`` (n, n) with ``sample_shape`` (exactly: diag(A Σ Aᵀ)). For point
    sensors σ_d is the pixel standard deviation; for block averages of a correlated field, the
    larger one of its smooth part (docs/inverse_problems.md measures why the pixel value there
    makes ΠGDM diverge). ``operator``: a linear one with ``as_matrix``.

    >>> import numpy as np
    >>> from mindscience_diffuser.observations import MaskOperator
    >>> mask = np.zeros((1, 4, 4), np.float32); mask[0, 0, 0] = 1
    >>> fields = 0.3 * np.random.default_rng(0).standard_normal((20000, 1, 4, 4))
    >>> round(matched_data_std(MaskOperator(mask), fields), 2)
    0.3
    """
    if (fields is None) == (covariance is None):
        raise ValueError("give exactly one of fields (prior draws) and covariance (with sample_shape)")
    if not callable(getattr(operator, "as_matrix", None)):
        raise TypeError(f"operator must be a linear operator with as_matrix (MaskOperator, BlockAverage, "
                        f"MatrixOperator), got {type(operator).__name__}")
    if fields is not None:
        fields = np.asarray(fields, np.float64)
        if fields.ndim < 2 or fields.shape[0] < 2 or not np.isfinite(fields).all():
            raise ValueError(f"fields must be finite (N, ...) prior draws with N >= 2, got shape {fields.shape}")
        sample_shape = fields.shape[1:]
    matrix = operator.as_matrix(sample_shape)
    matrix = matrix[np.any(matrix != 0, axis=1)]
    if fields is not None:
        observed_variance = (fields.reshape(fields.shape[0], -1) @ matrix.T).var(axis=0, ddof=1)
    else:
        covariance = np.asarray(covariance, np.float64)
        if covariance.shape != (matrix.shape[1],) * 2:
            raise ValueError(f"covariance must be ({matrix.shape[1]}, {matrix.shape[1]}) for sample_shape "
                             f"{tuple(sample_shape)}, got {covariance.shape}")
        observed_variance = np.einsum("ij,jk,ik->i", matrix, covariance, matrix)
    return float(np.sqrt(np.mean(observed_variance / np.einsum("ij,ij->i", matrix, matrix))))


class MMPS(PiGDM):
    r"""Moment-matching posterior sampling (Rozet et al. 2024, eq. 9–11; the covariance of
    score-based data assimilation, Rozet & Louppe 2023, made exact by Tweedie's second moment):
    Cov[x0 | x_t] = (s²/a)·J with J = ∂x̂0/∂x_t, so

        ∇_{x_t} log p(y | x_t) ≈ Jᵀ Aᵀ (σ_y² I + (s²/a) A J Aᵀ)⁻¹ (y − A x̂0),

    the system solved by ``cg_iterations`` conjugate-gradient steps whose matrix–vector products
    are vector–Jacobian products through the denoiser (J is symmetric for a denoiser that is a
    gradient, as the exact one is). For a Gaussian prior and a linear A this is the exact
    likelihood score, so with the exact denoiser the sampler draws the exact posterior up to its
    discretisation. Cost: ``cg_iterations`` + 1 backward passes per step.

    ``safeguard`` (default on) holds each sample's correction to what an exact one can do.
    With a positive semi-definite covariance C the correction of x̂0 moves the prediction by
    A δx̂0 = A C Aᵀ (σ_y² I + A C Aᵀ)⁻¹ r: every eigencomponent of the residual shrinks by
    λ/(λ + σ_y²) ∈ [0, 1), so the move points toward the data and is never longer than r. A
    learned denoiser's Jacobian breaks this where it is poorly determined, at high noise (there
    (s²/a)·J is the difference of two large terms the network only approximates). With the
    shipped field model and 5% sensors, CG met non-positive curvature at once for the first
    steps (no guidance at all), then at the first positive but tiny curvature moved one sample
    78 times its residual, which the later steps never recovered from (docs/inverse_problems.md).
    So, per sample:

    - where CG's own solution would not move the prediction toward the data (⟨A δx̂0, r⟩ ≤ 0,
      read from the CG state at no extra cost; this includes a breakdown at its first step),
      ΠGDM's weights with ``data_std`` are used instead (a positive definite white covariance);
    - the correction actually applied (after the one backward pass) is scaled back to a move
      of length |r| where it is longer, and dropped where it moves away from the data.

    With the exact denoiser neither is expected to act (the tests check that its samples are
    still the exact posterior's); ``safeguard=False`` is the plain method.
    """

    name = "mmps"
    uses_jacobian = True

    def __init__(self, cg_iterations: int = 5, safeguard: bool = True, data_std: float = 1.0):
        super().__init__(cg_iterations, data_std)
        if not isinstance(safeguard, (bool, np.bool_)):
            raise TypeError(f"safeguard must be True or False, got {type(safeguard).__name__} {safeguard!r}")
        self.safeguard = bool(safeguard)

    def options(self) -> dict:
        if not self.safeguard:  # data_std only enters through the safeguard's fallback
            return {"cg_iterations": self.cg_iterations, "safeguard": False}
        return {"cg_iterations": self.cg_iterations, "safeguard": True, "data_std": self.data_std}

    def safeguarded_weights(self, u: Tensor, cg_residual: Tensor, residual: Tensor, a: Tensor, s: Tensor) -> Tensor:
        """The weights to apply, from CG's solution ``u`` of M u = r (``residual``) and its
        recursion residual r − M u (``cg_residual``): CG's predicted move (s²/a) A J Aᵀ u is
        r − σ_y² u − (r − M u), so it is checked without another pass through the denoiser."""
        if not self.safeguard:
            return u
        move = residual - (self.noise_std ** 2) * u - cg_residual
        return ops.where(_per_sample_sum(move * residual) > 0, u, super().weights(residual, a, s))

    def safeguarded_gradient(self, gradient: Tensor, residual: Tensor, a: Tensor, s: Tensor) -> Tensor:
        """``gradient`` (g = Jᵀ Aᵀ u) scaled so that its correction's move A (s²/a) g is at most
        as long as r, and zero where that move points away from the data."""
        if not self.safeguard:
            return gradient
        move = self.operator(self.denoised_correction(gradient, a, s))
        length_sq, residual_sq = _per_sample_sum(move * move), _per_sample_sum(residual * residual)
        shrink = ops.sqrt(residual_sq / ops.maximum(ops.maximum(length_sq, residual_sq), 1e-30))
        factor = ops.where(_per_sample_sum(move * residual) > 0, shrink, ops.zeros_like(shrink))
        # y's rank can differ from the sample's (a dense operator's y is (B, m))
        return gradient * factor.reshape((gradient.shape[0],) + (1,) * (gradient.ndim - 1))


#: ``guidance=`` names
METHODS = {cls.name: cls for cls in (Replace, DPS, PiGDM, MMPS)}


def resolve_guidance(guidance, observation) -> Guidance:
    """``guidance`` (a name of :data:`METHODS` or a configured :class:`Guidance`) checked against
    ``observation`` and attached to it: a fresh Cell, so a configured object can be reused."""
    if not isinstance(observation, Observation):
        raise TypeError(f"observation must be an Observation (mindscience_diffuser.observations), got "
                        f"{type(observation).__name__}")
    if guidance is None:
        raise ValueError(f"an observation needs guidance=, one of {sorted(METHODS)} or a configured method such as "
                         "DPS(step_size=0.5)")
    if isinstance(guidance, str):
        if guidance not in METHODS:
            raise ValueError(f"unknown guidance method {guidance!r}; known: {sorted(METHODS)}")
        method = METHODS[guidance]()
    elif isinstance(guidance, Guidance):
        method = type(guidance)(**guidance.options())
    else:
        raise TypeError(f"guidance must be a method name ({sorted(METHODS)}) or a Guidance object, got "
                        f"{type(guidance).__name__}")
    return method.attach(observation)


# ----------------------------------------------------------------------------- host plan

def repaint_schedule(num_iterations: int, jump_length: int, resample_count: int) -> Tuple[np.ndarray, np.ndarray]:
    """RePaint's schedule (Lugmayr et al. 2022, §4.2 and their ``get_schedule_jump``) over the
    scheduler's K iterations: ``(steps, jumps)``, one entry per loop iteration: the scheduler
    step it runs, and the level it jumps back to after it (−1: none). Every ``jump_length``
    levels the sample goes back up ``jump_length`` levels, ``resample_count − 1`` times.

    >>> steps, jumps = repaint_schedule(4, 2, 2)
    >>> steps.tolist(), jumps.tolist()
    ([0, 1, 0, 1, 2, 3], [-1, 0, -1, -1, -1, -1])
    """
    remaining = {level: resample_count - 1 for level in range(jump_length, num_iterations, jump_length)}
    steps, jumps = [], []
    position = 0
    while position < num_iterations:
        steps.append(position)
        landed = position + 1
        if remaining.get(landed, 0) > 0:
            remaining[landed] -= 1
            jumps.append(landed - jump_length)
            position = landed - jump_length
        else:
            jumps.append(-1)
            position = landed
    return np.asarray(steps, np.int32), np.asarray(jumps, np.int32)


class ObservedPlan(NamedTuple):
    """What :func:`plan_observation` gives the loop: per-iteration ``timesteps``/``knobs``
    (RePaint's schedule repeats steps), the scheduler ``steps`` they run, the guidance ``table``
    (:data:`LEVEL_COLUMNS`) and whether the guidance draws noise (replacement, jumps)."""

    timesteps: np.ndarray
    knobs: np.ndarray
    steps: np.ndarray
    table: np.ndarray
    draws_noise: bool


def plan_observation(guide: Guidance, scheduler, timesteps, knobs, stateful: bool) -> ObservedPlan:
    """The host side of a guided run: levels per iteration, RePaint's jumps and their noise scales."""
    levels = np.asarray(scheduler.loop_noise_levels(), np.float64)
    count = len(timesteps)
    if levels.shape != (count + 1, 2):
        raise ValueError(f"{type(scheduler).__name__}.loop_noise_levels gave shape {levels.shape}, expected "
                         f"({count + 1}, 2)")
    resampling = guide.resample_count > 1 and guide.jump_length < count
    if resampling and stateful:
        raise ValueError(f"RePaint resampling (resample_count={guide.resample_count}) jumps back up the schedule, "
                         f"which {type(scheduler).__name__}'s multistep history cannot follow; use a one-step "
                         "scheduler (DDIM, DDPM, Euler) or resample_count=1")
    if resampling:
        steps, jumps = repaint_schedule(count, guide.jump_length, guide.resample_count)
    else:
        steps, jumps = np.arange(count, dtype=np.int32), np.full(count, -1, np.int32)
    a, s = levels[steps, 0], levels[steps, 1]
    a_next, s_next = levels[steps + 1, 0], levels[steps + 1, 1]
    keep, renoise = np.ones(len(steps)), np.zeros(len(steps))
    jumped = jumps >= 0
    a_up, s_up = levels[jumps[jumped], 0], levels[jumps[jumped], 1]
    keep[jumped] = a_up / a_next[jumped]
    renoise[jumped] = np.sqrt(np.maximum(s_up ** 2 - keep[jumped] ** 2 * s_next[jumped] ** 2, 0.0))
    table = np.stack([a, s, a_next, s_next, keep, renoise], axis=1).astype(np.float32)
    timesteps = np.asarray(timesteps)[steps]
    return ObservedPlan(timesteps, np.asarray(knobs, np.float32)[steps], steps, table,
                        guide.replaces or bool(jumped.any()))


def guide_inputs(plan: ObservedPlan, observation: Observation, shape, dtype, rng: BatchGenerator) -> tuple:
    """The loop's extra inputs: (values y, table, noise (K, 2, *shape) for replacement and jumps,
    the step map), the noise drawn from ``rng`` after the sampler's own (sample i's from its own
    generator when the call gave one per sample)."""
    if plan.draws_noise:
        noise = rng.standard_normal((len(plan.steps), 2) + tuple(shape), batch_axis=2).astype(np.float32)
    else:
        noise = np.zeros((1, 2) + tuple(shape), np.float32)
    return (Tensor(observation.values_array, ms.float32), Tensor(plan.table), Tensor(noise, dtype),
            Tensor(plan.steps.astype(np.int32)))


def check_observation(observation: Observation, shape) -> None:
    """The observation against the batch to sample (shape (B, ...)), before any compute."""
    observation.check(tuple(shape[1:]), shape[0])


__all__ = ["Guidance", "Replace", "DPS", "PiGDM", "MMPS", "METHODS", "matched_data_std", "resolve_guidance",
           "conjugate_gradient", "repaint_schedule", "plan_observation"]
