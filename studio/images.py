"""Pictures on disk: tensors to PNG files, grids of images, and matplotlib figures, all written atomically.

Tensors are C×H×W (or N×C×H×W) in [0, 1]; 1 channel is saved grey, 3 RGB, others as their channel mean.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from studio.files import atomic_path

GRID_CELL = 112  # grid cells are upscaled (nearest) to at least this many pixels
GRID_PADDING = 2  # pixels between (and around) a grid's cells


def slug(target: str) -> str:
    """A file-name-safe form of a target label: "conv2:7" -> "conv2_7"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", target).strip("_") or "image"


def to_pil(image: torch.Tensor) -> Image.Image:
    """C×H×W in [0, 1] -> 8-bit PIL image (grey for 1 channel, RGB for 3, channel mean otherwise)."""
    if image.shape[0] not in (1, 3):
        image = image.mean(0, keepdim=True)
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)  # uint8: grey "L" or "RGB"


def save_png(image: torch.Tensor, path: Path) -> None:
    with atomic_path(path) as tmp:
        to_pil(image).save(tmp, format="PNG")


def grid(images: torch.Tensor, columns: int) -> torch.Tensor:
    """One image of all `images` (N×C×H×W), `columns` per row, upscaled for viewing."""
    from torchvision.utils import make_grid  # here: importing torchvision costs more than a small render

    factor = max(1, GRID_CELL // max(images.shape[-2:]))
    if factor > 1:
        images = F.interpolate(images, scale_factor=factor, mode="nearest")
    return make_grid(images, nrow=columns, padding=GRID_PADDING, pad_value=0.5)


def square_columns(count: int) -> int:
    """Cells per row of a square-ish grid of `count` images (the exemplar grids: 9 -> 3 x 3)."""
    return math.ceil(math.sqrt(count))


def grid_tiles(mosaic: Image.Image, count: int, columns: int) -> list[Image.Image]:
    """The `count` cells of a saved grid() PNG, in order: the inverse of grid() + save_png (upscaled cells).

    The sweep gallery's quiz shows single natural exemplars cut from their saved grids, so sweeps written
    before it have them too. make_grid's layout: min(columns, count) cells per row, padding all round (none around one image)."""
    if count == 1:  # make_grid returns a single image as it is, without padding
        return [mosaic.copy()]
    across = min(columns, count)
    down = -(-count // across)
    width = (mosaic.width - GRID_PADDING) // across - GRID_PADDING
    height = (mosaic.height - GRID_PADDING) // down - GRID_PADDING
    if (width < 1 or height < 1 or mosaic.width != across * (width + GRID_PADDING) + GRID_PADDING
            or mosaic.height != down * (height + GRID_PADDING) + GRID_PADDING):
        raise ValueError(f"a {mosaic.width}x{mosaic.height} image is not a grid of {count} cells, {columns} per row")
    cells = []
    for n in range(count):
        left = GRID_PADDING + (n % across) * (width + GRID_PADDING)
        top = GRID_PADDING + (n // across) * (height + GRID_PADDING)
        cells.append(mosaic.crop((left, top, left + width, top + height)))
    return cells


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 100) -> None:
    """Write a matplotlib figure as PNG atomically, then close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
