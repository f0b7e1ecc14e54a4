"""The scheduler Cell base and the small pure-MindSpore functions every step is built from.

Host/device boundary
--------------------
``__init__`` and ``set_timesteps`` run on the host and build every table in numpy float64
(see :mod:`.schedules`). The tables reach the device as non-trainable ``Parameter`` s: a
compiled graph reads a Parameter's current value on every call, whereas a plain Tensor
attribute would be frozen into the graph at its first compilation and go stale after the
next ``set_timesteps``.

``construct`` is the step itself, pure MindSpore: it takes Tensors (and Python constants
for options), looks coefficients up in the tables by timestep or step index, and compiles
in GRAPH_MODE or under ``ms.jit``. ``step`` is the public, diffusers-compatible entry: it
checks arguments, turns Python timesteps into Tensors, draws noise on the host from the
``generator`` when the step needs it, calls the Cell, and shapes the return value.
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from ..configuration import _CONFIG_CLASSES, ConfigMixin
from ..utils import GeneratorLike, check_compute_dtype, check_positive, randn
from . import schedules

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
#: diffusers' KarrasDiffusionSchedulers: the schedulers on a discrete β schedule that read each other's configs
KARRAS_COMPATIBLES = (
    "DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler", "EulerDiscreteScheduler",
    "HeunDiscreteScheduler", "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler",
    "DPMSolverSinglestepScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler",
    "DEISMultistepScheduler", "UniPCMultistepScheduler", "DPMSolverSDEScheduler", "EDMEulerScheduler",
)
TimestepLike = Union[int, float, Tensor, np.ndarray]


# ----------------------------------------------------------------------------- pure step math

def broadcast_to_sample(coef: Tensor, sample: Tensor) -> Tensor:
    """Reshape a scalar or per-sample ``(B,)`` coefficient so it broadcasts over a rank-2..5 sample."""
    if coef.ndim == 0:
        return coef
    return coef.reshape((-1,) + (1,) * (sample.ndim - 1))


def gather(table: Tensor, index: Tensor, sample: Tensor) -> Tensor:
    """``table[index]`` (index scalar or ``(B,)``), shaped to broadcast against ``sample``."""
    return broadcast_to_sample(ops.gather(table, index.astype(ms.int32), 0), sample)


def predict_x0_and_eps(prediction_type: str, model_output: Tensor, sample: Tensor, alpha: Tensor,
                       sigma: Tensor) -> Tuple[Tensor, Tensor]:
    """Both estimates of x_t = α·x0 + σ·ε from a model output (α = sqrt(ᾱ), σ = sqrt(1-ᾱ)).

    epsilon: x0 = (x_t - σ·ε̂)/α;  sample: ε = (x_t - α·x̂0)/σ;
    v_prediction (Salimans & Ho 2022, §4): x0 = α·x_t - σ·v̂, ε = α·v̂ + σ·x_t.
    """
    if prediction_type == "epsilon":
        return (sample - sigma * model_output) / alpha, model_output
    if prediction_type == "sample":
        return model_output, (sample - alpha * model_output) / sigma
    return alpha * sample - sigma * model_output, alpha * model_output + sigma * sample


def dynamic_threshold(x0: Tensor, ratio: float, max_value: float) -> Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, §2.3): per sample,
    s = clamp(quantile_ratio(|x0|), 1, max_value), then x0 ← clamp(x0, -s, s)/s.

    The quantile uses linear interpolation between order statistics (as ``torch.quantile``),
    computed in float32 with a sort because CPU has no Quantile kernel.
    """
    dtype = x0.dtype
    flat = ops.abs(x0.astype(ms.float32).reshape(x0.shape[0], -1))
    count = flat.shape[1]
    position = ratio * (count - 1)
    lower = int(np.floor(position))
    upper = min(lower + 1, count - 1)
    frac = position - lower
    ordered, _ = ops.sort(flat, axis=1)
    s = ordered[:, lower] + (ordered[:, upper] - ordered[:, lower]) * frac
    s = ops.clamp(s, 1.0, max_value)
    s = broadcast_to_sample(s, x0)
    x0 = x0.astype(ms.float32)
    return (ops.minimum(ops.maximum(x0, -s), s) / s).astype(dtype)


def clip_or_threshold(x0: Tensor, config) -> Tensor:
    """x̂0 as diffusers' DDIM/DDPM options ask: dynamic thresholding with ``thresholding``
    (``dynamic_thresholding_ratio``, ``sample_max_value``), else clipping to ±``clip_sample_range``
    with ``clip_sample``. ``config`` is read by key (a compiled graph reads a dict that way)."""
    if config["thresholding"]:
        return dynamic_threshold(x0, config["dynamic_thresholding_ratio"], config["sample_max_value"])
    if config["clip_sample"]:
        return ops.clamp(x0, -config["clip_sample_range"], config["clip_sample_range"])
    return x0


# ----------------------------------------------------------------------------- the Cell base

class LoopPlan(NamedTuple):
    """What a scheduler hands the sampling loop for one call, built on the host.

    ``timesteps``: the model's time conditioning for each of the K iterations (ints become an
    int32 Tensor, floats a float32 one); ``knobs``: one float32 scalar per iteration for the
    update (DDIM's η, Euler's churn γ, score-SDE's continuous time), zeros when unused;
    ``stochastic``: whether the update consumes noise, so the pipeline draws one slice per
    iteration (else one slice of zeros).
    """

    timesteps: np.ndarray
    knobs: np.ndarray
    stochastic: bool


class SchedulerBase(nn.Cell, ConfigMixin):
    """Base of every scheduler: a ``nn.Cell`` with a ``compute_dtype``, a diffusers config and
    device tables kept as non-trainable Parameters.

    Subclasses implement ``set_timesteps`` (host) and ``construct`` (the compiled step), and
    usually ``step`` on top of :meth:`_call_step`.
    """

    config_name = "scheduler_config.json"
    order = 1
    init_noise_sigma = 1.0

    def __init__(self, compute_dtype=ms.float32):
        super().__init__(auto_prefix=False)
        self.compute_dtype = check_compute_dtype(compute_dtype)
        self.num_inference_steps: Optional[int] = None
        self._begin_index: Optional[int] = None

    # -- tables ----------------------------------------------------------------------------
    def _set_table(self, name: str, values: np.ndarray, dtype=ms.float32) -> None:
        """Create or refresh the device table ``name`` from a host array (any length)."""
        tensor = Tensor(np.ascontiguousarray(values), dtype)
        existing = self._params.get(name)
        if existing is None:
            setattr(self, name, Parameter(tensor, name=name, requires_grad=False))
        else:
            existing.set_data(tensor, slice_shape=True)

    def _cast(self, x: Tensor) -> Tensor:
        """``x`` in ``compute_dtype``; no cast op when it already is (a static check, as in :func:`as_float32`)."""
        return x if x.dtype == self.compute_dtype else x.astype(self.compute_dtype)

    # -- host-side argument handling ---------------------------------------------------------
    #: before ``set_timesteps``, ``step`` walks the training schedule (as diffusers' DDPM, Euler and
    #: consistency-model schedulers do) instead of raising (as its DDIM and DPM-Solver do); such a
    #: class defines ``_install_training_schedule()``, which builds the device tables of the schedule
    #: its ``__init__`` set on the host and leaves ``num_inference_steps`` None, as in diffusers
    steps_on_training_schedule = False
    _training_schedule_installed = False

    def _check_ready(self) -> None:
        if self.num_inference_steps is not None:
            return
        if not self.steps_on_training_schedule:
            raise ValueError(f"{type(self).__name__}.step was called before set_timesteps; call "
                             "set_timesteps(num_inference_steps) first")
        if not self._training_schedule_installed:
            self._install_training_schedule()
            self._training_schedule_installed = True

    def _check_num_inference_steps(self, num_inference_steps, upper: Optional[int] = None) -> int:
        check_positive("num_inference_steps", num_inference_steps, integer=True)
        if upper is not None and num_inference_steps > upper:
            raise ValueError(
                f"num_inference_steps ({num_inference_steps}) cannot exceed num_train_timesteps ({upper}): the model "
                f"was trained on {upper} timesteps"
            )
        return int(num_inference_steps)

    def _check_tensors(self, model_output, sample, channel_multiple: Sequence[int] = (1,)) -> None:
        """Type, rank, dtype and shape checks shared by every ``step``.

        A scalar where ``sample`` belongs means a diffusers-order call
        ``step(model_output, timestep, sample)``; say so rather than fail inside the graph.
        """
        if not isinstance(sample, Tensor) or sample.ndim == 0:
            raise TypeError(
                f"{type(self).__name__}.step takes (model_output, sample, timestep, ...) in this order; "
                f"got {type(sample).__name__} where sample belongs. "
                "diffusers' order step(model_output, timestep, sample) "
                "must be written as step(model_output, sample, timestep) or with keywords"
            )
        if not isinstance(model_output, Tensor):
            raise TypeError(f"model_output must be a mindspore Tensor, got {type(model_output).__name__}")
        for name, tensor in (("model_output", model_output), ("sample", sample)):
            if tensor.dtype not in (ms.float32, ms.float16):
                raise TypeError(f"{name} must be float32 or float16, got {tensor.dtype}")
        if not 2 <= sample.ndim <= 5:
            raise ValueError(f"sample must have rank 2 to 5 (B, ...), got shape {tuple(sample.shape)}")
        ok_shapes = [tuple(sample.shape[:1]) + (sample.shape[1] * m,) + tuple(sample.shape[2:])
                     for m in channel_multiple]
        if tuple(model_output.shape) not in ok_shapes:
            raise ValueError(f"model_output shape {tuple(model_output.shape)} does not match sample shape "
                             f"{tuple(sample.shape)}")

    def _timestep_tensor(self, timestep: TimestepLike, batch: int, dtype=ms.int32) -> Tensor:
        """A 0-d or ``(B,)`` Tensor of timesteps from a Python number, numpy value or Tensor
        (a ``(B, 1)`` Tensor, as MindScience draws them, counts as ``(B,)``)."""
        if isinstance(timestep, bool):
            raise TypeError("timestep must be a number or a Tensor, got bool")
        if isinstance(timestep, (int, float, np.integer, np.floating)):
            return Tensor(timestep, dtype)
        if isinstance(timestep, np.ndarray):
            timestep = Tensor(timestep)
        # This runs inside compiled graphs (add_noise in the training step), and MindSpore's graph parser
        # cannot read an f-string that spans lines: the messages are joined with "+".
        if not isinstance(timestep, Tensor):
            raise TypeError("timestep must be a Python number, a 0-d Tensor or a (B,) Tensor, "
                            + f"got {type(timestep).__name__}")
        if timestep.ndim == 1 and timestep.shape[0] == 1 and batch != 1:
            timestep = timestep.reshape(())  # one timestep for the whole batch, as a scalar
        if timestep.ndim == 2 and timestep.shape[0] == batch and timestep.shape[1] == 1:
            timestep = timestep.reshape((batch,))  # MindScience's scripts draw per-sample timesteps as (B, 1)
        if timestep.ndim > 1 or (timestep.ndim == 1 and timestep.shape[0] != batch):
            raise ValueError(f"timestep must be a scalar, (1,), ({batch},) or ({batch}, 1) to match the batch, "
                             + f"got shape {tuple(timestep.shape)}")
        return timestep.astype(dtype)

    def _noise_like(self, sample: Tensor, generator: GeneratorLike, variance_noise: Optional[Tensor]) -> Tensor:
        """The noise for a stochastic step: ``variance_noise`` if given, else drawn on the host."""
        if variance_noise is not None:
            if generator is not None:
                raise ValueError("pass either generator or variance_noise, not both")
            if not isinstance(variance_noise, Tensor):
                raise TypeError(f"variance_noise must be a mindspore Tensor, got {type(variance_noise).__name__}")
            if tuple(variance_noise.shape) != tuple(sample.shape):
                raise ValueError(f"variance_noise shape {tuple(variance_noise.shape)} does not match sample shape "
                                 f"{tuple(sample.shape)}")
            return self._cast(variance_noise)
        return randn(sample.shape, generator, self.compute_dtype)

    def _zeros_like(self, sample: Tensor) -> Tensor:
        return ops.zeros(sample.shape, self.compute_dtype)

    @staticmethod
    def _pack(return_dict: Optional[bool], output_cls, *values):
        """``return_dict=None``: the first value; ``True``: the dataclass; ``False``: the tuple."""
        if return_dict is None:
            return values[0]
        if return_dict:
            return output_cls(*values)
        return tuple(values)

    # -- shared API --------------------------------------------------------------------------
    def add_noise(self, original_samples: Tensor, noise: Optional[Tensor], timesteps: TimestepLike) -> Tensor:
        """The forward process at ``timesteps`` (one per sample, or one for the batch): a·x0 + s·ε
        with the scheduler's noise scales ``_noise_scales`` (VP: sqrt(ᾱ_t), sqrt(1-ᾱ_t) of the
        training schedule; schedulers that walk a σ table by step index: that table's level, as
        diffusers' DPM-Solver, Euler and consistency schedulers do). ``noise=None`` draws ε on the host."""
        if noise is None:
            noise = randn(original_samples.shape, None, original_samples.dtype)
        scale, sigma = self._noise_scales(timesteps, original_samples)
        return scale * original_samples + sigma * noise

    def _noise_scales(self, timesteps, like: Tensor) -> Tuple[Tensor, Tensor]:
        """(data scale, noise scale) of the forward process at ``timesteps``, broadcast against ``like``."""
        raise TypeError(f"{type(self).__name__} defines no forward process (_noise_scales), so it has no add_noise")

    def scale_model_input(self, sample: Tensor, timestep: Optional[TimestepLike] = None) -> Tensor:
        """Identity: these schedulers feed the model the unscaled sample."""
        return sample

    def set_begin_index(self, begin_index: int = 0) -> None:
        """Start stepping at this index of ``timesteps`` (image-to-image starts mid-schedule)."""
        check_positive("begin_index", begin_index, integer=True, allow_zero=True)
        self._begin_index = int(begin_index)

    @property
    def begin_index(self) -> Optional[int]:
        return self._begin_index

    def __len__(self) -> int:
        return self.config.num_train_timesteps

    @property
    def compatibles(self) -> list:
        """The scheduler classes of this package that read this scheduler's config (diffusers' ``compatibles``)."""
        names = [type(self).__name__] + [name for name in self._compatibles if name != type(self).__name__]
        return [_CONFIG_CLASSES[name] for name in names if name in _CONFIG_CLASSES]

    # -- the scheduler's part of the sampling loop ---------------------------------------------
    # The pipelines' one loop (``SamplingLoop.construct``) calls these four methods and nothing
    # else of the scheduler, so a scheduler runs in every pipeline of its family by defining them.

    #: compile-time options of :meth:`loop_update` and their defaults (each set of values is its own graph)
    loop_constants: Dict[str, Any] = {}

    def loop_plan(self, num_inference_steps: Optional[int] = None, **options) -> LoopPlan:
        """Host side: set the schedule and return the per-iteration :class:`LoopPlan`.

        Default: one iteration per entry of ``timesteps`` after ``set_timesteps(num_inference_steps)``,
        the model conditioned on that entry, no knobs, no noise.
        """
        if options:
            raise TypeError(f"{type(self).__name__} takes no sampling options, got {sorted(options)}")
        self.set_timesteps(num_inference_steps)
        timesteps = np.asarray(self.timesteps)
        return LoopPlan(timesteps, np.zeros(len(timesteps), np.float32), False)

    def loop_state(self, sample: Tensor) -> tuple:
        """Device side: the state the loop carries between iterations (a fixed tuple of Tensors), empty by default."""
        return ()

    def loop_model_input(self, sample: Tensor, i: Tensor) -> Tensor:
        """Device side: what the model sees at iteration ``i``; the sample itself by default."""
        return sample

    def loop_update(self, model_output: Tensor, sample: Tensor, i: Tensor, timestep: Tensor, noise: Tensor,
                    knob: Tensor, state: tuple, constants: tuple):
        """Device side: one iteration's update, ``(next_sample, next_state)``.

        ``i`` is the iteration index, ``timestep`` the model's conditioning at it, ``noise`` this
        iteration's noise slice, ``knob`` its scalar from :meth:`loop_plan`, ``constants`` the
        values of :attr:`loop_constants`. Default: ``construct(model_output, sample, timestep)``
        is the whole update (its first output when it returns several).
        """
        prev = self.construct(model_output, sample, timestep)
        return (prev[0] if isinstance(prev, tuple) else prev), state

    def loop_output(self, sample: Tensor, state: tuple) -> Tensor:
        """Device side: what the result is made of after the last iteration; the sample by default."""
        return sample

    # Observation guidance (mindscience_diffuser.guidance) needs two more facts of a scheduler,
    # whatever its parametrisation: where the sample stands (x = a·x0 + s·ε) and the model's x̂0.

    def loop_noise_levels(self) -> np.ndarray:
        """Host side, after :meth:`loop_plan`: a (K + 1, 2) float64 array of (a_i, s_i) such
        that the sample entering iteration i is x_i = a_i·x0 + s_i·ε (row K: after the last)."""
        raise TypeError(f"{type(self).__name__} does not expose its noise levels; observation guidance "
                                  "drives VP schedulers (DDIM, DDPM, DPM-Solver, Euler) and consistency models")

    def loop_denoised(self, model_output: Tensor, sample: Tensor, i: Tensor, timestep: Tensor) -> Tensor:
        """Device side: the model's estimate x̂0 = E[x0 | x_i] (Tweedie) from its output at
        iteration i, in float32 and before any clipping or thresholding, so that it is affine
        in ``model_output`` (guidance converts a correction of x̂0 back into one of the output)."""
        raise TypeError(f"{type(self).__name__} does not expose its denoised estimate x0; observation "
                                  "guidance drives VP schedulers (DDIM, DDPM, DPM-Solver, Euler) and consistency "
                                  "models")


class VPSchedulerBase(SchedulerBase):
    """The discrete variance-preserving schedule x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε that DDIM,
    DDPM, DPM-Solver and Euler share: β, α = 1 - β and ᾱ from the config (diffusers' keys
    ``num_train_timesteps``, ``beta_start``, ``beta_end``, ``beta_schedule``, ``trained_betas``,
    ``rescale_betas_zero_snr``), the training noise levels σ_t = sqrt((1-ᾱ_t)/ᾱ_t), the noise
    scales that ``add_noise`` uses and the v-prediction target.

    The tables are float32 in torch's operation order, as diffusers holds them: near t = 0,
    1 - ᾱ_t/ᾱ_{t-1} loses ~3e-5 relative to cancellation in the reference, which a per-step
    tolerance of 1e-5 sees, so float64 tables would not reproduce its numbers.
    """

    _compatibles = KARRAS_COMPATIBLES
    #: the ``beta_schedule`` values the scheduler takes
    beta_schedules: Tuple[str, ...] = schedules.BETA_SCHEDULES
    #: under zero-terminal-SNR rescaling, pin ᾱ_T at 2^-24 instead of 0 (schedulers that divide by
    #: σ_T = sqrt((1-ᾱ_T)/ᾱ_T) there; diffusers does the same)
    pins_terminal_snr = False

    def _init_betas(self) -> None:
        """β, α, ᾱ and the device ᾱ table from the config; the training timesteps as the default schedule."""
        cfg = self.config
        T = cfg["num_train_timesteps"]
        self.betas, self.alphas_cumprod = schedules.vp_alphas_cumprod(
            cfg.get("beta_schedule", "linear"), T, cfg.get("beta_start", 0.0001), cfg.get("beta_end", 0.02),
            cfg.get("trained_betas"), cfg.get("rescale_betas_zero_snr", False), self.beta_schedules,
        )
        if cfg.get("rescale_betas_zero_snr", False) and self.pins_terminal_snr:
            self.alphas_cumprod[-1] = np.float32(2.0**-24)
        elif self.pins_terminal_snr and np.any(self.alphas_cumprod == 0):
            # These schedulers work on σ = sqrt((1-ᾱ)/ᾱ) from the start: an underflowed ᾱ is infinite noise.
            raise ValueError(self._underflow_message())
        self.alphas = np.float32(1.0) - self.betas
        self._set_table("alphas_cumprod_table", self.alphas_cumprod)
        self.timesteps = np.arange(T)[::-1].copy().astype(np.int64)
        self.custom_timesteps = False

    def _underflow_message(self) -> str:
        first = int(np.flatnonzero(self.alphas_cumprod == 0)[0])
        cfg = self.config
        return (
            f"alpha_cumprod underflows to 0 in float32 from training timestep {first} on with "
            f"beta_schedule={cfg.get('beta_schedule')!r}, beta_start={cfg.get('beta_start')}, "
            f"beta_end={cfg.get('beta_end')} and num_train_timesteps={cfg['num_train_timesteps']}: no signal is left "
            "there and the noise level sqrt((1-alpha_cumprod)/alpha_cumprod) is infinite; use smaller betas or "
            "fewer training timesteps (or a prediction type other than epsilon, with DDIM/DDPM)"
        )

    def train_sigmas(self) -> np.ndarray:
        """σ_t = sqrt((1-ᾱ_t)/ᾱ_t) for t = 0..T-1 (ascending), float32 as diffusers computes them."""
        return np.sqrt((np.float32(1.0) - self.alphas_cumprod) / self.alphas_cumprod)

    def _check_custom_timesteps(self, timesteps) -> np.ndarray:
        ts = np.asarray(timesteps)
        if ts.ndim != 1 or ts.size < 1 or not np.issubdtype(ts.dtype, np.integer):
            raise ValueError("timesteps must be a non-empty 1-D sequence of ints")
        if np.any(ts[1:] >= ts[:-1]):
            raise ValueError(f"custom timesteps must be strictly descending, got {ts.tolist()}")
        if ts[0] >= self.config.num_train_timesteps or ts[-1] < 0:
            raise ValueError(f"custom timesteps must lie in [0, {self.config.num_train_timesteps - 1}], got "
                             f"{ts.tolist()}")
        return ts.astype(np.int64)

    def _signal_noise(self, timestep: Tensor, sample: Tensor) -> Tuple[Tensor, Tensor]:
        """(sqrt(ᾱ_t), sqrt(1-ᾱ_t)) of the training schedule in float32, broadcast against ``sample``."""
        abar = gather(self.alphas_cumprod_table, timestep, sample)
        return ops.sqrt(abar), ops.sqrt(1.0 - abar)

    def _noise_scales(self, timesteps, like: Tensor) -> Tuple[Tensor, Tensor]:
        """(sqrt(ᾱ_t), sqrt(1-ᾱ_t)) at training timesteps: a host value is range-checked, a Tensor
        is looked up on the device (it may be a traced value inside a compiled train step)."""
        if not isinstance(timesteps, Tensor):
            host = np.asarray(timesteps)
            if host.size and (host.min() < 0 or host.max() >= len(self.alphas_cumprod)):
                raise ValueError(f"timesteps must lie in [0, {len(self.alphas_cumprod) - 1}], got {host.tolist()}")
        alpha, sigma = self._signal_noise(self._timestep_tensor(timesteps, like.shape[0]), like)
        return alpha.astype(like.dtype), sigma.astype(like.dtype)

    def get_velocity(self, sample: Tensor, noise: Tensor, timesteps: TimestepLike) -> Tensor:
        """The v-prediction target v = sqrt(ᾱ_t)·ε - sqrt(1-ᾱ_t)·x0 (Salimans & Ho 2022, eq. 9), training ᾱ."""
        alpha, sigma = VPSchedulerBase._noise_scales(self, timesteps, sample)
        return alpha * noise - sigma * sample


class TimestepTableSchedulerBase(VPSchedulerBase):
    """A VP scheduler whose step reads its per-timestep coefficients from one table (DDIM, DDPM).

    A subclass defines ``_step_coefficients(abar, abar_prev) -> {name: array over t}``: the
    per-timestep scalars of its update, computed on the host when the schedule is set (float32
    arithmetic in the reference's operation order), so that a step looks them all up with a
    single gather (``self._coefficients(t)``, ``self._column(coefs, name, sample)``).
    """

    def _install_schedule(self, timesteps: np.ndarray, previous: Optional[np.ndarray] = None) -> None:
        """Adopt descending inference ``timesteps`` and the table ``previous[t]`` (length T) of
        the timestep a step from t lands on (-1: the step ends at x0; by default each listed
        timestep steps to the next one in the list), then let the subclass tabulate its
        per-timestep coefficients."""
        if timesteps.max() >= self.config.num_train_timesteps:
            raise ValueError(
                f"steps_offset={self.config.get('steps_offset', 0)} with {len(timesteps)} "
                f"{self.config.get('timestep_spacing', '')} steps puts timestep "
                f"{int(timesteps.max())} past num_train_timesteps - 1 = {self.config.num_train_timesteps - 1}; use "
                "fewer steps or steps_offset=0"
            )
        if previous is None:
            previous = self._previous_in_list(timesteps)
        self.timesteps = timesteps.astype(np.int64)
        self.num_inference_steps = len(timesteps)
        self._previous_table_host = previous.astype(np.int64)
        abar = self.alphas_cumprod
        abar_prev = np.where(previous >= 0, abar[np.maximum(previous, 0)],
                             np.float32(self._final_alpha_cumprod())).astype(np.float32)
        if self.config.get("prediction_type", "epsilon") == "epsilon" and np.any(abar[timesteps] == 0):
            if not self.config.get("rescale_betas_zero_snr", False):
                raise ValueError(self._underflow_message())
            raise ValueError(
                "epsilon prediction cannot recover x0 where alpha_cumprod is 0 (rescale_betas_zero_snr with a "
                "schedule that reaches the last training timestep); use prediction_type='v_prediction' or 'sample', "
                "or timestep_spacing='leading'"
            )
        self._set_coefficients(self._step_coefficients(abar, abar_prev))

    def _final_alpha_cumprod(self) -> float:
        """ᾱ after the last step (a step past t = 0 ends on clean data)."""
        return 1.0

    def loop_noise_levels(self) -> np.ndarray:
        """(sqrt(ᾱ_t), sqrt(1 - ᾱ_t)) at each inference timestep, then after the last step."""
        abar = self.alphas_cumprod.astype(np.float64)
        timesteps = np.asarray(self.timesteps)
        previous = int(self._previous_table_host[timesteps[-1]])
        levels = np.append(abar[timesteps], abar[previous] if previous >= 0 else self._final_alpha_cumprod())
        return np.stack([np.sqrt(levels), np.sqrt(1.0 - levels)], axis=1)

    def loop_denoised(self, model_output, sample, i, timestep):
        coefs = self._coefficients(timestep)
        # A learned-variance model's extra channels are not part of the prediction.
        prediction = as_float32(model_output)[:, : sample.shape[1]]
        x0, _ = predict_x0_and_eps(self.config["prediction_type"], prediction, as_float32(sample),
                                   self._column(coefs, "alpha", sample), self._column(coefs, "sigma", sample))
        return x0

    def _set_coefficients(self, columns: Dict[str, np.ndarray]) -> None:
        """Store named per-timestep columns as one (T, K) device table: a step costs one gather."""
        self._coef_columns = {name: k for k, name in enumerate(columns)}
        with np.errstate(divide="ignore", invalid="ignore"):
            table = np.stack([np.asarray(v, np.float32) for v in columns.values()], axis=1)
        self._set_table("step_coefficients", table)

    def _coefficients(self, timestep: Tensor) -> Tensor:
        return ops.gather(self.step_coefficients, timestep.astype(ms.int32), 0)

    def _column(self, coefficients: Tensor, name: str, sample: Tensor) -> Tensor:
        return broadcast_to_sample(coefficients[..., self._coef_columns[name]], sample)

    def _previous_in_list(self, timesteps: np.ndarray) -> np.ndarray:
        """``previous`` table where each listed timestep steps to the next one in the list."""
        previous = np.arange(self.config.num_train_timesteps) - 1
        previous[timesteps] = np.append(timesteps[1:], -1)
        return previous

    def _check_host_timestep(self, timestep, in_schedule: bool) -> None:
        """Validate a Python/numpy timestep on the host (Tensors pass unchecked: they may be traced)."""
        if isinstance(timestep, Tensor) or isinstance(timestep, bool):
            return
        values = np.asarray(timestep).reshape(-1)
        allowed = self.timesteps if in_schedule else np.arange(self.config.num_train_timesteps)
        allowed_set = set(allowed.tolist())
        bad = [v for v in values.tolist() if v not in allowed_set]
        if bad:
            last = self.config.num_train_timesteps - 1
            where = "in the schedule set by set_timesteps" if in_schedule else f"in [0, {last}]"
            raise ValueError(f"timestep {bad[0]!r} is not {where}: "
                             f"{allowed.tolist()[:12]}{'...' if len(allowed) > 12 else ''}")

    def previous_timestep(self, timestep: TimestepLike):
        """The timestep a step from ``timestep`` lands on (-1 after the last step)."""
        self._check_ready()
        return int(self._previous_table_host[int(timestep)])


def _is_float_array(value) -> bool:
    if isinstance(value, Tensor):
        return value.dtype in (ms.float16, ms.float32, ms.float64, ms.bfloat16)
    return np.issubdtype(value.dtype, np.floating)


class StepIndexMixin:
    """Host bookkeeping for schedulers that walk their schedule by step index (DPM-Solver, Euler,
    consistency models).

    The step index lives on the host: the first ``step``/``scale_model_input`` finds it from the
    timestep (the *second* match when the timestep appears twice, so a schedule entered
    mid-way does not skip a σ) or takes ``begin_index``; each ``step`` then advances it by one.
    The compiled core takes the index as a Tensor, so the sampling loop carries it itself.

    A subclass sets ``self.timesteps`` and ``self.sigmas`` (host, the noise level at each
    step, one longer than ``timesteps``) in ``set_timesteps``, calls ``_reset_step_index``, and
    says how a noise level σ scales data and noise (:meth:`_scales_of_sigmas`).
    """

    #: integers are timesteps of this schedule (DPM-Solver); where they are not (Euler and consistency
    #: models take float timesteps), an integer is almost always a loop counter and is rejected
    integer_timesteps = False
    _step_index: Optional[int] = None

    @property
    def step_index(self) -> Optional[int]:
        """The index of the next step in ``timesteps`` (None until the first step); a host value, no device read."""
        return self._step_index

    def _reset_step_index(self) -> None:
        self._step_index = None
        self._begin_index = None

    def _host_timestep(self, timestep, batch: Optional[int] = None):
        """The timestep as a Python number: one value for the whole batch."""
        if isinstance(timestep, bool):
            raise TypeError("timestep must be a number or a Tensor, got bool")
        is_int = isinstance(timestep, (int, np.integer)) or (
            isinstance(timestep, (Tensor, np.ndarray)) and not _is_float_array(timestep)
        )
        if is_int and not self.integer_timesteps:
            raise ValueError(
                f"{type(self).__name__} takes timesteps as floats, one of scheduler.timesteps, got the integer "
                f"{timestep!r}: integer indices (e.g. from enumerate(timesteps)) are not timesteps. "
                "Pass the entry of scheduler.timesteps itself"
            )
        if isinstance(timestep, (int, float, np.integer, np.floating)):
            return timestep.item() if isinstance(timestep, np.generic) else timestep
        if not isinstance(timestep, (Tensor, np.ndarray)):
            raise TypeError(f"timestep must be a number or a Tensor, got {type(timestep).__name__}")
        values = (timestep.asnumpy() if isinstance(timestep, Tensor) else timestep).reshape(-1)
        if values.size < 1 or timestep.ndim > 1 or (batch is not None and timestep.ndim == 1 and values.size != batch):
            raise ValueError(f"timestep must be a scalar or a ({batch},) Tensor, got shape {tuple(timestep.shape)}")
        if np.any(values != values[0]):
            raise ValueError(f"{type(self).__name__} steps the whole batch at one timestep; got different per-sample "
                             f"timesteps {values.tolist()}")
        return values[0].item()

    def index_for_timestep(self, timestep, schedule_timesteps=None) -> int:
        """Position of ``timestep`` in the schedule: the second match if it occurs more than once."""
        schedule = np.asarray(self.timesteps if schedule_timesteps is None else schedule_timesteps,
                              np.float64).reshape(-1)
        value = self._host_timestep(timestep)
        matches = np.flatnonzero(schedule == value)
        if matches.size == 0:
            shown = ", ".join(f"{v:.6g}" for v in schedule[:12]) + (", ..." if schedule.size > 12 else "")
            raise ValueError(f"timestep {value!r} is not in the schedule set by set_timesteps: [{shown}]")
        return int(matches[1] if matches.size > 1 else matches[0])

    def _step_index_for(self, timestep, batch: Optional[int] = None) -> int:
        """The index this step uses: the running counter, started from ``timestep`` or ``begin_index``."""
        value = self._host_timestep(timestep, batch)
        if self._step_index is None:
            self._step_index = self._begin_index if self._begin_index is not None else self.index_for_timestep(value)
        else:
            self.index_for_timestep(value)  # a timestep from outside the schedule is a caller error
        if self._step_index >= len(self.timesteps):
            raise ValueError(f"all {len(self.timesteps)} steps of the schedule are done; call set_timesteps again to "
                             "sample anew")
        return self._step_index

    def _scales_of_sigmas(self, sigmas: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(data scale, noise scale) of noise levels σ: x = x0 + σ·ε for a variance-exploding sample."""
        return np.ones_like(sigmas), sigmas

    def loop_noise_levels(self) -> np.ndarray:
        """(data scale, noise scale) of every σ of the schedule (one more than the iterations)."""
        data, noise = self._scales_of_sigmas(np.asarray(self.sigmas, np.float64))
        return np.stack([np.asarray(data, np.float64), np.asarray(noise, np.float64)], axis=1)

    def _noise_scales(self, timesteps, like: Tensor) -> Tuple[Tensor, Tensor]:
        """The scales at each timestep's step index (``begin_index`` / the running index when
        set, as in image-to-image and inpainting); one timestep broadcasts over the batch."""
        self._check_ready()
        values = (timesteps.asnumpy() if isinstance(timesteps, Tensor) else np.asarray(timesteps)).reshape(-1)
        batch = like.shape[0]
        if values.size == 1:
            values = np.repeat(values, batch)
        if values.size != batch:
            raise ValueError(f"timesteps must be a scalar or have shape ({batch},), got {values.size} values")
        if self._begin_index is None:
            indices = [self.index_for_timestep(v.item()) for v in values]
        else:
            indices = [self._step_index if self._step_index is not None else self._begin_index] * batch
        alpha, sigma = self._scales_of_sigmas(np.asarray(self.sigmas, np.float64)[indices])
        return (broadcast_to_sample(Tensor(np.asarray(a, np.float32), like.dtype), like) for a in (alpha, sigma))


class ScaledInputMixin:
    """For step-index schedulers whose model sees a scaled sample (Euler: x/sqrt(σ²+1), consistency
    models: x/sqrt(σ²+σ_d²)): the subclass defines the pure ``scale_at(sample, step_index)``; this
    gives the sampling loop's model input and diffusers' ``scale_model_input`` from it."""

    def loop_model_input(self, sample: Tensor, i: Tensor) -> Tensor:
        return self.scale_at(sample, i)

    def scale_model_input(self, sample: Tensor, timestep=None) -> Tensor:
        """The model input at ``timestep`` (starts the step counter like ``step`` does)."""
        self._check_ready()
        if timestep is None:
            raise ValueError("scale_model_input needs the timestep (one of scheduler.timesteps)")
        index = self._step_index_for(timestep, sample.shape[0])
        return self.scale_at(sample, Tensor(index, ms.int32))


def as_float32(x: Tensor) -> Tensor:
    """``x`` in float32, without a cast op when it already is (the dtype check is static, so
    this also compiles; in PyNative every skipped cast saves an op launch)."""
    return x if x.dtype == ms.float32 else x.astype(ms.float32)
