"""Robustness transforms: random pad/jitter/scale/rotate applied to the batch before each forward pass.

A transform is a plain callable images -> images (B×C×H×W). Each image gets its own random draw
(from torch's global RNG, which `render` seeds and restores), so seeds of one target see different
transforms in the same batch. The geometric ones are affine warps on a sampling grid
(`torch.nn.functional.affine_grid` + `grid_sample`); `compose` fuses consecutive warps into one
resampling, so jitter → scale → rotate → jitter costs (and blurs) like one warp.

`standard()` is Lucid's set: pad 12 (grey), jitter 8, scale 0.9–1.1, rotate ±10°, jitter 4. Unlike
Lucid, sizes are kept: jitter translates (zero fill) and scale zooms within the frame, so every image
of the batch keeps one shape and nothing is silently upsampled.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor], torch.Tensor]


def warp(x: torch.Tensor, matrices: torch.Tensor, mode: str = "bilinear", padding: str = "zeros") -> torch.Tensor:
    """Resample every image with its own (3×3, normalized coordinates) output -> source matrix."""
    grid = F.affine_grid(matrices[:, :2].to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=False)


class _Table:
    """Values to draw from, copied to each device once (not every step)."""

    def __init__(self, values: Sequence[float]):
        self.values = [float(v) for v in values]
        if not self.values:
            raise ValueError("a random transform needs at least one value to draw from")
        self._on: dict = {}

    def draw(self, n: int, device) -> torch.Tensor:
        """n values drawn uniformly (with replacement), from torch's RNG on `device`."""
        key = str(device)
        if key not in self._on:
            self._on[key] = torch.tensor(self.values, device=device)
        table = self._on[key]
        return table[torch.randint(len(table), (n,), device=device)]


def _eye(n: int, device) -> torch.Tensor:
    return torch.eye(3, device=device).expand(n, 3, 3).clone()


class Affine:
    """A random affine warp per image; subclasses say which matrices (output -> source coordinates)."""

    def matrices(self, n: int, height: int, width: int, device) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        return warp(x, self.matrices(n, h, w, x.device))


class jitter(Affine):  # noqa: N801 - used like a function, as in Lucid
    """Shift each image by a random integer (dx, dy), `pixels` possible values per axis, centred on 0."""

    def __init__(self, pixels: int):
        self.pixels = int(pixels)
        self.offsets = _Table([i - self.pixels // 2 for i in range(max(self.pixels, 1))])

    def matrices(self, n, height, width, device):
        m = _eye(n, device)
        m[:, 0, 2] = -2 * self.offsets.draw(n, device) / width
        m[:, 1, 2] = -2 * self.offsets.draw(n, device) / height
        return m

    def __repr__(self):
        return f"jitter({self.pixels})"


class scale(Affine):  # noqa: N801
    """Zoom each image about its centre by a factor drawn from `factors` (>1 enlarges the content)."""

    def __init__(self, factors: Sequence[float]):
        self.factors = _Table(factors)

    def matrices(self, n, height, width, device):
        s = self.factors.draw(n, device)
        m = _eye(n, device)
        m[:, 0, 0] = m[:, 1, 1] = 1 / s
        return m

    def __repr__(self):
        return f"scale({self.factors.values})"


class rotate(Affine):  # noqa: N801
    """Rotate each image about its centre by an angle (degrees) drawn from `degrees`."""

    def __init__(self, degrees: Sequence[float]):
        self.degrees = _Table(degrees)

    def matrices(self, n, height, width, device):
        theta = self.degrees.draw(n, device) * (math.pi / 180)
        cos, sin = theta.cos(), theta.sin()
        m = _eye(n, device)
        # rotation in pixel space, expressed in normalized coordinates of a height×width image
        m[:, 0, 0], m[:, 0, 1] = cos, -sin * height / width
        m[:, 1, 0], m[:, 1, 1] = sin * width / height, cos
        return m

    def __repr__(self):
        return f"rotate({self.degrees.values})"


class pad:  # noqa: N801
    """Pad every side by `pixels` with a constant `value` (Lucid: 0.5 grey) or mode 'reflect'/'replicate'."""

    MODES = ("constant", "reflect", "replicate", "circular")

    def __init__(self, pixels: int, value: float = 0.5, mode: str = "constant"):
        if mode not in self.MODES:
            raise ValueError(f"unknown pad mode {mode!r}; choose from: {', '.join(self.MODES)}")
        self.pixels, self.value, self.mode = int(pixels), float(value), mode

    def __call__(self, x):
        if self.mode == "constant":
            return F.pad(x, [self.pixels] * 4, mode="constant", value=self.value)
        return F.pad(x, [self.pixels] * 4, mode=self.mode)

    def __repr__(self):
        if self.mode == "constant":
            return f"pad({self.pixels}, value={self.value})"
        return f"pad({self.pixels}, mode={self.mode!r})"


def compose(transforms: Sequence[Transform]) -> Transform:
    """One callable applying `transforms` in order; runs of affine warps become one resampling."""
    stages: list = []
    for t in transforms:
        if isinstance(t, Affine) and stages and isinstance(stages[-1], list):
            stages[-1].append(t)
        else:
            stages.append([t] if isinstance(t, Affine) else t)

    def apply(x: torch.Tensor) -> torch.Tensor:
        for stage in stages:
            if isinstance(stage, list):
                n, _, h, w = x.shape
                m = stage[0].matrices(n, h, w, x.device)
                for t in stage[1:]:  # x -> T1 -> T2 samples x at M1 @ M2 @ p
                    m = m @ t.matrices(n, h, w, x.device)
                x = warp(x, m)
            else:
                x = stage(x)
        return x

    return apply


def standard() -> list[Transform]:
    """Lucid's standard transforms."""
    return [pad(12, value=0.5), jitter(8), scale([1 + (i - 5) / 50 for i in range(11)]),
            rotate(list(range(-10, 11)) + 5 * [0]), jitter(4)]


# Config names -> builders (a regularizer YAML may list them as terms, in order).
TRANSFORMS: dict[str, Callable[..., Transform]] = {"pad": pad, "jitter": jitter, "scale": scale, "rotate": rotate}
