"""Which diffusion recipe gives samples and guided class renders that both realism views accept?

Trains generator=diffusion variants (width, epochs, min-SNR weighting) outside the cache, then scores for
each: 40 unguided samples (two draws) and the 10 classes x 4 seeds of param=guided at a few
guidance_until x guidance_scale settings, with the cached judge and eye (the same views as every run).
What the README's "how the recipe was chosen" row came from (run on a lent H200: a CPU run of the
whole grid takes hours).

    python bench/diffusion_recipes.py                         # cuda if present, else cpu
    python bench/diffusion_recipes.py --variants 32:50:5 32:50:none --seeds 0 4 8
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from generators.diffusion import DiffusionModule
from studio import config
from studio.commands.shared import judge_for
from studio.data import build_datamodule
from studio.optvis import class_, render
from studio.optvis.params import guided
from studio.train import trained_classifier


def train(dm, width: int, epochs: int, gamma: float | None, accelerator: str) -> DiffusionModule:
    """The shipped recipe (lr 5e-4, batch 64, bf16, EMA 0.999) at another width / length / weighting."""
    pl.seed_everything(0, verbose=False)
    module = DiffusionModule(None, *dm.image_shape[:2], width=width, lr=5e-4, min_snr_gamma=gamma)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*dm.split("train")), batch_size=64,
                                         shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0))
    pl.Trainer(accelerator=accelerator, devices=1, precision="bf16-mixed", max_epochs=epochs, logger=False,
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(module, loader)
    return module.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["32:50:none", "32:50:5", "32:150:none", "64:100:none"],
                        help="width:epochs:min_snr_gamma (none: the plain loss)")
    parser.add_argument("--intervals", nargs="+", type=float, default=[0.0, 0.5])
    parser.add_argument("--scales", nargs="+", type=float, default=[0.02, 0.025])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 4], help="first seed of each 10 x 4 set")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = config.compose("visualize", ["trainer.enable_progress_bar=false", f"trainer.accelerator={device}"])
    dm = build_datamodule(cfg.data)
    model = trained_classifier(cfg.model, cfg.data, cfg.trainer, dm, cfg.paths.models).model.eval()
    judge = judge_for(cfg, dm)  # the commands' judge and eye, their real-image statistics cached
    classes = [c for c in range(10) for _ in range(4)]

    def show(label, images, cls, seconds, extra=""):
        _, s = judge.score(images.float().cpu(), cls, [f"c{c}" for c in cls] if cls else list(range(len(images))))
        print(f"{label:36s} {seconds:6.1f} s{extra} realism {s['realism_ratio/judge']:.2f} / "
              f"{s['realism_ratio/eye']:.2f} precision {s['precision']:.2f} recall {s['recall']:.2f}"
              + (f" judge {s['judge_recognition']:.3f}" if cls else ""), flush=True)

    for variant in args.variants:
        width, epochs, gamma = variant.split(":")
        start = time.perf_counter()
        gen = train(dm, int(width), int(epochs), None if gamma == "none" else float(gamma), device).to(device)
        print(f"{variant}: trained in {time.perf_counter() - start:.0f} s on {device}", flush=True)
        for seed in (0, 1):
            start = time.perf_counter()
            show(f"{variant} samples seed {seed}", gen.sample(40, seed=seed), None, time.perf_counter() - start)
        for until in args.intervals:
            for scale in args.scales:
                for first in args.seeds:
                    start = time.perf_counter()
                    # the recipe these numbers were measured with: the seed's own noise, always guided (the
                    # best-of-N start and the guidance stop came later: bench/guided_recipes.py)
                    spec = guided(gen, 50, scale, until, start_candidates=1, guidance_stop=None)
                    r = render(model, class_(list(range(10)), log_softmax=True), param=spec,
                               steps=50, lr=1.0, optimizer="sgd", seeds=list(range(first, first + 4)),
                               progress=False, device=device)
                    with torch.no_grad():
                        p = F.softmax(model(r.images.to(device)).float(), 1)[range(40), classes]
                    show(f"{variant} until {until} scale {scale} seeds {first}", r.images, classes,
                         time.perf_counter() - start, f" min p {p.min():.3f}")


if __name__ == "__main__":
    main()
