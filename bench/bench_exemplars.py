"""Time of the exemplar search (README, Measured): the top and bottom 9 of the 3,600 training digits for
all 12 channels of small_cnn's conv2, search alone (one batched pass) and with the passes the sanity
checks add (path features of the exemplars and of the 400 held-out digits); wall and CPU seconds of this
process, 3 repeats each, after a warm-up. The model is trained on first use and cached like every
command's.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_exemplars.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _timed(label: str, fn, repeats: int = 3) -> None:
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        print(f"{label}: {time.perf_counter() - wall:.2f} s wall, {time.process_time() - cpu:.2f} s CPU")


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import studio
    from studio.adapters.exemplars import exemplar_settings
    from studio.commands import render_checks
    from studio.config import compose
    from studio.data import build_datamodule
    from studio.optvis import channel
    from studio.optvis.exemplars import find_exemplars

    model = studio.load_classifier()
    cfg = compose("visualize", [])
    dm = build_datamodule(cfg.data)
    images = dm.split("train")[0]
    objectives = [channel("conv2", c) for c in range(12)]
    settings = exemplar_settings(cfg)
    find_exemplars(model, objectives, images[:128], settings.k, settings.batch_size)  # warm-up
    print(f"{len(images)} training digits, 12 conv2 channels, k={settings.k}, batch {settings.batch_size}")
    _timed("search", lambda: find_exemplars(model, objectives, images, settings.k, settings.batch_size))
    _timed("search + the checks' feature passes",
           lambda: render_checks.search(model, cfg.objective, list(range(12)), dm, settings))


if __name__ == "__main__":
    main()
