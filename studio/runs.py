"""What every command shares: its Result, and getting a trained classifier with a one-line report."""

from __future__ import annotations

from dataclasses import dataclass, field

from studio.tracking import Tracker
from studio.train import Trained, trained_classifier


@dataclass
class Result:
    """What a command hands back for the manifest: run metrics, one item per output, artifact paths."""

    metrics: dict
    items: list = field(default_factory=list)
    artifacts: dict = field(default_factory=dict)


def train_one(cfg, model_cfg, dm, tracker: Tracker, role: str) -> Trained:
    """The classifier `model_cfg` names, trained on cfg.data (or cached), with its accuracy printed."""
    trained = trained_classifier(model_cfg, cfg.data, cfg.trainer, dm, cfg.paths.models,
                                 logger=tracker.lightning_logger(prefix=role))
    how = "reused from cache" if trained.cached else f"trained in {trained.train_seconds:.0f} s"
    if trained.resumed_after_epoch:  # a stopped run's work was kept, not thrown away
        how += f", resumed after epoch {trained.resumed_after_epoch}"
    print(f"{role}: {model_cfg.name} on {cfg.data.name}: test accuracy {trained.test_acc:.2%} ({how}) "
          f"-> {trained.path}")
    return trained
