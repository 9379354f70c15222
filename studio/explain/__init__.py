"""Local explanations: "why is *this* image class i?".

One verb for every method: `METHODS[name](model, **options).attribute(x, target=...)` returns maps
(N×C×H×W or N×1×H×W) for images x (N×C×H×W in [0, 1]). LIME also answers `explain(...)` with its
surrogate (weights, intercept, R² in-sample and held-out). `heatmap(maps)` reduces any map to
N×1×H×W for ranking, metrics and pictures.
"""

from __future__ import annotations

import torch
from torch import nn

from studio.errors import lookup
from studio.explain.gradients import GradCam, IntegratedGradients, Occlusion, Saliency, SmoothGrad
from studio.explain.lime import LimeExplanation, LimeImage

METHODS = {
    "lime": LimeImage,
    "saliency": Saliency,
    "smoothgrad": SmoothGrad,
    "ig": IntegratedGradients,
    "occlusion": Occlusion,
    "gradcam": GradCam,
}


def method_names(choice: str) -> list[str]:
    """`all` → every method in registry order; otherwise the one named method (unknown → one line)."""
    if choice == "all":
        return list(METHODS)
    lookup({**METHODS, "all": None}, "method", choice)
    return [choice]


def build_method(name: str, model: nn.Module, **options):
    """METHODS[name](model, **options): the explanation method `name` for `model`."""
    return lookup(METHODS, "method", name)(model, **options)


def heatmap(maps: torch.Tensor) -> torch.Tensor:
    """N×1×H×W: the channel sum of a map (signed: positive = evidence for the target)."""
    return maps.sum(1, keepdim=True) if maps.shape[1] != 1 else maps


__all__ = ["METHODS", "GradCam", "IntegratedGradients", "LimeExplanation", "LimeImage", "Occlusion",
           "Saliency", "SmoothGrad", "build_method", "heatmap", "method_names"]
