"""Pictures of explanations (the edge where tensors become PNGs): one map per file, one panel per image.

Signed maps (LIME, IG, occlusion) use a diverging colormap centred on 0 (red = for the target, blue =
against); non-negative maps (saliency, SmoothGrad, Grad-CAM) use 'inferno'. Every file is written
atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from studio.files import atomic_path

MIN_SIDE = 112  # small images (28 px) are upscaled (nearest) so a map is readable on its own


def _limits(heat: torch.Tensor) -> tuple[str, float, float]:
    """(colormap, vmin, vmax) for one H×W map."""
    if float(heat.min()) < 0:
        bound = max(float(heat.abs().max()), 1e-12)
        return "RdBu_r", -bound, bound
    return "inferno", 0.0, max(float(heat.max()), 1e-12)


def map_rgb(heat: torch.Tensor) -> np.ndarray:
    """An H×W map as an H'×W'×3 uint8 picture (colormapped, upscaled to at least MIN_SIDE)."""
    from matplotlib import colormaps

    cmap, lo, hi = _limits(heat)
    values = ((heat.float() - lo) / (hi - lo)).clamp(0, 1).numpy()
    rgb = (colormaps[cmap](values)[..., :3] * 255).astype(np.uint8)
    scale = max(1, int(np.ceil(MIN_SIDE / min(rgb.shape[:2]))))
    return rgb.repeat(scale, 0).repeat(scale, 1)


def save_map(heat: torch.Tensor, path: str | Path) -> Path:
    """Write one H×W map as a PNG (atomically)."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(map_rgb(heat)).save(tmp, format="PNG")
    return path


def _show_image(ax, image: torch.Tensor) -> None:
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())


def save_panel(image: torch.Tensor, maps: dict[str, torch.Tensor], captions: dict[str, str], title: str,
               path: str | Path, box: tuple[slice, slice] | None = None) -> Path:
    """image (C×H×W) | one column per method (its H×W map over the grey image), captions under each;
    `box` outlines a planted mark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    columns = 1 + len(maps)
    fig, axes = plt.subplots(1, columns, figsize=(2.1 * columns, 2.7), squeeze=False)
    axes = axes[0]
    _show_image(axes[0], image)
    axes[0].set_title(title, fontsize=8)
    for ax, (name, heat) in zip(axes[1:], maps.items()):
        cmap, lo, hi = _limits(heat)
        ax.imshow(image.mean(0).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.imshow(heat.float().numpy(), cmap=cmap, vmin=lo, vmax=hi, alpha=0.75)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(captions.get(name, ""), fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        if box is not None:
            rows, cols = box
            ax.add_patch(Rectangle((cols.start - 0.5, rows.start - 0.5), cols.stop - cols.start,
                                   rows.stop - rows.start, fill=False, edgecolor="lime", linewidth=1))
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path
