"""`studio train`: train (or reuse from the cache) one classifier and report its test accuracy."""

from __future__ import annotations

from studio.commands.shared import Result, train_one
from studio.data import build_datamodule
from studio.train import Trained


def accuracy_metrics(trained: Trained, prefix: str = "") -> dict:
    return {f"{prefix}test_acc": trained.test_acc, f"{prefix}val_acc": trained.val_acc,
            f"{prefix}train_seconds": round(trained.train_seconds, 2), f"{prefix}cached": trained.cached}


def run(cfg, tracker) -> Result:
    """Train (or reuse) one classifier; report its test accuracy."""
    dm = build_datamodule(cfg.data)
    trained = train_one(cfg, cfg.model, dm, tracker, "model")
    tracker.log({"test_acc": trained.test_acc, "val_acc": trained.val_acc})
    return Result(accuracy_metrics(trained), artifacts={"checkpoint": str(trained.path.resolve())})
