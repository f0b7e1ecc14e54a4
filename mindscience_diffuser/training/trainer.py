"""``DiffusionTrainer``: denoising-score-matching training of a UNet against a VP scheduler.

One optimizer step is a single compiled graph (``ms.value_and_grad`` under ``ms.jit``): noising
x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε with the scheduler's own ``add_noise``, the model call, the
weighted loss, the gradient (all-reduced across data-parallel ranks), optional global-norm clipping,
Adam and the EMA update. Noise and timesteps are drawn on the host from a generator keyed by
(seed, rank, step), and the batch order is a (seed, epoch, position) triple, so a checkpoint pins
down the rest of the run exactly: resuming reproduces the uninterrupted run's weights.

Conditional models (a vector, field or label condition, see :mod:`..models.conditioning`) train on
paired data: each batch's conditions reach the model through
:func:`~mindscience_diffuser.models.conditioning.call_denoiser`, the call the sampling loop makes
too. ``condition_dropout`` p replaces each sample's condition by the null condition with
probability p (drawn from a generator keyed by (seed, rank, step), so resuming stays exact): the
model then learns the unconditional score as well, which classifier-free guidance (Ho & Salimans
2022) extrapolates away from: ε̃ = ε(x, ∅) + s·(ε(x, c) − ε(x, ∅)).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from ..configuration import write_json_atomically
from ..io_utils import atomic_folder
from ..models.conditioning import (
    ConditionSpec,
    call_denoiser,
    condition_spec,
    null_condition_for,
    prepare_class_labels,
    prepare_condition,
)
from ..models.weights import WEIGHTS_NAME, check_state_arrays, load_model_weights, read_weights, state_arrays
from ..normalization import DataNormalization, describe, far_from_unit_range
from ..utils import ArgumentTypeError, check_choice, check_positive
from .datasets import BatchOrder, FieldDataset, as_dataset

LOSSES = ("mse", "l1")
WEIGHTINGS = (None, "p2", "min_snr")
LR_SCHEDULES = ("constant", "linear", "cosine")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
NORMALIZE_CHOICES = ("auto", True, False)
CHECKPOINT_PREFIX = "checkpoint-"
STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
EMA_DIR = "unet_ema"


class _StopRequests(list):
    """The stop signals received so far (signal numbers), in order.

    MindSpore's runtime installs its own SIGINT handler while it runs a compiled graph, and that
    handler sends the process a SIGTERM (``mindspore::DefaultIntHandler``); it also leaves that
    handler in place afterwards. So :meth:`reclaim` puts this handler back after every step, and
    a SIGTERM that arrives while a step is in flight (``in_step``) is taken for that converted
    Ctrl-C: the two cannot be told apart from Python, and both stop the run the same way."""

    def __init__(self, installed: bool):
        super().__init__()
        self.installed = installed
        self.in_step = False

    def handle(self, signum, frame) -> None:
        if signum == signal.SIGTERM and self.in_step:
            signum = signal.SIGINT
        self.append(signum)

    def reclaim(self) -> None:
        if self.installed:
            for signum in _STOP_SIGNALS:
                signal.signal(signum, self.handle)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stop_requests():
    """While training, SIGINT (Ctrl-C) and SIGTERM only *request* a stop: the list it yields
    receives the signal number, and the loop ends after the step in flight. A signal arriving in
    the middle of a compiled step would otherwise end the process there (MindSpore's runtime
    replaces Python's SIGINT handling), with no checkpoint of the steps since the last one.
    Outside the main thread signals cannot be caught, and nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield _StopRequests(installed=False)
        return
    received = _StopRequests(installed=True)
    previous = {signum: signal.signal(signum, received.handle) for signum in _STOP_SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            if handler is None:  # installed outside Python: fall back to Python's own default
                handler = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, handler)


def learning_rate_at(step: int, peak: float, warmup_steps: int = 0, schedule: str = "constant",
                     num_training_steps: Optional[int] = None, decay_steps: Optional[int] = None) -> float:
    r"""The learning rate of optimizer step ``step`` (0-based): warm-up, hold, decay.

    Linear warm-up to ``peak`` over ``warmup_steps``, then ``peak`` until the last
    ``decay_steps`` of ``num_training_steps``, which decay to 0 as
    ``"linear"``: peak·(1 − u) or ``"cosine"``: peak·(1 + cos πu)/2, with u ∈ [0, 1) the
    fraction of the decay done. ``decay_steps=None`` decays over every step after the warm-up
    (diffusers' ``get_scheduler("linear"/"cosine")``); a short final decay after a long constant
    phase is the warmup-stable-decay schedule (Hu et al. 2024, MiniCPM, §4), which lets a run be
    extended without restarting its decay.
    """
    if warmup_steps and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    if decay_steps is None:
        decay_steps = num_training_steps - warmup_steps
    decay_begins = num_training_steps - decay_steps
    if step < decay_begins:
        return peak
    done = min((step - decay_begins) / decay_steps, 1.0)
    return peak * (1.0 - done) if schedule == "linear" else peak * 0.5 * (1.0 + np.cos(np.pi * done))


def snr_weights(alphas_cumprod: np.ndarray, prediction_type: str, weighting: Optional[str],
                min_snr_gamma: float = 5.0, p2_gamma: float = 1.0, p2_k: float = 1.0) -> np.ndarray:
    r"""Per-timestep loss weight w(t) from SNR(t) = ᾱ_t / (1 - ᾱ_t).

    - ``None``: w = 1.
    - ``"min_snr"`` (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting",
      eq. 8): the x0-space weight min(SNR, γ) expressed for the trained target: ε-loss
      min(SNR, γ)/SNR, v-loss min(SNR, γ)/(SNR + 1), x0-loss min(SNR, γ).
    - ``"p2"`` (Choi et al. 2022, "Perception Prioritized Training of Diffusion Models", eq. 8):
      w = 1 / (k + SNR)^γ, which down-weights the nearly clean (high-SNR) steps.

    At SNR = 0 (a zero-terminal-SNR schedule) the ε weight takes its limit 1.
    """
    abar = np.asarray(alphas_cumprod, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = abar / (1.0 - abar)
    snr = np.where(np.isfinite(snr), snr, 1e12)
    if weighting is None:
        w = np.ones_like(snr)
    elif weighting == "min_snr":
        clipped = np.minimum(snr, min_snr_gamma)
        if prediction_type == "epsilon":
            w = np.where(snr > 0, clipped / np.maximum(snr, 1e-30), 1.0)
        elif prediction_type == "v_prediction":
            w = clipped / (snr + 1.0)
        else:
            w = clipped
    else:
        w = 1.0 / np.power(p2_k + snr, p2_gamma)
    return w.astype(np.float32)


class DiffusionLoss(nn.Cell):
    """mean_b w(t_b) · mean(ℓ(model(x_t, t[, c]) - target)) with ℓ = square or |·|; the target
    follows the scheduler's ``prediction_type`` (ε, x0, or v = sqrt(ᾱ)ε - sqrt(1-ᾱ)x0).

    ``condition`` / ``class_labels`` (Tensors or None) reach the model through
    :func:`call_denoiser`; ``field_condition`` (from the model's :class:`ConditionSpec`) says a
    condition is a field concatenated to x_t's channels."""

    def __init__(self, model: nn.Cell, scheduler, loss: str, weights: np.ndarray, field_condition: bool = False):
        super().__init__()
        self.model = model
        self.scheduler = scheduler
        self.prediction_type = scheduler.config.prediction_type
        self.use_l1 = loss == "l1"
        self.field_condition = bool(field_condition)
        self.weights = Parameter(Tensor(weights, ms.float32), name="loss_weights", requires_grad=False)

    def construct(self, x0: Tensor, noise: Tensor, timesteps: Tensor, condition: Optional[Tensor] = None,
                  class_labels: Optional[Tensor] = None) -> Tensor:
        noisy = self.scheduler.add_noise(x0, noise, timesteps)
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "sample":
            target = x0
        else:
            target = self.scheduler.get_velocity(x0, noise, timesteps)
        output = call_denoiser(self.model, self.field_condition, noisy, timesteps, condition, class_labels)
        error = output.astype(ms.float32) - target.astype(ms.float32)
        error = ops.abs(error) if self.use_l1 else error * error
        per_sample = error.reshape(error.shape[0], -1).mean(axis=1)
        return (ops.gather(self.weights, timesteps, 0) * per_sample).mean()


class _TrainStep(nn.Cell):
    """loss, grads → (all-reduce) → (clip) → Adam → EMA, as one graph."""

    def __init__(self, loss_net: DiffusionLoss, optimizer: nn.Optimizer, ema: Optional[ms.ParameterTuple],
                 max_grad_norm: Optional[float], reducer: Optional[nn.Cell]):
        super().__init__()
        self.optimizer = optimizer
        self.params = optimizer.parameters
        self.grad_fn = ms.value_and_grad(loss_net, None, self.params)
        self.ema = ema
        self.has_ema = ema is not None
        self.clip = max_grad_norm is not None
        self.max_grad_norm = float(max_grad_norm) if max_grad_norm is not None else 0.0
        self.reducer = reducer
        self.has_reducer = reducer is not None

    def construct(self, x0, noise, timesteps, ema_decay, condition=None, class_labels=None):
        loss, grads = self.grad_fn(x0, noise, timesteps, condition, class_labels)
        if self.has_reducer:
            grads = self.reducer(grads)
        if self.clip:
            grads = ops.clip_by_global_norm(grads, self.max_grad_norm)
        loss = ops.depend(loss, self.optimizer(grads))
        if self.has_ema:
            for ema_param, param in zip(self.ema, self.params):
                ops.assign(ema_param, ema_decay * ema_param + (1.0 - ema_decay) * param)
        return loss


def latest_checkpoint(output_dir: Union[str, os.PathLike]) -> Optional[Path]:
    """The complete ``checkpoint-<step>`` directory with the highest step in ``output_dir``, or None."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return None
    found = []
    for path in directory.iterdir():
        suffix = path.name[len(CHECKPOINT_PREFIX):]
        if path.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit() and (path / STATE_NAME).is_file():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


def _rank_and_size() -> Tuple[int, int]:
    from mindspore.communication import get_group_size, get_rank, init
    from mindspore.communication.management import GlobalComm

    # get_rank() answers 0 before init() instead of failing, and collectives then crash the
    # process, so initialise explicitly unless the caller already did.
    if not GlobalComm.INITED:
        init()
    return get_rank(), get_group_size()


#: Options that say where this run writes and how it runs, not what it trains: they are not
#: part of a checkpoint's ``hparams``.
RUN_OPTIONS = ("output_dir", "checkpoint_every", "keep_checkpoints", "data_parallel")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """The options of :class:`DiffusionTrainer`, validated once and frozen (``trainer.config``).

    Every field is checked in ``__post_init__``: ``TypeError`` for a wrong type (also a
    ``ValueError``, see :class:`~mindscience_diffuser.utils.ArgumentTypeError`), ``ValueError``
    for a value out of range, each naming the field and what it allows. Numbers are stored as
    Python ``float`` / ``int`` and ``output_dir`` as a ``Path``, so the checkpointed
    :meth:`hparams` are plain JSON. ``dataclasses.replace(config, seed=1)`` validates again.

    Args:
        learning_rate: Adam's peak learning rate (> 0), reached linearly over ``warmup_steps``.
        batch_size: fields per optimizer step (per rank when data-parallel); an int >= 1.
        loss: ``"mse"`` or ``"l1"``.
        weighting: per-timestep loss weight: ``None``, ``"min_snr"`` (γ = ``min_snr_gamma``) or
            ``"p2"`` (γ = ``p2_gamma``, k = ``p2_k``); see :func:`snr_weights`.
        min_snr_gamma: γ of ``"min_snr"`` (> 0).
        p2_gamma: γ of ``"p2"`` (>= 0).
        p2_k: k of ``"p2"`` (> 0).
        ema_decay: EMA decay of the weights, in [0, 1) (``None``: no EMA); the effective decay at
            step n is min(ema_decay, (1 + n) / (10 + n)), so early averages are not dominated by the init.
        weight_decay: Adam L2 weight decay (>= 0).
        max_grad_norm: global-norm gradient clipping threshold (> 0; ``None``: off).
        warmup_steps: steps of linear learning-rate warm-up (an int >= 0).
        lr_schedule: ``"constant"``, or ``"linear"`` / ``"cosine"`` decay to 0 at
            ``num_training_steps`` over its last ``lr_decay_steps``; see :func:`learning_rate_at`.
            A decaying schedule needs ``num_training_steps``, and :meth:`DiffusionTrainer.train`
            then refuses to run past it.
        num_training_steps: where a decaying learning rate reaches 0 (an int >= 1, or ``None``).
        lr_decay_steps: decay over only this many final steps (an int >= 1 that fits after the
            warm-up; ``None``: every step after the warm-up); only with a decaying ``lr_schedule``.
        seed: fixes the batch order and every noise/timestep draw (an int >= 0).
        output_dir: a path (str or ``os.PathLike``) where ``checkpoint-<step>`` directories go (``None``: no
            checkpoints); must not be an existing file (``OSError``).
        checkpoint_every: save every this many steps (an int >= 1; ``None``: only when
            :meth:`DiffusionTrainer.train` returns, which always saves).
        keep_checkpoints: how many recent checkpoints to keep (an int >= 1; older ones are deleted).
        data_parallel: ``True`` all-reduces gradients across the ranks of a ``msrun`` launch (see docs/training.md).
        normalize: train on per-channel standardised data, (x − mean) / std, and store mean and
            std with the model so that sampling returns the data's units: ``True`` always;
            ``"auto"`` (default) only when the data are far from [-1, 1] (see
            :func:`~mindscience_diffuser.normalization.far_from_unit_range`), so data already
            scaled for diffusion (images in [-1, 1], the synthetic fields) train as they are and
            store nothing; ``False`` never (training on data far from [-1, 1] then warns).
        data_mean: per-channel mean to normalise with, in the data's units (a number or one per
            channel), instead of the one measured on the training data; needs ``data_std``.
        data_std: per-channel standard deviation (each > 0) to go with ``data_mean``.
        condition_dropout: probability p in [0, 1) that a training sample's condition is
            replaced by the null condition (zeros for vector and field conditions,
            ``null_class_label`` for class labels), so that the model also learns the
            unconditional prediction that classifier-free guidance needs (Ho & Salimans 2022,
            who train with p = 0.1–0.2). 0 (default): always conditional.
        null_class_label: the class label that stands for "no label" under ``condition_dropout``
            (an int >= 0; ``None``: the last row of the embedding table, ``num_class_embeds - 1``,
            which the training labels must then leave unused).

    >>> config = TrainerConfig(batch_size=8, lr_schedule="cosine", num_training_steps=100)
    >>> config.batch_size, config.hparams()["lr_schedule"]
    (8, 'cosine')
    >>> TrainerConfig(batch_size=0)
    Traceback (most recent call last):
        ...
    ValueError: batch_size must be a positive int, got 0 (at least 1)
    """

    learning_rate: float = 1e-4
    batch_size: int = 16
    loss: str = "mse"
    weighting: Optional[str] = None
    min_snr_gamma: float = 5.0
    p2_gamma: float = 1.0
    p2_k: float = 1.0
    ema_decay: Optional[float] = 0.999
    weight_decay: float = 0.0
    max_grad_norm: Optional[float] = 1.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    num_training_steps: Optional[int] = None
    lr_decay_steps: Optional[int] = None
    seed: int = 0
    output_dir: Optional[Union[str, os.PathLike]] = None
    checkpoint_every: Optional[int] = None
    keep_checkpoints: int = 2
    data_parallel: bool = False
    normalize: Union[bool, str] = "auto"
    data_mean: Optional[Tuple[float, ...]] = None
    data_std: Optional[Tuple[float, ...]] = None
    condition_dropout: float = 0.0
    null_class_label: Optional[int] = None

    def __post_init__(self) -> None:
        def store(name: str, value) -> None:
            object.__setattr__(self, name, value)

        def optional(name: str, **kind) -> None:
            value = getattr(self, name)
            if value is not None:
                store(name, check_positive(name, value, **kind))

        check_choice("loss", self.loss, LOSSES)
        check_choice("weighting", self.weighting, WEIGHTINGS)
        for name, kind in (("learning_rate", {}), ("batch_size", {"integer": True}), ("min_snr_gamma", {}),
                           ("p2_gamma", {"allow_zero": True}), ("p2_k", {}), ("weight_decay", {"allow_zero": True}),
                           ("warmup_steps", {"integer": True, "allow_zero": True})):
            store(name, check_positive(name, getattr(self, name), **kind))
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        optional("num_training_steps", integer=True)
        optional("lr_decay_steps", integer=True)
        if self.lr_schedule != "constant":
            if self.num_training_steps is None:
                raise ValueError(f"lr_schedule={self.lr_schedule!r} needs num_training_steps (the step where the "
                                 "learning rate reaches 0)")
            room = self.num_training_steps - self.warmup_steps
            if room < 1 or (self.lr_decay_steps is not None and self.lr_decay_steps > room):
                raise ValueError(
                    f"lr_decay_steps must fit after the warm-up: at most num_training_steps - warmup_steps = {room}, "
                    f"got lr_decay_steps={self.lr_decay_steps!r} (num_training_steps={self.num_training_steps}, "
                    f"warmup_steps={self.warmup_steps})"
                )
        elif self.lr_decay_steps is not None:
            raise ValueError("lr_decay_steps needs lr_schedule='linear' or 'cosine'")
        store("keep_checkpoints", check_positive("keep_checkpoints", self.keep_checkpoints, integer=True))
        optional("max_grad_norm")
        optional("checkpoint_every", integer=True)
        if self.ema_decay is not None:
            ema_decay = check_positive("ema_decay", self.ema_decay, allow_zero=True)
            if ema_decay >= 1.0:
                raise ValueError(f"ema_decay must be None or a number in [0, 1), got {self.ema_decay!r}")
            store("ema_decay", ema_decay)
        store("seed", check_positive("seed", self.seed, integer=True, allow_zero=True))
        if self.output_dir is not None:
            if not isinstance(self.output_dir, (str, os.PathLike)):
                raise ArgumentTypeError("output_dir must be None or a path (str or os.PathLike), got "
                                        f"{type(self.output_dir).__name__}")
            store("output_dir", Path(self.output_dir))
            if self.output_dir.is_file():
                raise OSError(f"output_dir must be a directory, but {self.output_dir} is a file")
        if not isinstance(self.data_parallel, (bool, np.bool_)):
            raise ArgumentTypeError(f"data_parallel must be True or False, got {type(self.data_parallel).__name__} "
                                    f"{self.data_parallel!r}")
        store("data_parallel", bool(self.data_parallel))
        normalize = bool(self.normalize) if isinstance(self.normalize, np.bool_) else self.normalize
        if not (normalize is True or normalize is False or (isinstance(normalize, str) and normalize == "auto")):
            raise ValueError(f"normalize must be one of {list(NORMALIZE_CHOICES)}, got {self.normalize!r}")
        store("normalize", normalize)
        if (self.data_mean is None) != (self.data_std is None):
            raise ValueError("data_mean and data_std go together: pass both (per-channel statistics) or neither")
        if self.data_mean is not None:
            if normalize is False:
                raise ValueError("data_mean/data_std normalise the data, but normalize=False: drop one or the other")
            given = DataNormalization(mean=self.data_mean, std=self.data_std)
            store("data_mean", given.mean)
            store("data_std", given.std)
        dropout = check_positive("condition_dropout", self.condition_dropout, allow_zero=True)
        if dropout >= 1.0:
            raise ValueError(f"condition_dropout must be a probability in [0, 1), got {self.condition_dropout!r}")
        store("condition_dropout", dropout)
        if self.null_class_label is not None:
            store("null_class_label", check_positive("null_class_label", self.null_class_label, integer=True,
                                                     allow_zero=True))

    def data_normalization(self) -> Optional[DataNormalization]:
        """The statistics given as ``data_mean`` / ``data_std``, or None."""
        return None if self.data_mean is None else DataNormalization(mean=self.data_mean, std=self.data_std)

    def hparams(self) -> Dict[str, object]:
        """The training hyper-parameters (every field but :data:`RUN_OPTIONS`) as a JSON-ready
        dict: what a checkpoint's ``trainer_state.json`` stores under ``"hparams"``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in RUN_OPTIONS}

    @classmethod
    def from_hparams(cls, hparams: Dict[str, object], **run_options) -> "TrainerConfig":
        """The config back from a checkpoint's ``hparams`` (keys that are not fields, such as
        the scheduler's ``prediction_type``, are skipped), with ``run_options`` (``output_dir``, ...)
        set anew; validated like any other."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in hparams.items() if k in names and k not in RUN_OPTIONS}, **run_options)


class DiffusionTrainer:
    """Train ``model`` (a UNet ``model(x_t, t)``) as the denoiser of a VP ``scheduler``.

    Args:
        model: e.g. :class:`~mindscience_diffuser.models.UNet2DModel`; its trainable parameters are optimized in place.
        scheduler: a VP scheduler (DDPM, DDIM, DPM-Solver, ...) with ``add_noise``, ``get_velocity``,
            ``alphas_cumprod`` and ``config.prediction_type`` (which picks the regression target).
        **options: the fields of :class:`TrainerConfig` (``learning_rate``, ``batch_size``, ``loss``,
            ``weighting``, ``ema_decay``, ``lr_schedule``, ``seed``, ``output_dir``, ...), each
            documented there. They are validated once and kept, frozen, as ``trainer.config``.
    """

    def __init__(
        self,
        model: nn.Cell,
        scheduler,
        *,
        learning_rate: float = 1e-4,
        batch_size: int = 16,
        loss: str = "mse",
        weighting: Optional[str] = None,
        min_snr_gamma: float = 5.0,
        p2_gamma: float = 1.0,
        p2_k: float = 1.0,
        ema_decay: Optional[float] = 0.999,
        weight_decay: float = 0.0,
        max_grad_norm: Optional[float] = 1.0,
        warmup_steps: int = 0,
        lr_schedule: str = "constant",
        num_training_steps: Optional[int] = None,
        lr_decay_steps: Optional[int] = None,
        seed: int = 0,
        output_dir: Optional[Union[str, os.PathLike]] = None,
        checkpoint_every: Optional[int] = None,
        keep_checkpoints: int = 2,
        data_parallel: bool = False,
        normalize: Union[bool, str] = "auto",
        data_mean=None,
        data_std=None,
        condition_dropout: float = 0.0,
        null_class_label: Optional[int] = None,
    ):
        options = dict(locals())
        if not isinstance(model, nn.Cell):
            raise TypeError(f"model must be a mindspore nn.Cell (e.g. UNet2DModel), got {type(model).__name__}")
        for attr in ("add_noise", "get_velocity", "alphas_cumprod"):
            if not hasattr(scheduler, attr):
                raise TypeError(
                    f"scheduler must be a VP scheduler with add_noise, get_velocity and alphas_cumprod "
                    f"(DDPMScheduler, DDIMScheduler, ...), got {type(scheduler).__name__} without {attr}"
                )
        prediction_type = scheduler.config.get("prediction_type")
        check_choice("scheduler.config.prediction_type", prediction_type, PREDICTION_TYPES)
        #: The validated, frozen options; checkpoints store them as ``hparams``.
        self.config = config = TrainerConfig(**{f.name: options[f.name] for f in dataclasses.fields(TrainerConfig)})
        self.model, self.scheduler = model, scheduler
        self.step = 0
        self._saved_step: Optional[int] = None  # step of the last checkpoint the running train() wrote
        self._stop: Optional[_StopRequests] = None  # the stop requests of the running train()
        self.history: List[Tuple[int, float]] = []
        self._order: Optional[BatchOrder] = None
        self._pending_order_state: Optional[dict] = None
        #: The per-channel statistics the model is trained in (data → model units), stored with
        #: the exported pipeline; None: the model works in the data's units. Known from the
        #: start when given or ``normalize=False``; else :meth:`fit_normalization` decides.
        self.data_normalization: Optional[DataNormalization] = config.data_normalization()
        self._normalization_known = config.data_mean is not None or config.normalize is False
        in_channels = getattr(getattr(model, "config", None), "get", lambda *_: None)("in_channels")
        if self.data_normalization is not None and in_channels is not None:
            DataNormalization.coerce(self.data_normalization, in_channels, "data_mean/data_std")

        self.rank, self.world_size = _rank_and_size() if config.data_parallel else (0, 1)
        reducer = None
        params = model.trainable_params()
        if not params:
            raise ValueError("model has no trainable parameters")
        if config.data_parallel:
            from mindspore.context import ParallelMode

            ms.set_auto_parallel_context(parallel_mode=ParallelMode.DATA_PARALLEL, gradients_mean=True)
            self._synchronize_parameters(params)
            reducer = nn.DistributedGradReducer(params, mean=True, degree=self.world_size)

        self.optimizer = nn.Adam(params, learning_rate=config.learning_rate, weight_decay=config.weight_decay)
        # Keys by the model's own (diffusers) names: Parameter.name can gain a prefix once the
        # model sits inside another Cell.
        names = {id(p): name for name, p in model.parameters_and_names()}
        self._ema_keys = [names[id(p)] for p in params]
        self.ema_params = None
        if config.ema_decay is not None:
            self.ema_params = ms.ParameterTuple(
                Parameter(Tensor(p.asnumpy()), name="ema." + key, requires_grad=False)
                for key, p in zip(self._ema_keys, params)
            )
        #: What the model is conditioned on (:func:`condition_spec`): decides what :meth:`train` requires.
        self.condition_spec: ConditionSpec = condition_spec(model)
        #: The null condition that ``condition_dropout`` trains (None without dropout); exported
        #: pipelines record it for classifier-free guidance.
        self.null_condition = self._null_condition()
        weights = snr_weights(scheduler.alphas_cumprod, prediction_type, config.weighting, config.min_snr_gamma,
                              config.p2_gamma, config.p2_k)
        self.loss_net = DiffusionLoss(model, scheduler, config.loss, weights, self.condition_spec.field is not None)
        step_cell = _TrainStep(self.loss_net, self.optimizer, self.ema_params, config.max_grad_norm, reducer)

        def compiled_step(x0, noise, timesteps, ema_decay, condition, class_labels):
            return step_cell(x0, noise, timesteps, ema_decay, condition, class_labels)

        self._step_cell = step_cell
        self._compiled_step = ms.jit(compiled_step)

    def _null_condition(self):
        """The null condition ``condition_dropout`` substitutes: an int label for a model
        conditioned on labels only, ``"zeros"`` for vector and field conditions; None without
        dropout. A ``ValueError`` when the model has nothing to drop or no null value."""
        spec, config = self.condition_spec, self.config
        if config.condition_dropout == 0:
            if config.null_class_label is not None:
                raise ValueError("null_class_label is the label condition_dropout substitutes: set condition_dropout")
            return None
        if not (spec.takes_condition or spec.takes_labels):
            raise ValueError(f"condition_dropout={config.condition_dropout} needs a conditional model, but "
                             f"{type(self.model).__name__} takes no condition or class labels")
        if spec.takes_condition:
            if config.null_class_label is not None:
                raise ValueError("null_class_label applies to label-conditioned models; this model's null condition "
                                 "is zeros")
            return "zeros"
        if spec.float_labels:
            raise ValueError("condition_dropout needs a null class label, but this model takes float labels "
                             "(class_embed_type='timestep'), which have none: condition it on ints")
        label = spec.num_classes - 1 if config.null_class_label is None else config.null_class_label
        if label >= spec.num_classes:
            raise ValueError(f"null_class_label must be a row of the class embedding, in [0, {spec.num_classes - 1}], "
                             f"got {label}")
        return label

    # ---- one step -----------------------------------------------------------------------

    def _synchronize_parameters(self, params) -> None:
        """Average the initial weights over the ranks, so every rank starts from the same point
        even when the model was built without a common ``ms.set_seed``."""
        all_reduce = ops.AllReduce()
        for p in params:
            p.set_data(all_reduce(p.value()) / self.world_size)

    def _draws(self, batch: int, shape) -> Tuple[np.ndarray, np.ndarray]:
        """(noise, timesteps) for this step: a pure function of (seed, rank, step)."""
        rng = np.random.default_rng([self.config.seed, self.rank, self.step, 1])
        timesteps = rng.integers(0, len(self.scheduler.alphas_cumprod), size=batch).astype(np.int32)
        noise = rng.standard_normal((batch,) + tuple(shape)).astype(np.float32)
        return noise, timesteps

    def current_learning_rate(self) -> float:
        """The learning rate the next optimizer step uses (see :func:`learning_rate_at`)."""
        c = self.config
        return learning_rate_at(self.step, c.learning_rate, c.warmup_steps, c.lr_schedule, c.num_training_steps,
                                c.lr_decay_steps)

    def _dropped(self, batch: int) -> np.ndarray:
        """Which samples of this step train on the null condition: a pure function of (seed, rank, step)."""
        rng = np.random.default_rng([self.config.seed, self.rank, self.step, 2])
        return rng.random(batch) < self.config.condition_dropout

    def _conditioning(self, condition, class_labels, shape) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """The batch's condition and labels as the model takes them, checked against
        :attr:`condition_spec`, with ``condition_dropout`` applied."""
        spec, batch = self.condition_spec, shape[0]
        cond = prepare_condition(spec, condition, batch, shape)
        labels = prepare_class_labels(spec, class_labels, batch)
        if self.null_condition is None:
            return cond, labels
        drop = self._dropped(batch)
        # The same null condition the pipelines' guidance uses for its unconditional half.
        null_cond, null_labels = null_condition_for(self.null_condition, cond, labels)
        if cond is not None:
            keep_shape = (-1,) + (1,) * (cond.ndim - 1)
            cond = Tensor(np.where(drop.reshape(keep_shape), null_cond.asnumpy(), cond.asnumpy()))
        else:
            labels = Tensor(np.where(drop, null_labels.asnumpy(), labels.asnumpy()), ms.int32)
        return cond, labels

    def train_step(self, batch, condition=None, class_labels=None) -> float:
        """One optimizer step on ``batch`` (a (B, C, H, W) array or Tensor, in model units:
        :meth:`train` normalises its dataset first) with its ``condition`` / ``class_labels``
        (arrays or Tensors, one row per field; what the model's :attr:`condition_spec`
        requires); returns the loss."""
        x0 = batch.asnumpy() if isinstance(batch, Tensor) else np.asarray(batch, np.float32)
        if x0.ndim != 4:
            raise ValueError(f"batch must be shaped (B, C, H, W), got shape {x0.shape}")
        cond, labels = self._conditioning(condition, class_labels, x0.shape)
        noise, timesteps = self._draws(x0.shape[0], x0.shape[1:])
        self.optimizer.learning_rate.set_data(Tensor(self.current_learning_rate(), ms.float32))
        ema_decay = self.config.ema_decay
        decay = 0.0 if ema_decay is None else min(ema_decay, (1.0 + self.step) / (10.0 + self.step))
        stop = self._stop
        if stop is not None:
            stop.in_step = True
        try:
            loss = self._compiled_step(Tensor(x0.astype(np.float32)), Tensor(noise), Tensor(timesteps),
                                       Tensor(decay, ms.float32), cond, labels)
            value = float(loss.asnumpy())  # waits for the step: a signal during it is handled by now
        finally:
            if stop is not None:
                stop.in_step = False
                stop.reclaim()
        self.step += 1
        self.history.append((self.step, value))
        return value

    # ---- the loop -----------------------------------------------------------------------

    def _check_dataset(self, data: FieldDataset) -> None:
        in_channels = getattr(getattr(self.model, "config", None), "get", lambda *_: None)("in_channels")
        # A field-conditioned UNet's in_channels also count the condition's channels.
        channels = getattr(self.model, "sample_channels", in_channels)
        if channels is not None and data.sample_shape[0] != channels:
            what = "sample channels (in_channels less the field condition's)" if channels != in_channels else \
                "in_channels"
            raise ValueError(f"dataset has {data.sample_shape[0]} channels but the model's {what} is {channels}")
        self._check_pairing(data)
        if self.data_normalization is not None and self.data_normalization.num_channels != data.sample_shape[0]:
            raise ValueError(f"dataset has {data.sample_shape[0]} channels but the data statistics have "
                             f"{self.data_normalization.num_channels}")

    def _check_pairing(self, data: FieldDataset) -> None:
        """The dataset's condition and labels against what the model takes, before any step."""
        spec = self.condition_spec
        if data.condition is None and (spec.vector is not None or spec.field is not None):
            raise ValueError(f"condition must be given: this model needs {spec.describe_condition(len(data))} "
                             "(train(..., condition=...), or a dataset that carries one)")
        if data.condition is not None and not spec.takes_condition:
            raise ValueError(f"condition given, but {type(self.model).__name__} takes no condition (its "
                             "condition_spec() has neither a vector nor a field)")
        if data.condition is not None:
            # The first row checks the per-sample shape (the rows are all alike by construction).
            prepare_condition(spec, data.condition[:1], 1, (1,) + data.sample_shape)
        if data.class_labels is None and spec.takes_labels:
            raise ValueError("class_labels must be given: this model is class-conditional")
        if data.class_labels is not None:
            prepare_class_labels(spec, data.class_labels, len(data))
            if isinstance(self.null_condition, int) and np.any(data.class_labels == self.null_condition):
                raise ValueError(f"class_labels use {self.null_condition}, the null class label condition_dropout "
                                 "trains: relabel the data or set null_class_label to an unused row")

    # ---- units ------------------------------------------------------------------------------

    def fit_normalization(self, dataset) -> Optional[DataNormalization]:
        """Decide :attr:`data_normalization` from ``dataset`` (what :meth:`train` does on its
        first call): the per-channel mean and std of the data with ``normalize=True``, or with
        ``"auto"`` when the data are far from [-1, 1]; None otherwise. Statistics given as
        ``data_mean``/``data_std`` or restored from a checkpoint are kept as they are."""
        if not self._normalization_known:
            measured = DataNormalization.from_data(as_dataset(dataset).data)
            wanted = self.config.normalize is True or far_from_unit_range(measured)
            self.data_normalization = measured if wanted else None
            self._normalization_known = True
        return self.data_normalization

    def _model_units(self, data: FieldDataset) -> FieldDataset:
        """``data`` as the model trains on it; warns when it is far from [-1, 1] unnormalised."""
        if self.data_normalization is not None:
            return data.with_data(self.data_normalization.to_model_units(data.data))
        stats = DataNormalization.from_data(data.data)
        if far_from_unit_range(stats):
            warnings.warn(
                f"training on data far from [-1, 1] without normalisation ({describe(stats)}): the model learns to "
                "remove unit-variance noise, so it would spend its capacity on the offset or miss the signal. Pass "
                "normalize=True (or 'auto', the default; `train --normalize auto` on the command line) to train on "
                "standardised data and sample in the data's units, or give data_mean/data_std, or rescale the data "
                "to about [-1, 1] yourself.",
                UserWarning, stacklevel=3)
        return data

    def train(
        self,
        dataset,
        num_steps: int,
        *,
        condition=None,
        class_labels=None,
        resume_from: Optional[Union[str, os.PathLike]] = None,
        log_every: Optional[int] = None,
        callback: Optional[Callable[["DiffusionTrainer", float], None]] = None,
        stop_after: Optional[int] = None,
        max_seconds: Optional[float] = None,
    ) -> List[Tuple[int, float]]:
        """Train until ``num_steps`` optimizer steps have been taken in total (a resumed run
        continues from its checkpoint's step). Returns the ``(step, loss)`` history.

        ``dataset``: a FieldDataset, a (N, C, H, W) array, a .npy/.npz path or an image folder,
        in the data's units: the first call decides :attr:`data_normalization`
        (:meth:`fit_normalization`; a resumed run keeps its checkpoint's) and every batch is
        normalised with it.
        ``condition`` / ``class_labels``: for a conditional model, the fields' conditions, one
        row per field: (N, d) or (N,) vectors, (N, c, H, W) fields, (N,) labels. A paired
        dataset (an ``.npz`` with ``fields`` + ``condition``/``labels``, a FieldDataset with
        ``condition=``, ``SyntheticFieldDataset(vary=...)``) carries its own instead. Conditions
        are passed as given, not normalised. Each batch takes the rows of its fields, and
        ``condition_dropout`` nulls some of them (see :class:`TrainerConfig`).
        ``resume_from``: a checkpoint directory, or ``"latest"`` for the newest one in
        ``output_dir`` (a fresh start if there is none). ``callback(trainer, loss)`` runs after
        every step. ``stop_after`` / ``max_seconds``: stop early after this many steps / seconds of
        this call. Every way of stopping early writes a checkpoint of the last finished step first
        when ``output_dir`` is set, so a resumed run loses no finished step: those two, an
        exception, and SIGINT (Ctrl-C) or SIGTERM, which let the step in flight finish and then
        raise ``KeyboardInterrupt`` / ``SystemExit(128 + signal)``. A hard kill (SIGKILL) loses
        the steps since the last ``checkpoint_every`` checkpoint.
        """
        check_positive("num_steps", num_steps, integer=True)
        config = self.config
        if config.lr_schedule != "constant" and num_steps > config.num_training_steps:
            raise ValueError(f"num_steps={num_steps} runs past num_training_steps={config.num_training_steps}, "
                             f"where the {config.lr_schedule} learning rate has reached 0")
        data = as_dataset(dataset, condition, class_labels)
        self._check_dataset(data)
        if resume_from is not None:
            if resume_from == "latest":
                if config.output_dir is None:
                    raise ValueError("resume_from='latest' needs output_dir")
                resume_from = latest_checkpoint(config.output_dir)
            if resume_from is not None:
                self.load_checkpoint(resume_from)
        self.fit_normalization(data)
        self._check_dataset(data)
        data = self._model_units(data)
        if self._order is None or self._order.num_items != len(data):
            self._order = BatchOrder(len(data), config.batch_size, config.seed, self.rank, self.world_size)
        if self._pending_order_state is not None:
            self._order.load_state_dict(self._pending_order_state)
            self._pending_order_state = None
        if stop_after is not None:
            check_positive("stop_after", stop_after, integer=True)
        if max_seconds is not None:
            check_positive("max_seconds", max_seconds)
        start, begun = self.step, time.time()
        self._saved_step = None
        with _stop_requests() as signals:
            self._stop = signals
            try:
                self._train_loop(data, num_steps, start, begun, signals, log_every, callback, stop_after, max_seconds)
            finally:
                self._stop = None
                # Also on an exception: the last finished step is saved before it propagates.
                if config.output_dir is not None and self.step > start and self._saved_step != self.step:
                    self.save_checkpoint()
        if signals:
            if signals[0] == signal.SIGINT:
                raise KeyboardInterrupt(f"training stopped by SIGINT after step {self.step}")
            raise SystemExit(128 + signals[0])
        return self.history

    def _train_loop(self, data, num_steps, start, begun, signals, log_every, callback, stop_after,
                    max_seconds) -> None:
        """The loop of :meth:`train`, until ``num_steps``, a stop condition or a stop request in ``signals``."""
        while self.step < num_steps and not signals:
            if stop_after is not None and self.step - start >= stop_after:
                break
            if max_seconds is not None and time.time() - begun >= max_seconds:
                break
            # Draw the batch only after the checks above: drawing advances the data order.
            batch = data.subset(self._order.next_indices())
            # Unpaired data call train_step(batch) as before, so an override of it keeps working.
            pairs = {"condition": batch.condition, "class_labels": batch.class_labels}
            loss = self.train_step(batch.data, **{k: v for k, v in pairs.items() if v is not None})
            if callback is not None:
                callback(self, loss)
            if log_every and self.step % log_every == 0 and self.rank == 0:
                recent = [v for _, v in self.history[-log_every:]]
                rate = (time.time() - begun) / max(self.step - start, 1)
                print(f"step {self.step}/{num_steps}  loss {np.mean(recent):.5f}  {rate:.2f} s/step", flush=True)
            every = self.config.checkpoint_every
            if every and self.step % every == 0 and self.config.output_dir is not None:
                self.save_checkpoint()
                self._saved_step = self.step

    # ---- EMA / export ---------------------------------------------------------------------

    def ema_state(self) -> Dict[str, np.ndarray]:
        """The EMA weights keyed like the model's parameters (the live weights without EMA)."""
        if self.ema_params is None:
            return state_arrays(self.model)
        return {key: np.ascontiguousarray(p.asnumpy()) for key, p in zip(self._ema_keys, self.ema_params)}

    def ema_model(self) -> nn.Cell:
        """A fresh copy of the model (same config) carrying the EMA weights."""
        from ..models.weights import load_state_dict

        copy = type(self.model).from_config(dict(self.model.config))
        arrays = state_arrays(self.model)
        arrays.update(self.ema_state())
        load_state_dict(copy, arrays, source="EMA weights")
        return copy

    def save_pretrained(self, save_directory: Union[str, os.PathLike], use_ema: bool = True,
                        pipeline_class: str = "DDIMPipeline", scheduler=None) -> Path:
        """Write the diffusers pipeline layout: ``model_index.json``, ``unet/`` (config.json +
        diffusion_pytorch_model.safetensors; the EMA weights if ``use_ema``) and
        ``scheduler/scheduler_config.json``. Returns the directory.

        ``scheduler``: the sampler to ship with the model (default: the training scheduler). It
        must share the training noise schedule and ``prediction_type``, which are what the
        weights were trained for; the sampling options (solver, step spacing) are free.

        :attr:`data_normalization`, when set, goes to ``model_index.json`` as
        ``"_data_normalization"`` (diffusers ignores it), so the loaded pipeline's
        ``output_type="field"`` returns the data's units; so does :attr:`null_condition`, when
        ``condition_dropout`` trained one, as ``"_null_condition"`` (``pipe.null_condition``:
        classifier-free guidance needs it).
        """
        from ..pipelines.pipeline_utils import save_pipeline_folder

        directory = Path(save_directory)
        if directory.is_file():
            raise OSError(f"save_directory must be a directory, but {directory} is a file")
        scheduler = self.scheduler if scheduler is None else scheduler
        if scheduler is not self.scheduler:
            trained = {k: self.scheduler.config.get(k)
                       for k in ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type")}
            shipped = {k: scheduler.config.get(k) for k in trained}
            table = getattr(scheduler, "alphas_cumprod", None)
            ours = np.asarray(self.scheduler.alphas_cumprod)
            same_table = table is not None and np.allclose(np.asarray(table), ours)
            if shipped != trained or not same_table:
                raise ValueError(f"scheduler must keep the training noise schedule and prediction_type {trained}, "
                                 f"got {shipped}")
        norm = self.data_normalization
        clips = scheduler.config.get("clip_sample") or scheduler.config.get("thresholding")
        if norm is not None and clips:
            warnings.warn(
                f"the shipped {type(scheduler).__name__} clips x0 (clip_sample/thresholding) in model units, where "
                "the normalised data have unit standard deviation: it would cut the fields' tails. Ship a scheduler "
                "with clip_sample=False (and thresholding=False) through scheduler=.", UserWarning, stacklevel=2)
        model = self.ema_model() if use_ema else self.model
        return save_pipeline_folder(directory, pipeline_class, {"unet": model, "scheduler": scheduler}, norm,
                                    null_condition=self.null_condition)

    # ---- checkpoints ------------------------------------------------------------------------

    def _optimizer_state(self) -> Dict[str, np.ndarray]:
        model_names = {p.name for p in self.optimizer.parameters}
        return {
            p.name: np.ascontiguousarray(p.asnumpy())
            for p in self.optimizer.get_parameters()
            if p.name not in model_names
        }

    def save_checkpoint(self, directory: Optional[Union[str, os.PathLike]] = None) -> Optional[Path]:
        """Write ``checkpoint-<step>`` (under ``output_dir`` unless ``directory`` is given):
        ``unet/`` (model, diffusers layout), ``unet_ema/`` (EMA weights, same layout),
        ``optimizer.safetensors``, ``trainer_state.json`` (step, data order, hyper-parameters,
        ``data_normalization``: the statistics the model trains in, or null).
        Everything goes to a temporary directory that is renamed into place, so a crash leaves
        either the previous checkpoint or the complete new one. Only rank 0 writes."""
        from safetensors.numpy import save_file

        if self.rank != 0:
            return None
        if directory is None:
            if self.config.output_dir is None:
                raise ValueError("save_checkpoint needs a directory or the trainer's output_dir")
            directory = self.config.output_dir / f"{CHECKPOINT_PREFIX}{self.step}"
        final = Path(directory)
        with atomic_folder(final) as tmp:
            self.model.save_pretrained(tmp / "unet")
            self.model.save_config(tmp / EMA_DIR)
            save_file(self.ema_state(), str(tmp / EMA_DIR / WEIGHTS_NAME), metadata={"format": "pt"})
            save_file(self._optimizer_state(), str(tmp / OPTIMIZER_NAME))
            state = {
                "step": self.step,
                "data_order": self._order.state_dict() if self._order is not None else self._pending_order_state,
                "hparams": dict(self.config.hparams(), prediction_type=self.scheduler.config.prediction_type),
                "world_size": self.world_size,
                "data_normalization": None if self.data_normalization is None else self.data_normalization.to_dict(),
            }
            write_json_atomically(tmp / STATE_NAME, state)
        self._prune_checkpoints(final.parent)
        return final

    def _prune_checkpoints(self, parent: Path) -> None:
        found = sorted(
            (int(p.name[len(CHECKPOINT_PREFIX):]), p) for p in parent.iterdir()
            if p.name.startswith(CHECKPOINT_PREFIX) and p.name[len(CHECKPOINT_PREFIX):].isdigit()
        )
        for _, path in found[:-self.config.keep_checkpoints]:
            shutil.rmtree(path, ignore_errors=True)

    def load_checkpoint(self, directory: Union[str, os.PathLike]) -> None:
        """Restore model, EMA, optimizer state, step and data order from a checkpoint directory."""
        from safetensors.numpy import load_file

        directory = Path(directory)
        state_path = directory / STATE_NAME
        if not state_path.is_file():
            raise OSError(f"not a checkpoint directory (no {STATE_NAME}): {directory}")
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise OSError(f"cannot read {state_path}: {err}") from err
        seed = self.config.seed
        if state.get("hparams", {}).get("seed", seed) != seed:
            raise ValueError(f"checkpoint was trained with seed {state['hparams']['seed']}, this trainer has seed "
                             f"{seed}")
        norm = self._checkpoint_normalization(state, directory)
        ema = None
        if self.ema_params is not None:  # checked before anything is restored
            ema = read_weights(directory / EMA_DIR)
            check_state_arrays({key: p.shape for key, p in zip(self._ema_keys, self.ema_params)}, ema,
                               f"EMA weights in {directory / EMA_DIR}", type(self.model).__name__)
        load_model_weights(self.model, directory / "unet")
        if ema is not None:
            for key, p in zip(self._ema_keys, self.ema_params):
                p.set_data(Tensor(ema[key]))
        opt_arrays = load_file(str(directory / OPTIMIZER_NAME))
        for p in self.optimizer.get_parameters():
            if p.name in opt_arrays:
                p.set_data(Tensor(opt_arrays[p.name]))
        self.step = int(state["step"])
        self.data_normalization, self._normalization_known = norm, True
        self._pending_order_state = state.get("data_order")
        if self._order is not None and self._pending_order_state is not None:
            self._order.load_state_dict(self._pending_order_state)
            self._pending_order_state = None

    def _checkpoint_normalization(self, state: dict, directory: Path) -> Optional[DataNormalization]:
        """The statistics a checkpoint trained in (null or absent: none, as before they were
        recorded), checked against this trainer's ``normalize`` / ``data_mean`` / ``data_std``."""
        try:
            stored = DataNormalization.coerce(state.get("data_normalization"))
        except (TypeError, ValueError) as err:
            raise OSError(f"cannot read {directory / STATE_NAME}: data_normalization {err}") from err
        given, normalize = self.config.data_normalization(), self.config.normalize

        def text(norm):
            return "no normalisation" if norm is None else describe(norm)

        mismatch = None
        if given is not None:
            same = stored is not None and stored.num_channels == given.num_channels and np.allclose(
                stored.mean, given.mean, rtol=1e-6, atol=0) and np.allclose(stored.std, given.std, rtol=1e-6, atol=0)
            if not same:
                mismatch = f"data_mean/data_std give {text(given)}"
        elif normalize is True and stored is None:
            mismatch = "normalize=True"
        elif normalize is False and stored is not None:
            mismatch = "normalize=False"
        if mismatch is not None:
            raise ValueError(f"checkpoint {directory} was trained with {text(stored)}, but this trainer has "
                             f"{mismatch}; resume with the options of the run that wrote it "
                             "(normalize='auto' adopts the checkpoint's)")
        return stored
