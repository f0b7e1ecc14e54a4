"""Pictures of samples: a perceptually ordered colour map for one-channel fields, a grid of a
batch, PNG output, and field PNGs in the data's units with a colour bar.

Two kinds of picture: RGB images (:func:`save_png`, values in [0, 1] as a pipeline's
``output_type="np"`` gives them) and fields (:func:`save_field_png`, values in any units,
colour-mapped over a range fitted to the batch or given, with a labelled colour bar).

>>> import numpy as np
>>> image_grid(np.zeros((3, 4, 4, 1)), pad=1).shape
(11, 11, 3)
>>> colorize(np.array([0.0, 1.0])).tolist()
[[68, 1, 84], [253, 231, 37]]
>>> fitted_range(np.array([280.0, 300.0, 320.0]), vmin=290.0)
(290.0, 319.8)
"""
from __future__ import annotations

import math
import os
from typing import Optional, Tuple

import numpy as np

_VIRIDIS = np.array(
    [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137], [53, 183, 121],
     [109, 205, 89], [180, 222, 44], [253, 231, 37]],
    np.float64,
)


def colorize(field: np.ndarray) -> np.ndarray:
    """A one-channel field in [0, 1] to RGB with a viridis-like map (perceptually ordered)."""
    pos = np.clip(field, 0, 1) * (len(_VIRIDIS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_VIRIDIS) - 2)
    frac = (pos - lo)[..., None]
    return ((1 - frac) * _VIRIDIS[lo] + frac * _VIRIDIS[lo + 1]).astype(np.uint8)


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """(B, H, W, C) in [0, 1] to one RGB uint8 grid image; one-channel fields are colour-mapped."""
    batch, height, width, channels = images.shape
    columns = columns or int(np.ceil(np.sqrt(batch)))
    rows = int(np.ceil(batch / columns))
    if channels == 1:
        tiles = colorize(images[..., 0])
    elif channels == 3:
        tiles = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    else:
        tiles = colorize(images.mean(axis=-1))
    grid = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, 3), 255, np.uint8)
    for k in range(batch):
        r, c = divmod(k, columns)
        grid[pad + r * (height + pad): pad + r * (height + pad) + height,
             pad + c * (width + pad): pad + c * (width + pad) + width] = tiles[k]
    return grid


def save_png(path: str | os.PathLike, images: np.ndarray, scale: int = 1) -> None:
    """Write :func:`image_grid` of ``images`` as a PNG, each pixel enlarged ``scale`` times."""
    from PIL import Image

    grid = image_grid(images)
    picture = Image.fromarray(grid)
    if scale > 1:
        picture = picture.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    picture.save(path, format="PNG")


#: The central share of the values a fitted range keeps: the 0.5th to the 99.5th percentile, so
#: a few outlying pixels do not wash out the colours of the rest.
ROBUST_PERCENTILES = (0.5, 99.5)


def fitted_range(fields, vmin: Optional[float] = None, vmax: Optional[float] = None) -> Tuple[float, float]:
    """The colour range of ``fields`` (any shape, any units): ``vmin``/``vmax`` where given,
    else the robust minimum / maximum of the finite values (:data:`ROBUST_PERCENTILES`). A
    constant batch gets a range around its value. ``ValueError`` when a given bound is not
    finite or the range is empty (``vmin >= vmax``)."""
    for name, value in (("vmin", vmin), ("vmax", vmax)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if vmin is not None and vmax is not None and not vmin < vmax:
        raise ValueError(f"vmin must be smaller than vmax, got vmin={vmin!r}, vmax={vmax!r}")
    if vmin is None or vmax is None:
        values = np.asarray(fields, np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError("the fields hold no finite value to fit a colour range to; give vmin and vmax")
        low, high = (float(v) for v in np.percentile(values, ROBUST_PERCENTILES))
        if not high > low:
            pad = 0.5 if low == 0 else abs(low) * 0.01
            low, high = low - pad, high + pad
        fitted = (low, high)
        if vmin is not None:
            fitted = (vmin, high) if vmin < high else (vmin, vmin + (high - low))
        elif vmax is not None:
            fitted = (low, vmax) if low < vmax else (vmax - (high - low), vmax)
        vmin, vmax = fitted
    return float(vmin), float(vmax)


def tick_labels(vmin: float, vmax: float, count: int) -> list:
    """``count`` evenly spaced values from ``vmin`` to ``vmax`` as text, with the decimals
    their spacing needs (scientific notation for very large or small magnitudes)."""
    values = np.linspace(vmin, vmax, count)
    step = (vmax - vmin) / max(count - 1, 1)
    magnitude = max(abs(vmin), abs(vmax))
    if magnitude >= 1e5 or magnitude < 1e-3:
        return [f"{v:.3e}" for v in values]
    decimals = int(max(0, -math.floor(math.log10(step)))) if step > 0 else 2
    while decimals < 8 and np.max(np.abs(np.round(values, decimals) - values)) > 0.05 * step:
        decimals += 1  # labels within 5% of a spacing: 2.5 needs a decimal, 25.18 none
    return [f"{v:.{decimals}f}" for v in values]


def add_colorbar(picture: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """``picture`` (H, W, 3 uint8) with a vertical colour bar on its right: the colour map from
    ``vmin`` (bottom) to ``vmax`` (top), tick marks and value labels. The canvas is at least
    96 pixels tall, so a small grid still gets a readable bar."""
    from PIL import Image, ImageDraw

    height, width = picture.shape[:2]
    canvas_height = max(height, 96)
    margin, gap, bar_width, tick = 6, 8, 14, 4
    bar_top, bar_bottom = margin, canvas_height - margin - 1
    count = int(min(5, max(2, (bar_bottom - bar_top) // 24 + 1)))
    labels = tick_labels(vmin, vmax, count)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max(int(math.ceil(measure.textlength(text))) for text in labels)
    bar_left = width + gap
    canvas = Image.new("RGB", (bar_left + bar_width + tick + 3 + label_width + margin, canvas_height), "white")
    canvas.paste(Image.fromarray(picture), (0, (canvas_height - height) // 2))
    levels = np.linspace(1.0, 0.0, bar_bottom - bar_top + 1)  # top row: vmax
    strip = np.repeat(colorize(levels)[:, None, :], bar_width, axis=1)
    canvas.paste(Image.fromarray(strip), (bar_left, bar_top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([bar_left - 1, bar_top - 1, bar_left + bar_width, bar_bottom + 1], outline="black")
    for k, text in enumerate(labels):
        y = bar_bottom - round(k * (bar_bottom - bar_top) / (count - 1))
        draw.line([bar_left + bar_width, y, bar_left + bar_width + tick, y], fill="black")
        text_y = min(max(y - 5, 0), canvas_height - 11)
        draw.text((bar_left + bar_width + tick + 3, text_y), text, fill="black")
    return np.asarray(canvas)


def save_field_png(path: str | os.PathLike, fields: np.ndarray, scale: int = 1, vmin: Optional[float] = None,
                   vmax: Optional[float] = None) -> Tuple[float, float]:
    """Write a grid of ``fields`` (B, C, H, W), in their own units, as a PNG with a colour bar.

    One channel is shown as it is, several by their mean (as :func:`image_grid` does). Values
    map linearly from [``vmin``, ``vmax``] onto the colour map, clipped at its ends; missing
    bounds are fitted to the batch (:func:`fitted_range`). Each pixel is enlarged ``scale``
    times; the bar is drawn at the final size. Returns the ``(vmin, vmax)`` used.
    """
    from PIL import Image

    arr = np.asarray(fields, np.float64)
    if arr.ndim != 4:
        raise ValueError(f"fields must be shaped (B, C, H, W), got shape {arr.shape}")
    values = arr[:, 0] if arr.shape[1] == 1 else arr.mean(axis=1)
    vmin, vmax = fitted_range(values, vmin, vmax)
    unit = np.nan_to_num((values - vmin) / (vmax - vmin), nan=0.0, posinf=1.0, neginf=0.0)
    grid = image_grid(unit[..., None])
    picture = Image.fromarray(grid)
    if scale > 1:
        picture = picture.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    Image.fromarray(add_colorbar(np.asarray(picture), vmin, vmax)).save(path, format="PNG")
    return vmin, vmax
