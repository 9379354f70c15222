"""`studio dissect`: Network Dissection (Bau et al. 2017) of one layer against built-in digit concept masks or
a user's mask folder (studio/concepts/dissect.py, studio/concepts/masks.py).

Run layout: dissect.csv (one row per unit: best concept, IoU, whether labelled, runner-up), dissect.md (a
summary of how many units each concept labels, then the same table), dissect_<layer>_<unit>.png strips
(top images with the unit's mask in red and its best concept's mask in blue) for the dissect.strips units
with the highest IoU and the best unit of each concept that labels one; manifest items per unit {"unit":
"conv2:7", "concept", "iou", ...} and metrics dissect/labelled_units and dissect/units_per_concept/<concept>.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from studio.commands.shared import Result, train_one
from studio.commands.tcav import data_mark
from studio.concepts.dissect import Unit, dissect, layer_maps, no_maps_message, unit_mask
from studio.concepts.masks import builtin_masks, check_builtin, load_mask_folder
from studio.data import build_datamodule
from studio.errors import StudioError
from studio.files import write_text
from studio.images import pyplot, save_figure
from studio.models import check_layer_names, layer_names, layer_shapes, untrained_copy
from studio.report.tables import csv_and_markdown
from studio.tracking import Tracker

COLUMNS = ["unit", "concept", "iou", "labelled", "runner_up", "runner_up_iou", "threshold"]


def run(cfg, tracker: Tracker) -> Result:
    return dissect_run(cfg, tracker, tracker.output_dir)


def _check_settings(cfg) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
    """Every setting checked before any training; a mask folder's (images, masks) read here too."""
    s, d = cfg.dissect, cfg.data
    if not 0 < s.quantile < 1:
        raise StudioError(f"dissect.quantile={s.quantile} must lie strictly between 0 and 1 (the paper: 0.005)")
    if not 0 <= s.min_iou <= 1:
        raise StudioError(f"dissect.min_iou={s.min_iou} must lie between 0 and 1 (the paper: 0.04)")
    if s.images is not None and s.images < 1:
        raise StudioError(f"dissect.images={s.images} must be at least 1 (or null: all of data.split)")
    if s.strips < 0 or s.strip_images < 1:
        raise StudioError(f"dissect.strips={s.strips} must be >= 0 and dissect.strip_images={s.strip_images} >= 1")
    layer = str(s.layer)
    check_layer_names(cfg.model, d, [layer])
    model = untrained_copy(cfg.model, d)
    if model is not None:
        shape = layer_shapes(model, (d.channels, d.size, d.size)).get(layer, ())
        if len(shape) != 3:
            raise StudioError(no_maps_message(layer, shape))
    if s.masks is not None:
        return load_mask_folder(str(s.masks), d.channels, d.size)
    if not s.concepts:
        raise StudioError("dissect.concepts is empty; name built-in concepts or give dissect.masks=<dir>")
    check_builtin([str(c) for c in s.concepts])
    return None


def _images_and_masks(cfg, dm, folder) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The images to dissect on and their concept masks: the folder's, or data.split's with built-in masks."""
    if folder is not None:
        return folder
    return builtin_images_and_masks(dm, cfg.data, [str(c) for c in cfg.dissect.concepts], cfg.dissect.images)


def builtin_images_and_masks(dm, data_cfg, concepts: list[str], count: int | None = None
                             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The first `count` images of data_cfg.split (None: all) and their built-in concept masks; `mark` is skipped,
    with a note, where no image carries the mark (clean data)."""
    images, _ = dm.split(data_cfg.split)
    if count is not None:
        images = images[:count]
    masks = builtin_masks(images, concepts, data_mark(data_cfg))
    if "mark" in masks and not masks["mark"].any():
        print(f"dissect: no image of {data_cfg.name}'s {data_cfg.split} split carries the mark, so the concept "
              "'mark' is skipped (it is scored on marked data, e.g. data=mnist5k_marked)")
        del masks["mark"]
    if not masks:
        raise StudioError("dissect: no concept left to score the units against; add concepts to dissect.concepts")
    return images, masks


def dissect_run(cfg, tracker: Tracker, run_dir: Path) -> Result:
    """Dissect cfg.dissect.layer of the trained model (the issue's numbers: README)."""
    s = cfg.dissect
    folder = _check_settings(cfg)
    dm = build_datamodule(cfg.data)
    trained = train_one(cfg, cfg.model, dm, tracker, "model")
    start = time.perf_counter()
    images, masks = _images_and_masks(cfg, dm, folder)
    maps = layer_maps(trained.model, images, str(s.layer))
    units = dissect(maps, masks, s.quantile, top=s.strip_images)
    seconds = time.perf_counter() - start
    rows = [_row(str(s.layer), u, s.min_iou) for u in units]
    counts = {c: sum(r["labelled"] and r["concept"] == c for r in rows) for c in masks}
    print(f"dissect: {s.layer} of {cfg.model.name}, {len(units)} units x {len(masks)} concepts over {len(images)} "
          f"images in {seconds:.1f} s; {sum(counts.values())} labelled (IoU >= {s.min_iou}): "
          + (", ".join(f"{c} {n}" for c, n in counts.items() if n) or "none"))
    strips = _strips(images, maps, masks, units, rows, s, run_dir)
    return _write(rows, counts, strips, run_dir, tracker, seconds)


def _row(layer: str, unit: Unit, min_iou: float) -> dict:
    ranked = unit.ranked()
    second = ranked[1] if len(ranked) > 1 else ("", 0.0)
    return {"unit": f"{layer}:{unit.index}", "concept": ranked[0][0], "iou": round(ranked[0][1], 4),
            "labelled": unit.label(min_iou) is not None, "runner_up": second[0],
            "runner_up_iou": round(second[1], 4), "threshold": round(unit.threshold, 4)}


def _write(rows: list[dict], counts: dict[str, int], strips: list[Path], run_dir: Path, tracker: Tracker,
           seconds: float) -> Result:
    csv_text, table = csv_and_markdown(rows, COLUMNS)
    _, summary = csv_and_markdown([{"concept": c, "units": n} for c, n in counts.items()], ["concept", "units"])
    write_text(run_dir / "dissect.csv", csv_text)
    write_text(run_dir / "dissect.md", f"## Units labelled per concept\n\n{summary}\n## Units\n\n{table}")
    metrics = {"dissect_seconds": round(seconds, 2), "dissect/units": len(rows),
               "dissect/labelled_units": sum(counts.values())}
    metrics.update({f"dissect/units_per_concept/{c}": n for c, n in counts.items()})
    tracker.log(metrics)
    tracker.log_table("dissect/table", rows)
    if strips:
        tracker.log_images("dissect/strips", strips)
    artifacts = {"table_csv": "dissect.csv", "table_md": "dissect.md"}
    artifacts.update({f"strip_{p.stem.rsplit('_', 1)[-1]}": p.name for p in strips})
    return Result(metrics, rows, artifacts)


def _strips(images, maps, masks, units: list[Unit], rows: list[dict], s, run_dir: Path) -> list[Path]:
    """One PNG per unit of the s.strips with the highest IoU, and per concept that labels a unit its best one (so
a rare concept, the Clever Hans mark in conv3, is seen too): its top images, unit mask red, concept mask blue."""
    order = sorted(range(len(units)), key=lambda i: -rows[i]["iou"])
    per_concept = {}
    for i in order if s.strips else ():
        if rows[i]["labelled"]:
            per_concept.setdefault(rows[i]["concept"], i)
    best = list(dict.fromkeys([*order[:s.strips], *per_concept.values()]))
    size = tuple(images.shape[-2:])
    paths = []
    for i in best:
        unit, row = units[i], rows[i]
        shown = unit.top_images
        mine = unit_mask(maps, unit, shown, size).numpy()
        concept = masks[row["concept"]][shown].numpy()
        base = images[shown].mean(1).numpy() if images.shape[1] != 3 else images[shown].permute(0, 2, 3, 1).numpy()
        plt = pyplot()
        fig, axes = plt.subplots(1, len(shown), figsize=(1.6 * len(shown), 1.9), squeeze=False)
        for ax, j in zip(axes[0], range(len(shown))):
            ax.imshow(_overlay(base[j], mine[j], concept[j]), interpolation="nearest")
            ax.axis("off")
        verdict = "labelled" if row["labelled"] else "not labelled"
        fig.suptitle(f"{row['unit']}: {row['concept']} IoU {row['iou']:.3f} ({verdict}); red unit, blue concept",
                     fontsize=8)
        path = run_dir / f"dissect_{row['unit'].replace(':', '_')}.png"
        save_figure(fig, path, dpi=100)
        paths.append(path)
    return paths


def _overlay(image: np.ndarray, unit: np.ndarray, concept: np.ndarray) -> np.ndarray:
    """H×W×3 in [0, 1]: the image dimmed, the unit's mask added in red and the concept's in blue."""
    rgb = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image.copy()
    rgb = 0.6 * rgb
    rgb[..., 0] += 0.6 * unit
    rgb[..., 2] += 0.6 * concept
    return rgb.clip(0, 1)


DEMO_LAYER = "conv2"  # the layer whose filters the demo renders: its labels go beside those renders


def demo_step(cfg, tracker: Tracker, out_dir: Path) -> tuple[Result, list[dict]]:
    """The demo's Network Dissection: `studio dissect` with its shipped settings (conf/dissect.yaml) on the demo's
    model and data (conv2 over the 1,000 test digits), under out_dir. Returns the step's metrics and artifacts
    (tables, strips; no items), and the per-unit rows that label the demo's conv2 renders."""
    from studio import config

    model = untrained_copy(cfg.model, cfg.data)
    if model is None or DEMO_LAYER not in layer_names(model):
        print(f"demo: {cfg.model.name} has no layer {DEMO_LAYER!r}; skipping Network Dissection")
        return Result({}), []
    step = config.compose("dissect", [])
    step.paths, step.model, step.data, step.trainer = cfg.paths, cfg.model, cfg.data, cfg.trainer
    step.dissect.layer = DEMO_LAYER
    result = dissect_run(step, tracker, out_dir)
    prefix = out_dir.name
    return Result(result.metrics, [], {f"{prefix}/{k}": f"{prefix}/{v}" for k, v in result.artifacts.items()}), \
        result.items
