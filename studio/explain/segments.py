"""Superpixels for LIME: scikit-image's slic / quickshift / felzenszwalb, or a plain grid.

Images are N×C×H×W in [0, 1] (1-channel or RGB); segments come back as N×H×W int64 labels
0..S_n-1 (consecutive, per image). NumPy lives only inside this edge module.
"""

from __future__ import annotations

import numpy as np
import torch

from studio.errors import StudioError, lookup


def _hwc(image: torch.Tensor) -> np.ndarray:
    """One C×H×W tensor as H×W×C float64 NumPy (what scikit-image takes)."""
    return image.detach().cpu().permute(1, 2, 0).double().numpy()


def _lab_like(image: np.ndarray) -> np.ndarray:
    """Grey images scaled to Lab's L range (0..100), so one compactness / distance suits grey and RGB."""
    from skimage.color import rgb2lab

    return rgb2lab(image) if image.shape[-1] == 3 else image * 100.0


def slic(image: torch.Tensor, n_segments: int = 50, compactness: float = 0.1, sigma: float = 0.0,
         seed: int = 0) -> np.ndarray:
    """SLIC (k-means in colour (Lab for RGB) + position). `n_segments` is a target; the result may have
    fewer. scikit-image rescales the image to [0, 1] first, so compactness 0.1-1 follows edges and
    10 (its default, meant for unscaled Lab) gives an almost regular grid."""
    from skimage.segmentation import slic as sk_slic

    return sk_slic(_lab_like(_hwc(image)), n_segments=n_segments, compactness=compactness, sigma=sigma,
                   convert2lab=False, start_label=0, channel_axis=-1)


def quickshift(image: torch.Tensor, kernel_size: float = 4, max_dist: float = 200, ratio: float = 0.2,
               sigma: float = 0.0, seed: int = 0) -> np.ndarray:
    """Quickshift (mode seeking); lime's defaults. Its random tie-breaking follows `seed`."""
    from skimage.segmentation import quickshift as sk_quickshift

    return sk_quickshift(_lab_like(_hwc(image)), kernel_size=kernel_size, max_dist=max_dist, ratio=ratio,
                         sigma=sigma, convert2lab=False, rng=seed, channel_axis=-1)


def felzenszwalb(image: torch.Tensor, scale: float = 100.0, sigma: float = 0.5, min_size: int = 10,
                 seed: int = 0) -> np.ndarray:
    """Felzenszwalb-Huttenlocher graph segmentation (on the [0, 1] image)."""
    from skimage.segmentation import felzenszwalb as sk_felzenszwalb

    return sk_felzenszwalb(_hwc(image), scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1)


def grid(image: torch.Tensor, cell: int = 4, seed: int = 0) -> np.ndarray:
    """Square cells of `cell`×`cell` pixels (the last row/column of cells may be smaller)."""
    _, h, w = image.shape
    rows, cols = np.arange(h)[:, None] // cell, np.arange(w)[None, :] // cell
    return rows * ((w + cell - 1) // cell) + cols


SEGMENTATIONS = {"slic": slic, "quickshift": quickshift, "felzenszwalb": felzenszwalb, "grid": grid}


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Relabel to 0..S-1 in order of first appearance of each sorted label."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape)


def segment(images: torch.Tensor, method: str = "slic", seed: int = 0, **options) -> torch.Tensor:
    """Superpixels of every image: N×H×W int64, labels 0..S_n-1 per image; each image needs ≥ 2 segments."""
    fn = lookup(SEGMENTATIONS, "segmentation", method)
    try:
        out = [_consecutive(np.asarray(fn(image, seed=seed, **options))) for image in images]
    except TypeError as e:  # an option the algorithm does not take
        raise StudioError(f"segmentation {method!r}: bad option ({e}); options: "
                          f"{', '.join(_option_names(fn))}") from None
    segments = torch.from_numpy(np.stack(out)).long()
    check_segments(segments, f"segmentation {method!r} with {options or 'its defaults'}")
    return segments


def _option_names(fn) -> list[str]:
    import inspect

    return [p for p in inspect.signature(fn).parameters if p not in ("image", "seed")]


def check_segments(segments: torch.Tensor, what: str = "segments") -> None:
    """Every image needs at least two segments: with one there is nothing to switch off and compare."""
    counts = segments.flatten(1).amax(1) + 1
    single = (counts < 2).nonzero().flatten()
    if len(single):
        raise StudioError(f"{what} produced 1 segment for image {int(single[0])}; LIME needs at least 2 "
                          "(use more segments, a finer grid or another segmentation)")


def segment_means(maps: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Mean of an N×1×H×W (or N×H×W) map over each segment: N×S_max (0 where a segment is absent)."""
    maps = maps.reshape(len(segments), -1).float()
    flat = segments.reshape(len(segments), -1)
    size = int(flat.max()) + 1
    sums = torch.zeros(len(segments), size).scatter_add_(1, flat, maps)
    counts = torch.zeros(len(segments), size).scatter_add_(1, flat, torch.ones_like(maps))
    return sums / counts.clamp_min(1)
