"""Trained classifiers, cached under outputs/models/ by a hash of what shapes the weights.

The first command that needs a model trains it (studio/fit.py, with Lightning); later ones (any command,
any process) reuse it (studio/cache.py: plain state dicts, atomic writes, a file lock).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from studio.cache import config_hash, load_or_train
from studio.modes import eval_mode
from studio.data import ImageDataModule
from studio.models import Classifier, build_classifier, checkpoint_path, load_state_dict_file, load_weights

# Trainer keys that change where/how fast training runs, not which weights come out.
RUNTIME_KEYS = {"accelerator", "devices", "strategy", "num_nodes", "enable_progress_bar", "log_every_n_steps"}

# The test and val accuracies measured in this process, by weights file (path, mtime) and data set: the jobs
# of a sweep that run in one process (every trial of an Optuna search) load the same cached models, and
# measuring them again on the same splits took 3 s of a 9 s search trial on this CPU (3 models, 2 splits).
_ACCURACIES: dict = {}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (every device): what Lightning's seed_everything does, without importing it."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Share of `images` that `model` labels correctly (eval mode, batched)."""
    with eval_mode(model):
        correct = sum((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum().item()
                      for i in range(0, len(images), batch_size))
    return correct / max(len(images), 1)


def cache_key(model_cfg, data_cfg, trainer_cfg) -> str:
    """Short hash of everything that decides the trained weights."""
    return config_hash(model=model_cfg, data=without(data_cfg, {"num_workers", "split"}),
                       trainer=without(trainer_cfg, RUNTIME_KEYS))


def without(cfg, keys: set[str]) -> dict:
    """A config as a plain dict, minus `keys` (settings that do not change the weights)."""
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in keys}


@dataclass
class Trained:
    """A ready classifier and where it came from."""

    model: Classifier
    path: Path
    test_acc: float
    val_acc: float
    cached: bool
    train_seconds: float
    resumed_after_epoch: int = 0  # trained now, from the checkpoint of a stopped run that had finished this many


def trained_classifier(model_cfg, data_cfg, trainer_cfg, dm: ImageDataModule, models_dir: str | Path,
                       logger=False) -> Trained:
    """The classifier `model_cfg` describes, trained on `dm` (or loaded from the cache, or from a checkpoint)."""
    channels, _, _ = dm.image_shape
    mean, std = dm.channel_stats()
    seed_everything(model_cfg.seed)  # the initial weights
    model = build_classifier(model_cfg, channels, dm.num_classes, mean, std)
    x_val, y_val = dm.split("val")
    x_test, y_test = dm.split("test")
    user_weights = checkpoint_path(model_cfg)
    if user_weights:  # a user's checkpoint: load, never train
        load_weights(model, load_state_dict_file(user_weights), user_weights)
        model.eval()
        test_acc, val_acc = _accuracies(model, Path(user_weights), model_cfg, data_cfg, dm)
        return Trained(model, Path(user_weights), test_acc, val_acc, cached=True, train_seconds=0.0)

    stem = f"{model_cfg.name}-{data_cfg.name}-{cache_key(model_cfg, data_cfg, trainer_cfg)}"

    def train(workdir: Path) -> dict:
        from studio.fit import fit

        resumed_after = fit(model, model_cfg, trainer_cfg, dm, workdir, logger)
        return {"model": OmegaConf.to_container(model_cfg, resolve=True), "data": data_cfg.name,
                "test_acc": accuracy(model, x_test, y_test), "resumed_after_epoch": resumed_after}

    path, cached, facts = load_or_train(model, models_dir, stem, train, load=load_weights)
    model.eval()
    test_acc, val_acc = _accuracies(model, path, model_cfg, data_cfg, dm)
    return Trained(model, path, test_acc, val_acc, cached=cached, train_seconds=facts["train_seconds"],
                   resumed_after_epoch=0 if cached else facts["resumed_after_epoch"])


def _accuracies(model: Classifier, path: Path, model_cfg, data_cfg, dm: ImageDataModule) -> tuple[float, float]:
    """(test, val) accuracy of the weights in `path` on dm's splits, measured once per process (_ACCURACIES);
    a file written again (a new mtime), another model config or another data set is measured anew."""
    key = (str(path), path.stat().st_mtime_ns, OmegaConf.to_yaml(model_cfg, resolve=True),
           OmegaConf.to_yaml(data_cfg, resolve=True))
    if key not in _ACCURACIES:
        _ACCURACIES[key] = tuple(accuracy(model, *dm.split(split)) for split in ("test", "val"))
    return _ACCURACIES[key]
