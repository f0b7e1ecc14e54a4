"""The training loss of MindScience's ``DiffusionTrainer.get_loss``: a pure function of the
model's output (:func:`mindscience_loss`) and MindScience's trainer class around it
(:class:`MindScienceTrainer`, whose ``get_loss`` calls the model), so that a MindScience training
script ports by changing its imports.

For clean samples x₀, noise ε, timesteps t and the noise schedule's ᾱ table:

- the model sees x_t = sqrt(ᾱ_t)·x₀ + sqrt(1 − ᾱ_t)·ε (any VP scheduler's ``add_noise``);
- its target depends on the objective: ``pred_noise`` → ε, ``pred_x0`` → x₀,
  ``pred_v`` → v = sqrt(ᾱ_t)·ε − sqrt(1 − ᾱ_t)·x₀ (the prediction types ``epsilon`` /
  ``sample`` / ``v_prediction`` of the schedulers, :data:`OBJECTIVE_TO_PREDICTION_TYPE`);
- the element loss is |out − target| (``l1``) or (out − target)² (``l2``), weighted per sample
  by the P2 weight w_t = (k + ᾱ_t / (1 − ᾱ_t))^(−γ) (Choi et al. 2022; γ = 0 gives 1), and the
  loss is the mean over every element: mean_b(w_{t_b} · mean(loss_b)).

Differences from MindScience: an unknown objective or loss type is a ``ValueError`` (MindScience
falls back to the noise target for an unknown objective).
"""
from __future__ import annotations

from typing import Any, Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from ..models.conditioning import call_denoiser
from ..utils import check_choice

#: MindScience ``objective`` -> this package's (and diffusers') scheduler ``prediction_type``
OBJECTIVE_TO_PREDICTION_TYPE = {"pred_noise": "epsilon", "pred_x0": "sample", "pred_v": "v_prediction"}
LOSS_TYPES = ("l1", "l2")


def _alphas_cumprod(alphas_cumprod: Any) -> np.ndarray:
    """ᾱ as float32 numpy: from an array, a Tensor or anything with an ``alphas_cumprod`` (a scheduler)."""
    table = getattr(alphas_cumprod, "alphas_cumprod", alphas_cumprod)
    if isinstance(table, Tensor):
        table = table.asnumpy()
    table = np.asarray(table, dtype=np.float32)
    if table.ndim != 1 or table.size == 0:
        raise ValueError(f"alphas_cumprod must be a 1-D table of the T training steps, got shape {table.shape}")
    return table


def p2_loss_weights(alphas_cumprod: Any, gamma: float = 0.0, k: float = 1.0) -> np.ndarray:
    """w_t = (k + ᾱ_t / (1 − ᾱ_t))^(−γ) for every training step, in float32 as MindScience computes it.

    >>> p2_loss_weights([0.5, 0.2], gamma=1.0, k=1.0)
    array([0.5, 0.8], dtype=float32)
    """
    a = _alphas_cumprod(alphas_cumprod)
    with np.errstate(divide="ignore"):
        snr = a / (np.float32(1) - a)
    return np.power(np.float32(k) + snr, np.float32(-gamma)).astype(np.float32)


def _per_sample(table: Tensor, timesteps: Tensor, ndim: int) -> Tensor:
    values = ops.gather(table, timesteps.reshape(-1).astype(ms.int32), 0)
    return values.reshape((-1,) + (1,) * (ndim - 1))


class _Tables:
    """The per-timestep tables of the loss, as float32 Tensors built once on the host:
    sqrt(ᾱ), sqrt(1 − ᾱ) (float64 → float32, as MindScience's DDPM tables) and the P2 weights."""

    def __init__(self, alphas_cumprod: Any, gamma: float = 0.0, k: float = 1.0):
        a = _alphas_cumprod(alphas_cumprod).astype(np.float64)
        self.sqrt_alphas_cumprod = Tensor(np.sqrt(a).astype(np.float32))
        self.sqrt_one_minus_alphas_cumprod = Tensor(np.sqrt(1.0 - a).astype(np.float32))
        self.p2_weights = Tensor(p2_loss_weights(alphas_cumprod, gamma, k))


def _target(tables: _Tables, x0: Tensor, eps: Tensor, timesteps: Tensor, objective: str) -> Tensor:
    if objective == "pred_noise":
        return eps
    if objective == "pred_x0":
        return x0
    return (_per_sample(tables.sqrt_alphas_cumprod, timesteps, x0.ndim) * eps
            - _per_sample(tables.sqrt_one_minus_alphas_cumprod, timesteps, x0.ndim) * x0)


def _check_loss_inputs(model_output, original_samples, noise, timesteps) -> None:
    if tuple(model_output.shape) != tuple(original_samples.shape) or tuple(noise.shape) != tuple(
            original_samples.shape):
        raise ValueError(f"model_output {tuple(model_output.shape)}, original_samples "
                         f"{tuple(original_samples.shape)} and noise {tuple(noise.shape)} must have the same shape")
    if timesteps.size != original_samples.shape[0]:
        raise ValueError(f"timesteps must hold one timestep per sample ({original_samples.shape[0]}), got shape "
                         f"{tuple(timesteps.shape)}")


def _loss(tables: _Tables, model_output: Tensor, original_samples: Tensor, noise: Tensor, timesteps: Tensor,
          objective: str, loss_type: str) -> Tensor:
    """mean_b(w_{t_b} · mean(ℓ(out_b − target_b))) from prepared tables: device ops only, so it
    differentiates and compiles."""
    x0 = original_samples.astype(ms.float32)
    target = _target(tables, x0, noise.astype(ms.float32), timesteps, objective)
    diff = model_output.astype(ms.float32) - target
    loss = ops.abs(diff) if loss_type == "l1" else diff * diff
    loss = loss.reshape(x0.shape[0], -1)
    return (loss * _per_sample(tables.p2_weights, timesteps, 2)).mean()


def mindscience_target(original_samples: Tensor, noise: Tensor, timesteps: Tensor, alphas_cumprod: Any,
                       objective: str = "pred_noise") -> Tensor:
    """The regression target of ``objective`` (ε, x₀ or v) for a batch, float32."""
    check_choice("objective", objective, list(OBJECTIVE_TO_PREDICTION_TYPE))
    return _target(_Tables(alphas_cumprod), original_samples.astype(ms.float32), noise.astype(ms.float32),
                   timesteps, objective)


def mindscience_loss(model_output: Tensor, original_samples: Tensor, noise: Tensor, timesteps: Tensor,
                     alphas_cumprod: Any, objective: str = "pred_noise", p2_loss_weight_gamma: float = 0.0,
                     p2_loss_weight_k: float = 1.0, loss_type: str = "l1") -> Tensor:
    """MindScience's ``DiffusionTrainer.get_loss`` given the model's output on x_t: a 0-d float32 Tensor.

    ``model_output``, ``original_samples``, ``noise``: (B, ...) alike; ``timesteps``: (B,) or (B, 1)
    integers; ``alphas_cumprod``: the ᾱ table (array / Tensor) or a scheduler holding one. Defaults
    are MindScience's (``pred_noise``, γ = 0, k = 1, ``l1``).
    """
    check_choice("objective", objective, list(OBJECTIVE_TO_PREDICTION_TYPE))
    check_choice("loss_type", loss_type, LOSS_TYPES)
    _check_loss_inputs(model_output, original_samples, noise, timesteps)
    tables = _Tables(alphas_cumprod, p2_loss_weight_gamma, p2_loss_weight_k)
    return _loss(tables, model_output, original_samples, noise, timesteps, objective, loss_type)


class MindScienceTrainer:
    r"""MindScience's ``DiffusionTrainer`` (``mindflow.cell``): the loss of one batch, for a training
    loop you write yourself. ``from mindflow.cell import DiffusionTrainer`` ports as
    ``from mindscience_diffuser.training import MindScienceTrainer as DiffusionTrainer``, with the
    same arguments, defaults and numbers (checked against ``mindflow-ascend==0.3.0``).

    :meth:`get_loss` noises x₀ with the scheduler's ``add_noise``, x_t = sqrt(ᾱ_t)·x₀ + sqrt(1 − ᾱ_t)·ε
    (Ho et al. 2020), calls the model through :func:`~mindscience_diffuser.models.conditioning.call_denoiser`
    (so a field-conditioned UNet gets its condition as input channels, a transformer as its third
    argument) and regresses its output on ε (``pred_noise``), x₀ (``pred_x0``) or
    v = sqrt(ᾱ_t)·ε − sqrt(1 − ᾱ_t)·x₀ (``pred_v``; Salimans & Ho 2022), with the element loss
    |·| (``l1``) or (·)² (``l2``) weighted per sample by P2, w_t = (k + SNR_t)^(−γ) (Choi et al. 2022).

    For the complete, checkpointed training loop (optimizer, EMA, data order, condition dropout)
    use :class:`~mindscience_diffuser.training.DiffusionTrainer`.

    Args:
        model: the denoiser Cell, ``model(x_t, t[, condition])``.
        scheduler: a VP scheduler of this package (``DDPMScheduler``, ``DDIMScheduler``, ...) with
            ``add_noise`` and ``alphas_cumprod``. Its ``prediction_type`` should be the objective's
            (:data:`OBJECTIVE_TO_PREDICTION_TYPE`), or sampling misreads the model: a mismatch warns.
        objective: ``"pred_noise"``, ``"pred_x0"`` or ``"pred_v"``.
        p2_loss_weight_gamma: γ of the P2 weight (0: no weighting).
        p2_loss_weight_k: k of the P2 weight.
        loss_type: ``"l1"`` or ``"l2"``.

    Differences from MindScience: an unknown ``objective`` is a ``ValueError`` (MindScience silently
    trains on the noise); any VP scheduler of this package is accepted.
    """

    def __init__(self, model, scheduler, objective: str = "pred_noise", p2_loss_weight_gamma: float = 0.0,
                 p2_loss_weight_k: float = 1.0, loss_type: str = "l1"):
        import warnings

        from ..models.conditioning import condition_spec

        check_choice("objective", objective, list(OBJECTIVE_TO_PREDICTION_TYPE))
        check_choice("loss_type", loss_type, LOSS_TYPES)
        if not hasattr(scheduler, "add_noise") or not hasattr(scheduler, "alphas_cumprod"):
            raise TypeError(f"scheduler must be a VP scheduler with add_noise and alphas_cumprod (DDPMScheduler, "
                            f"DDIMScheduler, ...), got {type(scheduler).__name__}")
        prediction_type = getattr(scheduler, "config", {}).get("prediction_type")
        if prediction_type is not None and prediction_type != OBJECTIVE_TO_PREDICTION_TYPE[objective]:
            warnings.warn(f"objective={objective!r} trains a {OBJECTIVE_TO_PREDICTION_TYPE[objective]!r} model, but "
                          f"the scheduler's prediction_type is {prediction_type!r}: sampling with it would misread "
                          "the model's output", UserWarning, stacklevel=2)
        self.model, self.scheduler = model, scheduler
        self.objective, self.loss_type = objective, loss_type
        self.p2_loss_weight_gamma, self.p2_loss_weight_k = float(p2_loss_weight_gamma), float(p2_loss_weight_k)
        self._tables = _Tables(scheduler, self.p2_loss_weight_gamma, self.p2_loss_weight_k)
        self.p2_loss_weight = self._tables.p2_weights
        self._field_condition = condition_spec(model).field is not None

    def get_loss(self, original_samples: Tensor, noise: Tensor, timesteps: Tensor,
                 condition: Optional[Tensor] = None) -> Tensor:
        """The training loss of a batch (0-d float32): x₀ ``original_samples`` and noise ε (B, ...),
        integer ``timesteps`` (B,) or (B, 1), and the model's ``condition`` if it takes one."""
        _check_loss_inputs(original_samples, original_samples, noise, timesteps)
        noised = self.scheduler.add_noise(original_samples, noise, timesteps.reshape(-1))
        # One timestep per sample, (B,), whatever shape MindScience's scripts draw ((B, 1)): what every
        # denoiser of this package takes.
        output = call_denoiser(self.model, self._field_condition, noised, timesteps.reshape(-1), condition, None)
        _check_loss_inputs(output, original_samples, noise, timesteps)
        return _loss(self._tables, output, original_samples, noise, timesteps, self.objective, self.loss_type)
