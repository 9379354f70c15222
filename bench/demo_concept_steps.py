"""What the concept steps add to `studio demo`: wall seconds of its Network Dissection step (conv2 over the 1,000
test digits, tables and strips), of labelling its two conv2 renders (captioned grids), and of its TCAV step for
comparison, with the models cached. README, "Concepts: Network Dissection".

    OMP_NUM_THREADS=1 STUDIO_OUTPUTS=/tmp/outputs python bench/demo_concept_steps.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from studio import config
from studio.commands import channel_labels, dissect, tcav
from studio.images import save_png
from studio.tracking import Tracker


def _renders(run_dir: Path) -> list[dict]:
    """Items like the demo's conv2 renders (two recipes x 12 channels), with real PNGs."""
    items = []
    for render in ("conv2_none", "conv2_l2_tv"):
        for k in range(12):
            path = run_dir / "visualize" / render / f"conv2_{k}_s0.png"
            save_png(torch.rand(1, 28, 28), path)
            items.append({"target": f"conv2:{k}", "seed": 0, "render": render, "image": str(path.relative_to(run_dir))})
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = config.compose("demo", ["logger=none", "trainer.enable_progress_bar=false"])
    times: dict[str, list[float]] = {"dissect step": [], "label renders": [], "tcav step": []}
    for _ in range(args.repeats + 1):  # the first round warms the caches (imports, data) and is dropped
        with tempfile.TemporaryDirectory() as tmp, Tracker(cfg, "demo", Path(tmp), tmp) as tracker:
            run_dir = Path(tmp)
            items = _renders(run_dir)
            start = time.perf_counter()
            _, rows = dissect.demo_step(cfg, tracker, run_dir / "dissect")
            middle = time.perf_counter()
            channel_labels.label_demo(items, rows, run_dir, tracker)
            end = time.perf_counter()
            tcav.demo_step(cfg, tracker, run_dir / "tcav")
            for name, seconds in zip(times, (middle - start, end - middle, time.perf_counter() - end)):
                times[name].append(seconds)
    for name, values in times.items():
        kept = values[1:]
        print(f"{name}: median {statistics.median(kept):.2f} s over {len(kept)} runs "
              f"({', '.join(f'{v:.2f}' for v in kept)})")


if __name__ == "__main__":
    main()
