"""Natural exemplars and sanity checks beside a rendering: the step of `studio visualize` (and of the
demo's renders) after the render and before anything is written.

Run layout (relative to the render's directory):
    exemplars/<target>_top.png      the k images of the split that maximize the target's objective (best first)
    exemplars/<target>_bottom.png   the k that minimize it (lowest first)
    grid_randomized.png             the renders on the cascade-randomized model (with exemplars.randomized)
Each item gains `exemplars: {"top": path, "bottom": path}` and the metrics render_vs_exemplars,
path_similarity, path_similarity_natural and randomized_similarity (studio/sanity.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from studio import sanity
from studio.adapters import optvis as optvis_config
from studio.adapters.exemplars import ExemplarSettings, cascade_layer
from studio.images import grid, save_png, slug, square_columns
from studio.models import layer_names
from studio.optvis.exemplars import find_exemplars, objective_values
from studio.optvis.render import Rendering


@dataclass
class Search:
    """What the checks need from the data for one objective config (the demo reuses it across recipes)."""

    targets: list[str]
    objectives: list
    objective_layer: str | None
    top: torch.Tensor  # T×k×C×H×W, highest objective first
    bottom: torch.Tensor  # T×k×C×H×W, lowest first
    top_mean: torch.Tensor  # (T,) mean objective of the top exemplars
    bottom_mean: torch.Tensor
    seconds: float
    top_features: list[dict] = field(default_factory=list)  # per target: {layer: k×C} (checks only)
    natural: list[dict] = field(default_factory=list)  # per target: {layer: n×C} held-out natural images
    center: dict = field(default_factory=dict)  # {layer: (C,)} the held-out split's mean
    reference: str = ""  # what the natural reference is, in words


def _rows(features: dict, rows) -> dict:
    return {layer: f[rows] for layer, f in features.items()}


def _natural_reference(model, objectives, settings: ExemplarSettings, dm, heldout: dict) -> tuple[list, str]:
    """Per target, the held-out images path_similarity_natural compares: the target class's images, or
    (targets without a class) the top exemplars of the held-out split."""
    images, labels = dm.split(settings.heldout)
    classes = [o.classes[0] if o.classes else None for o in objectives]
    if all(c is not None for c in classes):
        return ([_rows(heldout, labels == c) for c in classes],
                f"the {settings.heldout} split's images of the target's class")
    k = min(settings.k, len(images))
    found = find_exemplars(model, objectives, images, k, settings.batch_size)
    return ([_rows(heldout, found.top[t]) for t in range(len(objectives))],
            f"the top {k} exemplars of the {settings.heldout} split (the targets have no class)")


def search(model, objective_cfg, targets: list, dm, settings: ExemplarSettings) -> Search:
    """Top and bottom exemplars of every target on settings.split, one batched pass; with the checks also
    the path features of the top exemplars and of the held-out natural reference."""
    began = time.perf_counter()
    objectives = optvis_config.per_target_objectives(objective_cfg, targets)
    images = dm.split(settings.split)[0]
    found = find_exemplars(model, objectives, images, settings.k, settings.batch_size)
    out = Search(found.targets, objectives, optvis_config.objective_layer(objective_cfg), images[found.top],
                 images[found.bottom], found.top_values().mean(1), found.bottom_values().mean(1), 0.0)
    if settings.checks:
        layers = sanity.weight_layers(model)
        top = sanity.path_features(model, images[found.top.flatten()], layers, settings.batch_size)
        out.top_features = [_rows(top, slice(t * settings.k, (t + 1) * settings.k)) for t in range(len(objectives))]
        heldout = sanity.path_features(model, dm.split(settings.heldout)[0], layers, settings.batch_size)
        out.center = {layer: f.mean(0) for layer, f in heldout.items()}
        out.natural, out.reference = _natural_reference(model, objectives, settings, dm, heldout)
    out.seconds = time.perf_counter() - began
    return out


@dataclass
class Checks:
    search: Search
    metrics: dict[int, dict]  # rendering element -> its item metrics
    summary: dict  # run metrics
    randomized: Rendering | None = None


def _exemplar_metrics(model, found: Search, rendering: Rendering, settings: ExemplarSettings) -> dict[int, dict]:
    """render_vs_exemplars, path_similarity and path_similarity_natural of every succeeded element."""
    which = [found.targets.index(t) for t in rendering.targets]
    values = objective_values(model, found.objectives, rendering.images, settings.batch_size)
    own = values[torch.arange(len(which)), which]
    scale = sanity.exemplar_scale(own, found.top_mean[which], found.bottom_mean[which])
    features = sanity.path_features(model, rendering.images, list(found.center), settings.batch_size)
    natural = [float(sanity.path_similarity(found.natural[t], found.top_features[t], found.center).mean())
               for t in range(len(found.targets))]
    out = {}
    for b in rendering.succeeded:
        t = which[b]
        path = sanity.path_similarity(_rows(features, slice(b, b + 1)), found.top_features[t], found.center)
        out[b] = {"render_vs_exemplars": float(scale[b]), "path_similarity": float(path[0]),
                  "path_similarity_natural": natural[t]}
    return out


def measure(model, found: Search, rendering: Rendering, settings: ExemplarSettings,
            rerender: Callable[[torch.nn.Module], Rendering], seed: int = 0) -> Checks:
    """The item metrics of a rendering; `rerender(model)` renders the same targets, seeds and recipe on
    another model (the cascade-randomized copy)."""
    metrics = {b: {} for b in rendering.succeeded}
    if settings.checks:
        for b, m in _exemplar_metrics(model, found, rendering, settings).items():
            metrics[b].update(m)
    checks = Checks(found, metrics, {"exemplar_seconds": round(found.seconds, 3)})
    if found.reference:
        checks.summary["path_similarity_reference"] = found.reference
    if settings.randomized:
        down_to = cascade_layer(settings, found.objective_layer, layer_names(model), sanity.weight_layers(model))
        randomized, changed = sanity.cascade_randomized(model, down_to, seed)
        checks.randomized = rerender(randomized)
        similarity = sanity.image_correlation(rendering.images, checks.randomized.images)
        for b in rendering.succeeded:
            if b not in checks.randomized.failed:
                metrics[b]["randomized_similarity"] = float(similarity[b])
        checks.summary.update(randomized_layers=changed, randomized_render_seconds=round(checks.randomized.seconds, 3))
    for name in ("render_vs_exemplars", "path_similarity", "path_similarity_natural", "randomized_similarity"):
        values = [m[name] for m in metrics.values() if name in m]
        if values:
            checks.summary[f"{name}_mean"] = sum(values) / len(values)
    return checks


def beside(found: Search, settings: ExemplarSettings) -> dict[str, torch.Tensor] | None:
    """{target: the top exemplars grid.png shows beside its renders} (None: exemplars.in_grid=0)."""
    if not settings.in_grid:
        return None
    return {t: found.top[i, :settings.in_grid] for i, t in enumerate(found.targets)}


def save(checks: Checks, items: list, rendering: Rendering, out_dir: Path, run_dir: Path) -> dict:
    """Exemplar PNGs (and the randomized renders' grid) under out_dir; the items (one per succeeded element,
    in order) gain their exemplar paths and metrics. Returns the artifacts."""
    found = checks.search
    paths = {}
    for t, target in enumerate(found.targets):
        pair = {}
        for which, images in (("top", found.top[t]), ("bottom", found.bottom[t])):
            path = out_dir / "exemplars" / f"{slug(target)}_{which}.png"
            save_png(grid(images, square_columns(len(images))), path)
            pair[which] = str(path.relative_to(run_dir))
        paths[target] = pair
    for item, b in zip(items, rendering.succeeded):
        item["exemplars"] = dict(paths[rendering.targets[b]])
        item["metrics"].update(checks.metrics[b])
    artifacts = {"exemplars": str((out_dir / "exemplars").relative_to(run_dir))}
    if checks.randomized is not None:
        path = out_dir / "grid_randomized.png"
        save_png(grid(checks.randomized.images, min(len(rendering.targets), 16)), path)
        artifacts["grid_randomized"] = str(path.relative_to(run_dir))
    return artifacts
