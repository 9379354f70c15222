"""Which GAN training recipe gives latent class renders that both realism views accept? (issue 15)

For each recipe (overrides of conf/generator/dcgan.yaml joined by commas; "default": the shipped one) trains
the GAN, or takes it from the cache ($STUDIO_OUTPUTS/models: the recipe is part of the cache key), then scores
what a user gets from it: 1,000 samples (smallest class share, judge confidence, realism against real sets)
and the 10 classes x 4 seeds of `studio visualize param=latent generator=dcgan objective=class
objective.classes=all seeds=4` for each seed set (the generator's render recipe: 256 steps, lr 0.1,
log-softmax class objective), judged by the cached judge and eye as every run is.

    python bench/gan_recipes.py                                   # the shipped recipe
    python bench/gan_recipes.py --recipes default max_epochs=42 --seeds 0 4 8
    python bench/gan_recipes.py --latent max_norm=none     # the shipped GAN, a render option (none: off)
    python bench/gan_recipes.py --retry-below none         # without the retry of renders stuck below p 0.95
    python bench/gan_recipes.py --natural-edge none        # without the natural choice among the starts
    python bench/gan_recipes.py --share-draws 10 --seeds   # class shares over 10 x 1,000 samples, no renders
    python bench/gan_recipes.py --own-samples              # each set's renders beside the GAN's own samples

--own-samples scores, for each seed set, 4 of the generator's own samples per class with no optimization (each
draw's class entries swapped so the class's entry is largest), as the renders are scored: how natural the renders
could be without a better generator, and what the render recipe adds to recognition.
"""

from __future__ import annotations

import argparse

import torch

from generators import trained_generator
from guided_recipes import class_renders, judged_classifier, parse  # bench/ is the script's first import path
from studio import config
from studio.data import build_datamodule
from studio.judge import generator_quality
from studio.optvis.params import latent


def overrides(recipe: str) -> list[str]:
    """"max_epochs=42,beta1=0" -> ["++generator.max_epochs=42", "++generator.beta1=0"] ("default": none; ++ adds
    a key the yaml does not set, such as a GANModule option left at its default)."""
    return [f"++generator.{item}" for item in filter(None, recipe.replace("default", "").split(","))]


@torch.no_grad()
def class_shares(judge, gen, draws: int, num_classes: int) -> str:
    """Each class's share of `draws` x 1,000 samples by the judge's label, and the smallest share of a single
    draw: is a smallest share of 1,000 samples near 5% noise or the generator's own?"""
    counts = []
    for seed in range(draws):
        labels = judge.probabilities(gen.sample(1000, seed=seed)).argmax(1)
        counts.append(torch.bincount(labels, minlength=num_classes).float() / 1000)
    counts = torch.stack(counts)
    per_draw = counts.min(1).values
    return (" ".join(f"{c}: {share:.3f}" for c, share in enumerate(counts.mean(0).tolist()))
            + f"; a draw's smallest {per_draw.min():.3f}-{per_draw.max():.3f}")


def unreached(rendering) -> str:
    """Each target some render of which the model gives less than 0.95, with its smallest probability
    ("class:1 0.34, class:9 0.92"), or "none"."""
    low: dict[str, float] = {}
    for target, p in zip(rendering.targets, rendering.target_prob.tolist()):
        low[target] = min(p, low.get(target, 1.0))
    return ", ".join(f"{target} {p:.2f}" for target, p in low.items() if p < 0.95) or "none"


def scored(target_prob: torch.Tensor, s: dict) -> str:
    """A seed set's columns from pmin to diversity / real: its smallest target probability, then the judge's
    summary of it."""
    return (f"{float(target_prob.min()):.3f} | {s['judge_recognition']:.3f} | {s['realism_ratio/judge']:.2f} / "
            f"{s['realism_ratio/eye']:.2f} | {s['precision']:.2f} | {s['recall']:.2f} | "
            f"{s['diversity'] / s['diversity_real']:.2f}")


@torch.no_grad()
def own_samples(gen, model, judge, first: int) -> tuple[torch.Tensor, dict]:
    """The conditional generator's own samples of the 10 classes x 4 seeds first..first+3, no optimization: draw
    i of the set is z ~ N(0, I) from seed 1000 * first + i, its class entries swapped so the target class's entry
    is the largest (the class the generator then draws). (each target's probability, the judge's summary)."""
    if not gen.generator.classes:
        raise SystemExit("--own-samples needs a class-conditional GAN (generator.classes set): an unconditional one "
                         "has no class to draw")
    classes = [c for c in range(10) for _ in range(4)]
    zs = []
    for i, c in enumerate(classes):
        z = torch.randn(gen.latent_dim, generator=torch.Generator().manual_seed(1000 * first + i))
        top = int(z[:10].argmax())
        z[[top, c]] = z[[c, top]]
        zs.append(z)
    images = gen.generator(torch.stack(zs))
    target_prob = torch.softmax(model(images), 1)[torch.arange(len(classes)), classes]
    return target_prob, judge.score(images, classes, [f"c{c}" for c in classes])[1]


def draws(text: str) -> int:
    """--share-draws' type: a count of draws, 0 for none."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of draws (0, 1, 2, ...)")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["default"],
                        help="overrides of conf/generator/dcgan.yaml, key=value joined by commas; default: the shipped")
    parser.add_argument("--latent", nargs="*", default=[],
                        help="options of the latent param (conf/param/latent.yaml) as key=value, e.g. max_norm=5.7")
    parser.add_argument("--data", default="mnist5k", help="conf/data: mnist5k or fashion_mnist")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 4, 8], help="first seed of each 10 x 4 set")
    parser.add_argument("--retry-below", default="recipe",
                        help="render's retry_below: the generator's recipe (0.95), none, or a probability")
    parser.add_argument("--natural-edge", default="recipe",
                        help="render's natural_edge: the generator's recipe (1.0 on mnist5k), none, or a distance")
    parser.add_argument("--share-draws", type=draws, default=0,
                        help="also print each class's share over this many draws of 1,000 samples (seeds 0, 1, ...)")
    parser.add_argument("--own-samples", action="store_true",
                        help="also score each seed set's own class-matched samples (no optimization) on a row after it")
    args = parser.parse_args()
    given = parse(",".join(args.latent))  # key=value options, as guided_recipes reads its own
    print("recipe | trained s | share min | confidence | samples realism judge / eye | seeds | pmin | judge"
          " | renders realism judge / eye | precision | recall | diversity / real | s | classes below p 0.95")
    shared = ["param=latent", "generator=dcgan", "trainer.enable_progress_bar=false", f"data={args.data}"]
    base = config.compose("visualize", shared)
    dm = build_datamodule(base.data)
    model, judge = judged_classifier(base, dm)  # the same for every recipe
    for recipe in args.recipes:
        cfg = config.compose("visualize", [*shared, *overrides(recipe)])
        trained = trained_generator(cfg.generator, cfg.data, cfg.trainer, dm, cfg.paths.models)
        gen = trained.module.eval()
        # the generator's render recipe, then --latent
        options = {"max_norm": cfg.param.max_norm, "start_candidates": cfg.param.start_candidates, **given}
        retry = {"recipe": cfg.retry_below, "none": None}.get(args.retry_below, args.retry_below)
        retry = None if retry is None else float(retry)
        edge = {"recipe": cfg.natural_edge, "none": None}.get(args.natural_edge, args.natural_edge)
        natural = {} if edge is None else {"natural_edge": float(edge), "natural_images": dm.split("train")[0]}
        q = generator_quality(judge, gen.sample(1000, seed=0), dm.num_classes)
        head = (f"{recipe} | {'cached' if trained.cached else f'{trained.train_seconds:.0f}'} | "
                f"{q['class_share_min']:.3f} | {q['judge_confidence']:.2f} | "
                f"{q['realism_ratio/judge']:.2f} / {q['realism_ratio/eye']:.2f}")
        if args.share_draws:
            shares = class_shares(judge, gen, args.share_draws, dm.num_classes)
            print(f"{recipe}: class shares over {args.share_draws} x 1,000 samples: {shares}")
        for first in args.seeds:
            r, s, seconds = class_renders(model, judge, latent(gen, **options), first,
                                          steps=cfg.generator.render.steps, lr=cfg.generator.render.lr,
                                          retry_below=retry, **natural)
            print(f"{head} | {first}-{first + 3} | {scored(r.target_prob, s)} | {seconds:.0f} s | {unreached(r)}",
                  flush=True)
            if args.own_samples:
                p, s = own_samples(gen, model, judge, first)
                print(f"{head} | {first}-{first + 3} own samples | {scored(p, s)} | - | -", flush=True)


if __name__ == "__main__":
    main()
