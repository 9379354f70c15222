"""Kernel SHAP side by side: studio's KernelShap (LIME's batched engine) vs captum.attr.KernelShap.

Equal segments (ours, handed to captum as feature_mask), samples (1,000 coalitions, the all-on and
all-off ones included in both), baseline (what a hidden segment shows: our fill, a blur, handed to
captum as `baselines`) and model output (the target's logit). captum evaluates `--batch-size`
perturbations per forward pass (and, in a second column, its default of 1); the studio scores its
perturbations in batches of the same size on the model's folded channels-last twin (the same fp32
function), and also on the eager model. Every implementation runs in one process, in turn on each
image, with one torch thread, and the table reports CPU seconds per image (medians), which other
processes on a shared machine do not inflate (the JSON also has wall-clock seconds).

Agreement: Spearman correlation of the segment values (φ) of studio (seed 0) with captum (seed 0),
beside captum (seed 0) with captum (seed 1), the sampling-noise ceiling, and studio with studio
(seeds 0 and 1). Completeness: |Σφ − (f(x) − f(baseline))| / |f(x) − f(baseline)| of both.

    .venv/bin/python bench/bench_kernelshap.py                  # writes bench/results/kernelshap-cpu.{md,json}
    .venv/bin/python bench/bench_kernelshap.py --images 4 --no-captum-default
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_lime import demo_cnn, timed  # noqa: E402
from studio.explain.metrics import spearman  # noqa: E402
from studio.explain.shap import KernelShap, completeness_error  # noqa: E402


def run_studio(shap: KernelShap, image: torch.Tensor, segments: torch.Tensor, target: int, seed: int):
    """φ (S) of one image from the studio's Kernel SHAP."""
    e = shap.explain(image[None], target, segments=segments[None], seed=seed)
    return e.weights[0, 0, :int(e.num_segments[0])].double()


def run_captum(model, image: torch.Tensor, segments: torch.Tensor, baseline: torch.Tensor, target: int,
               samples: int, batch_size: int, seed: int):
    """φ (S) of one image from captum.attr.KernelShap with the same segments, samples and baseline."""
    from captum.attr import KernelShap as CaptumKernelShap

    torch.manual_seed(seed)  # captum draws its coalitions from torch's global generator
    mask = segments.view(1, 1, *segments.shape).expand(1, image.shape[0], -1, -1)
    with torch.no_grad():
        phi = CaptumKernelShap(model).attribute(image[None], baselines=baseline[None], target=target,
                                                feature_mask=mask, n_samples=samples,
                                                perturbations_per_eval=batch_size, return_input_shape=False)
    return phi.flatten().double()


def bench_image(model, shaps: dict, image, segments, baseline, target: int, args) -> dict:
    """One image: every implementation in turn, timed; φ agreement and completeness."""
    row, phi = {}, {}
    for name, shap in shaps.items():
        row[name], phi[name] = timed(lambda: run_studio(shap, image, segments, target, 0))
    phi["studio_seed1"] = run_studio(shaps["studio"], image, segments, target, 1)
    def captum(size: int, seed: int):
        return run_captum(model, image, segments, baseline, target, args.samples, size, seed)
    row["captum"], phi["captum"] = timed(lambda: captum(args.batch_size, 0))
    phi["captum_seed1"] = captum(args.batch_size, 1)
    if not args.no_captum_default:
        row["captum_default"], _ = timed(lambda: captum(1, 0))
    with torch.no_grad():
        out = model(torch.stack([image, baseline]))[:, target].double()
    rho = lambda a, b: float(spearman(phi[a][None], phi[b][None])[0])  # noqa: E731
    return {"seconds": row, "segments": len(phi["studio"]),
            "spearman": {"studio~captum": rho("studio", "captum"),
                         "captum~captum(seed 1)": rho("captum", "captum_seed1"),
                         "studio~studio(seed 1)": rho("studio", "studio_seed1")},
            "completeness_error": {k: float(completeness_error(phi[k].sum()[None], (out[0] - out[1])[None])[0])
                                   for k in ("studio", "captum")}}


def summarize(rows: list[dict], clock: int) -> dict:
    """Medians over the images: seconds per image per implementation, ratios, agreement, completeness."""
    median = lambda values: statistics.median(values)  # noqa: E731
    seconds = {k: median([r["seconds"][k][clock] for r in rows]) for k in rows[0]["seconds"]}
    return {"seconds": seconds,
            "ratio_captum_over_studio": seconds["captum"] / seconds["studio"],
            "ratio_captum_default_over_studio": seconds.get("captum_default", float("nan")) / seconds["studio"],
            "ratio_captum_over_studio_eager": seconds["captum"] / seconds["studio_eager"],
            "segments": median([r["segments"] for r in rows]),
            "spearman": {k: median([r["spearman"][k] for r in rows]) for k in rows[0]["spearman"]},
            "spearman_min": {k: min(r["spearman"][k] for r in rows) for k in rows[0]["spearman"]},
            "completeness_error_max": {k: max(r["completeness_error"][k] for r in rows)
                                       for k in rows[0]["completeness_error"]}}


def markdown(s: dict, env: dict, images: int, command: str) -> str:
    sec, rho, rmin = s["seconds"], s["spearman"], s["spearman_min"]
    default = f"{sec['captum_default']:.3f}" if "captum_default" in sec else "-"
    return "\n".join([
        f"Measured: {env['machine']}, 1 torch thread, torch {env['torch']}, captum {env['captum']}, load average "
        f"{env['load_start']:.1f} at start and {env['load_end']:.1f} at the end; {images} mnist5k test digits, "
        f"small_cnn, slic ({s['segments']} segments, median), {env['samples']} samples, baseline = LIME's blur "
        f"fill; CPU seconds per image, medians.",
        "",
        "| studio s/img (fast twin) | studio s/img (eager model) | captum s/img (batch "
        f"{env['batch_size']}) | captum s/img (its default batch 1) | captum ÷ studio | captum ÷ studio eager | "
        "Spearman φ studio~captum | captum~captum (other seed) | studio~studio (other seed) | completeness error "
        "max: studio / captum |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {sec['studio']:.3f} | {sec['studio_eager']:.3f} | {sec['captum']:.3f} | {default} | "
        f"{s['ratio_captum_over_studio']:.2f}× | {s['ratio_captum_over_studio_eager']:.2f}× | "
        f"{rho['studio~captum']:.3f} (min {rmin['studio~captum']:.3f}) | "
        f"{rho['captum~captum(seed 1)']:.3f} (min {rmin['captum~captum(seed 1)']:.3f}) | "
        f"{rho['studio~studio(seed 1)']:.3f} (min {rmin['studio~studio(seed 1)']:.3f}) | "
        f"{s['completeness_error_max']['studio']:.1e} / {s['completeness_error_max']['captum']:.1e} |",
        "",
        f"Reproduce: `{command}`"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64, help="perturbations per forward pass (both)")
    parser.add_argument("--no-captum-default", action="store_true", help="skip captum at its default batch of 1")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "kernelshap-cpu.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import captum

    env = {"machine": f"{platform.machine()} ({os.cpu_count()} CPUs)", "torch": torch.__version__,
           "captum": captum.__version__, "samples": args.samples, "batch_size": args.batch_size,
           "load_start": os.getloadavg()[0]}
    model, x = demo_cnn(args.images)
    options = dict(samples=args.samples, heldout=0, batch_size=args.batch_size, progress=False)
    shaps = {"studio": KernelShap(model, **options), "studio_eager": KernelShap(model, fast=False, **options)}
    segments = shaps["studio"].segments(x)
    baseline = shaps["studio"].baseline(x, segments)
    with torch.no_grad():
        targets = model(x).argmax(1).tolist()
    shaps["studio"].explain(x[:1], segments=segments[:1])  # build the fast twin outside the timings
    rows = [bench_image(model, shaps, x[i], segments[i], baseline[i], targets[i], args) for i in range(len(x))]
    env["load_end"] = os.getloadavg()[0]
    summary = summarize(rows, clock=1)
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python bench/bench_kernelshap.py", *given])
    table = markdown(summary, env, len(x), command)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    report = {"env": env, "summary": summary, "images": rows}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
