"""Which moving average of the GAN generator's weights renders best? One training, several averages side by side.

The shipped average ramps its decay up as min(ema_decay, (1 + t) / (10 + t)); at 42 epochs (4,704 updates) the
ramp never reaches ema_decay = 0.999, so a larger ema_decay trains the same model. This trains the shipped GAN
once more (under a cache key of its own: the shipped entry is not touched) while keeping further averages
beside its own, each a copy of the generator until --after updates and a fixed decay from there, then scores
every average as bench/gan_recipes.py scores a recipe: 1,000 samples' realism and the 40 latent class renders of
each seed set (the generator's render recipe).

    OMP_NUM_THREADS=1 python bench/gan_averages.py --seed 0 --seeds 0 4 8 12 16 20 24 28
"""

from __future__ import annotations

import argparse
import copy

from generators import trained_generator
from generators.ema import blend
from generators.modules import GANModule
from guided_recipes import class_renders, judged_classifier  # bench/ is the script's first import path
from studio import config
from studio.data import build_datamodule
from studio.judge import generator_quality
from studio.optvis.params import latent


def keep_averages(decays: list[float], after: int) -> None:
    """Make every GANModule also keep, beside its own average, one per decay: the online generator's weights
    copied until `after` updates, then averaged with that fixed decay (module._averages, decay -> network)."""
    own_update = GANModule.update_ema

    def update_ema(self):
        own_update(self)
        if not hasattr(self, "_averages"):
            self._averages = {d: copy.deepcopy(self.online).requires_grad_(False).eval() for d in decays}
        updates = int(self.ema_updates) - 1
        for decay, average in self._averages.items():
            blend(average, self.online, 0.0 if updates < after else decay)

    GANModule.update_ema = update_ema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the GAN's training seed (generator.seed)")
    parser.add_argument("--decays", nargs="+", type=float, default=[0.999, 0.9995, 0.9998])
    parser.add_argument("--after", type=int, default=1000, help="updates before the fixed-decay averages start")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 4, 8], help="first seed of each 10 x 4 set")
    args = parser.parse_args()
    keep_averages(args.decays, args.after)
    # lecam_weight=0.0 (not the shipped null) trains the shipped recipe under a key of its own, so it trains here
    # rather than loading
    cfg = config.compose("visualize", ["param=latent", "generator=dcgan", "trainer.enable_progress_bar=false",
                                       f"generator.seed={args.seed}", "generator.lecam_weight=0.0"])
    dm = build_datamodule(cfg.data)
    model, judge = judged_classifier(cfg, dm)
    trained = trained_generator(cfg.generator, cfg.data, cfg.trainer, dm, cfg.paths.models)
    if trained.cached:
        raise SystemExit(f"{trained.path} is cached, so no averages were kept: delete it to train again")
    gen = trained.module.eval()
    averages = {"shipped": gen.ema, **{f"{d:g} after {args.after}": a for d, a in gen._averages.items()}}
    print("average | samples realism judge / eye | seeds | pmin | judge | renders realism judge / eye | recall"
          " | diversity / real")
    for name, network in averages.items():
        gen.ema = network.eval()
        q = generator_quality(judge, gen.sample(1000, seed=0), dm.num_classes)
        for first in args.seeds:
            r, s, _ = class_renders(model, judge, latent(gen, max_norm=cfg.param.max_norm,
                                                         start_candidates=cfg.param.start_candidates), first,
                                    steps=cfg.generator.render.steps, lr=cfg.generator.render.lr,
                                    retry_below=cfg.generator.render.retry_below)
            print(f"{name} | {q['realism_ratio/judge']:.2f} / {q['realism_ratio/eye']:.2f} | {first}-{first + 3} | "
                  f"{float(r.target_prob.min()):.3f} | {s['judge_recognition']:.3f} | {s['realism_ratio/judge']:.2f}"
                  f" / {s['realism_ratio/eye']:.2f} | {s['recall']:.2f} | {s['diversity'] / s['diversity_real']:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
