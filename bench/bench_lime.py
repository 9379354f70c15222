"""LIME side by side: studio's batched LimeImage vs the `lime` package vs captum.attr.Lime.

Equal samples, identical segments (ours, handed to lime as segmentation_fn and to captum as
feature_mask), identical fill (each segment's mean colour: lime's hide_color=None), kernel
(sqrt(exp(-d²/0.25²)) on the cosine distance of the on/off vectors), surrogate (ridge, alpha 1,
sample-weighted) and model output (the target's logit). All of them run in one process, in turn on
each image, with the same thread limits (torch and NumPy's BLAS); the table gives seconds per image
(median), the speed ratios, the in-sample weighted R² of lime and ours, and how often the top-5
segments agree. With one thread (the default) the seconds are the process's CPU time, which other
processes on a shared machine do not inflate; the JSON also has the wall-clock seconds.

    .venv/bin/pip install -r bench/requirements.txt          # lime (captum is a studio dependency)
    .venv/bin/python bench/bench_lime.py                      # both cases; writes bench/results/lime-cpu.{md,json}
    .venv/bin/python bench/bench_lime.py --case cnn28 --images 8

Cases: `cnn28`: the demo's small_cnn (trained, or reused from $STUDIO_OUTPUTS/models/) on 28 px mnist5k
test digits, slic segments; `resnet224`: torchvision ResNet-18 (weights=None, seeded) on scikit-image's
photos at 224 px, quickshift segments with lime's defaults. Ours runs in fp32 (on the model's folded,
channels-last twin: the same function) and in bf16 autocast + channels-last; the bf16 numbers only count
where its top-5 segments agree with our fp32 run (the `agree` column).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.explain.lime import LimeImage, fill_images, kernel_weights  # noqa: E402
from studio.explain.metrics import jaccard  # noqa: E402
from studio.explain.segments import segment  # noqa: E402

KERNEL_WIDTH = 0.25
TOP_K = 5


def demo_cnn(images: int):
    """The trained demo small_cnn (cache under $STUDIO_OUTPUTS/models/) and the first test digits."""
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
    from omegaconf import OmegaConf

    from studio.models import build_classifier

    torch.manual_seed(0)
    cfg = OmegaConf.create({"arch": "torchvision", "options": {"arch": "resnet18", "weights": None}})
    model = build_classifier(cfg, 3, 1000, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval()
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    square = [p[:min(p.shape[:2]), :min(p.shape[:2])] for p in photos]  # top-left square crops
    x = torch.cat([F.interpolate(torch.from_numpy(p).permute(2, 0, 1).float()[None] / 255, size=(224, 224),
                                 mode="bilinear", antialias=True) for p in square]).clamp(0, 1)
    return model, x[:images]


def run_lime_package(model, image: torch.Tensor, segments: np.ndarray, target: int, samples: int,
                     batch_size: int, seed: int) -> tuple[float, np.ndarray]:
    """lime.lime_image with our segments; classifier_fn as a user writes it (HWC NumPy → logits).
    Returns (lime's score = in-sample weighted R², the segment weights)."""
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
               batch_size: int) -> np.ndarray:
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
    """((wall seconds, CPU seconds of this process), fn()). With one torch thread the CPU time is what the
    work costs even when other processes share the cores (wall time then depends on who else runs)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def top_k(weights) -> torch.Tensor:
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64)).flatten()
    return w.topk(min(TOP_K, len(w))).indices.view(1, -1)


def bench_case(name: str, model, x: torch.Tensor, segmentation: str, options: dict, samples: int, batch_size: int,
               lime_batches: list[int], captum: bool, clock: str) -> dict:
    segments = segment(x, segmentation, **options)
    with torch.inference_mode():
        targets = model(x).argmax(1)
    fill = fill_images(x, segments, "mean")
    common = dict(samples=samples, heldout=0, fill="mean", output="logit", batch_size=batch_size, progress=False)
    ours = {"studio fp32": LimeImage(model, **common),
            "studio bf16+channels_last": LimeImage(model, precision="bf16", channels_last=True, **common)}
    times = {k: [] for k in [*ours, *[f"lime (batch {b})" for b in lime_batches], *(["captum"] if captum else [])]}
    r2 = {"studio": [], "lime": []}
    agree = {"bf16 vs fp32": [], "lime vs studio": []}
    # warm-up: the first calls pay for lazy imports, tracing, oneDNN kernels and allocator growth
    for explainer in ours.values():
        explainer.explain(x[:1], targets[:1], segments=segments[:1])
    run_lime_package(model, x[0], segments[0].numpy(), int(targets[0]), 2 * batch_size, batch_size, 0)
    for i in range(len(x)):
        xi, ti, si = x[i:i + 1], int(targets[i]), segments[i:i + 1]
        results = {}
        for mode, explainer in ours.items():
            seconds, results[mode] = timed(lambda: explainer.explain(xi, ti, segments=si, seed=i))
            times[mode].append(seconds)
        for b in lime_batches:
            seconds, (score, weights) = timed(lambda: run_lime_package(model, x[i], si[0].numpy(), ti, samples, b, i))
            times[f"lime (batch {b})"].append(seconds)
        if captum:
            times["captum"].append(timed(lambda: run_captum(model, x[i], si[0], fill[i], ti, samples, batch_size))[0])
        fp32 = results["studio fp32"]
        r2["studio"].append(float(fp32.r2[0]))
        r2["lime"].append(score)
        agree["bf16 vs fp32"].append(float(jaccard(fp32.top_segments(TOP_K),
                                                   results["studio bf16+channels_last"].top_segments(TOP_K))[0]))
        agree["lime vs studio"].append(float(jaccard(fp32.top_segments(TOP_K), top_k(weights))[0]))
        print(f"  {name} image {i}: " + ", ".join(f"{k} {v[-1][0]:.2f}s wall {v[-1][1]:.2f}s cpu"
                                                  for k, v in times.items()), flush=True)
    # and the way the studio is meant to be used: every image in one call
    all_at_once = timed(lambda: ours["studio fp32"].explain(x, targets, segments=segments))[0]
    column = {"wall": 0, "cpu": 1}
    seconds = {c: {k: statistics.median(t[j] for t in v) for k, v in times.items()} for c, j in column.items()}
    for c, j in column.items():
        seconds[c]["studio fp32, all images in one call"] = all_at_once[j] / len(x)
    per_image = seconds[clock]
    lime_best = min(v for k, v in per_image.items() if k.startswith("lime"))
    return {"case": name, "images": len(x), "samples": samples, "batch_size": batch_size, "clock": clock,
            "segments_mean": float((segments.flatten(1).amax(1) + 1).float().mean()),
            "seconds_per_image": per_image, "wall_seconds_per_image": seconds["wall"],
            "cpu_seconds_per_image": seconds["cpu"],
            "fastest_lime_over_studio": {k: lime_best / v for k, v in per_image.items() if k.startswith("studio")},
            "captum_over_studio": ({k: per_image["captum"] / v for k, v in per_image.items() if k.startswith("studio")}
                                   if captum else None),
            "r2_studio": statistics.mean(r2["studio"]), "r2_lime": statistics.mean(r2["lime"]),
            "top5_jaccard": {k: statistics.mean(v) for k, v in agree.items()}}


def markdown(results: list[dict], env: dict, command: str) -> str:
    lines = [f"Measured: {env['machine']}, {env['threads']} torch thread(s), torch {env['torch']}, lime "
             f"{env['lime']}, captum {env['captum']}, load average {env['load_start']:.1f} at start and "
             f"{env['load_end']:.1f} at the end; seconds per image ({env['clock']} time) are medians over the "
             "images, every implementation in turn on each image.", "",
             "| case | samples | segments | lime s/img | captum s/img | studio fp32 s/img | studio bf16+CL s/img "
             "| fastest lime ÷ studio fp32 | … ÷ studio bf16+CL | R² studio / lime | top-5 agree: lime~studio, "
             "bf16~fp32 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        s = r["seconds_per_image"]
        limes = ", ".join(f"{v:.2f} ({k.split('(')[1][:-1]})" for k, v in s.items() if k.startswith("lime"))
        captum = f"{s['captum']:.2f}" if "captum" in s else "-"
        ratio = r["fastest_lime_over_studio"]
        lines.append(
            f"| {r['case']} | {r['samples']} | {r['segments_mean']:.0f} | {limes} | {captum} | "
            f"{s['studio fp32']:.3f} (all at once: {s['studio fp32, all images in one call']:.3f}) | "
            f"{s['studio bf16+channels_last']:.3f} | {ratio['studio fp32']:.2f}× | "
            f"{ratio['studio bf16+channels_last']:.2f}× | {r['r2_studio']:.3f} / {r['r2_lime']:.3f} | "
            f"{r['top5_jaccard']['lime vs studio']:.2f}, {r['top5_jaccard']['bf16 vs fp32']:.2f} |")
    lines += ["", f"Reproduce: `{command}`"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["all", "cnn28", "resnet224"], default="all")
    parser.add_argument("--images", type=int, default=4, help="images of the 28 px case")
    parser.add_argument("--resnet-images", type=int, default=2, help="photos of the 224 px case (≤ 4)")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64, help="perturbations per forward pass (all libraries)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for every implementation (1: stable timings on a shared CPU)")
    parser.add_argument("--no-captum", action="store_true", help="skip captum (as slow as lime; saves time)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default=None,
                        help="what the ratios use (default: cpu with one thread, else wall); the JSON has both")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lime-cpu.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("STUDIO_OUTPUTS", str(ROOT / "outputs"))
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # NumPy's BLAS too (lime's and captum's ridge fits)
    clock = args.clock or ("cpu" if args.threads == 1 else "wall")
    import captum
    import lime

    env = {"machine": f"{platform.machine()} ({os.cpu_count()} CPUs)", "threads": torch.get_num_threads(),
           "torch": torch.__version__, "lime": getattr(lime, "__version__", "0.2.0.1"),
           "captum": captum.__version__, "clock": clock, "load_start": os.getloadavg()[0]}
    results = []
    if args.case in ("all", "cnn28"):
        model, x = demo_cnn(args.images)
        results.append(bench_case("small_cnn 28 px", model, x, "slic", {"n_segments": 50, "compactness": 0.1},
                                  args.samples, args.batch_size, [10, args.batch_size], not args.no_captum, clock))
    if args.case in ("all", "resnet224"):
        model, x = resnet_photos(args.resnet_images)
        # lime's default batch (10) is left out here: at 224 px the model dominates and it only adds minutes
        results.append(bench_case("ResNet-18 (weights=None) 224 px", model, x, "quickshift", {}, args.samples,
                                  args.batch_size, [args.batch_size], not args.no_captum, clock))
    env["load_end"] = os.getloadavg()[0]
    command = "python bench/bench_lime.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown(results, env, command.strip())
    print()
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"env": env, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
