"""The training loss of MindScience's ``DiffusionTrainer.get_loss``, as a pure function.

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

from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

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


def mindscience_target(original_samples: Tensor, noise: Tensor, timesteps: Tensor, alphas_cumprod: Any,
                       objective: str = "pred_noise") -> Tensor:
    """The regression target of ``objective`` (ε, x₀ or v) for a batch, float32."""
    check_choice("objective", objective, list(OBJECTIVE_TO_PREDICTION_TYPE))
    x0 = original_samples.astype(ms.float32)
    eps = noise.astype(ms.float32)
    if objective == "pred_noise":
        return eps
    if objective == "pred_x0":
        return x0
    a = _alphas_cumprod(alphas_cumprod).astype(np.float64)
    sqrt_a = _per_sample(Tensor(np.sqrt(a).astype(np.float32)), timesteps, x0.ndim)
    sqrt_1ma = _per_sample(Tensor(np.sqrt(1.0 - a).astype(np.float32)), timesteps, x0.ndim)
    return sqrt_a * eps - sqrt_1ma * x0


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
    if tuple(model_output.shape) != tuple(original_samples.shape) or tuple(noise.shape) != tuple(
            original_samples.shape):
        raise ValueError(f"model_output {tuple(model_output.shape)}, original_samples "
                         f"{tuple(original_samples.shape)} and noise {tuple(noise.shape)} must have the same shape")
    batch = original_samples.shape[0]
    if timesteps.size != batch:
        raise ValueError(f"timesteps must hold one timestep per sample ({batch}), got shape {tuple(timesteps.shape)}")
    target = mindscience_target(original_samples, noise, timesteps, alphas_cumprod, objective)
    diff = model_output.astype(ms.float32) - target
    loss = ops.abs(diff) if loss_type == "l1" else diff * diff
    loss = loss.reshape(batch, -1)
    weights = Tensor(p2_loss_weights(alphas_cumprod, p2_loss_weight_gamma, p2_loss_weight_k))
    return (loss * _per_sample(weights, timesteps, 2)).mean()
