"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training"):
random translation and cutout applied to every image the discriminator sees, real and fake alike, in
both the discriminator's and the generator's step. The ops are differentiable in the images, so the
generator learns through them; the discriminator cannot memorize 5,000 digits it never sees twice
the same way, and since fakes are augmented the same way the generator is not pushed to make
shifted or cut-out digits.

Images are in [0, 1] with a black (0) background: what is shifted in and what is cut out is 0."""

from __future__ import annotations

import torch


def _draw(low: int, high: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n×2 integers in [low, high), drawn on the CPU (the same draws on every device)."""
    return torch.randint(low, high, (n, 2), generator=generator)


def translate(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image shifted by up to ratio·size pixels in each direction (its own shift), zeros shifted in."""
    n, _, h, w = x.shape
    reach = int(min(h, w) * ratio + 0.5)
    shift = _draw(-reach, reach + 1, n, generator).to(x.device)
    rows = torch.arange(h, device=x.device) - shift[:, :1]  # N×H: the source row of each output row
    cols = torch.arange(w, device=x.device) - shift[:, 1:]
    inside = (((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]).to(x.dtype)
    batch = torch.arange(n, device=x.device)[:, None, None]
    moved = x[batch, :, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]  # N×H×W×C
    return moved.permute(0, 3, 1, 2) * inside[:, None]


def cutout(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """A square of ratio·size pixels set to 0 in each image, centred anywhere (it may stick out)."""
    n, _, h, w = x.shape
    side = int(min(h, w) * ratio + 0.5)
    centre = _draw(0, min(h, w) + 1 - side % 2, n, generator).to(x.device)
    top_left = centre - side // 2
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (rows >= top_left[:, :1]) & (rows < top_left[:, :1] + side)
    in_cols = (cols >= top_left[:, 1:]) & (cols < top_left[:, 1:] + side)
    keep = 1 - (in_rows[:, :, None] & in_cols[:, None, :]).to(x.dtype)
    return x * keep[:, None]


def diff_augment(x: torch.Tensor, translation: float = 0.125, cutout_ratio: float = 0.5,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Translation then cutout (a ratio of 0 turns one off). Two calls with generators seeded alike
    transform two batches identically; without one, the global RNG draws (seeded by the training)."""
    if translation:
        x = translate(x, translation, generator)
    if cutout_ratio:
        x = cutout(x, cutout_ratio, generator)
    return x
