"""LIME side by side: studio's batched LimeImage vs the `lime` package vs captum.attr.Lime.

Equal samples, identical segments (ours, handed to lime as segmentation_fn and to captum as
feature_mask), identical fill (each segment's mean colour), kernel (sqrt(exp(-d²/0.25²)) on the
cosine distance of the on/off vectors), surrogate (ridge, alpha 1, sample-weighted) and model output
(the target's logit). All three run in one process, interleaved, on the same images; the table gives
seconds per image (median over repeats), speed ratios and the in-sample weighted R² of lime and ours.

    .venv/bin/pip install -r bench/requirements.txt
    .venv/bin/python bench/bench_lime.py                      # both cases, ~5 min on 2 cores
    .venv/bin/python bench/bench_lime.py --case cnn28 --images 8

Cases: `cnn28`: the demo's small_cnn (trained, or reused from outputs/models/) on 28 px mnist5k test
digits; `resnet224`: torchvision ResNet-18 (weights=None, seeded) on four scikit-image photos at
224 px, also in bf16 autocast + channels-last, reported only with the agreement of its top segments
with our fp32 run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.explain.lime import LimeImage, kernel_weights  # noqa: E402
from studio.explain.metrics import jaccard  # noqa: E402
from studio.explain.segments import segment  # noqa: E402

KERNEL_WIDTH = 0.25


def demo_cnn(images: int):
    """The trained demo small_cnn (cache under outputs/models/) and the first test digits."""
    from hydra import compose, initialize_config_dir

    from studio.data import build_datamodule
    from studio.train import trained_classifier

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("train", overrides=["trainer.enable_progress_bar=false"])
    dm = build_datamodule(cfg.data)
    model = trained_classifier(cfg.model, cfg.data, cfg.trainer, dm, cfg.paths.models).model
    return model, dm.split("test")[0][:images]


def resnet_photos(images: int):
    """ResNet-18 with seeded random weights (weights=None: offline) and scikit-image's bundled photos."""
    import skimage.data
    import torch.nn.functional as F

    from studio.models import build_classifier
    from omegaconf import OmegaConf

    torch.manual_seed(0)
    cfg = OmegaConf.create({"arch": "torchvision", "options": {"arch": "resnet18", "weights": None}})
    model = build_classifier(cfg, 3, 1000, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    square = [p[:min(p.shape[:2]), :min(p.shape[:2])] for p in photos]  # top-left square crops
    x = torch.cat([F.interpolate(torch.from_numpy(p).permute(2, 0, 1).float()[None] / 255, size=(224, 224),
                                 mode="bilinear", antialias=True) for p in square]).clamp(0, 1)
    return model, x[:images]


def run_lime_package(model, image: torch.Tensor, segments: np.ndarray, target: int, samples: int,
                     batch_size: int, seed: int):
    """lime.lime_image with our segments; classifier_fn as a user writes it (HWC NumPy → logits)."""
    from lime.lime_image import LimeImageExplainer

    channels = image.shape[0]

    def classifier_fn(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()[:, :channels]
        with torch.inference_mode():
            return model(x).numpy()

    hwc = image.permute(1, 2, 0).double().numpy()
    if channels == 1:
        hwc = np.repeat(hwc, 3, axis=2)  # lime is RGB-only; classifier_fn takes channel 0 back
    explainer = LimeImageExplainer(kernel_width=KERNEL_WIDTH, random_state=seed)
    explanation = explainer.explain_instance(hwc, classifier_fn, labels=(target,), top_labels=None, hide_color=None,
                                             num_samples=samples, batch_size=batch_size,
                                             segmentation_fn=lambda _: segments, random_seed=seed)
    weights = dict(explanation.local_exp[target])
    return float(explanation.score), np.array([weights[i] for i in range(len(weights))])


def run_captum(model, image: torch.Tensor, segments: torch.Tensor, fill: torch.Tensor, target: int, samples: int,
               batch_size: int):
    """captum.attr.Lime with the same segments (feature_mask), fill (baselines), kernel and ridge."""
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime

    num = int(segments.max()) + 1

    def similarity(original, perturbed, interpretable, **kwargs):
        z = interpretable.bool().view(1, 1, -1)
        return float(kernel_weights(z, torch.tensor([num]), KERNEL_WIDTH)[0, 0])

    lime = Lime(model, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=similarity)
    mask = segments.view(1, 1, *segments.shape).expand(1, image.shape[0], -1, -1)
    with torch.no_grad():
        coefs = lime.attribute(image[None], target=target, baselines=fill[None], feature_mask=mask,
                               n_samples=samples, perturbations_per_eval=batch_size, return_input_shape=False,
                               show_progress=False)
    return coefs.flatten().numpy()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_case(name: str, model, x: torch.Tensor, segmentation: str, options: dict, samples: int, batch_size: int,
               repeats: int, fast_modes: bool, lime_batches: list[int]) -> dict:
    from studio.explain.lime import fill_images

    segments = segment(x, segmentation, **options)
    with torch.inference_mode():
        targets = model(x).argmax(1)
    fill = fill_images(x, segments, "mean")
    ours = {"fp32": LimeImage(model, samples=samples, heldout=0, batch_size=batch_size, progress=False)}
    if fast_modes:
        ours["bf16+channels_last"] = LimeImage(model, samples=samples, heldout=0, batch_size=batch_size,
                                               precision="bf16", channels_last=True, progress=False)
    times = {k: [] for k in [f"studio {m}" for m in ours] + [f"lime (batch {b})" for b in lime_batches] + ["captum"]}
    r2 = {"studio": [], "lime": []}
    agreement = []
    # warm-up (first calls pay for lazy imports, tracing and allocator growth)
    ours["fp32"].explain(x[:1], targets[:1], segments=segments[:1])
    run_lime_package(model, x[0], segments[0].numpy(), int(targets[0]), 20, batch_size, 0)
    for rep in range(repeats):
        for i in range(len(x)):
            xi, ti, si = x[i:i + 1], int(targets[i]), segments[i:i + 1]
            results = {}
            for mode, explainer in ours.items():
                seconds, results[mode] = timed(lambda: explainer.explain(xi, ti, segments=si, seed=rep))
                times[f"studio {mode}"].append(seconds)
            for b in lime_batches:
                seconds, (score, _) = timed(lambda: run_lime_package(model, x[i], si[0].numpy(), ti, samples, b, rep))
                times[f"lime (batch {b})"].append(seconds)
            seconds, _ = timed(lambda: run_captum(model, x[i], si[0], fill[i], ti, samples, batch_size))
            times["captum"].append(seconds)
            r2["studio"].append(float(results["fp32"].r2[0]))
            r2["lime"].append(score)
            if "bf16+channels_last" in results:
                k = 5
                agreement.append(float(jaccard(results["fp32"].top_segments(k), results["bf16+channels_last"].top_segments(k))[0]))
            print(f"  {name} rep {rep} image {i}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    per_image = {k: statistics.median(v) for k, v in times.items()}
    base = per_image["studio fp32"]
    return {"case": name, "images": len(x), "samples": samples, "batch_size": batch_size, "repeats": repeats,
            "segments_mean": float((segments.flatten(1).amax(1) + 1).float().mean()),
            "seconds_per_image": per_image,
            "speedup_vs": {k: v / per_image[m] for m in per_image if m.startswith("studio")
                           for k, v in per_image.items() if not k.startswith("studio")} if False else
            {f"{other} / {mine}": per_image[other] / per_image[mine] for mine in per_image if mine.startswith("studio")
             for other in per_image if not other.startswith("studio")},
            "r2_studio": statistics.mean(r2["studio"]), "r2_lime": statistics.mean(r2["lime"]),
            "top5_jaccard_bf16_vs_fp32": statistics.mean(agreement) if agreement else None,
            "fp32_seconds": base}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["all", "cnn28", "resnet224"], default="all")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for every implementation (1: stable timings on a shared CPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("STUDIO_OUTPUTS", str(ROOT / "outputs"))
    torch.set_num_threads(args.threads)
    results = []
    if args.case in ("all", "cnn28"):
        model, x = demo_cnn(args.images)
        results.append(bench_case("small_cnn 28 px", model, x, "slic", {"n_segments": 50, "compactness": 0.1},
                                  args.samples, 64, args.repeats, fast_modes=True, lime_batches=[10, 64]))
    if args.case in ("all", "resnet224"):
        model, x = resnet_photos(args.images)
        results.append(bench_case("resnet18 224 px", model, x, "quickshift", {}, args.samples, 64, args.repeats,
                                  fast_modes=True, lime_batches=[10, 64]))
    print()
    print("| case | samples | segments | studio fp32 s/img | other s/img | lime ÷ studio | R² studio / lime |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        others = ", ".join(f"{k} {v:.2f}" for k, v in r["seconds_per_image"].items())
        ratios = ", ".join(f"{k}: {v:.1f}×" for k, v in r["speedup_vs"].items())
        print(f"| {r['case']} | {r['samples']} | {r['segments_mean']:.0f} | {r['fp32_seconds']:.2f} | {others} | "
              f"{ratios} | {r['r2_studio']:.3f} / {r['r2_lime']:.3f} |")
        if r["top5_jaccard_bf16_vs_fp32"] is not None:
            print(f"  bf16+channels_last top-5 segments vs fp32: Jaccard {r['top5_jaccard_bf16_vs_fp32']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
