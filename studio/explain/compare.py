"""Run several explanation methods on one batch and score every map the same way.

`compare_methods` is what `studio explain` computes before it writes anything: per method the
N×1×H×W heat maps and per-image metrics (deletion / insertion AUC, the metrics a method reports itself,
e.g. LIME's R², stability across seeds for stochastic methods, the model-randomization similarity, and —
given the mark's region — whether the mark was found, given the background pixels — their share of the
map's mass), plus the random-order baseline that every
deletion / insertion AUC must beat. What a method reports and whether it is stochastic come from the
registry (registry.py); nothing here knows a method by name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from studio.explain.checks import logits, resolve_target
from studio.explain.clever_hans import background_share, mark_found_pixels, mark_found_segments
from studio.explain.fast import inference_twin
from studio.explain.metrics import (deletion_insertion, pixel_order, random_baseline, randomized_copy,
                                    sanity_similarity, stability, top_segments)
from studio.explain.registry import METHODS, Attribution, method_spec, segmenter


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


@dataclass
class _Bench:
    """What every method's maps are scored against (shared so that all are scored the same way)."""

    x: torch.Tensor                   # N×C×H×W in [0, 1]
    target: torch.Tensor              # N
    segments: torch.Tensor            # N×H×W: the segmenter's superpixels
    scorer: nn.Module                 # scores the deletion / insertion curves
    twin: nn.Module | None            # the randomized model (sanity check) or None
    generator: torch.Generator        # tie-breaking of pixel orders, one stream for all methods in turn
    curve_options: dict
    metrics: MetricOptions
    options: dict[str, dict]          # constructor options per method name
    region: torch.Tensor | None       # H×W bool: the planted mark, or None
    background: torch.Tensor | None   # N×H×W bool: each image's background pixels, or None


def _stability(method, maps: torch.Tensor, bench: _Bench) -> torch.Tensor:
    """Agreement (N) of the top segments of `maps` and of the maps for the next stability_seeds − 1 seeds;
    the seeds go to the call, so the method keeps its own."""
    m = bench.metrics
    tops = [top_segments(maps, bench.segments, m.stability_top_k)]
    for s in range(1, m.stability_seeds):
        again = method.attribution(bench.x, bench.target, segments=bench.segments, seed=method.seed + s)
        tops.append(top_segments(again.maps, bench.segments, m.stability_top_k))
    return stability(tops)


def _mark_found(attribution: Attribution, bench: _Bench) -> torch.Tensor:
    """N bools: did the map single out the planted mark (by its top segments, or else its top pixels)?"""
    m = bench.metrics
    if attribution.top_segments is not None:
        return mark_found_segments(attribution.top_segments(m.mark_top_segments), bench.segments, bench.region,
                                   m.mark_share)
    return mark_found_pixels(attribution.maps, bench.region, m.mark_top_pixels, m.mark_share)


def _score(name: str, method, bench: _Bench) -> MethodResult:
    """One method's maps and per-image metrics: the curves, its own extra metrics, then the checks."""
    spec, m, start = method_spec(name), bench.metrics, time.perf_counter()
    attribution = method.attribution(bench.x, bench.target, segments=bench.segments)
    order = pixel_order(attribution.maps, bench.generator)
    scores = deletion_insertion(bench.scorer, bench.x, order, bench.target, **bench.curve_options)
    scores.update(attribution.metrics)
    if spec.stochastic and m.stability_seeds >= 2:
        scores["stability"] = _stability(method, attribution.maps, bench)
    if bench.twin is not None:
        twin_method = spec.build(bench.twin, **bench.options.get(name, {}))
        twin_maps = twin_method.attribution(bench.x, bench.target, segments=bench.segments).maps
        scores["sanity"] = sanity_similarity(attribution.maps, twin_maps)
    if bench.region is not None:
        scores["mark_found"] = _mark_found(attribution, bench).float()
    if bench.background is not None:
        scores["background_share"] = background_share(attribution.maps, bench.background)
    return MethodResult(name, attribution.maps, scores, time.perf_counter() - start)


def compare_methods(model: nn.Module, x: torch.Tensor, names: list[str], target=None,
                    options: dict[str, dict] | None = None, metrics: MetricOptions | None = None,
                    region: torch.Tensor | None = None, background: torch.Tensor | None = None) -> Comparison:
    """Explain x (N×C×H×W in [0, 1]) with every method in `names`; options[name] are its constructor's
    keyword arguments; region (H×W bool) is a planted mark to look for; background (N×H×W bool): each
    image's background pixels, whose share of every map's mass is reported."""
    options, m = options or {}, metrics or MetricOptions()
    outputs = logits(model, x, m.batch_size)
    target = resolve_target(target, outputs)
    probability = outputs.softmax(1).gather(1, target[:, None]).squeeze(1)
    methods = {name: method_spec(name).build(model, **options.get(name, {})) for name in names}
    twin = randomized_copy(model, m.seed) if m.sanity else None
    cut = segmenter()  # its superpixels, even when it is not one of `names`
    segments = (methods.get(cut.name) or cut.build(model, **options.get(cut.name, {}))).segments(x)
    curve_options = dict(steps=m.steps, deletion_value=m.deletion_value, blur_sigma=m.blur_sigma,
                         batch_size=m.batch_size)
    scorer = inference_twin(model, x[:16])  # curves need no gradients: the fast twin scores them
    baseline = random_baseline(scorer, x, target, orders=m.random_orders, seed=m.seed, **curve_options)
    bench = _Bench(x, target, segments, scorer, twin, torch.Generator().manual_seed(m.seed), curve_options, m,
                   options, region, background)
    results = {name: _score(name, method, bench) for name, method in methods.items()}
    return Comparison(target, outputs.argmax(1), probability, segments, results, baseline)


__all__ = ["METHODS", "Comparison", "MethodResult", "MetricOptions", "compare_methods"]
