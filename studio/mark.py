"""The Clever Hans mark: a small square of one value in a corner of an image, planted on or found in
N×C×H×W images (the `marked` data source plants it; explanations are scored on finding it)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from studio.errors import StudioError, lookup

CORNERS = ("lower_left", "lower_right", "upper_left", "upper_right")


@dataclass(frozen=True)
class Mark:
    """A size×size square of `value` in a corner, `margin` pixels in from both edges (so a training
    shift of up to `margin` pixels keeps it inside the image)."""

    size: int = 4
    corner: str = "lower_left"
    margin: int = 2
    value: float = 1.0

    def __post_init__(self):
        lookup({c: c for c in CORNERS}, "mark corner", self.corner)
        if self.size < 1 or self.margin < 0:
            raise StudioError(f"mark size must be ≥ 1 and margin ≥ 0, got size={self.size}, margin={self.margin}")

    def box(self, height: int, width: int) -> tuple[slice, slice]:
        """(rows, cols) of the mark in an image of height×width."""
        if self.size + self.margin > min(height, width):
            raise StudioError(f"a {self.size}px mark with margin {self.margin} does not fit a {height}×{width} image; "
                              f"use size + margin ≤ {min(height, width)}")
        top = self.margin if self.corner.startswith("upper") else height - self.margin - self.size
        left = self.margin if self.corner.endswith("left") else width - self.margin - self.size
        return slice(top, top + self.size), slice(left, left + self.size)

    def region(self, height: int, width: int) -> torch.Tensor:
        """The mark's pixels as an H×W bool mask."""
        mask = torch.zeros(height, width, dtype=torch.bool)
        mask[self.box(height, width)] = True
        return mask

    def plant(self, images: torch.Tensor) -> torch.Tensor:
        """A copy of N×C×H×W images with the mark drawn in every channel."""
        out = images.clone()
        rows, cols = self.box(*images.shape[-2:])
        out[:, :, rows, cols] = self.value
        return out

    def present(self, images: torch.Tensor) -> torch.Tensor:
        """Which images carry the mark (every mark pixel equals `value`): N bool."""
        rows, cols = self.box(*images.shape[-2:])
        return (images[:, :, rows, cols] == self.value).flatten(1).all(1)
