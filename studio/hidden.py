"""`studio probe` and `studio embed`: how the network processes its input, layer by layer."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from studio.activations import PIXELS, collect, default_layers  # noqa: E402
from studio.data import build_datamodule, classes_in_turn  # noqa: E402
from studio.embed import knn_separation, pca_2d, tsne_2d  # noqa: E402
from studio.files import atomic_path, write_text  # noqa: E402
from studio.models import check_layer_names  # noqa: E402
from studio.probe import fit_probe, majority_accuracy  # noqa: E402
from studio.runs import Result, train_one  # noqa: E402
from studio.tracking import Tracker  # noqa: E402


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically, then close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _table(rows: list[dict], columns: list[str]) -> tuple[str, str]:
    """(CSV, Markdown) renderings of the same rows."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)

    def fmt(value):
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return buffer.getvalue(), "\n".join(lines) + "\n"


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

    csv_text, markdown = _table(rows, ["depth", "layer", "features", "probe_train_acc", "probe_acc"])
    write_text(run_dir / "probes.csv", csv_text)
    write_text(run_dir / "probes.md", markdown)
    save_figure(_probe_plot(rows, majority, trained.test_acc, cfg.model.name), run_dir / "probes.png")

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
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows)), 4))
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


def embed(cfg, tracker: Tracker, run_dir: Path) -> Result:
    """PCA and t-SNE maps of chosen layers on held-out images, coloured by class, with a separation score."""
    settings = cfg.embed
    check_layer_names(cfg.model, cfg.data, [n for n in cfg.layers if n != PIXELS])
    dm = build_datamodule(cfg.data)
    trained = train_one(cfg, cfg.model, dm, tracker, "model")
    x, y = dm.split(cfg.data.split)
    chosen = classes_in_turn(y, settings.images).sort().values  # every class alike, as in probe.train_images
    x, y = x[chosen], y[chosen]
    layers = list(cfg.layers)
    features = collect(trained.model, x, layers, settings.pool, max_features=settings.max_features)
    labels = y.numpy()
    items, metrics = [], {}
    for name in layers:
        maps = {"pca": pca_2d(features[name], settings.seed),
                "tsne": tsne_2d(features[name], settings.perplexity, settings.seed)}
        scores = {method: knn_separation(points, labels, settings.knn) for method, points in maps.items()}
        image = f"embed_{name.replace('.', '_')}.png"
        save_figure(_embed_plot(name, maps, scores, labels, dm.classes), run_dir / image)
        metrics[f"separation/{name}"] = scores["tsne"]
        metrics[f"separation_pca/{name}"] = scores["pca"]
        items.append({"layer": name, "image": image, "points": len(labels), "features": features[name].shape[1],
                      "metrics": {"separation": scores["tsne"], "separation_pca": scores["pca"]}})
        print(f"embed {name:<12} {settings.knn}-NN separation: t-SNE {scores['tsne']:.2%}, PCA {scores['pca']:.2%}")
    rows = [{"layer": i["layer"], **i["metrics"]} for i in items]
    csv_text, markdown = _table(rows, ["layer", "separation", "separation_pca"])
    write_text(run_dir / "separation.csv", csv_text)
    write_text(run_dir / "separation.md", markdown)
    tracker.log(metrics)
    tracker.log_table("embed/table", rows)
    tracker.log_images("embed/maps", [run_dir / i["image"] for i in items], [i["layer"] for i in items])
    return Result(metrics, items, {"table_csv": "separation.csv", "table_md": "separation.md"})


def _embed_plot(name: str, maps: dict, scores: dict, labels: np.ndarray, classes: list[str]):
    fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 4.6))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for ax, (method, points) in zip(np.atleast_1d(axes), maps.items()):
        for k, class_name in enumerate(classes):
            chosen = labels == k
            ax.scatter(points[chosen, 0], points[chosen, 1], s=5, color=cmap(k % cmap.N), label=class_name)
        ax.set_title(f"{name}: {method.upper()}  (k-NN separation {scores[method]:.0%})")
        ax.set_xticks([])
        ax.set_yticks([])
    np.atleast_1d(axes)[-1].legend(markerscale=3, fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    return fig


def demo_inside(cfg, tracker: Tracker, run_dir: Path, embed_images: int = 500) -> Result:
    """The demo's step: `studio probe` and `studio embed` with their shipped settings (conf/probe.yaml,
    conf/embed.yaml; t-SNE on `embed_images` test images to keep the demo quick), under probe/ and embed/."""
    from omegaconf import OmegaConf

    from studio.cli import CONF_DIR

    probe_cfg, embed_cfg = OmegaConf.load(CONF_DIR / "probe.yaml"), OmegaConf.load(CONF_DIR / "embed.yaml")
    sub = OmegaConf.merge(OmegaConf.to_container(cfg, resolve=True),
                          {"probe": probe_cfg.probe, "embed": {**embed_cfg.embed, "images": embed_images},
                           "layers": embed_cfg.layers})
    run_dir = Path(run_dir)
    probed, embedded = probe(sub, tracker, run_dir / "probe"), embed(sub, tracker, run_dir / "embed")
    items = [{**item, "image": f"embed/{item['image']}"} for item in embedded.items]
    artifacts = {f"probe/{k}": f"probe/{v}" for k, v in probed.artifacts.items()}
    artifacts.update({f"embed/{k}": f"embed/{v}" for k, v in embedded.artifacts.items()})
    return Result({**probed.metrics, **embedded.metrics}, items, artifacts)
