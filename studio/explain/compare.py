"""Run several explanation methods on one batch and score every map the same way.

`compare_methods` is what `studio explain` computes before it writes anything: per method the
N×1×H×W heat maps and per-image metrics (deletion / insertion AUC, LIME's R², stability across
seeds, the model-randomization similarity, and — given the mark's region — whether the mark was found),
plus the random-order baseline that every deletion / insertion AUC must beat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from studio.explain import METHODS, build_method, heatmap
from studio.explain.checks import logits, resolve_target
from studio.explain.clever_hans import mark_found_pixels, mark_found_segments
from studio.explain.fast import inference_twin
from studio.explain.lime import LimeImage
from studio.explain.metrics import (deletion_insertion, pixel_order, random_baseline, randomized_copy,
                                    sanity_similarity, stability, top_segments)


@dataclass
class MetricOptions:
    steps: int = 50               # points on each deletion / insertion curve
    deletion_value: float = 0.0   # what deleted pixels become
    blur_sigma: float = 0.1       # insertion starts from a blur with σ = this × image side
    random_orders: int = 3        # random pixel orders averaged for the baseline
    stability_seeds: int = 5      # seeds for the stability of stochastic methods (0/1: skip)
    stability_top_k: int = 5      # segments compared across seeds
    sanity: bool = True           # model-randomization check (one more pass per method)
    mark_top_segments: int = 3    # LIME finds the mark if its top segments cover it ...
    mark_top_pixels: float = 0.05  # ... pixel maps if their top 5% pixels do ...
    mark_share: float = 0.5       # ... "cover" = at least this share of the mark's pixels
    batch_size: int = 512
    seed: int = 0


@dataclass
class MethodResult:
    name: str
    maps: torch.Tensor                       # N×1×H×W heat maps (positive = for the target)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> N values
    seconds: float = 0.0


@dataclass
class Comparison:
    target: torch.Tensor                     # N
    prediction: torch.Tensor                 # N
    probability: torch.Tensor                # N: the target's probability on the original image
    segments: torch.Tensor                   # N×H×W: LIME's superpixels (used for stability too)
    methods: dict[str, MethodResult]
    baseline: dict[str, torch.Tensor]        # random order: deletion_auc, insertion_auc (N each)


def _maps(method, x: torch.Tensor, target: torch.Tensor, segments: torch.Tensor, seed: int | None = None):
    """(heat maps N×1×H×W, LIME explanation or None) of one method, with an optional seed."""
    if isinstance(method, LimeImage):
        explanation = method.explain(x, target, segments=segments, seed=seed)
        return explanation.heatmap(), explanation
    if seed is not None:
        method.seed = seed
    return heatmap(method.attribute(x, target)), None


def compare_methods(model: nn.Module, x: torch.Tensor, names: list[str], target=None,
                    options: dict[str, dict] | None = None, metrics: MetricOptions | None = None,
                    region: torch.Tensor | None = None) -> Comparison:
    """Explain x (N×C×H×W in [0, 1]) with every method in `names`; options[name] are its constructor's
    keyword arguments; region (H×W bool) is a planted mark to look for."""
    options, m = options or {}, metrics or MetricOptions()
    outputs = logits(model, x, m.batch_size)
    target = resolve_target(target, outputs)
    probability = outputs.softmax(1).gather(1, target[:, None]).squeeze(1)
    methods = {name: build_method(name, model, **options.get(name, {})) for name in names}
    twin = randomized_copy(model, m.seed) if m.sanity else None
    lime = methods.get("lime") or LimeImage(model, **options.get("lime", {}))
    segments = lime.segments(x)
    curve_options = dict(steps=m.steps, deletion_value=m.deletion_value, blur_sigma=m.blur_sigma,
                         batch_size=m.batch_size)
    scorer = inference_twin(model, x[:16])  # curves need no gradients: the fast twin scores them
    baseline = random_baseline(scorer, x, target, orders=m.random_orders, seed=m.seed, **curve_options)
    generator = torch.Generator().manual_seed(m.seed)

    results = {}
    for name, method in methods.items():
        start = time.perf_counter()
        maps, explanation = _maps(method, x, target, segments)
        scores = deletion_insertion(scorer, x, pixel_order(maps, generator), target, **curve_options)
        if explanation is not None:
            scores["r2"], scores["r2_heldout"] = explanation.r2, explanation.r2_heldout
        if name == "ig" and method.last_delta is not None:
            scores["ig_delta"] = method.last_delta.abs()
        if method.stochastic and m.stability_seeds >= 2:
            base_seed = method.seed
            tops = [top_segments(maps, segments, m.stability_top_k)]
            for s in range(1, m.stability_seeds):
                tops.append(top_segments(_maps(method, x, target, segments, base_seed + s)[0], segments,
                                         m.stability_top_k))
            method.seed = base_seed
            scores["stability"] = stability(tops)
        if twin is not None:
            twin_method = build_method(name, twin, **options.get(name, {}))
            scores["sanity"] = sanity_similarity(maps, _maps(twin_method, x, target, segments)[0])
        if region is not None:
            scores["mark_found"] = (
                mark_found_segments(explanation.top_segments(m.mark_top_segments, positive_only=True), segments,
                                    region, m.mark_share)
                if explanation is not None else
                mark_found_pixels(maps, region, m.mark_top_pixels, m.mark_share)).float()
        results[name] = MethodResult(name, maps, scores, time.perf_counter() - start)
    return Comparison(target, outputs.argmax(1), probability, segments, results, baseline)


__all__ = ["METHODS", "Comparison", "MethodResult", "MetricOptions", "compare_methods"]
