"""Which param=guided recipe gives class renders that both realism views accept, on the cached models?

Renders the 10 classes x 4 seeds of `studio visualize param=guided generator=diffusion objective=class
objective.classes=all seeds=4` for each recipe and seed set, and scores them as every run does (the cached
judge and eye; log-softmax class objective, sgd, lr 1, 50 steps). Nothing trains: the models come from the
cache ($STUDIO_OUTPUTS/models). A recipe is key=value options of conf/param/guided.yaml joined by commas.

    python bench/guided_recipes.py                     # the shipped recipe vs the previous one
    python bench/guided_recipes.py --recipes default start_candidates=32 guidance_stop=-0.001 --seeds 0 4 8
"""

from __future__ import annotations

import argparse
import time

from generators import trained_generator
from studio import config
from studio.commands.shared import judge_for
from studio.data import build_datamodule
from studio.judge import Judge
from studio.optvis import class_, render
from studio.optvis.params import guided
from studio.train import trained_classifier


def parse(recipe: str) -> dict:
    """"start_candidates=16,guidance_scale=0.01" -> options of guided() ("default": none, the shipped recipe)."""
    options = {}
    for item in filter(None, recipe.replace("default", "").split(",")):
        key, value = item.split("=")
        whole = key in ("start_candidates", "preview_steps", "sampler_steps")
        options[key] = None if value == "none" else int(value) if whole else float(value)
    return options


def judged_classifier(cfg, dm):
    """The cached classifier (eval mode) and the judge with its second view, the eye: what every run's
    renders are scored by, built as the runs build it (with their cache of its real-image statistics: on
    Fashion-MNIST's 54,000 training images their O(N²) terms take an hour to compute)."""
    model = trained_classifier(cfg.model, cfg.data, cfg.trainer, dm, cfg.paths.models).model.eval()
    return model, judge_for(cfg, dm)


def class_renders(model, judge: Judge, param, first: int, **options) -> tuple:
    """The 10 classes x seeds first..first+3 rendered through `param` (log-softmax class objective, render()'s
    options), scored as every run is: (rendering, the judge's summary, the render's seconds)."""
    classes = [c for c in range(10) for _ in range(4)]
    start = time.perf_counter()
    r = render(model, class_(list(range(10)), log_softmax=True), param=param, seeds=list(range(first, first + 4)),
               progress=False, **options)
    seconds = time.perf_counter() - start
    return r, judge.score(r.images, classes, [f"c{c}" for c in classes])[1], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    previous = "start_candidates=1,guidance_stop=none,guidance_until=0.5"  # the recipe before the start and the stop
    parser.add_argument("--recipes", nargs="+", default=["default", previous],
                        help="options of conf/param/guided.yaml, key=value joined by commas; default: the shipped")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 4, 8], help="first seed of each 10 x 4 set")
    args = parser.parse_args()
    cfg = config.compose("visualize", ["param=guided", "generator=diffusion", "trainer.enable_progress_bar=false"])
    dm = build_datamodule(cfg.data)
    model, judge = judged_classifier(cfg, dm)
    gen = trained_generator(cfg.generator, cfg.data, cfg.trainer, dm, cfg.paths.models).module.eval()
    print("recipe | seeds | pmin | judge | realism judge / eye | precision | recall | diversity / real | s")
    for recipe in args.recipes:
        for first in args.seeds:
            r, s, seconds = class_renders(model, judge, guided(gen, **parse(recipe)), first,
                                          steps=50, lr=1.0, optimizer="sgd")
            print(f"{recipe} | {first}-{first + 3} | {float(r.target_prob.min()):.3f} | {s['judge_recognition']:.3f}"
                  f" | {s['realism_ratio/judge']:.2f} / {s['realism_ratio/eye']:.2f} | {s['precision']:.2f}"
                  f" | {s['recall']:.2f} | {s['diversity'] / s['diversity_real']:.2f} | {seconds:.1f}", flush=True)


if __name__ == "__main__":
    main()
