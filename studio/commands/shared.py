"""What every command shares: its Result, and getting a trained classifier or generator with a one-line
report of where it came from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from studio.tracking import Tracker
from studio.train import Trained, trained_classifier


@dataclass
class Result:
    """What a command hands back for the manifest: run metrics, one item per output, artifact paths."""

    metrics: dict
    items: list = field(default_factory=list)
    artifacts: dict = field(default_factory=dict)


def realism_words(metrics: dict) -> str:
    """The summary lines' realism figure beside the range real sets of as many images read (Judge.realism)."""
    return (f"realism ratio {metrics['realism_ratio']:.2f} (real sets {metrics['realism_ratio_real_min']:.2f}-"
            f"{metrics['realism_ratio_real_max']:.2f})")


def _how(cached: bool, seconds: float, resumed_after_epoch: int, cached_word: str) -> str:
    how = cached_word if cached else f"trained in {seconds:.0f} s"
    if resumed_after_epoch:  # a stopped run's work was kept, not thrown away
        how += f", resumed after epoch {resumed_after_epoch}"
    return how


def train_one(cfg, model_cfg, dm, tracker: Tracker | None, role: str) -> Trained:
    """The classifier `model_cfg` names, trained on cfg.data (or cached), with its accuracy printed; a training
    logs to the run's tracker (None, as in a benchmark: to no logger)."""
    logger = tracker.lightning_logger(prefix=role) if tracker else False
    trained = trained_classifier(model_cfg, cfg.data, cfg.trainer, dm, cfg.paths.models, logger=logger)
    how = _how(trained.cached, trained.train_seconds, trained.resumed_after_epoch, "reused from cache")
    print(f"{role}: {model_cfg.name} on {cfg.data.name}: test accuracy {trained.test_acc:.2%} ({how}) "
          f"-> {trained.path}")
    return trained


# The judges built in this process, by checkpoint files and data: a sweep's jobs that run in one process
# (the basic launcher; every trial of an Optuna search) share one instead of embedding the real images again
# (25 s of a 45 s class-render job on this CPU). Few entries: one per judge x eye x data set used.
_JUDGES: dict = {}


def judge_for(cfg, dm, tracker: Tracker | None = None, judge: Trained | None = None, **options):
    """The Judge of cfg.judge (trained or cached, or the one given) with cfg.eye (trained or cached)
    as its second realism view (studio/judge.py). The real images' statistics, most of the cost of
    building it, are cached beside the models (_statistics_cache). options: Judge's own (dims, k,
    baselines, ...; bench/calibrate_realism.py), its defaults where left out, as every command's."""
    from omegaconf import OmegaConf

    from studio.judge import Judge

    judge = judge or train_one(cfg, cfg.judge, dm, tracker, "judge")
    eye = train_one(cfg, cfg.eye, dm, tracker, "eye")
    key = tuple((str(t.path), t.path.stat().st_mtime_ns) for t in (judge, eye)) + (
        OmegaConf.to_yaml(cfg.data, resolve=True), tuple(sorted(options.items())))
    if key not in _JUDGES:
        _JUDGES[key] = Judge.for_data(judge.model, dm, eyes={"eye": eye.model},
                                      cache=_statistics_cache(cfg, judge.path, eye.path), **options)
    return _JUDGES[key]


def _statistics_cache(cfg, judge_path: Path, eye_path: Path) -> Path:
    """Where the judge's real-image statistics for these weights and this data live: keyed by the bytes
    of both checkpoints (a retrained judge or eye gets a new file), the data config and the statistics'
    version (studio/judge.py)."""
    from omegaconf import OmegaConf

    from studio.judge import STATISTICS_VERSION

    digest = hashlib.sha256(f"{STATISTICS_VERSION}\n{OmegaConf.to_yaml(cfg.data, resolve=True)}".encode())
    for path in (judge_path, eye_path):
        digest.update(path.read_bytes())
    return Path(cfg.paths.models) / f"judge_statistics-{cfg.data.name}-{digest.hexdigest()[:12]}.npz"


def generator_for(cfg, dm, tracker: Tracker, samples_dir: Path | None = None):
    """cfg.generator, trained on cfg.data (or cached, or loaded from generator.path), with a one-line report."""
    from generators import trained_generator  # Lightning and the generators: only when used

    gen = trained_generator(cfg.generator, cfg.data, cfg.trainer, dm, cfg.paths.models,
                            logger=tracker.lightning_logger(prefix="generator"), samples_dir=samples_dir)
    how = _how(gen.cached, gen.train_seconds, gen.resumed_after_epoch, "reused")
    print(f"generator: {cfg.generator.name} on {cfg.data.name} ({how}) -> {gen.path}")
    return gen
