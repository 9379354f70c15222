"""Concept masks for Network Dissection: per image and pixel, where a concept is (N×H×W bool).

Built in for digit data (images in [0, 1], channels averaged):
- ink: pixels > 0.5; background: the rest;
- mark: the Clever Hans corner square (studio/mark.py) on the images that carry it (empty elsewhere);
- loop_interior: the holes inside the digit's ink (scipy.ndimage.binary_fill_holes minus the ink);
- stroke_end: the ends of the ink's skeleton (skimage.morphology.skeletonize; pixels with exactly one
  8-neighbour on the skeleton), dilated by a 3×3 square;
- top_half / bottom_half: the digit's ink above / below the middle row of its bounding box.
The shape concepts (loop_interior, stroke_end, halves) read the digit's ink only: the mark's square is left
out of it on the images that carry the mark.

Or a user's folder: <dir>/images/<name>.png and, per concept, <dir>/<concept>/<name>.png masks of the same
size as their image (a pixel > 127 is in the concept; a missing mask is an empty one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from studio.data import IMAGE_SUFFIXES, image_files, pil_mode, read_images
from studio.errors import StudioError
from studio.mark import Mark

BUILTIN_MASKS = ("ink", "background", "mark", "loop_interior", "stroke_end", "top_half", "bottom_half")
INK = 0.5


def check_builtin(names) -> None:
    for name in names:
        if name not in BUILTIN_MASKS:
            raise StudioError(f"unknown built-in concept {name!r} for dissect; choose from: "
                              f"{', '.join(BUILTIN_MASKS)}, or give a mask folder: dissect.masks=<dir>")


def _skeletonize(ink: np.ndarray) -> np.ndarray:
    try:
        from skimage.morphology import skeletonize
    except ImportError:  # a rougher skeleton: the ink's one-pixel erosion residue
        return ink & ~ndimage.binary_erosion(ink)
    return skeletonize(ink)


def stroke_ends(ink: np.ndarray) -> np.ndarray:
    """H×W bool: the skeleton's end pixels (one 8-neighbour on the skeleton), dilated by a 3×3 square."""
    skeleton = _skeletonize(ink)
    neighbours = ndimage.convolve(skeleton.astype(np.uint8), np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], np.uint8),
                                  mode="constant")
    ends = skeleton & (neighbours == 1)
    return ndimage.binary_dilation(ends, np.ones((3, 3), bool))


def halves(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top, bottom): the ink above / at or below the middle row of its bounding box."""
    rows = np.flatnonzero(ink.any(1))
    if not len(rows):
        return ink.copy(), ink.copy()
    middle = (rows[0] + rows[-1] + 1) / 2
    upper = (np.arange(ink.shape[0]) < middle)[:, None]
    return ink & upper, ink & ~upper


def builtin_masks(images: torch.Tensor, names, mark: Mark | None = None) -> dict[str, torch.Tensor]:
    """{name: N×H×W bool} for the built-in concepts `names` on N×C×H×W images in [0, 1]."""
    check_builtin(names)
    mark = mark or Mark()
    ink = images.mean(1) > INK
    marked = mark.present(images)[:, None, None] & mark.region(*images.shape[-2:])
    out = {"ink": ink, "background": ~ink, "mark": marked}
    shapes = [n for n in names if n in ("loop_interior", "stroke_end", "top_half", "bottom_half")]
    if shapes:
        digit = (ink & ~marked).numpy()
        per_image = {n: np.zeros_like(digit) for n in shapes}
        for i, d in enumerate(digit):
            if "loop_interior" in per_image:
                per_image["loop_interior"][i] = ndimage.binary_fill_holes(d) & ~d
            if "stroke_end" in per_image:
                per_image["stroke_end"][i] = stroke_ends(d)
            if "top_half" in per_image or "bottom_half" in per_image:
                top, bottom = halves(d)
                for name, mask in (("top_half", top), ("bottom_half", bottom)):
                    if name in per_image:
                        per_image[name][i] = mask
        out.update({n: torch.from_numpy(m) for n, m in per_image.items()})
    return {n: out[n] for n in names}


def _open_size(file: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(file) as img:
        return img.size


def load_mask_folder(folder: str, channels: int, size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(N×C×size×size images in [0, 1], {concept: N×size×size bool}) from <folder>/images/<name>.<ext> and
    <folder>/<concept>/<name>.<ext> (same stem, same size as the image; a missing mask is empty)."""
    root = Path(folder)
    layout = f"{folder}/images/<name>.png with masks {folder}/<concept>/<name>.png"
    if not (root / "images").is_dir():
        raise StudioError(f"dissect.masks: no folder {str(root / 'images')!r}; the layout is {layout}")
    files = image_files(root / "images")
    if not files:
        raise StudioError(f"dissect.masks: {str(root / 'images')!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    index = {f.stem: i for i, f in enumerate(files)}
    images = torch.from_numpy(np.stack(read_images(files, size, pil_mode(channels, "dissect.masks")))).float() / 255
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()
    masks = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "images"):
        mask_files = image_files(sub)
        concept = torch.zeros(len(files), size, size, dtype=torch.bool)
        for file in mask_files:
            if file.stem not in index:
                raise StudioError(f"dissect.masks: mask {str(file)!r} has no image images/{file.stem}.* beside it")
            image_file = files[index[file.stem]]
            if _open_size(file) != _open_size(image_file):
                raise StudioError(f"dissect.masks: mask {str(file)!r} is {'×'.join(map(str, _open_size(file)))} "
                                  f"but its image {str(image_file)!r} is "
                                  f"{'×'.join(map(str, _open_size(image_file)))}; a mask must match its image")
            concept[index[file.stem]] = torch.from_numpy(_read_mask(file, size))
        if mask_files:
            masks[sub.name] = concept
    if not masks:
        raise StudioError(f"dissect.masks: {folder!r} holds no concept masks; the layout is {layout}")
    return images, masks


def _read_mask(file: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(file) as img:
        return np.asarray(img.convert("L").resize((size, size), Image.NEAREST)) > 127
