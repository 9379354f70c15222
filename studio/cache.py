"""The model cache: weights trained once, keyed by a hash of what shapes them, shared by every command.

An entry is `<stem>.pt` (a plain state dict, read back with weights_only=True) and `<stem>.json` (what
it was trained from and how long it took). Both are written atomically, the sidecar last, under a
file lock: two commands that need the same model train it once and never read half a file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock
from omegaconf import OmegaConf
from torch import nn

from studio.errors import StudioError
from studio.files import atomic_path, write_json
from studio.models import load_state_dict_file, load_weights

CACHE_VERSION = 1  # bump when training code changes what a config produces


def config_hash(**parts) -> str:
    """Short, stable hash of config parts (DictConfigs or plain values)."""
    plain = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in parts.items()}
    blob = json.dumps({"v": CACHE_VERSION, **plain}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_or_train(module: nn.Module, models_dir: str | Path, stem: str,
                  train: Callable[[Path], dict], load: Callable[[nn.Module, dict, str], None] | None = None
                  ) -> tuple[Path, bool, dict]:
    """Fill `module` from `<stem>.pt`, or run `train(workdir)` (which trains `module` in place and returns
    facts for the sidecar) and store it. Returns (weights path, was cached, sidecar dict)."""
    models_dir = Path(models_dir)
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a parent that is a file, a read-only disk, no permission
        raise StudioError(f"cannot create the model cache {str(models_dir)!r}: {e.strerror}; choose a writable "
                          "dir with paths.models=... (or move all outputs with STUDIO_OUTPUTS=...)") from None
    path, sidecar, workdir = models_dir / f"{stem}.pt", models_dir / f"{stem}.json", models_dir / f"{stem}.work"
    load = load or (lambda m, state, source: m.load_state_dict(state))
    with FileLock(str(models_dir / f"{stem}.lock")):
        if path.is_file() and sidecar.is_file():
            # a run killed after storing the entry but before clearing its work dir left the dir behind
            shutil.rmtree(workdir, ignore_errors=True)
            try:
                state = load_state_dict_file(path)
            except StudioError as e:  # a damaged or tampered entry: say how to get a good one back
                raise StudioError(f"model cache entry: {e}; delete it to retrain") from None
            load(module, state, str(path))
            return path, True, json.loads(sidecar.read_text())
        start = time.perf_counter()
        facts = train(workdir)
        facts = {**facts, "train_seconds": time.perf_counter() - start}
        with atomic_path(path) as tmp:
            torch.save(module.state_dict(), tmp)
        write_json(sidecar, facts)
        shutil.rmtree(workdir, ignore_errors=True)
        return path, False, facts


__all__ = ["config_hash", "load_or_train", "load_weights"]
