"""The background-colour Clever Hans: a grey background level per class, painted on or found in N×C×H×W
images (the `background` data source paints it; explanations are scored on how much of their mass
falls on the background)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from studio.errors import StudioError


@dataclass(frozen=True)
class Background:
    """Class k's background is lifted to levels[k]: every pixel darker than the level becomes it, the
    strokes stay. A pixel within `ink` of an image's darkest value counts as background."""

    levels: tuple[float, ...]
    ink: float = 0.2

    def __post_init__(self):
        if not self.levels:
            raise StudioError("background levels are empty; give one level in [0, 1] per class")
        bad = [v for v in self.levels if not 0 <= v <= 1]
        if bad:
            raise StudioError(f"background levels must be in [0, 1], got {bad[0]}")
        if not 0 < self.ink <= 1:
            raise StudioError(f"background ink must be in (0, 1], got {self.ink}")

    def level(self, labels: torch.Tensor) -> torch.Tensor:
        """Each image's background level (N floats) from its class (N ints)."""
        levels = torch.tensor(self.levels, dtype=torch.float32)
        if len(labels) and int(labels.max()) >= len(levels):
            raise StudioError(f"background has {len(levels)} levels; class {int(labels.max())} has none "
                              "(give one level per class)")
        return levels[labels]

    def paint(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """A copy of N×C×H×W images with every pixel darker than its class's level raised to it."""
        return torch.maximum(images, self.level(labels).to(images.dtype)[:, None, None, None])

    def region(self, images: torch.Tensor) -> torch.Tensor:
        """The background pixels of each image (within `ink` of its darkest value): N×H×W bool."""
        grey = images.mean(1)
        return grey <= grey.flatten(1).amin(1)[:, None, None] + self.ink

    def present(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Which images carry their class's background (their darkest pixel is the level): N bool."""
        return (images.flatten(1).amin(1) - self.level(labels)).abs() < 1e-6
