"""Choosing among a class render's starts by how natural each render looks to the visualized model itself.

A latent class render from ranked starts (param=latent with start_candidates > 1) can reach its class and still
sit off the data: a stroke too thick, a loop left open. With `render(..., natural_edge=1.0,
natural_images=train_images)` every element is rendered from each of its starts; a render outside the real
images' k-NN manifold (its distance to the nearest real image over that image's k-th-neighbour radius above
the edge, k = 3: the test improved precision counts, Kynkäänniemi et al. 2019) is swapped for another start's
render that the model recognizes as well (target probability at least the retry threshold, or the kept
render's) and that lies nearer the real images. The set keeps its swaps only if they bring it nearer the real
images as a whole (Fréchet distance, same statistics); a set the swaps would spoil keeps its first choice.

The statistics are the visualized model's own: the spatial mean and spread of every convolution's rectified
channels (studio.realism.FeatureView), so no judge takes part in the choice and the judge's and the eye's
realism figures stay independent checks of it (README, "The natural choice").
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from studio.errors import StudioError, is_number
from studio.realism import FeatureView, frechet_distance, knn_radii

NEIGHBOURS = 3  # k of the k-NN manifold, as improved precision and recall use it
MAX_DIMS = 512  # wider statistics (resnet18: 9,600 dimensions) are reduced by PCA to this many; small_cnn has 216


class RealManifold:
    """The real images' k-NN manifold in `model`'s convolution statistics."""

    def __init__(self, model: nn.Module, images: torch.Tensor, k: int = NEIGHBOURS):
        try:
            self.view = FeatureView("model", model, images, dims=MAX_DIMS)
        except StudioError as e:
            raise StudioError(f"natural_edge: {e}; or set natural_edge=null") from None
        self.radii = torch.from_numpy(knn_radii(self.view.reference, k))
        self.reference = torch.from_numpy(self.view.reference)

    def outside(self, images: torch.Tensor) -> torch.Tensor:
        """(B,) each image's distance to its nearest real image over that image's k-NN radius (> 1: outside)."""
        distances = torch.cdist(torch.from_numpy(self.view.embed(images)), self.reference)
        return (distances / self.radii[None]).min(1).values

    def frechet(self, images: torch.Tensor) -> float:
        """The set's Fréchet distance to the real images."""
        return frechet_distance(self.view.embed(images), self.view.reference)


def natural_choice(manifold: RealManifold, renders: list[torch.Tensor], probs: list[torch.Tensor],
                   kept: torch.Tensor, edge: float, floor: torch.Tensor) -> torch.Tensor:
    """(B,) the start whose render each element shows: `kept`, but an element whose render lies outside the
    manifold (> edge) takes the start whose render lies nearest it among those at target probability >= `floor`
    (B,) and nearer than its own, if the set's Fréchet distance falls with every such swap made.

    renders[r], probs[r]: every element's render (B×C×H×W) and target probability (B,) from start r."""
    outside = torch.stack([manifold.outside(r) for r in renders])  # starts × B
    columns = torch.arange(len(kept))
    own = outside[kept, columns]
    eligible = (torch.stack(probs) >= floor) & (outside < own)
    swap = (own > edge) & eligible.any(0)
    if not swap.any():
        return kept
    nearest = torch.where(eligible, outside, torch.inf).argmin(0)
    choice = torch.where(swap, nearest, kept)
    shown = lambda starts: torch.stack([renders[int(s)][b] for b, s in enumerate(starts)])  # noqa: E731
    return choice if manifold.frechet(shown(choice)) < manifold.frechet(shown(kept)) else kept


def check_edge(edge) -> None:
    """natural_edge: a positive number (a distance over a k-NN radius; 1 is the manifold's edge) or None."""
    if edge is not None and not (is_number(edge) and 0 < edge < np.inf):
        raise StudioError(f"natural_edge={edge} must be a positive number (1.0: the edge of the real images' "
                          "manifold), or null for no natural choice")


def check_images(edge, images) -> None:
    """The real images a natural choice needs: more than k, N×C×H×W."""
    if edge is not None and not (torch.is_tensor(images) and images.ndim == 4 and len(images) > NEIGHBOURS):
        found = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise StudioError(f"natural_edge={edge} needs natural_images, more than {NEIGHBOURS} real images N×C×H×W "
                          f"(the data's training split); found {found}")
