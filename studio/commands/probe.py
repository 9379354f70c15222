"""`studio probe`: a linear probe on every layer's activations (plus raw pixels and the majority class as
baselines): how linearly decodable the class is, layer by layer.

Run layout: probes.csv, probes.md (the same table), probes.png (accuracy by depth), manifest.json.
"""

from __future__ import annotations

import time
from pathlib import Path

from studio import config
from studio.activations import PIXELS, collect, default_layers
from studio.commands.shared import Result, train_one
from studio.data import build_datamodule, classes_in_turn
from studio.files import write_text
from studio.images import pyplot, save_figure
from studio.models import check_layer_names
from studio.probe import fit_probe, majority_accuracy
from studio.report.tables import csv_and_markdown
from studio.tracking import Tracker


def run(cfg, tracker: Tracker) -> Result:
    return probe(cfg, tracker, tracker.output_dir)


def probe(cfg, tracker: Tracker, run_dir: Path) -> Result:
    """A linear probe on every layer (plus raw pixels and the majority class as baselines)."""
    settings = cfg.probe
    check_layer_names(cfg.model, cfg.data, [n for n in settings.layers or () if n != PIXELS])
    dm = build_datamodule(cfg.data)
    trained = train_one(cfg, cfg.model, dm, tracker, "model")
    layers = list(settings.layers) if settings.layers else default_layers(trained.model)
    (x_train, y_train), (x_test, y_test) = dm.split("train"), dm.split(cfg.data.split)
    if settings.train_images:  # every class alike: a split sorted by class (mnist5k's) starts with its 0s
        chosen = classes_in_turn(y_train, settings.train_images).sort().values
        x_train, y_train = x_train[chosen], y_train[chosen]

    start = time.perf_counter()
    names = [PIXELS, *layers]
    train_features = collect(trained.model, x_train, names, settings.pool, max_features=settings.max_features)
    test_features = collect(trained.model, x_test, names, settings.pool)
    rows = []
    for depth, name in enumerate(names):
        fitted = fit_probe(train_features[name], y_train, dm.num_classes, settings.l2, settings.max_iter)
        rows.append({"depth": depth, "layer": name, "features": train_features[name].shape[1],
                     "probe_train_acc": fitted.accuracy(train_features[name], y_train),
                     "probe_acc": fitted.accuracy(test_features[name], y_test)})
        print(f"probe {name:<12} {rows[-1]['features']:>6} features  train {rows[-1]['probe_train_acc']:.2%}"
              f"  {cfg.data.split} {rows[-1]['probe_acc']:.2%}")
    seconds = time.perf_counter() - start
    majority = majority_accuracy(y_train, y_test)
    print(f"majority-class baseline {majority:.2%}; the model itself {trained.test_acc:.2%}; "
          f"{len(rows)} probes in {seconds:.1f} s")

    csv_text, markdown = csv_and_markdown(rows, ["depth", "layer", "features", "probe_train_acc", "probe_acc"])
    write_text(run_dir / "probes.csv", csv_text)
    write_text(run_dir / "probes.md", markdown)
    save_figure(_probe_plot(rows, majority, trained.test_acc, cfg.model.name), run_dir / "probes.png", dpi=110)

    metrics = {"model_test_acc": trained.test_acc, "probe_acc/majority": majority,
               "probe_seconds": round(seconds, 2)}
    for row in rows:
        metrics[f"probe_acc/{row['layer']}"] = row["probe_acc"]
        if row["layer"] != PIXELS:
            metrics[f"probe_train_acc/{row['layer']}"] = row["probe_train_acc"]
    tracker.log(metrics)
    tracker.log_table("probes/table", rows)
    tracker.log_images("probes/plot", [run_dir / "probes.png"])
    return Result(metrics, rows, {"table_csv": "probes.csv", "table_md": "probes.md", "plot": "probes.png"})


def _probe_plot(rows, majority: float, model_acc: float, model_name: str):
    fig, ax = pyplot().subplots(figsize=(max(6, 0.45 * len(rows)), 4))
    depth = [r["depth"] for r in rows]
    ax.plot(depth, [r["probe_acc"] for r in rows], "o-", label="probe, test")
    ax.plot(depth, [r["probe_train_acc"] for r in rows], "s--", alpha=0.6, label="probe, train")
    ax.axhline(model_acc, color="green", lw=1, label=f"{model_name} itself")
    ax.axhline(majority, color="grey", lw=1, ls=":", label="majority class")
    ax.set_xticks(depth, [r["layer"] for r in rows], rotation=45, ha="right")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Linear probe accuracy by depth")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def demo_step(cfg, tracker: Tracker, out_dir: Path) -> Result:
    """The demo's probe: `studio probe` with its shipped settings (conf/probe.yaml) on the demo's model, under
    out_dir; the table and plot are artifacts, not items."""
    from omegaconf import OmegaConf

    sub = OmegaConf.merge(OmegaConf.to_container(cfg, resolve=True), {"probe": config.load("probe").probe})
    probed = probe(sub, tracker, out_dir)
    prefix = out_dir.name
    return Result(probed.metrics, [], {f"{prefix}/{k}": f"{prefix}/{v}" for k, v in probed.artifacts.items()})
