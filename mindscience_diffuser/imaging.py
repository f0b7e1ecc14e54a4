"""Pictures of samples: a perceptually ordered colour map for one-channel fields, a grid of a
batch, and PNG output.

>>> import numpy as np
>>> image_grid(np.zeros((3, 4, 4, 1)), pad=1).shape
(11, 11, 3)
>>> colorize(np.array([0.0, 1.0])).tolist()
[[68, 1, 84], [253, 231, 37]]
"""
from __future__ import annotations

import os

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
