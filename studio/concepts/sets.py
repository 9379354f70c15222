"""Concept image sets: what the data's own images look like with a concept added, or a user's folder.

Built-in concepts transform the same base images, so a CAV against random images of the data set
learns the transformation, not the digits:
- mark: the Clever Hans corner square (studio/mark.py) pasted on;
- thick / thin: strokes dilated / eroded (grey morphology, 3×3 square / 2×2 square);
- background_light: the background lifted to mid grey (x -> 0.5 + 0.5 x).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from studio.data import IMAGE_SUFFIXES, image_files, pil_mode, read_images
from studio.errors import StudioError
from studio.mark import Mark

BUILTIN = ("mark", "thick", "thin", "background_light")


def thick(images: torch.Tensor) -> torch.Tensor:
    """Grey dilation with a 3×3 square: every stroke one pixel wider on each side."""
    return F.max_pool2d(images, 3, stride=1, padding=1)


def thin(images: torch.Tensor) -> torch.Tensor:
    """Grey erosion with a 2×2 square: strokes about one pixel narrower (a 3×3 one erases MNIST's thin ones)."""
    return -F.max_pool2d(F.pad(-images, (0, 1, 0, 1)), 2, stride=1)


def background_light(images: torch.Tensor) -> torch.Tensor:
    return 0.5 + 0.5 * images


def builtin_concept(name: str, images: torch.Tensor, mark: Mark | None = None) -> torch.Tensor:
    """N×C×H×W images in [0, 1] with the built-in concept `name` applied."""
    if name == "mark":
        return (mark or Mark()).plant(images)
    transforms = {"thick": thick, "thin": thin, "background_light": background_light}
    if name not in transforms:
        raise StudioError(f"unknown built-in concept {name!r}; choose from: {', '.join(BUILTIN)}, "
                          f"or give a folder of its images: concepts.{name}=<dir>")
    return transforms[name](images)


def load_concept_folder(name: str, folder: str, channels: int, size: int) -> torch.Tensor:
    """The images directly inside `folder` as N×C×size×size in [0, 1]."""
    path = Path(folder)
    if not path.is_dir():
        raise StudioError(f"concept {name!r}: folder not found: {folder!r}; give a folder of its images "
                          f"(concepts.{name}=<dir>) or 'builtin' for one of: {', '.join(BUILTIN)}")
    files = image_files(path)
    if not files:
        raise StudioError(f"concept {name!r}: folder {folder!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    arrays = np.stack(read_images(files, size, pil_mode(channels, "concept folder")))
    tensor = torch.from_numpy(arrays).float().div_(255)
    return tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2).contiguous()


def check_count(name: str, images: torch.Tensor, needed: int, where: str) -> None:
    if len(images) < needed:
        raise StudioError(f"concept {name!r} has {len(images)} image(s) {where}; a CAV needs at least {needed} "
                          "(tcav.min_images)")


def disjoint_sets(pool: int, count: int, size: int, seed: int) -> list[torch.Tensor]:
    """`count` index sets of `size` into a pool of `pool` images: disjoint slices of one permutation when
    the pool is large enough, else independent draws (sets may then share images)."""
    generator = torch.Generator().manual_seed(seed)
    if pool >= count * size:
        order = torch.randperm(pool, generator=generator)
        return [order[i * size:(i + 1) * size] for i in range(count)]
    if pool < size:
        raise StudioError(f"too few images for random concepts: the data's training split has {pool}; "
                          f"each random set needs {size} (tcav.images)")
    return [torch.randperm(pool, generator=generator)[:size] for _ in range(count)]
