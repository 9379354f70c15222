"""Could a render's start be chosen after the fact, by how natural the render looks? (issue 15)

The GAN's latent class renders start from the best of `start_candidates` prior draws by the objective and
retry from the next-best start only when the target probability ends below `retry_below` (the recipe before
`natural_edge`). This renders every element of a 10 classes x 4 seeds set from each of its ranked starts once, then
compares, on the same renders, the retry's choice with a realism retry that needs no judge: a render outside
the real digits' k-NN manifold in the *visualized model's own* convolution statistics (its distance to the
nearest real image over that image's k-th-neighbour radius, k = 3, above `--outside`) is swapped for the
render of another start that reached the target and sits nearer the real digits. Scored by the judge and
the eye as every run is (they never choose).

    OMP_NUM_THREADS=1 python bench/gan_start_ranks.py --training-seeds 0 1 2 --seeds 0 4 8 12 16 20 24 28

Policies: `retry` (retry_below alone); `outside>t` (the swap above); `into<=t` (only to a render inside the edge
t); `guarded>t` (the `outside>t` swaps kept only where they lower the set's Fréchet distance to the real digits in
the same view: studio.optvis.natural.natural_choice itself). `guarded>1.0` is the GAN's recipe now, render's
`natural_edge`, which gives the same renders, checked render for render on seeds 0-31 of the cold training.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from generators import trained_generator
from gan_recipes import scored  # bench/ is the script's first import path
from guided_recipes import judged_classifier
from studio import config
from studio.data import build_datamodule
from studio.optvis import class_, render
from studio.optvis.natural import RealManifold, natural_choice
from studio.optvis.params import latent

CLASSES = [c for c in range(10) for _ in range(4)]


def retry_choice(ranked: list, retry_below: float) -> torch.Tensor:
    """(B,) the start each element's render keeps under render(retry_below=...): rank 0, and for a render
    below the threshold the next start's when that one is likelier, in turn."""
    prob, keep = ranked[0][1].clone(), torch.zeros(len(CLASSES), dtype=torch.long)
    for rank in range(1, len(ranked)):
        take = (prob < retry_below) & (ranked[rank][1] > prob)
        prob[take], keep[take] = ranked[rank][1][take], rank
    return keep


def chosen(ranked: list, keep: torch.Tensor, part: int = 0) -> torch.Tensor:
    """Each element's render (part 0) or target probability (part 1) from the start `keep` picks for it."""
    return torch.stack([ranked[int(k)][part][b] for b, k in enumerate(keep)])


def natural_retry(ranked: list, retry_below: float, outside: list, threshold: float,
                  inside_only: bool = False) -> torch.Tensor:
    """The retry's choice, then each render outside the real manifold (> threshold) swapped for another
    start's that reached retry_below and lies nearer it (inside_only: only for one within the threshold)."""
    keep = retry_choice(ranked, retry_below)
    for b in range(len(CLASSES)):
        best = int(keep[b])
        if outside[best][b] <= threshold:
            continue
        for rank in range(len(ranked)):
            if ranked[rank][1][b] >= retry_below and outside[rank][b] < outside[best][b]:
                best = rank
        if not inside_only or outside[best][b] <= threshold:
            keep[b] = best
    return keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--training-seeds", nargs="+", type=int, default=[0], help="generator.seed of each GAN")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 4, 8], help="first seed of each 10 x 4 set")
    parser.add_argument("--outside", nargs="+", type=float, default=[1.0, 1.1],
                        help="thresholds of the realism retry (distance over radius; 1: the manifold's edge)")
    args = parser.parse_args()
    base = config.compose("visualize", ["param=latent", "generator=dcgan", "trainer.enable_progress_bar=false"])
    dm = build_datamodule(base.data)
    model, judge = judged_classifier(base, dm)
    dm.setup("fit")
    own = RealManifold(model, dm.split("train")[0].float())  # the studio's natural choice sees the same
    groups = [f"c{c}" for c in CLASSES]
    policies = ["retry", *[f"outside>{t}" for t in args.outside], *[f"into<={t}" for t in args.outside],
                *[f"guarded>{t}" for t in args.outside]]
    rows: dict[str, list] = {p: [] for p in policies}
    print("training seed | seeds | policy | swapped | pmin | judge | realism judge / eye | precision | recall"
          " | diversity / real")
    for training_seed in args.training_seeds:
        cfg = config.compose("visualize", ["param=latent", "generator=dcgan", "trainer.enable_progress_bar=false",
                                           f"++generator.seed={training_seed}"])
        gen = trained_generator(cfg.generator, cfg.data, cfg.trainer, dm, cfg.paths.models).module.eval()
        spec = latent(gen, max_norm=cfg.param.max_norm, start_candidates=cfg.param.start_candidates)
        retry_below = float(cfg.retry_below)
        for first in args.seeds:
            ranked = []
            for rank in range(spec.starts):
                r = render(model, class_(list(range(10)), log_softmax=True), param=spec.ranked(rank),
                           seeds=list(range(first, first + 4)), steps=cfg.generator.render.steps,
                           lr=cfg.generator.render.lr)
                ranked.append((r.images, r.target_prob))
            outside = [own.outside(images) for images, _ in ranked]
            base_keep = retry_choice(ranked, retry_below)
            choices = ({"retry": base_keep}
                       | {f"outside>{t}": natural_retry(ranked, retry_below, outside, t) for t in args.outside}
                       | {f"into<={t}": natural_retry(ranked, retry_below, outside, t, inside_only=True)
                          for t in args.outside})
            # guarded: the outside>t swaps only where they bring the set nearer the real digits as a whole, in the
            # same statistics (no judge): the studio's natural choice itself (render's natural_edge)
            floor = chosen(ranked, base_keep, part=1).clamp(max=retry_below)
            for t in args.outside:
                choices[f"guarded>{t}"] = natural_choice(own, [images for images, _ in ranked],
                                                         [prob for _, prob in ranked], base_keep, t, floor)
            for policy, keep in choices.items():
                images, prob = chosen(ranked, keep), chosen(ranked, keep, part=1)
                s = judge.score(images, CLASSES, groups)[1]
                row = (s["judge_recognition"], s["realism_ratio/judge"], s["realism_ratio/eye"], s["precision"])
                rows[policy].append(row)
                print(f"{training_seed} | {first}-{first + 3} | {policy} | {int((keep != base_keep).sum())} | "
                      f"{scored(prob, s)}", flush=True)
    for policy, values in rows.items():
        a = np.array(values)
        worst = np.maximum(a[:, 1], a[:, 2])
        print(f"{policy}: {len(a)} sets, judge {100 * a[:, 0].mean():.1f}%, realism {a[:, 1].mean():.2f} / "
              f"{a[:, 2].mean():.2f}, <= 1.5 in both on {(worst <= 1.5).sum()}, <= 2 on {(worst <= 2).sum()}, "
              f"precision {a[:, 3].mean():.3f}")


if __name__ == "__main__":
    main()
