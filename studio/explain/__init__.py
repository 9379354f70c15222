"""Local explanations: "why is *this* image class i?".

Every method is registered once in `METHODS` (name -> `MethodSpec`, see registry.py, which also says what
adding a method takes): `build_method(name, model, **options)` builds it; `attribute(x, target)` returns
maps (N×C×H×W or N×1×H×W) for images x (N×C×H×W in [0, 1]) and `attribution(x, target, segments=...,
seed=...)` maps N×1×H×W plus the metrics only that method reports. LIME also answers `explain(...)` with
its surrogate (weights, intercept, R² in-sample and held-out). `heatmap(maps)` reduces any map to
N×1×H×W for ranking, metrics and pictures.
"""

from __future__ import annotations

from torch import nn

from studio.errors import lookup

# Registration happens on import, in this order: the order of METHODS (and of `method=all`).
from studio.explain.lime import LimeExplanation, LimeImage
from studio.explain.gradients import GradCam, IntegratedGradients, Occlusion, Saliency, SmoothGrad
from studio.explain.shap import GradientShap, KernelShap
from studio.explain.lrp import LRP
from studio.explain.backprop import Deconvnet, GuidedBackprop
from studio.explain.attention import AttentionRollout, RawAttention
from studio.explain.registry import METHODS, Attribution, MethodSpec, heatmap, method_spec


def method_names(choice: str, model: nn.Module | None = None) -> list[str]:
    """`all` → every method in registry order (given a model: those that apply to it, e.g. attention maps
    only to a ViT); otherwise the one named method (unknown → one line)."""
    if choice == "all":
        return [name for name, spec in METHODS.items() if model is None or spec.applies(model)]
    lookup({**METHODS, "all": None}, "method", choice)
    return [choice]


def build_method(name: str, model: nn.Module, **options):
    """The explanation method `name` for `model`; options: its constructor's keyword arguments."""
    return method_spec(name).build(model, **options)


__all__ = ["METHODS", "Attribution", "GradCam", "IntegratedGradients", "LimeExplanation", "LimeImage",
           "MethodSpec", "Occlusion", "Saliency", "SmoothGrad", "build_method", "heatmap", "method_names",
           "method_spec"]
__all__ += ["LRP", "Deconvnet", "GradientShap", "GuidedBackprop", "KernelShap"]
__all__ += ["AttentionRollout", "RawAttention"]
