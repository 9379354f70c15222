"""`studio embed`: PCA and t-SNE maps of chosen layers on held-out images, coloured by class, with a k-NN
separation score per map.

Run layout: embed_<layer>.png (one per layer), separation.csv, separation.md, manifest.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studio import config
from studio.activations import PIXELS, collect
from studio.commands.shared import Result, train_one
from studio.data import build_datamodule, classes_in_turn
from studio.embed import knn_separation, pca_2d, tsne_2d
from studio.files import write_text
from studio.images import pyplot, save_figure
from studio.models import check_layer_names
from studio.report.tables import csv_and_markdown
from studio.tracking import Tracker

DEMO_IMAGES = 500  # t-SNE on this many test images keeps the demo quick


def run(cfg, tracker: Tracker) -> Result:
    return embed(cfg, tracker, tracker.output_dir)


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
        save_figure(_embed_plot(name, maps, scores, labels, dm.classes), run_dir / image, dpi=110)
        metrics[f"separation/{name}"] = scores["tsne"]
        metrics[f"separation_pca/{name}"] = scores["pca"]
        items.append({"layer": name, "image": image, "points": len(labels), "features": features[name].shape[1],
                      "metrics": {"separation": scores["tsne"], "separation_pca": scores["pca"]}})
        print(f"embed {name:<12} {settings.knn}-NN separation: t-SNE {scores['tsne']:.2%}, PCA {scores['pca']:.2%}")
    rows = [{"layer": i["layer"], **i["metrics"]} for i in items]
    csv_text, markdown = csv_and_markdown(rows, ["layer", "separation", "separation_pca"])
    write_text(run_dir / "separation.csv", csv_text)
    write_text(run_dir / "separation.md", markdown)
    tracker.log(metrics)
    tracker.log_table("embed/table", rows)
    tracker.log_images("embed/maps", [run_dir / i["image"] for i in items], [i["layer"] for i in items])
    return Result(metrics, items, {"table_csv": "separation.csv", "table_md": "separation.md"})


def _embed_plot(name: str, maps: dict, scores: dict, labels: np.ndarray, classes: list[str]):
    plt = pyplot()
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


def demo_step(cfg, tracker: Tracker, out_dir: Path) -> Result:
    """The demo's embedding: `studio embed` with its shipped settings (conf/embed.yaml; t-SNE on DEMO_IMAGES
    test images) on the demo's model, under out_dir."""
    from omegaconf import OmegaConf

    shipped = config.load("embed")
    sub = OmegaConf.merge(OmegaConf.to_container(cfg, resolve=True),
                          {"embed": {**shipped.embed, "images": DEMO_IMAGES}, "layers": shipped.layers})
    embedded = embed(sub, tracker, out_dir)
    prefix = out_dir.name
    items = [{**item, "image": f"{prefix}/{item['image']}"} for item in embedded.items]
    return Result(embedded.metrics, items, {f"{prefix}/{k}": f"{prefix}/{v}" for k, v in embedded.artifacts.items()})
