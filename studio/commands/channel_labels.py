"""Each rendered channel's Network Dissection label beside its render: the step of `studio visualize` (and of the
demo's conv2 renders) that links a feature visualization to the human concept its unit fires on.

The dissection is computed on demand, not read from a cached `studio dissect` run: with `studio dissect`'s
method and built-in masks over data.split (studio/commands/dissect.py, README) it takes 0.7 s for conv2 over
the 1,000 test digits on the idle machine (2.3-2.6 s loaded), about what finding and validating a cached
result for the same model, layer, data and settings would cost, and it can never be stale. Items gain `dissect_label` (the concept, or null
where the best IoU is under dissect_labels.min_iou), `dissect_concept` (the best one even then) and
`dissect_iou`; grid_dissect.png shows the renders captioned with them.
"""

from __future__ import annotations

import time
from pathlib import Path

from studio.adapters import optvis as optvis_config
from studio.commands.dissect import builtin_images_and_masks
from studio.concepts.dissect import Unit, dissect, layer_maps
from studio.concepts.masks import check_builtin
from studio.errors import StudioError
from studio.images import pyplot, save_figure
from studio.models import layer_shapes


def check_settings(cfg) -> None:
    """dissect_labels' concepts and thresholds, checked before any training."""
    s = cfg.get("dissect_labels")
    if not s or not s.enabled:
        return
    check_builtin([str(c) for c in s.concepts])
    if not 0 < s.quantile < 1 or not 0 <= s.min_iou <= 1:
        raise StudioError(f"dissect_labels.quantile={s.quantile} must lie strictly between 0 and 1 and "
                          f"dissect_labels.min_iou={s.min_iou} between 0 and 1 (studio dissect's: 0.005, 0.04)")
    if s.images is not None and s.images < 1:
        raise StudioError(f"dissect_labels.images={s.images} must be at least 1 (or null: all of data.split)")


def label_rendering(cfg, model, dm, items: list[dict], run_dir: Path, out_dir: Path) -> tuple[dict, dict]:
    """(run metrics, artifacts) of labelling the rendered channels in `items` (in place); empty where cfg asks
    for no labels or they do not apply."""
    layer = wanted_layer(cfg, model)
    if layer is None:
        return {}, {}
    units, seconds = dissect_channels(cfg, model, dm, layer)
    labelled = label_items(items, unit_labels(units, layer, float(cfg.dissect_labels.min_iou)))
    grid = captioned_grid(items, run_dir, out_dir / "grid_dissect.png")
    print(f"visualize: {labelled} of {len(units)} {layer} channels labelled by Network Dissection in {seconds:.1f} s "
          f"(IoU >= {cfg.dissect_labels.min_iou}) -> {grid}")
    artifacts = {"grid_dissect": str(grid.relative_to(run_dir))} if grid else {}
    return {"dissect_labelled_channels": labelled, "dissect_seconds": round(seconds, 2)}, artifacts


def wanted_layer(cfg, model) -> str | None:
    """The layer whose channels cfg renders, where its labels are asked for (dissect_labels.enabled) and can be
    computed (the targets are channels of a layer with C×H×W maps); None otherwise, with a note why not."""
    s = cfg.get("dissect_labels")
    if not s or not s.enabled or not optvis_config.objective_kind(cfg.objective).units:
        return None
    layer = str(cfg.objective.layer)
    shape = layer_shapes(model, (cfg.data.channels, cfg.data.size, cfg.data.size)).get(layer, ())
    if len(shape) != 3:
        print(f"visualize: {layer} has no C×H×W maps, so its channels get no dissect label")
        return None
    return layer


def dissect_channels(cfg, model, dm, layer: str) -> tuple[dict[int, Unit], float]:
    """({channel: Unit}, seconds): `layer` of `model` dissected over cfg.data's split with cfg.dissect_labels."""
    s = cfg.dissect_labels
    start = time.perf_counter()
    images, masks = builtin_images_and_masks(dm, cfg.data, [str(c) for c in s.concepts], s.images)
    units = dissect(layer_maps(model, images, layer), masks, float(s.quantile), top=1)
    return {u.index: u for u in units}, time.perf_counter() - start


def unit_labels(units: dict[int, Unit], layer: str, min_iou: float) -> dict[str, tuple[str | None, str, float]]:
    """{"conv2:7": (label or None, best concept, its IoU)} of dissected units."""
    return {f"{layer}:{k}": (u.label(min_iou), *u.ranked()[0]) for k, u in units.items()}


def row_labels(rows: list[dict]) -> dict[str, tuple[str | None, str, float]]:
    """The same from `studio dissect`'s per-unit rows (manifest items)."""
    return {r["unit"]: (r["concept"] if r["labelled"] else None, r["concept"], r["iou"]) for r in rows}


def label_items(items: list[dict], labels: dict[str, tuple[str | None, str, float]]) -> int:
    """Add dissect_label / dissect_concept / dissect_iou to every item whose target is a dissected channel;
    returns how many channels got a label (a channel rendered from several seeds counts once)."""
    labelled = set()
    for item in items:
        target = str(item.get("target"))
        if target not in labels:
            continue
        label, concept, iou = labels[target]
        item.update(dissect_label=label, dissect_concept=concept, dissect_iou=round(float(iou), 4))
        if label is not None:
            labelled.add(target)
    return len(labelled)


def label_demo(items: list[dict], rows: list[dict], run_dir: Path, tracker) -> dict:
    """The demo's conv2 renders labelled from its dissect step's rows: items in place, a captioned grid per
    render (visualize/<render>/grid_dissect.png, mirrored to W&B); returns those as artifacts."""
    labels, artifacts = row_labels(rows), {}
    for render in dict.fromkeys(i.get("render") for i in items if str(i.get("target")) in labels):
        mine = [i for i in items if i.get("render") == render]
        label_items(mine, labels)
        grid = captioned_grid(mine, run_dir, run_dir / "visualize" / render / "grid_dissect.png")
        if grid:
            artifacts[f"visualize/{render}/grid_dissect"] = str(grid.relative_to(run_dir))
            tracker.log_image(f"visualize/{render}/grid_dissect", grid, f"{render}: Network Dissection labels")
    return artifacts


def caption(item: dict) -> str:
    """'conv2:7' over 'loop_interior 0.105', or '(stroke_end 0.029)' where that is under the threshold."""
    what = f"{item['dissect_concept']} {item['dissect_iou']:.3g}"  # 0.0395 stays under 0.04 in print too
    return f"{item['target']}\n{what if item['dissect_label'] else f'({what})'}"


def captioned_grid(items: list[dict], run_dir: Path, path: Path, columns: int = 6) -> Path | None:
    """The labelled items' images in a grid, each captioned with its channel and label (lowest seed only)."""
    import numpy as np
    from PIL import Image

    shown = [i for i in items if "dissect_concept" in i and i.get("seed", 0) == min(j.get("seed", 0) for j in items)]
    if not shown:
        return None
    rows = -(-len(shown) // columns)
    plt = pyplot()
    fig, axes = plt.subplots(rows, min(columns, len(shown)), squeeze=False,
                             figsize=(1.45 * min(columns, len(shown)), 1.75 * rows))
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, shown):
        with Image.open(run_dir / item["image"]) as image:
            ax.imshow(np.asarray(image.convert("RGB")), interpolation="nearest")
        ax.set_title(caption(item), fontsize=7, color="black" if item["dissect_label"] else "grey")
    fig.suptitle("Network Dissection label per channel (grey: best concept under the IoU threshold)", fontsize=8)
    save_figure(fig, path, dpi=100)
    return path
