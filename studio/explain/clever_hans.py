"""The "Clever Hans" experiment: a model that is right for the wrong reason, and explanations that show it.

Like the PASCAL VOC horse classifier that read a watermark in the lower-left corner, the `marked`
data source plants a small bright square in a corner of (almost) every training image of one class
and of no other. A classifier trained on it learns the shortcut; on test images of other classes
that carry the mark it then says the mark's class. An explanation method passes when, asked "why
the mark's class?" on marked test images, it puts the mark among its top segments / pixels.

The background-colour variant (the "Pokémon vs Digimon" classifier that read the PNG-vs-JPEG
background): the `background` data source gives every training image its class's grey background
level and leaves the test set clean. A method shows the shortcut by how much of its attribution mass
falls on background pixels, beside the same share on a model trained on clean data.
"""

from __future__ import annotations

import torch


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


def background_share(heatmaps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The share of each map's attribution mass (|value|, summed over channels) on the background pixels
    (region: N×H×W bool); 0 for an all-zero map. N floats in [0, 1]."""
    mass = heatmaps.float().abs().sum(1)  # N×H×W
    total = mass.flatten(1).sum(1)
    on = (mass * region).flatten(1).sum(1)
    return torch.where(total > 0, on / total.clamp_min(torch.finfo(mass.dtype).tiny), torch.zeros_like(total))
