"""Would stopping a latent class render early keep it more natural? (issue 15: realism of G(z*))

Renders the 10 classes x 4 seeds through a generator's latent space with the generator's own render recipe
(256 steps, lr 0.1, log-softmax class objective), keeps a snapshot at every step, and for each threshold
takes each image's first snapshot whose target probability reaches it: what a render that stopped there
would have given (Adam's momentum aside). Prints judge recognition and the realism ratio in both views
for each threshold and for all 256 steps.

    python bench/latent_early_stop.py [dcgan|vae] [first seed]
"""
from __future__ import annotations

import sys

import torch

import studio
from studio.api import _compose
from studio.data import build_datamodule
from studio.commands.shared import judge_for
from studio.optvis import class_, render
from studio.optvis.params import latent

THRESHOLDS = (0.5, 0.8, 0.95, 0.99, None)  # None: all steps, the shipped render


def first_snapshots(snapshots: dict, probs: torch.Tensor, threshold: float | None, steps: int):
    """Each image's first snapshot whose target probability reaches `threshold` (the last if none does), and
    the step it was taken at."""
    if threshold is None:
        return snapshots[steps], torch.full((probs.shape[1],), steps)
    reached = probs >= threshold
    first = torch.where(reached.any(0), reached.float().argmax(0) + 1, torch.tensor(steps))
    return torch.stack([snapshots[int(step)][i] for i, step in enumerate(first)]), first


def main() -> None:
    generator_name = sys.argv[1] if len(sys.argv) > 1 else "dcgan"
    first_seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    model = studio.load_classifier()
    cfg = _compose("visualize", {}, [], False)
    dm = build_datamodule(cfg.data)
    judge = judge_for(cfg, dm)  # the commands' judge, its statistics cached
    classes, seeds, steps = list(range(10)), [first_seed + i for i in range(4)], 256
    rendering = render(model, class_(classes, log_softmax=True), param=latent(studio.load_generator(generator_name)),
                       steps=steps, lr=0.1, seeds=seeds, thresholds=list(range(1, steps + 1)), progress=False)
    labels = torch.tensor([c for c in classes for _ in seeds])
    rows = range(len(labels))
    with torch.no_grad():
        probs = torch.stack([model(rendering.snapshots[s]).softmax(1)[rows, labels] for s in range(1, steps + 1)])
    for threshold in THRESHOLDS:
        images, first = first_snapshots(rendering.snapshots, probs, threshold, steps)
        _, summary = judge.score(images, labels.tolist(), labels.tolist())
        print(f"{generator_name} seeds {seeds[0]}-{seeds[-1]} stop at p >= {threshold}: median step "
              f"{int(first.median())}, judge {summary['judge_recognition']:.3f}, realism judge / eye "
              f"{summary['realism_ratio/judge']:.2f} / {summary['realism_ratio/eye']:.2f}", flush=True)


if __name__ == "__main__":
    main()
