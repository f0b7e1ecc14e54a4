"""One table of constructor-argument descriptions, and the code that turns it into ``Args:`` sections.

The same options (``num_train_timesteps``, ``beta_schedule``, ``steps_offset``, ...) appear in many
schedulers; writing their meaning into every class docstring would copy the same paragraph six times
and let the copies drift. Instead :data:`ARGUMENTS` describes each argument once (in diffusers'
meaning), :data:`OVERRIDES` holds the few per-class differences, and :func:`document_arguments`
appends a generated ``Args:`` section to a class docstring, taking every default from
``inspect.signature`` so the text can never disagree with the code. :func:`document_public_classes`
runs it once, at import, over the package's public classes, so ``help(DDIMScheduler)`` explains
``steps_offset``.

A class whose docstring already has an ``Args:`` section keeps its own entries; only the arguments it
does not describe are added to that section. The section is placed before an ``Example:`` block, so
doctests are unchanged.
"""
from __future__ import annotations

import importlib
import inspect
import re
import textwrap
from typing import Dict, Iterable, List, Mapping, Optional

#: What each constructor argument means, allowed values included; the default is added from the signature.
ARGUMENTS: Dict[str, str] = {
    # --- every scheduler, model and pipeline Cell
    "compute_dtype": (
        "dtype the Cell computes in, ``mindspore.float32`` or ``mindspore.float16`` (host-side tables "
        "are built in float64/float32 and cast once)."
    ),
    # --- noise schedule (VP schedulers)
    "num_train_timesteps": "number of diffusion steps T the model was trained with; timesteps run over [0, T).",
    "beta_start": "β of the first training step (the low end of the ``linear`` / ``scaled_linear`` ramps).",
    "beta_end": "β of the last training step (the high end of the ``linear`` / ``scaled_linear`` ramps).",
    "beta_schedule": (
        "how β grows over the training steps: ``\"linear\"``, ``\"scaled_linear\"`` (linear in sqrt(β), as "
        "in latent diffusion), ``\"squaredcos_cap_v2\"`` (the cosine ᾱ of Nichol & Dhariwal, β capped at "
        "0.999) or ``\"sigmoid\"``. Ignored when ``trained_betas`` is given."
    ),
    "trained_betas": (
        "an explicit sequence of ``num_train_timesteps`` betas that replaces ``beta_start`` / ``beta_end`` / "
        "``beta_schedule``; ``None`` builds them from the schedule."
    ),
    "rescale_betas_zero_snr": (
        "rescale the betas so the last training step has zero signal-to-noise ratio (ᾱ_T = 0, Lin et al. "
        "2023), letting the model start from pure noise; pair it with ``v_prediction`` and "
        "``timestep_spacing=\"trailing\"``."
    ),
    # --- what the model predicts and how x̂0 is kept in range
    "prediction_type": (
        "what the model outputs: ``\"epsilon\"`` (the added noise), ``\"sample\"`` (x̂0 directly) or "
        "``\"v_prediction\"`` (v = ᾱ^½·ε − (1−ᾱ)^½·x0, Salimans & Ho 2022)."
    ),
    "clip_sample": "clip the predicted x̂0 to [−``clip_sample_range``, ``clip_sample_range``] at every step.",
    "clip_sample_range": "half-width of the interval x̂0 is clipped to when ``clip_sample`` is on.",
    "thresholding": (
        "apply dynamic thresholding to x̂0 (Imagen, Saharia et al. 2022): clip each sample at a per-sample "
        "quantile of |x̂0| and rescale. Not for latent-space models."
    ),
    "dynamic_thresholding_ratio": "the quantile of |x̂0| used as the per-sample clip value by ``thresholding``.",
    "sample_max_value": "upper bound on the per-sample clip value of ``thresholding``.",
    # --- inference timesteps
    "timestep_spacing": (
        "how the ``num_inference_steps`` timesteps are picked from the training steps: ``\"linspace\"`` "
        "(evenly spaced, ending at T−1), ``\"leading\"`` (multiples of T//N starting at 0, plus "
        "``steps_offset``) or ``\"trailing\"`` (counted back from T). See table 2 of Lin et al. 2023."
    ),
    "steps_offset": (
        "an integer added to every inference timestep with ``timestep_spacing=\"leading\"`` (Stable "
        "Diffusion uses 1, so the last step is t = 1 rather than t = 0)."
    ),
    "set_alpha_to_one": (
        "what ᾱ the final step lands on: ``True`` uses ᾱ = 1 (a clean sample), ``False`` uses ᾱ_0 of the "
        "first training step."
    ),
    "variance_type": (
        "how the step's noise variance is chosen: ``\"fixed_small\"`` (the posterior variance β̃_t), "
        "``\"fixed_small_log\"`` (the same, computed in log space), ``\"fixed_large\"`` / "
        "``\"fixed_large_log\"`` (β_t), ``\"learned\"`` (the model outputs the log variance in extra "
        "channels) or ``\"learned_range\"`` (the model interpolates between the small and large log variances)."
    ),
    # --- σ (Karras-style) schedules
    "interpolation_type": (
        "how σ is interpolated between training steps: ``\"linear\"`` or ``\"log_linear\"`` (linear in log σ)."
    ),
    "use_karras_sigmas": "space the inference σ as in Karras et al. 2022 (ρ = 7), denser near σ_min.",
    "use_exponential_sigmas": "space the inference σ evenly in log σ.",
    "use_beta_sigmas": "space the inference σ by a Beta(0.6, 0.6) quantile ramp (Lee et al. 2024).",
    "use_flow_sigmas": (
        "use flow-matching σ (σ = t, shifted by ``flow_shift``) instead of σ from the betas; for models "
        "trained on rectified-flow paths."
    ),
    "flow_shift": "the shift s of the flow-matching σ, σ' = s·σ / (1 + (s − 1)·σ); 1 leaves σ unchanged.",
    "sigma_min": (
        "smallest σ of the inference schedule; ``None`` takes it from the training betas. Only used by the "
        "Karras / exponential / beta σ spacings."
    ),
    "sigma_max": (
        "largest σ of the inference schedule; ``None`` takes it from the training betas. Only used by the "
        "Karras / exponential / beta σ spacings."
    ),
    "timestep_type": (
        "what the model is given as timestep: ``\"discrete\"`` (the training step index) or "
        "``\"continuous\"`` (0.25·log σ, the EDM preconditioning)."
    ),
    "final_sigmas_type": (
        "σ the last step goes to: ``\"zero\"`` (a fully denoised sample) or ``\"sigma_last\"`` (the smallest "
        "training σ)."
    ),
    # --- DPM-Solver
    "solver_order": "order of the multistep solver, 1, 2 or 3 (2 is recommended for guided sampling, 3 otherwise).",
    "algorithm_type": (
        "which DPM-Solver: ``\"dpmsolver\"`` (noise-prediction form), ``\"dpmsolver++\"`` (data-prediction "
        "form, better with guidance), ``\"sde-dpmsolver\"`` or ``\"sde-dpmsolver++\"`` (their stochastic "
        "variants, which add noise at each step)."
    ),
    "solver_type": (
        "the second-order update: ``\"midpoint\"`` or ``\"heun\"``; they differ slightly, midpoint is the "
        "usual choice."
    ),
    "lower_order_final": (
        "drop to lower-order steps for the last few steps, which keeps sampling with fewer than 15 steps stable."
    ),
    "euler_at_final": (
        "make the very last step a first-order (Euler) step; more stable at the cost of some detail."
    ),
    "use_lu_lambdas": "space the inference steps uniformly in log-SNR λ(t) as in Lu et al. (DPM-Solver++).",
    "lambda_min_clipped": (
        "lower clip on log-SNR λ(t) for numerical stability; matters for the cosine schedule "
        "(``-inf``: no clipping)."
    ),
    "use_dynamic_shifting": (
        "shift the σ schedule at ``set_timesteps`` time by the ``mu`` passed there (resolution-dependent shifting)."
    ),
    "time_shift_type": "the form of the dynamic shift: ``\"exponential\"`` or ``\"linear\"``.",
    # --- score SDE (VE)
    "snr": "signal-to-noise ratio that sets the Langevin corrector's step size.",
    "sampling_eps": "the final, smallest time of the reverse SDE (sampling runs from 1 down to this value).",
    "correct_steps": "number of Langevin corrector steps after each predictor step.",
    # --- consistency models
    "sigma_data": "standard deviation of the data distribution, used by the skip/output scalings c_skip, c_out.",
    "s_noise": "scale on the noise added between steps; 1 adds the exact amount the σ schedule asks for.",
    "rho": "the ρ of the Karras σ schedule the timesteps come from.",
    "clip_denoised": "clip the denoised x̂0 to [−1, 1].",
    # --- UNet2DModel
    "sample_size": "height and width of the input (an int, or an (H, W) pair); ``None`` leaves them unrecorded.",
    "in_channels": "number of channels of the input sample.",
    "out_channels": "number of channels of the output.",
    "center_input_sample": "map the input from [0, 1] to [−1, 1] (x ← 2x − 1) before the first convolution.",
    "time_embedding_type": (
        "how the timestep is projected: ``\"positional\"`` (sinusoidal), ``\"fourier\"`` (Gaussian Fourier "
        "features of log σ, for score-SDE models) or ``\"learned\"`` (one trained vector per integer timestep)."
    ),
    "time_embedding_dim": "width of the time embedding; ``None`` uses 4 × ``block_out_channels[0]``.",
    "freq_shift": "the frequency shift of the sinusoidal timestep projection.",
    "flip_sin_to_cos": "put the cosine half of the sinusoidal projection first ([cos, sin] instead of [sin, cos]).",
    "down_block_types": (
        "one block type per resolution level of the encoder, e.g. ``\"DownBlock2D\"`` or "
        "``\"AttnDownBlock2D\"`` (with self-attention); the names of diffusers' blocks."
    ),
    "mid_block_type": "the bottleneck block, ``\"UNetMidBlock2D\"`` or ``None`` for no mid block.",
    "up_block_types": (
        "one block type per resolution level of the decoder, e.g. ``\"UpBlock2D\"`` or ``\"AttnUpBlock2D\"``; "
        "as many as ``down_block_types``."
    ),
    "block_out_channels": "output channels of each resolution level; one entry per down block.",
    "layers_per_block": "residual layers per down block (up blocks have one more).",
    "mid_block_scale_factor": "scale applied to the residual connections of the mid block.",
    "downsample_padding": "padding of the strided downsampling convolution.",
    "downsample_type": "how down blocks halve the resolution: ``\"conv\"`` (strided convolution) or ``\"resnet\"``.",
    "upsample_type": "how up blocks double the resolution: ``\"conv\"`` (nearest + convolution) or ``\"resnet\"``.",
    "dropout": "dropout probability inside the residual blocks.",
    "act_fn": "activation function of the residual blocks and the time embedding, e.g. ``\"silu\"``.",
    "attention_head_dim": "channels per attention head; ``None`` uses a single head over all channels.",
    "norm_num_groups": "number of groups of the group normalizations.",
    "attn_norm_num_groups": "groups of the attention blocks' group norm; ``None`` uses ``norm_num_groups``.",
    "norm_eps": "epsilon of the group normalizations.",
    "resnet_time_scale_shift": (
        "how the time embedding enters the residual blocks: ``\"default\"`` (added) or ``\"scale_shift\"`` "
        "(a FiLM-style scale and shift after the norm)."
    ),
    "add_attention": "include self-attention in the mid block.",
    "class_embed_type": (
        "class conditioning: ``None`` (a lookup table when ``num_class_embeds`` is set), ``\"timestep\"`` (a "
        "float label, embedded like a timestep), ``\"identity\"`` (a (B, time_embed_dim) vector added as is) or "
        "``\"projection\"`` (a vector through a two-layer MLP, as diffusers' UNet2DConditionModel)."
    ),
    "num_class_embeds": "number of classes of the class-label lookup table; ``None``: no class conditioning.",
    "projection_class_embeddings_input_dim": (
        "size of the condition vector of ``class_embed_type=\"projection\"`` (required for it, unused otherwise; "
        "written to ``config.json`` only when set)."
    ),
    # --- DiffusionTransformer / ConditionDiffusionTransformer (MindScience)
    "hidden_channels": "width H of the transformer; must be divisible by ``heads``.",
    "layers": "number of transformer blocks.",
    "heads": "number of attention heads.",
    "time_token_cond": "feed the time embedding as an extra token (True) or add it to every position (False).",
    "cond_channels": "size of the condition vector (B, cond_channels).",
    "cond_as_token": "feed the condition embedding as an extra token (True) or add it to every position (False).",
    # --- pipelines
    "unet": "the denoising model, e.g. a :class:`UNet2DModel`, called as ``unet(sample, timestep)``.",
    "scheduler": "the scheduler whose ``step`` drives the sampling loop.",
    "field_condition": "concatenate the condition to the sample's channels before the model call (a field condition).",
    "guided": (
        "classifier-free guidance: the model sees the batch with the condition and with the null condition in one "
        "call, and the two predictions are combined with ``guidance_scale``."
    ),
    "guide": (
        "observation guidance: a :class:`~mindscience_diffuser.guidance.Guidance` attached to its observation "
        "(DPS, ΠGDM, MMPS, replacement), whose pieces run after the model call and after the update; None: none."
    ),
    # --- output dataclasses
    "prev_sample": "the sample at the previous (less noisy) timestep, x_{t−1}; the input of the next step.",
    "pred_original_sample": "the model's estimate of the clean sample x̂0 at this step (``None`` if not computed).",
    "prev_sample_mean": "the mean of x_{t−1} before the noise is added (the denoised final output).",
    "images": "the generated images, a list of PIL images or a (B, H, W, C) numpy array.",
    "sample": "the model output, shaped like the input sample with ``out_channels`` channels.",
    # --- training data
    "kind": "which synthetic field: ``\"grf\"`` (Gaussian random field) or ``\"darcy\"`` (Darcy-flow pressure).",
    "num_samples": "number of fields generated.",
    "size": "side length of each (square) field, in grid points.",
    "vary": (
        "generator parameters drawn per field, ``{name: (low, high)}`` uniformly (e.g. "
        "``{\"spectrum\": (1.5, 3.5)}``); the drawn values are each field's condition, (N, k) in the order given."
    ),
    "path": "the MindIR file ``export_sampler`` wrote.",
    # --- configuration
    "used_defaults": (
        "keys whose values came from the constructor's defaults rather than from the caller; they give way "
        "to the new class's defaults when the config moves to another class."
    ),
}

#: Arguments whose meaning differs in one class: {class name: {argument: description}}.
OVERRIDES: Dict[str, Dict[str, str]] = {
    "ScoreSdeVeScheduler": {
        "num_train_timesteps": "number of noise levels the continuous-time VE SDE is discretized into.",
        "sigma_min": "smallest noise level σ of the VE SDE (σ at t = ``sampling_eps``).",
        "sigma_max": "largest noise level σ of the VE SDE (σ at t = 1), the scale of the initial noise.",
    },
    "CMStochasticIterativeScheduler": {
        "num_train_timesteps": "number of discretization steps of the Karras σ schedule the model was distilled on.",
        "sigma_min": "smallest σ of the schedule (the last step's noise level).",
        "sigma_max": "largest σ of the schedule, the scale of the initial noise.",
    },
    "UNet2DModel": {
        "num_train_timesteps": (
            "size of the timestep table of ``time_embedding_type=\"learned\"`` (required for it, unused otherwise)."
        ),
    },
    "DPMSolverMultistepScheduler": {
        "variance_type": (
            "``None``, or ``\"learned\"`` / ``\"learned_range\"`` for a model that outputs a variance in extra "
            "channels, which the solver then drops."
        ),
        "prediction_type": ARGUMENTS["prediction_type"][:-1] + ", or ``\"flow_prediction\"`` (a flow velocity).",
    },
    "DPMSolverMultistepInverseScheduler": {
        "variance_type": (
            "``None``, or ``\"learned\"`` / ``\"learned_range\"`` for a model that outputs a variance in extra "
            "channels, which the solver then drops."
        ),
        "algorithm_type": (
            "which DPM-Solver runs the inversion: ``\"dpmsolver\"`` or ``\"dpmsolver++\"`` (the SDE variants "
            "are rejected: run backwards their noise scale is undefined)."
        ),
    },
    "ScoreSdeVePipeline": {"scheduler": "a :class:`ScoreSdeVeScheduler` (predictor-corrector sampling)."},
    "ConsistencyModelPipeline": {"scheduler": "a :class:`CMStochasticIterativeScheduler` (multistep sampling)."},
    "DDIMPipeline": {
        "scheduler": "any scheduler; it is converted to a :class:`DDIMScheduler` with the same config.",
    },
    "UNet2DOutput": {"sample": "the UNet's prediction, shaped like the input with ``out_channels`` channels."},
    "SyntheticFieldDataset": {"seed": "seed of the field generator; the same seed gives the same fields."},
}

#: Classes that take their argument descriptions from another class's ``Args:`` section
#: (``DiffusionTrainer(**options)`` takes the fields of ``TrainerConfig``, documented there).
BORROWED_FROM: Dict[str, str] = {"DiffusionTrainer": "mindscience_diffuser.training.trainer:TrainerConfig"}

#: Public classes outside the package namespace that are documented too.
EXTRA_CLASSES = ("mindscience_diffuser.schedulers.consistency_models:CMStochasticIterativeScheduler",
                 "mindscience_diffuser.pipelines.sampling_loop:SamplingLoop")

_SECTION = re.compile(r"^(?P<indent>[ \t]*)(?P<name>[A-Z][A-Za-z ]*):[ \t]*$")
_ENTRY = re.compile(r"^(?P<name>\*{0,2}\w+)(?:\s*\([^)]*\))?:\s?(?P<text>.*)$")
_WIDTH = 110


def _resolve(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def documented_parameters(cls) -> List[inspect.Parameter]:
    """The constructor arguments of ``cls`` an ``Args:`` section must cover (no self, ``*args``, ``**kwargs``)."""
    params = inspect.signature(cls).parameters.values()
    return [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _section_bounds(lines: List[str], title: str):
    """(header index, end index, header indent) of section ``title`` in ``lines``, or ``None``."""
    for i, line in enumerate(lines):
        match = _SECTION.match(line)
        if match and match["name"] == title:
            indent = len(match["indent"])
            end = i + 1
            while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
                end += 1
            while end > i + 1 and not lines[end - 1].strip():
                end -= 1
            return i, end, indent
    return None


def parse_args_section(doc: Optional[str]) -> Dict[str, str]:
    """{argument name: description} of the ``Args:`` section of ``doc`` (``*``/``**`` prefixes dropped)."""
    if not doc:
        return {}
    lines = inspect.cleandoc(doc).splitlines()
    bounds = _section_bounds(lines, "Args")
    if bounds is None:
        return {}
    start, end, indent = bounds
    entries: Dict[str, str] = {}
    name, entry_indent = None, None
    for line in lines[start + 1:end]:
        depth = len(line) - len(line.lstrip())
        match = _ENTRY.match(line.strip())
        if line.strip() and match and (entry_indent is None or depth <= entry_indent):
            entry_indent = depth
            name = match["name"].lstrip("*")
            entries[name] = match["text"].strip()
        elif name is not None and line.strip():
            entries[name] = f"{entries[name]} {line.strip()}".strip()
    return entries


def _format_default(value) -> str:
    module = type(value).__module__ or ""
    if module.startswith("mindspore"):
        return f"``mindspore.{str(value).lower()}``"
    return f"``{value!r}``"


def _entry(param: inspect.Parameter, text: str, indent: str) -> List[str]:
    default = "Required." if param.default is param.empty else f"Default: {_format_default(param.default)}."
    body = f"{param.name}: {text} {default}"
    return textwrap.wrap(body, width=_WIDTH, initial_indent=indent, subsequent_indent=indent + "    ",
                         break_long_words=False, break_on_hyphens=False)


def _descriptions(cls, overrides: Optional[Mapping[str, str]]) -> Dict[str, str]:
    table = dict(ARGUMENTS)
    if cls.__name__ in BORROWED_FROM:
        table.update(parse_args_section(_resolve(BORROWED_FROM[cls.__name__]).__doc__))
    table.update(OVERRIDES.get(cls.__name__, {}))
    table.update(overrides or {})
    return table


def document_arguments(cls=None, *, overrides: Optional[Mapping[str, str]] = None, strict: bool = True):
    """Add an ``Args:`` section for every constructor argument of ``cls`` to its docstring.

    Usable as ``document_arguments(cls)`` or as a decorator, ``@document_arguments(overrides={...})``.
    Arguments the docstring already describes keep their text. An argument with no description
    anywhere raises ``KeyError`` (``strict=False``: it is left out of the section, and
    tests/test_docstrings.py reports it). Idempotent.
    """
    if cls is None:
        return lambda c: document_arguments(c, overrides=overrides, strict=strict)
    params = documented_parameters(cls)
    doc = cls.__dict__.get("__doc__") or ""
    present = parse_args_section(doc)
    missing = [p for p in params if p.name not in present]
    if not missing:
        return cls
    table = _descriptions(cls, overrides)
    undescribed = [p.name for p in missing if p.name not in table]
    if undescribed and not strict:
        missing = [p for p in missing if p.name in table]
        if not missing:
            return cls
    elif undescribed:
        raise KeyError(f"{cls.__qualname__}: no description for constructor argument(s) {undescribed}; "
                       "add them to mindscience_diffuser.docstrings.ARGUMENTS or OVERRIDES")
    lines = doc.splitlines()
    body = [line for line in lines[1:] if line.strip()]
    base = min((len(line) - len(line.lstrip()) for line in body), default=4) if body else 4
    bounds = _section_bounds(lines, "Args")
    if bounds is not None:  # extend the class's own section
        start, end, indent = bounds
        first = lines[start + 1] if start + 1 < end else ""
        entry_indent = " " * (len(first) - len(first.lstrip()) if first.strip() else indent + 4)
        new = [line for p in missing for line in _entry(p, table[p.name], entry_indent)]
        lines[end:end] = new
    else:
        pad = " " * base
        new = [f"{pad}Args:"] + [line for p in missing for line in _entry(p, table[p.name], pad + "    ")]
        example = next((i for i, line in enumerate(lines) if i and _SECTION.match(line)
                        and _SECTION.match(line)["name"] in ("Example", "Examples")), None)
        if example is None:
            while lines and not lines[-1].strip():
                lines.pop()
            lines += [""] + new + [pad]
        else:
            lines[example:example] = new + [""]
    cls.__doc__ = "\n".join(lines)
    return cls


def public_classes(namespace: Mapping[str, object]) -> List[type]:
    """The classes among the public names of ``namespace`` defined in this package, plus :data:`EXTRA_CLASSES`."""
    found = [value for name, value in namespace.items() if not name.startswith("_") and inspect.isclass(value)
             and (value.__module__ or "").startswith("mindscience_diffuser")]
    found += [_resolve(path) for path in EXTRA_CLASSES]
    unique: List[type] = []
    for cls in found:
        if cls not in unique:
            unique.append(cls)
    return unique


def document_public_classes(namespace: Mapping[str, object], skip: Iterable[str] = ()) -> None:
    """Run :func:`document_arguments` on every public class of ``namespace`` that has constructor arguments."""
    for cls in public_classes(namespace):
        if cls.__name__ in skip:
            continue
        try:
            params = documented_parameters(cls)
        except (TypeError, ValueError):  # no Python signature
            continue
        if params:  # not strict: a missing description must not break ``import mindscience_diffuser``
            document_arguments(cls, strict=False)
