"""`studio explain`: explain single decisions with LIME and gradient methods, and score the maps.

For `explain.images` images of `data.split`, the classes in turn (or, in the Clever Hans experiments,
of its marked images / of those with their class's background, where every method is run on a model
trained on the clean data too): every method's map, per-image metrics, one comparison panel per image, one
manifest item per (image, method) and a W&B table. Everything is computed before anything is
written, so a bad input leaves no half-written run. No method is named here: options come through
studio/adapters/explain.py, metric columns, captions and summary columns from the method registry
(studio/explain/registry.py, which says what adding a method takes).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from omegaconf import OmegaConf

from studio import config
from studio.adapters.explain import chosen_layers, method_options, metric_options
from studio.commands.shared import Result, train_one
from studio.data import build_datamodule, classes_in_turn
from studio.errors import StudioError
from studio.explain import METHODS, method_names
from studio.explain.registry import Column
from studio.models import check_layer_names, untrained_copy

# Per-image metrics every method gets, before and after the ones a method reports itself (registry).
CURVES = ("deletion_auc", "insertion_auc")
CHECKS = ("stability", "sanity", "mark_found", "background_share", "background_share_clean")
# Printed summary columns and caption parts of the common metrics; a method adds its own in between.
CURVE_COLUMNS = (Column("deletion_auc", "deletion", 8), Column("insertion_auc", "insertion", 9))
CHECK_COLUMNS = (Column("stability", "stable", 6), Column("sanity", "random.", 7), Column("mark_found", "mark", 5),
                 Column("background_share", "backgr.", 7))
CHECK_CAPTIONS = {"stability": lambda v: f"stab {v:.2f}", "sanity": lambda v: f"rand {v:.2f}",
                  "mark_found": lambda v: "mark ✓" if v else "mark ✗",
                  "background_share": lambda v: f"bg {v:.2f}", "background_share_clean": lambda v: f"(clean {v:.2f})"}
# Run metric keys of the checks that are named per method (default: <method>/<metric>).
RUN_KEYS = {"mark_found": "mark_found_{name}", "background_share": "background_share/{name}",
            "background_share_clean": "background_share_clean/{name}"}


def resolve_config_target(value, labels: torch.Tensor, num_classes: int):
    """explain.target → what the methods take: 'pred' → None, 'label' → the true classes, k → k."""
    if isinstance(value, str) and value in ("pred", "label"):
        return None if value == "pred" else labels
    if isinstance(value, bool) or not isinstance(value, int):
        raise StudioError(f"explain.target {value!r} is not valid; choose from: pred, label or a class index "
                          f"0..{num_classes - 1}")
    if not 0 <= value < num_classes:
        raise StudioError(f"explain.target {value} is out of range; the model has {num_classes} classes "
                          f"(0..{num_classes - 1})")
    return value


def clever_hans_story(model, x: torch.Tensor, y: torch.Tensor, mark, mark_class: int) -> dict[str, float]:
    """How much the model leans on the mark, measured on the whole split."""
    from studio.explain.checks import logits

    marked = mark.present(x)
    out = logits(model, x)
    pred, prob = out.argmax(1), out.softmax(1)[:, mark_class]
    other = y != mark_class
    clean_other = ~marked & other
    lifted = logits(model, mark.plant(x[clean_other])).softmax(1)[:, mark_class] if clean_other.any() else prob[:0]

    def mean(t):
        return round(float(t.float().mean()), 4) if t.numel() else float("nan")

    return {"clean_acc": mean(pred[~marked] == y[~marked]), "marked_acc": mean(pred[marked] == y[marked]),
            "hijack_rate": mean(pred[marked & other] == mark_class),
            "mark_class_recall_unmarked": mean(pred[~marked & ~other] == mark_class),
            "mark_class_recall_marked": mean(pred[marked & ~other] == mark_class),
            "mark_lift": mean(lifted - prob[clean_other])}


def background_story(model, x: torch.Tensor, y: torch.Tensor, background) -> dict[str, float]:
    """How much the model leans on the background, measured on the (clean) test split: accuracy on its
    digits without their class's background, on the same digits with it, and how often a digit given the
    next class's background is called that class."""
    from studio.explain.checks import logits

    clean = ~background.present(x, y)
    x, y = x[clean], y[clean]
    if not len(x):
        return {}
    other = (y + 1) % len(background.levels)

    def accuracy(images: torch.Tensor, labels: torch.Tensor) -> float:
        return round(float((logits(model, images).argmax(1) == labels).float().mean()), 4)

    return {"clean_acc": accuracy(x, y), "own_background_acc": accuracy(background.paint(x, y), y),
            "follows_background": accuracy(background.paint(x, other), other)}


def item_metrics() -> tuple[str, ...]:
    """The W&B table's metric columns: the curves, every registered method's own metrics (one column for a
    metric that several report), the checks."""
    return tuple(dict.fromkeys((*CURVES, *(metric for spec in METHODS.values() for metric in spec.metrics), *CHECKS)))


def _caption(name: str, scores: dict) -> str:
    """A map's caption in the panel (three short lines): curves, then the method's parts and the checks'."""
    parts = [f"del {scores['deletion_auc']:.2f} ins {scores['insertion_auc']:.2f}"]
    extra = METHODS[name].caption(scores) + [draw(scores[k]) for k, draw in CHECK_CAPTIONS.items() if k in scores]
    return "\n".join(parts + [" ".join(extra[:2]), " ".join(extra[2:])]).rstrip()


def explain_run(cfg, model, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, names: list[str],
                out_dir: Path, tracker, prefix: str = "", mark=None, story: dict | None = None, background=None,
                clean_model=None):
    """Explain x (labels y, positions `index` in the split) with `names`; write maps, panels and the
    W&B table under out_dir. Returns (run metrics, manifest items with paths relative to out_dir).
    story: run metrics as they are; background (with clean_model): score every map's share of mass on
    the background, and the clean model's maps of the same images and targets beside them."""
    from studio.explain.compare import compare_methods

    ecfg = cfg.explain
    target = resolve_config_target(ecfg.target, y, int(cfg.data.num_classes))
    region = mark.region(*x.shape[-2:]) if mark is not None else None
    pixels = background.region(x) if background is not None else None
    result = compare_methods(model, x, names, target, method_options(ecfg), metric_options(ecfg), region, pixels)
    if clean_model is not None:  # the same question of the model trained on clean data
        _add_clean_shares(result, clean_model, x, names, ecfg, pixels)

    # Everything is computed: now the numbers, then the files.
    metrics = _run_metrics(result, prefix, story, len(x))
    items = _write(result, x, y, index, out_dir, mark)
    _log_table(tracker, items, out_dir, prefix, metrics)
    _print_summary(result, metrics, prefix)
    return metrics, items


def _add_clean_shares(result, clean_model, x: torch.Tensor, names: list[str], ecfg, pixels: torch.Tensor) -> None:
    """Every method's background share on the clean model (same images and targets), added to the result's
    metrics as background_share_clean; its other checks are skipped (they are the background model's)."""
    from dataclasses import replace

    from studio.explain.compare import compare_methods

    checks = replace(metric_options(ecfg), stability_seeds=0, sanity=False)
    clean = compare_methods(clean_model, x, names, result.target, method_options(ecfg), checks, background=pixels)
    for name, r in result.methods.items():
        r.metrics["background_share_clean"] = clean.methods[name].metrics["background_share"]


def _run_metrics(result, prefix: str, story: dict | None, images: int) -> dict:
    """Means over the images: the random baseline's, every method's (+ its seconds), the Clever Hans story."""
    metrics = {}
    for k, v in result.baseline.items():
        metrics[f"{prefix}random/{k}"] = round(float(v.mean()), 4)
    for name, r in result.methods.items():
        for k, v in r.metrics.items():
            metrics[prefix + RUN_KEYS.get(k, "{name}/" + k).format(name=name)] = round(float(v.float().mean()), 4)
        metrics[f"{prefix}{name}/seconds"] = round(r.seconds, 2)
    metrics.update(story or {})
    metrics[f"{prefix}images"] = images
    return metrics


def _image_scores(result, i: int) -> dict[str, dict]:
    """Image i's rounded metrics per method (mark_found a bool), with the random baseline's AUCs."""
    scores_of = {}
    for name, r in result.methods.items():
        scores = {k: float(v[i]) for k, v in r.metrics.items()}
        scores["mark_found"] = bool(scores["mark_found"]) if "mark_found" in scores else None
        scores_of[name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in scores.items()
                           if v is not None}
        scores_of[name]["deletion_auc_random"] = round(float(result.baseline["deletion_auc"][i]), 4)
        scores_of[name]["insertion_auc_random"] = round(float(result.baseline["insertion_auc"][i]), 4)
    return scores_of


def _write(result, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, out_dir: Path, mark) -> list[dict]:
    """Per image a panel and per (image, method) a map under out_dir; returns the manifest items."""
    from studio.explain.panels import save_map, save_panel

    items = []
    for i in range(len(x)):
        idx, scores_of = int(index[i]), _image_scores(result, i)
        panel = Path("panels") / f"{idx:05d}.png"
        title = (f"#{idx} label {int(y[i])} pred {int(result.prediction[i])}\n"
                 f"target {int(result.target[i])} p={float(result.probability[i]):.2f}")
        save_panel(x[i], {n: r.maps[i, 0] for n, r in result.methods.items()},
                   {n: _caption(n, scores_of[n]) for n in result.methods}, title, out_dir / panel,
                   mark.box(*x.shape[-2:]) if mark is not None else None)
        for name, r in result.methods.items():
            image = Path("maps") / f"{idx:05d}_{name}.png"
            save_map(r.maps[i, 0], out_dir / image)
            items.append({"index": idx, "label": int(y[i]), "prediction": int(result.prediction[i]),
                          "target": int(result.target[i]), "method": name, "image": str(image),
                          "panel": str(panel), "metrics": scores_of[name]})
    return items


def _log_table(tracker, items: list, out_dir: Path, prefix: str, metrics: dict) -> None:
    """Mirror to W&B: the run metrics and one table row per (image, method) with its map and panel."""
    tracker.log(metrics)
    columns = item_metrics()
    rows = [{"index": item["index"], "label": item["label"], "target": item["target"], "method": item["method"],
             "map": out_dir / item["image"], "panel": out_dir / item["panel"],
             **{k: item["metrics"].get(k) for k in columns}} for item in items]
    tracker.log_table(f"{prefix}explanations", rows, images=("map", "panel"))


def _print_summary(result, metrics: dict, prefix: str) -> None:
    """Per method the means of the curves, of every method's own metrics that have a column, of the checks."""
    columns = tuple(dict.fromkeys((*CURVE_COLUMNS, *(c for spec in METHODS.values() for c in spec.columns),
                                   *CHECK_COLUMNS)))
    wide = max([11, *(len(name) for name in result.methods)])  # guided_backprop is 15, attention_rollout 17
    print(f"{'method':<{wide}} " + " ".join(f"{c.header:>{c.width}}" for c in columns) +
          f"  (AUC means; random order: deletion {metrics[f'{prefix}random/deletion_auc']:.3f}, "
          f"insertion {metrics[f'{prefix}random/insertion_auc']:.3f})")
    for name, r in result.methods.items():
        def cell(c: Column) -> str:
            v = r.metrics.get(c.metric)
            return f"{float(v.float().mean()):>{c.width}.3f}" if v is not None else " " * (c.width - 1) + "-"
        print(f"{name:<{wide}} " + " ".join(cell(c) for c in columns))


def check_selection(cfg) -> None:
    """explain.images and, for the Clever Hans experiment, its data: checked before any data or training."""
    ecfg = cfg.explain
    if int(ecfg.images) < 1:
        raise StudioError(f"explain.images must be ≥ 1, got {ecfg.images}")
    if ecfg.clever_hans and cfg.data.source != "marked":
        raise StudioError(f"explain.clever_hans=true needs marked data (data=mnist5k_marked or "
                          f"experiment=clever_hans); got data={cfg.data.name}")
    if ecfg.background and cfg.data.source != "background":
        raise StudioError(f"explain.background=true needs background data (data=mnist5k_background or "
                          f"experiment=clever_hans_background); got data={cfg.data.name}")
    if ecfg.background and str(cfg.data.options.base) not in config.config_choices("data"):
        raise StudioError(f"explain.background=true trains the clean model on data={cfg.data.options.base} "
                          f"(data.options.base), which is not a data config; choose from: "
                          f"{', '.join(config.config_choices('data'))}")


def _pool(cfg, x_all: torch.Tensor, y_all: torch.Tensor):
    """(positions of the images to choose from, the Clever Hans mark or None, its background or None): all
    of data.split, (explain.clever_hans) its marked images, or (explain.background) its images with their
    class's background."""
    from studio.background import Background
    from studio.mark import Mark

    o, split = cfg.data.options, cfg.data.split
    rate = "test_rate" if split == "test" else "train_rate"
    if cfg.explain.clever_hans:
        mark = Mark(int(o.size), str(o.corner), int(o.margin), float(o.value))
        pool = mark.present(x_all).nonzero().flatten()
        if not len(pool):
            raise StudioError(f"no marked images in data.split={split}; set data.options.{rate} > 0")
        return pool, mark, None
    if cfg.explain.background:
        background = Background(tuple(float(v) for v in o.levels), float(o.ink))
        pool = background.present(x_all, y_all).nonzero().flatten()
        if not len(pool):
            raise StudioError(f"no images with their class's background in data.split={split} (the test split "
                              f"is clean by design); use data.split=val or set data.options.{rate} > 0")
        return pool, None, background
    return torch.arange(len(x_all)), None, None


def _candidates(cfg, dm):
    """(x_all, y_all, pool, mark, background): data.split and the positions of the images to choose from
    (see _pool)."""
    check_selection(cfg)
    x_all, y_all = dm.split(cfg.data.split)
    return (x_all, y_all, *_pool(cfg, x_all, y_all))


def _select(cfg, candidates, model):
    """(x, y, index, mark, story) of the images to explain: `explain.images` of the candidates (Clever Hans:
    the marked images), the classes in turn; story: the mark's run metrics (clever_hans/...)."""
    x_all, y_all, pool, mark, _ = candidates
    story = ({f"clever_hans/{k}": v for k, v in
              clever_hans_story(model, x_all, y_all, mark, int(cfg.data.options.mark_class)).items()}
             if mark is not None else None)
    index = pool[classes_in_turn(y_all[pool], int(cfg.explain.images))]
    return x_all[index], y_all[index], index, mark, story


def check_methods(cfg) -> None:
    """Build the chosen methods on an untrained copy of the model: their own checks (an attention method on a
    model without attention, a Grad-CAM layer off a ViT's patch grid) fail in one line before any training."""
    model = untrained_copy(cfg.model, cfg.data)
    if model is None:  # pretrained weights: checked on the trained model
        return
    options = method_options(cfg.explain)
    for name in method_names(str(cfg.method), model):
        METHODS[name].build(model, **options[name])


def _clean_model(cfg, tracker):
    """The same model trained with the same trainer on the background data's base (data.options.base with
    its base_options), i.e. without the shortcut: the background model's control."""
    clean = copy.deepcopy(cfg)
    clean.data = config.compose("explain", [f"data={cfg.data.options.base}"]).data
    clean.data.options = cfg.data.options.base_options
    return train_one(clean, clean.model, build_datamodule(clean.data), tracker, "clean model").model


def run(cfg, tracker) -> Result:
    """The `explain` command: train (or reuse) the model, explain images, write panels + manifest items."""
    names = method_names(str(cfg.method))
    # names and indices fail before any training: an untrained copy has the trained model's layers
    resolve_config_target(cfg.explain.target, torch.zeros(0, dtype=torch.long), int(cfg.data.num_classes))
    check_selection(cfg)
    if layers := chosen_layers(cfg.explain, names):
        check_layer_names(cfg.model, cfg.data, layers)
    check_methods(cfg)
    dm = build_datamodule(cfg.data)
    candidates = _candidates(cfg, dm)  # no marked image to explain: found before training
    trained = train_one(cfg, cfg.model, dm, tracker, "model")
    names = method_names(str(cfg.method), trained.model)  # method=all: those that apply to this model
    x, y, index, mark, story = _select(cfg, candidates, trained.model)
    background, clean_model = candidates[-1], None
    if background is not None:  # what the shortcut costs on the clean test digits, and the control model
        story = {f"background/{k}": v for k, v in background_story(trained.model, *dm.split("test"),
                                                                     background).items()}
        clean_model = _clean_model(cfg, tracker)
    metrics, items = explain_run(cfg, trained.model, x, y, index, names, tracker.output_dir, tracker,
                                 mark=mark, story=story, background=background, clean_model=clean_model)
    metrics.update({"model/test_acc": trained.test_acc, "model/cached": trained.cached})
    return Result(metrics, items, {"panels": "panels", "maps": "maps", "checkpoint": str(trained.path.resolve())})


def demo_explanations(cfg, tracker, run_dir: Path, model) -> Result:
    """The demo's explanation step: every method on the first `explain.images` test images of the demo's
    model, then (explain.clever_hans) the Clever Hans experiment, exactly as `studio explain
    experiment=clever_hans` runs it (same cached marked model, trained once), on as many marked images.
    Settings: conf/explain.yaml's, with conf/demo.yaml's `explain` block on top. Files go under explain/
    and clever_hans/ in the run dir; metric keys start with explain/ and clever_hans/."""
    demo_block = OmegaConf.to_container(cfg.explain, resolve=True) if "explain" in cfg else {}
    with_clever_hans = bool(demo_block.pop("clever_hans", False))
    names = method_names("all", model)

    plain = config.compose("explain")
    plain.data, plain.explain = cfg.data, OmegaConf.merge(plain.explain, demo_block)
    x, y, index, _, _ = _select(plain, _candidates(plain, build_datamodule(cfg.data)), model)
    print(f"demo: explaining {len(x)} test images with {', '.join(names)}")
    runs = [("explain", explain_run(plain, model, x, y, index, names, Path(run_dir) / "explain", tracker,
                                    prefix="explain/"))]
    if with_clever_hans:
        hans = config.compose("explain", ["experiment=clever_hans"])
        # the experiment's data, epochs and explain settings; the demo's paths, model and trainer otherwise
        hans.paths, hans.model = cfg.paths, cfg.model
        hans.trainer = OmegaConf.merge(cfg.trainer, {"max_epochs": hans.trainer.max_epochs})
        hans.explain = OmegaConf.merge(hans.explain, demo_block)
        dm = build_datamodule(hans.data)
        candidates = _candidates(hans, dm)
        trained = train_one(hans, hans.model, dm, tracker, "clever_hans model")
        x, y, index, mark, story = _select(hans, candidates, trained.model)
        print(f"demo: Clever Hans: explaining {len(x)} marked test images (why class {hans.explain.target}?)")
        runs.append(("clever_hans", explain_run(hans, trained.model, x, y, index, names,
                                                Path(run_dir) / "clever_hans", tracker, prefix="clever_hans/",
                                                mark=mark, story=story)))
    metrics, items, artifacts = {}, [], {}
    for name, (run_metrics, run_items) in runs:
        metrics.update(run_metrics)
        items += [{**item, "run": name, "image": f"{name}/{item['image']}", "panel": f"{name}/{item['panel']}"}
                  for item in run_items]
        artifacts[f"{name}/panels"] = f"{name}/panels"
    return Result(metrics, items, artifacts)
