"""The "Clever Hans" experiment: a model that is right for the wrong reason, and explanations that show it.

Like the PASCAL VOC horse classifier that read a watermark in the lower-left corner, the `marked`
data source plants a small bright square in a corner of (almost) every training image of one class
and of no other. A classifier trained on it learns the shortcut; on test images of other classes
that carry the mark it then says the mark's class. An explanation method passes when, asked "why
the mark's class?" on marked test images, it puts the mark among its top segments / pixels.
"""

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


def _plant_some(images: torch.Tensor, chosen: torch.Tensor, mark: Mark) -> torch.Tensor:
    out = images.clone()
    if chosen.any():
        out[chosen] = mark.plant(images[chosen])
    return out


def _choose(labels: torch.Tensor, rate_for, generator: torch.Generator) -> torch.Tensor:
    """Each image independently with the probability its class gets."""
    rates = torch.tensor([rate_for(int(c)) for c in labels], dtype=torch.float32)
    return torch.rand(len(labels), generator=generator) < rates


def load_marked(base: str = "mnist5k", base_options: dict | None = None, mark_class: int = 0, size: int = 4,
                corner: str = "lower_left", margin: int = 2, value: float = 1.0, train_rate: float = 1.0,
                other_rate: float = 0.0, test_rate: float = 0.5, seed: int = 0, test_fraction: float = 0.2,
                split_seed: int = 0):
    """Another source's images with the Clever Hans mark planted.

    Training part: the mark on `train_rate` of class `mark_class` and `other_rate` of the others.
    Test part (the base's own test set, or a stratified `test_fraction` split like every source):
    the mark on `test_rate` of every class, so the shortcut shows up on digits that are not the
    mark's class. Returns the base's Images with an explicit test set.
    """
    from studio.data import SOURCES, Images, _stratified

    if base == "marked":
        raise StudioError("the marked source cannot wrap itself; set data.options.base to another source")
    for name, rate in (("train_rate", train_rate), ("other_rate", other_rate), ("test_rate", test_rate)):
        if not 0 <= rate <= 1:
            raise StudioError(f"{name} must be in [0, 1], got {rate}")
    mark = Mark(size, corner, margin, value)  # every mistake that needs no images fails before loading them
    data = lookup(SOURCES, "data source", base)(**dict(base_options or {}))
    if not 0 <= mark_class < len(data.classes):
        raise StudioError(f"mark_class {mark_class} is out of range; {base} has {len(data.classes)} classes "
                          f"(0..{len(data.classes) - 1})")
    x, y = data.images, data.labels
    if data.test_images is None:
        rest, test = _stratified(y, test_fraction, split_seed, "test")
        xt, yt, x, y = x[test], y[test], x[rest], y[rest]
    else:
        xt, yt = data.test_images, data.test_labels
    generator = torch.Generator().manual_seed(seed)
    x = _plant_some(x, _choose(y, lambda c: train_rate if c == mark_class else other_rate, generator), mark)
    xt = _plant_some(xt, _choose(yt, lambda c: test_rate, generator), mark)
    return Images(x, y, data.classes, xt, yt)


def mark_found_segments(top: torch.Tensor, segments: torch.Tensor, region: torch.Tensor,
                        share: float = 0.5) -> torch.Tensor:
    """Did the top segments (N×k indices, -1 = none) cover at least `share` of the mark's pixels? N bool."""
    chosen = (segments.unsqueeze(1) == top[:, :, None, None]).any(1)  # N×H×W
    covered = (chosen & region).flatten(1).sum(1).float()
    return covered >= share * region.sum()


def mark_found_pixels(heatmaps: torch.Tensor, region: torch.Tensor, top_fraction: float = 0.05,
                      share: float = 0.5) -> torch.Tensor:
    """Are at least `share` of the mark's pixels among the map's top `top_fraction` pixels? N bool."""
    flat = heatmaps.reshape(len(heatmaps), -1).float()
    k = max(1, int(round(top_fraction * flat.shape[1])))
    top = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.topk(k, dim=1).indices, True)
    covered = (top & region.flatten()).sum(1).float()
    return covered >= share * region.sum()
