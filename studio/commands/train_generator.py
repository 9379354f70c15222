"""`studio train-generator`: a GAN or VAE trained (or reused from the cache) on the data's training
split, and its quality in the judge's eyes: class shares of 1,000 samples, mean judge confidence and
the realism ratio of the samples (studio/judge.py).

Run layout: samples/samples_epoch<k>.png (one grid per epoch, when trained now), samples.png (the
scored samples' first 100), class_shares.png (a bar chart), manifest.json.
"""

from __future__ import annotations

from pathlib import Path

from studio.commands.shared import Result, generator_for, judge_for, realism_words
from studio.data import build_datamodule
from studio.images import grid, pyplot, save_figure, save_png
from studio.judge import generator_quality


def _share_plot(shares: list[float], classes: list[str], path: Path) -> None:
    fig, ax = pyplot().subplots(figsize=(6, 3))
    ax.bar(range(len(shares)), shares, color="#4878a8")
    ax.axhline(1 / len(shares), color="grey", ls="--", lw=1, label="uniform")
    ax.set_xticks(range(len(shares)), classes)
    ax.set_ylabel("share of samples (judge)")
    ax.legend(loc="upper right")
    save_figure(fig, path)


def run(cfg, tracker) -> Result:
    run_dir = tracker.output_dir
    dm = build_datamodule(cfg.data)
    gen = generator_for(cfg, dm, tracker, samples_dir=run_dir / "samples")
    judge = judge_for(cfg, dm, tracker)
    samples = gen.module.sample(int(cfg.samples), seed=int(cfg.seed))
    metrics = {**generator_quality(judge, samples, dm.num_classes),
               "train_seconds": gen.train_seconds, "cached": gen.cached}
    save_png(grid(samples[:100], 10), run_dir / "samples.png")
    shares = [metrics[f"class_share/{c}"] for c in range(dm.num_classes)]
    _share_plot(shares, [str(c) for c in dm.classes], run_dir / "class_shares.png")
    tracker.log({k: v for k, v in metrics.items() if not isinstance(v, bool)})
    tracker.log_images("generator/quality", [run_dir / "samples.png", run_dir / "class_shares.png"])
    print(f"generator quality ({len(samples)} samples, judged by {cfg.judge.name}): "
          f"confidence {metrics['judge_confidence']:.3f}, smallest class share {metrics['class_share_min']:.1%}, "
          f"{realism_words(metrics)}")
    return Result(metrics, artifacts={"generator": str(gen.path.resolve()), "samples": "samples.png",
                                      "class_shares": "class_shares.png"})
