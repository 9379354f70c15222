"""`studio tcav`: TCAV (Kim et al. 2018) of built-in or user concepts, per layer and class, with a t-test
against random concepts (studio/concepts/tcav.py).

Run layout: tcav.csv, tcav.md (the same table), tcav.png (scores with 95% intervals, non-significant ones
greyed), manifest.json with metrics tcav/<concept>/<layer>/<class> and tcav_p/<concept>/<layer>/<class>; for a
built-in concept also its effect when drawn on the class's images (studio/concepts/intervention.py):
tcav_effect/<concept>/<class> (mean logit change) and tcav_rises/<concept>/<class> (share that rise).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import torch

from studio.commands.shared import Result, train_one
from studio.concepts.intervention import ConceptEffect, concept_effects
from studio.concepts.sets import BUILTIN, builtin_concept, check_count, disjoint_sets, load_concept_folder
from studio.concepts.tcav import TcavResult, interval, tcav
from studio.data import build_datamodule, classes_in_turn
from studio.errors import StudioError
from studio.files import write_text
from studio.images import pyplot, save_figure
from studio.mark import Mark
from studio.models import check_layer_names, layer_names, untrained_copy
from studio.report.tables import csv_and_markdown
from studio.tracking import Tracker

COLUMNS = ["concept", "layer", "class", "score", "low", "high", "random_score", "p_value", "significant",
           "cav_accuracy", "logit_change", "rises"]


def run(cfg, tracker: Tracker) -> Result:
    return tcav_run(cfg, tracker, tracker.output_dir)


def _check_settings(cfg) -> dict[str, str]:
    """The concepts (name: 'builtin' or a folder), checked before any training."""
    s = cfg.tcav
    if s.random_runs < 2:
        raise StudioError(f"tcav.random_runs={s.random_runs} gives the t-test too few samples; use at least 2 "
                          "(10 or more, as Kim et al.)")
    if s.images < 2 or s.min_images < 2:
        raise StudioError(f"tcav.images={s.images} and tcav.min_images={s.min_images} must both be at least 2")
    if s.class_images < 1:
        raise StudioError(f"tcav.class_images={s.class_images} must be at least 1")
    if not cfg.concepts:
        raise StudioError(f"no concepts given; add one with concepts.<name>=builtin ({', '.join(BUILTIN)}) "
                          "or +concepts.<name>=<folder of its images>")
    for k in s.classes or ():
        if not 0 <= int(k) < cfg.data.num_classes:
            raise StudioError(f"tcav.classes: class {k} is out of range; {cfg.data.name} has classes "
                              f"0..{cfg.data.num_classes - 1}")
    check_layer_names(cfg.model, cfg.data, list(s.layers))
    concepts = {str(name): str(source) for name, source in cfg.concepts.items()}
    for name, source in concepts.items():
        if source == "builtin" and name not in BUILTIN:
            raise StudioError(f"unknown built-in concept {name!r}; choose from: {', '.join(BUILTIN)}, or give a "
                              f"folder of its images: concepts.{name}=<dir>")
    return concepts


def data_mark(data_cfg) -> Mark:
    """The data's own mark on marked data (so the concept is what the model saw), else the default mark."""
    if data_cfg.source != "marked":
        return Mark()
    o = data_cfg.options
    return Mark(o.size, o.corner, o.margin, o.value)


def _folders(cfg, concepts: dict[str, str]) -> dict[str, torch.Tensor]:
    """The images of every concept given as a folder, read and checked before any training."""
    out = {}
    for name, source in concepts.items():
        if source != "builtin":
            out[name] = load_concept_folder(name, source, cfg.data.channels, cfg.data.size)
            check_count(name, out[name], cfg.tcav.min_images, f"in {source!r}")
    return out


def _concept_sets(cfg, concepts: dict[str, str], folders: dict[str, torch.Tensor], x_train: torch.Tensor,
                  bases: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """{name: one image set per run}: a built-in concept on fresh training images each run; a folder's images
    (a random subset of tcav.images per run where it holds more)."""
    generator = torch.Generator().manual_seed(cfg.tcav.seed)
    out = {}
    for name in concepts:
        if name in folders:
            images = folders[name]
            out[name] = [images[torch.randperm(len(images), generator=generator)[:cfg.tcav.images]] for _ in bases]
        else:
            out[name] = [builtin_concept(name, x_train[b], data_mark(cfg.data)) for b in bases]
    return out


def tcav_run(cfg, tracker: Tracker, run_dir: Path) -> Result:
    """TCAV of every concept in every layer for every class (the issue's numbers: README)."""
    s = cfg.tcav
    concepts = _check_settings(cfg)
    folders = _folders(cfg, concepts)
    dm = build_datamodule(cfg.data)
    trained = train_one(cfg, cfg.model, dm, tracker, "model")
    (x_train, _), (x_eval, y_eval) = dm.split("train"), dm.split(cfg.data.split)
    classes = [int(k) for k in s.classes] if s.classes else list(range(dm.num_classes))
    chosen = classes_in_turn(y_eval, s.class_images * dm.num_classes)
    chosen = chosen[torch.isin(y_eval[chosen], torch.tensor(classes))]
    runs = s.random_runs
    sets = disjoint_sets(len(x_train), 3 * runs, s.images, s.seed)
    start = time.perf_counter()
    results = tcav(trained.model, _concept_sets(cfg, concepts, folders, x_train, sets[2 * runs:]),
                   [x_train[i] for i in sets[:runs]], [x_train[i] for i in sets[runs:2 * runs]],
                   x_eval[chosen], y_eval[chosen], list(s.layers), classes, s.l2, s.max_iter)
    seconds = time.perf_counter() - start
    transforms = {name: partial(builtin_concept, name, mark=data_mark(cfg.data)) for name in concepts
                  if name not in folders}
    effects = {(e.concept, e.klass): e for e in concept_effects(trained.model, transforms, x_eval[chosen],
                                                               y_eval[chosen], classes)}
    rows = [_row(r, s.alpha, effects.get((r.concept, r.klass))) for r in results]
    print(f"tcav: {len(concepts)} concept(s) x {len(s.layers)} layer(s) x {len(classes)} class(es) x {runs} "
          f"runs in {seconds:.1f} s; {sum(r['significant'] for r in rows)} of {len(rows)} significant at "
          f"p < {s.alpha}")
    return _write(rows, run_dir, tracker, seconds, s.alpha)


def _row(result: TcavResult, alpha: float, effect: ConceptEffect | None) -> dict:
    """One table row; the concept's effect (the same in every layer) is blank for a folder concept."""
    low, high = interval(result.scores)
    return {"concept": result.concept, "layer": result.layer, "class": result.klass,
            "score": round(result.score, 4), "low": round(max(0.0, low), 4), "high": round(min(1.0, high), 4),
            "random_score": round(result.random_scores.mean().item(), 4), "p_value": float(f"{result.p_value:.3g}"),
            "significant": result.p_value < alpha, "cav_accuracy": round(result.cav_accuracy, 4),
            "logit_change": round(effect.logit_change, 4) if effect else None,
            "rises": round(effect.rises, 4) if effect else None}


def _write(rows: list[dict], run_dir: Path, tracker: Tracker, seconds: float, alpha: float) -> Result:
    csv_text, markdown = csv_and_markdown(rows, COLUMNS)
    write_text(run_dir / "tcav.csv", csv_text)
    write_text(run_dir / "tcav.md", markdown)
    save_figure(_plot(rows, alpha), run_dir / "tcav.png", dpi=100)
    metrics = {"tcav_seconds": round(seconds, 2), "tcav_significant": sum(r["significant"] for r in rows)}
    for r in rows:
        key = f"{r['concept']}/{r['layer']}/{r['class']}"
        metrics[f"tcav/{key}"], metrics[f"tcav_p/{key}"] = r["score"], r["p_value"]
        if r["logit_change"] is not None:
            cell = f"{r['concept']}/{r['class']}"
            metrics[f"tcav_effect/{cell}"], metrics[f"tcav_rises/{cell}"] = r["logit_change"], r["rises"]
    tracker.log(metrics)
    tracker.log_table("tcav/table", rows)
    tracker.log_images("tcav/plot", [run_dir / "tcav.png"])
    return Result(metrics, rows, {"table_csv": "tcav.csv", "table_md": "tcav.md", "plot": "tcav.png"})


def _plot(rows: list[dict], alpha: float):
    """One panel per layer: per class, a bar per concept with its 95% interval; grey where p >= alpha."""
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    concepts = list(dict.fromkeys(r["concept"] for r in rows))
    classes = list(dict.fromkeys(r["class"] for r in rows))
    plt = pyplot()
    fig, axes = plt.subplots(len(layers), 1, figsize=(max(6, 0.5 * len(classes) * len(concepts)), 2.6 * len(layers)),
                             squeeze=False)
    colours = plt.get_cmap("tab10")
    width = 0.8 / len(concepts)
    for ax, layer in zip(axes[:, 0], layers):
        for j, concept in enumerate(concepts):
            mine = {r["class"]: r for r in rows if r["layer"] == layer and r["concept"] == concept}
            xs = [i + (j - (len(concepts) - 1) / 2) * width for i in range(len(classes))]
            got = [mine[k] for k in classes]
            ax.bar(xs, [r["score"] for r in got], width,
                   color=[colours(j) if r["significant"] else "lightgrey" for r in got],
                   yerr=[[r["score"] - r["low"] for r in got], [r["high"] - r["score"] for r in got]],
                   error_kw={"lw": 0.8})
        ax.axhline(0.5, color="black", lw=0.6, ls=":")
        ax.set_xticks(range(len(classes)), [str(k) for k in classes])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"{layer}\nTCAV score")
    from matplotlib.patches import Patch  # the bars' own colours are grey where not significant

    axes[0, 0].legend(handles=[Patch(color=colours(j), label=c) for j, c in enumerate(concepts)],
                      loc="upper right", fontsize=7, ncol=len(concepts))
    axes[0, 0].set_title(f"TCAV by class (grey: not significant at p < {alpha})")
    axes[-1, 0].set_xlabel("class")
    return fig


DEMO_LAYER = "conv3"  # small_cnn's layer where the Clever Hans model is caught (README, Concepts: TCAV)


def demo_step(cfg, tracker: Tracker, out_dir: Path) -> Result:
    """The demo's TCAV: `studio tcav experiment=clever_hans` with its shipped settings (conf/tcav.yaml), for
    the mark's class in conv3 only (the demo's 10 s budget), on the demo's Clever Hans model (the explain
    step's cache entry: the experiment's data and epochs, the demo's paths, model and trainer otherwise),
    under out_dir; the table and plot are artifacts, not items."""
    from omegaconf import OmegaConf

    from studio import config

    model = untrained_copy(cfg.model, cfg.data)
    if model is None or DEMO_LAYER not in layer_names(model):
        print(f"demo: {cfg.model.name} has no layer {DEMO_LAYER!r}; skipping TCAV")
        return Result({})
    hans = config.compose("tcav", ["+experiment=clever_hans"])
    hans.paths, hans.model = cfg.paths, cfg.model
    hans.trainer = OmegaConf.merge(cfg.trainer, {"max_epochs": hans.trainer.max_epochs})
    hans.tcav.classes, hans.tcav.layers = [hans.data.options.mark_class], [DEMO_LAYER]
    result = tcav_run(hans, tracker, out_dir)
    prefix = out_dir.name
    return Result(result.metrics, [], {f"{prefix}/{k}": f"{prefix}/{v}" for k, v in result.artifacts.items()})
