"""The commands that need only classifiers: `train`, `layers`, and `demo`, which strings every command
together on the bundled digits."""

from __future__ import annotations

from pathlib import Path

from studio.data import build_datamodule
from studio.models import build_classifier, checkpoint_path, layer_shapes, load_state_dict_file, load_weights
from studio.runs import Result, train_one
from studio.tracking import Tracker
from studio.train import Trained


def _accuracy_metrics(trained: Trained, prefix: str = "") -> dict:
    return {f"{prefix}test_acc": trained.test_acc, f"{prefix}val_acc": trained.val_acc,
            f"{prefix}train_seconds": round(trained.train_seconds, 2), f"{prefix}cached": trained.cached}


def train(cfg, tracker: Tracker, run_dir: Path) -> Result:
    """Train (or reuse) one classifier; report its test accuracy."""
    dm = build_datamodule(cfg.data)
    trained = train_one(cfg, cfg.model, dm, tracker, "model")
    metrics = _accuracy_metrics(trained)
    tracker.log({"test_acc": trained.test_acc, "val_acc": trained.val_acc})
    return Result(metrics, artifacts={"checkpoint": str(trained.path.resolve())})


def layers(cfg, tracker: Tracker, run_dir: Path) -> Result:
    """Print every layer of the model with its output shape (needs no training and no data)."""
    d = cfg.data
    model = build_classifier(cfg.model, d.channels, d.num_classes, [0.0] * d.channels, [1.0] * d.channels)
    user_weights = checkpoint_path(cfg.model)
    if user_weights:
        load_weights(model, load_state_dict_file(user_weights), user_weights)
    shapes = layer_shapes(model, (d.channels, d.size, d.size))
    items = [{"layer": name, "type": type(model.net.get_submodule(name)).__name__, "shape": list(shape)}
             for name, shape in shapes.items()]
    width = max(len(item["layer"]) for item in items)
    print(f"{'layer':<{width}}  {'type':<18} output shape (C, H, W) for input {(d.channels, d.size, d.size)}")
    for item in items:
        print(f"{item['layer']:<{width}}  {item['type']:<18} {tuple(item['shape'])}")
    return Result({"layers": len(items)}, items)


def demo(cfg, tracker: Tracker, run_dir: Path) -> Result:
    """The main job: classifier, judge and generator on the bundled digits, then what they show."""
    from studio import explain_command, generation, hidden, visualize  # here: `train` and `layers` need none
    from studio.metrics import Judge

    dm = build_datamodule(cfg.data)
    model = train_one(cfg, cfg.model, dm, tracker, "model")
    judge = train_one(cfg, cfg.judge, dm, tracker, "judge")
    metrics = {**_accuracy_metrics(model, "model/"), **_accuracy_metrics(judge, "judge/")}
    tracker.log({k: v for k, v in metrics.items() if k.endswith("_acc")})
    generator = generation.generator_for(cfg, dm, tracker, samples_dir=run_dir / "generator")
    shown = visualize.demo_visualizations(cfg, tracker, run_dir, model.model, Judge.for_data(judge.model, dm),
                                          generator.module)
    inside = hidden.demo_inside(cfg, tracker, run_dir)
    explained = explain_command.demo_explanations(cfg, tracker, run_dir, model.model)
    return Result({**metrics, **shown.metrics, **inside.metrics, **explained.metrics},
                  shown.items + inside.items + explained.items,
                  artifacts={"model_checkpoint": str(model.path.resolve()),
                             "judge_checkpoint": str(judge.path.resolve()), "generator": str(generator.path.resolve()),
                             **shown.artifacts, **inside.artifacts, **explained.artifacts})
