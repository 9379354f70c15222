"""`studio train-generator`: a GAN or VAE trained (or reused from the cache) on the data's training
split, and its quality in the judge's eyes: class shares of 1,000 samples, mean judge confidence and
the realism ratio of the samples (studio/metrics.py). Also builds the generator other commands need.

Run layout: samples/samples_epoch<k>.png (one grid per epoch, when trained now), samples.png (the
scored samples' first 100), class_shares.png (a bar chart), manifest.json.
"""

from __future__ import annotations

from pathlib import Path

import torch

from generators import trained_generator
from generators.registry import TrainedGenerator
from studio.data import build_datamodule
from studio.metrics import Judge
from studio.runs import Result, train_one


def generator_for(cfg, dm, tracker, samples_dir: Path | None = None) -> TrainedGenerator:
    """cfg.generator, trained on cfg.data (or cached, or loaded from generator.path), with a one-line report."""
    gen = trained_generator(cfg.generator, cfg.data, cfg.trainer, dm, cfg.paths.models,
                            logger=tracker.lightning_logger(prefix="generator"), samples_dir=samples_dir)
    how = "reused" if gen.cached else f"trained in {gen.train_seconds:.0f} s"
    if gen.resumed_after_epoch:  # a stopped run's work was kept, not thrown away
        how += f", resumed after epoch {gen.resumed_after_epoch}"
    print(f"generator: {cfg.generator.name} on {cfg.data.name} ({how}) -> {gen.path}")
    return gen


def quality(judge: Judge, samples: torch.Tensor, num_classes: int) -> dict:
    """What the judge says about a generator's samples: class shares (by the judge's labels), mean
    confidence, realism ratio against real sets drawn from every class."""
    confidence, predicted = judge.probabilities(samples).max(1)
    shares = torch.bincount(predicted, minlength=num_classes).float() / len(samples)
    # against random real sets: a generator that over-makes some classes should score worse for it
    # (and noise the judge calls all one class must not find a flattering class-matched baseline)
    realism = judge.realism_ratio(samples)
    return {"judge_confidence": float(confidence.mean()), "class_share_min": float(shares.min()),
            **{f"class_share/{c}": float(s) for c, s in enumerate(shares)},
            "realism_ratio": realism["realism_ratio"], "frechet": realism["frechet"],
            "frechet_real": realism["frechet_real"]}


def _share_plot(shares: list[float], classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from studio.files import atomic_path

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(range(len(shares)), shares, color="#4878a8")
    ax.axhline(1 / len(shares), color="grey", ls="--", lw=1, label="uniform")
    ax.set_xticks(range(len(shares)), classes)
    ax.set_ylabel("share of samples (judge)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def train_generator(cfg, tracker, run_dir: Path) -> Result:
    from studio.visualize import grid, save_png

    run_dir = Path(run_dir)
    dm = build_datamodule(cfg.data)
    gen = generator_for(cfg, dm, tracker, samples_dir=run_dir / "samples")
    judge_model = train_one(cfg, cfg.judge, dm, tracker, "judge").model
    samples = gen.module.sample(int(cfg.samples), seed=int(cfg.seed))
    metrics = {**quality(Judge.for_data(judge_model, dm), samples, dm.num_classes),
               "train_seconds": gen.train_seconds, "cached": gen.cached}
    save_png(grid(samples[:100], 10), run_dir / "samples.png")
    shares = [metrics[f"class_share/{c}"] for c in range(dm.num_classes)]
    _share_plot(shares, [str(c) for c in dm.classes], run_dir / "class_shares.png")
    tracker.log({k: v for k, v in metrics.items() if not isinstance(v, bool)})
    tracker.log_images("generator/quality", [run_dir / "samples.png", run_dir / "class_shares.png"])
    print(f"generator quality ({len(samples)} samples, judged by {cfg.judge.name}): "
          f"confidence {metrics['judge_confidence']:.3f}, smallest class share {metrics['class_share_min']:.1%}, "
          f"realism ratio {metrics['realism_ratio']:.2f} (real data ~1)")
    return Result(metrics, artifacts={"generator": str(gen.path.resolve()), "samples": "samples.png",
                                      "class_shares": "class_shares.png"})
