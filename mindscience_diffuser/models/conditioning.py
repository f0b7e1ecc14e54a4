"""What a denoiser is conditioned on, and the one way a condition reaches it.

Pipelines (in the compiled sampling loop) and the trainer (in the loss) both call a denoiser
with a condition; :func:`call_denoiser` is that call, written once. A denoiser describes what it
takes with ``condition_spec()`` (a :class:`ConditionSpec`); a Cell without that method is *open*:
a condition given to it is passed on as its third argument, unchecked.

Three kinds of condition, as the UNet and the MindScience transformers take them:

- ``class_labels``: one label per sample, (B,) ints for an embedding table with
  ``num_classes`` rows, or (B,) floats for a sinusoidally embedded label;
- a vector ``condition`` (B, d): a PDE parameter, a condition vector; the third argument of the
  model (UNet: ``class_embed_type="identity"`` / ``"projection"``; ``ConditionDiffusionTransformer``);
- a field ``condition`` (B, c, *spatial): concatenated to the sample's channels before the model
  (SR3 / CorrDiff-style downscaling): a UNet with ``in_channels = sample channels + c``.

Classifier-free guidance (Ho & Salimans 2022) needs a *null condition* the model was trained on
(condition dropout): an int label for label-conditioned models, zeros (``"zeros"``) or a given
per-sample array for vector and field conditions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops


@dataclass(frozen=True)
class ConditionSpec:
    """What a denoiser takes besides ``(sample, timestep)``.

    Attributes:
        num_classes: rows of the class-embedding table (``class_labels`` are ints in
            [0, num_classes)); ``None`` when the model takes no integer labels.
        float_labels: the model takes one float label per sample (diffusers'
            ``class_embed_type="timestep"``).
        vector: size d of a (B, d) condition vector, or ``None``.
        field: channels c of a field concatenated to the sample (B, c, *spatial), or ``None``.
        open: a user's Cell without a spec: a condition is passed as its third argument unchecked.
    """

    num_classes: Optional[int] = None
    float_labels: bool = False
    vector: Optional[int] = None
    field: Optional[int] = None
    open: bool = False

    @property
    def takes_labels(self) -> bool:
        return self.num_classes is not None or self.float_labels

    @property
    def takes_condition(self) -> bool:
        return self.vector is not None or self.field is not None or self.open

    def describe_condition(self, batch: int) -> str:
        if self.vector is not None:
            return f"a vector condition of shape ({batch}, {self.vector})"
        if self.field is not None:
            return f"a field condition of shape ({batch}, {self.field}, *spatial) matching the sample's grid"
        return "no condition"


UNCONDITIONAL = ConditionSpec()


def condition_spec(model) -> ConditionSpec:
    """The model's :class:`ConditionSpec` (its ``condition_spec()``), or for a Cell without one an
    open spec (with the label count of a ``num_class_embeds`` in its config, if any)."""
    method = getattr(model, "condition_spec", None)
    if callable(method):
        return method()
    config = getattr(model, "config", None)
    classes = config.get("num_class_embeds") if hasattr(config, "get") else None
    return ConditionSpec(num_classes=classes, open=True)


def call_denoiser(model, field_condition: bool, sample: Tensor, timestep: Tensor, condition: Optional[Tensor],
                  class_labels: Optional[Tensor]) -> Tensor:
    """``model``'s output for ``sample`` at ``timestep`` given the condition (compiles in a graph).

    A field condition (``field_condition``, a Python constant) is concatenated to the sample's
    channels; otherwise a ``condition`` is the model's third argument; ``class_labels`` fill the
    third argument when no vector condition does (a field-conditioned UNet may take labels too).
    """
    model_input = sample
    extra = class_labels
    if field_condition:
        model_input = ops.concat((sample, condition.astype(sample.dtype)), 1)
    elif condition is not None:
        extra = condition
    if extra is None:
        return model(model_input, timestep)
    return model(model_input, timestep, extra)


# ----------------------------------------------------------------------------- host-side checks

def _as_array(name: str, value) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.asnumpy()
    if isinstance(value, (list, tuple, np.ndarray, int, float, np.number)) and not isinstance(value, bool):
        return np.asarray(value)
    raise TypeError(f"{name} must be a numpy array, a list or a mindspore Tensor, got {type(value).__name__}")


def prepare_condition(spec: ConditionSpec, condition, batch: int, sample_shape: Tuple[int, ...],
                      dtype=ms.float32) -> Optional[Tensor]:
    """``condition`` checked against ``spec`` for a batch of ``sample_shape`` as a Tensor (or None).

    A vector condition given for one sample, shape (d,), is repeated over the batch. Raises a
    ``ValueError`` for a condition the model does not take, a missing one, a wrong shape or
    non-finite values, and a ``TypeError`` for an unsupported type.
    """
    if condition is None:
        if spec.vector is not None or spec.field is not None:
            raise ValueError(f"condition must be given: this model needs {spec.describe_condition(batch)}")
        return None
    if not spec.takes_condition:
        hint = "; class labels go in class_labels=" if spec.takes_labels else ""
        raise ValueError(f"condition given, but this model takes no condition{hint}")
    array = _as_array("condition", condition)
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise TypeError(f"condition must hold real numbers, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError("condition holds NaN or infinite values")
    if spec.vector is not None:
        if array.shape == (spec.vector,):
            array = np.broadcast_to(array, (batch, spec.vector))
        if array.shape != (batch, spec.vector):
            raise ValueError(f"condition must have shape ({batch}, {spec.vector}) (or ({spec.vector},) for every "
                             f"sample), got {array.shape}")
    elif spec.field is not None:
        expected = (batch, spec.field) + tuple(sample_shape[2:])
        if array.shape == expected[1:]:
            array = np.broadcast_to(array, expected)
        if array.shape != expected:
            raise ValueError(f"condition must be a field of shape {expected} (batch, {spec.field} condition "
                             f"channels, the sample's grid {tuple(sample_shape[2:])}), got {array.shape}")
    elif array.ndim == 0 or array.shape[0] != batch:
        raise ValueError(f"condition must have the batch size {batch} on its first axis, got shape {array.shape}")
    return Tensor(np.ascontiguousarray(array, np.float32), dtype)


def prepare_class_labels(spec: ConditionSpec, class_labels, batch: int) -> Optional[Tensor]:
    """``class_labels`` checked against ``spec``: (batch,) int32 in [0, num_classes) or float32 labels;
    an int / float alone is accepted for a batch of one."""
    if class_labels is None:
        if spec.takes_labels:
            raise ValueError("class_labels must be given: this model is class-conditional")
        return None
    if not spec.takes_labels and not spec.open:
        raise ValueError("class_labels given, but the model is not class-conditional (its UNet has no "
                         "num_class_embeds or class_embed_type)")
    if isinstance(class_labels, (int, float, np.number)) and not isinstance(class_labels, bool):
        if batch != 1:
            raise ValueError(f"a single class label needs batch_size 1, got batch_size {batch}; pass a list of "
                             f"{batch} labels")
        class_labels = [class_labels]
    labels = _as_array("class_labels", class_labels)
    if labels.shape != (batch,):
        raise ValueError(f"class_labels must be {batch} labels (one per sample), got shape {labels.shape}")
    if spec.float_labels or (spec.open and np.issubdtype(labels.dtype, np.floating)):
        if not np.all(np.isfinite(labels.astype(np.float64))):
            raise ValueError("class_labels hold NaN or infinite values")
        return Tensor(labels.astype(np.float32))
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"class_labels must be {batch} ints (one per sample), got {labels.tolist()}")
    if spec.num_classes is not None and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise ValueError(f"class_labels must lie in [0, {spec.num_classes - 1}], got {labels.tolist()}")
    return Tensor(labels.astype(np.int32), ms.int32)


def null_condition_for(null, condition: Optional[Tensor], class_labels: Optional[Tensor]):
    """The unconditional half of classifier-free guidance: ``(condition, class_labels)`` like the
    given ones, with the condition replaced by ``null`` (``"zeros"`` or a per-sample array) or,
    for a model conditioned on labels only, the labels by ``null`` (an int label)."""
    if condition is None:
        if isinstance(null, bool) or not isinstance(null, (int, np.integer)):
            raise ValueError(f"the null condition of a model conditioned on labels is an int label, got {null!r}")
        return None, ops.full_like(class_labels, int(null))
    if isinstance(null, (int, np.integer)):
        raise ValueError(f"the null condition of a model conditioned on {tuple(condition.shape[1:])}-shaped "
                         f"conditions is 'zeros' or an array of that shape, got the label {null!r}")
    if null == "zeros":
        return ops.zeros_like(condition), class_labels
    array = np.asarray(null, np.float32)
    if array.shape != tuple(condition.shape[1:]):
        raise ValueError(f"null_condition must have the per-sample condition shape {tuple(condition.shape[1:])}, "
                         f"got {array.shape}")
    return Tensor(np.broadcast_to(array, tuple(condition.shape)).copy(), condition.dtype), class_labels


def check_null_condition(value):
    """A stored or assigned null condition: None, an int label, ``"zeros"`` or a list of floats."""
    if value is None or value == "zeros":
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a null class label must be >= 0, got {value}")
        return int(value)
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"null_condition must be None, an int label, 'zeros' or an array of numbers, got "
                         f"{value!r}") from err
    if array.ndim == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"null_condition must be None, an int label, 'zeros' or a finite array, got {value!r}")
    return array.tolist()
