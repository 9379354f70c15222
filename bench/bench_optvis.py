"""Feature-visualization speed side by side with Lucent 0.1.8, as ratios measured in one run.

    .venv/bin/python bench/bench_optvis.py                    # CPU; writes bench/results/optvis-cpu.md
    .venv/bin/python bench/bench_optvis.py --device cuda      # on a GPU
    .venv/bin/python bench/bench_optvis.py --quick            # a smoke run (few steps, one repeat)

Needs Lucent beside the studio (bench/README.md). Both sides render the same model with the same
parameterization (Lucid's FFT image), the same number of steps, the same image size fed to the model
and Lucid's standard transforms, in fp32 unless --precision says otherwise:
- Lucent renders channels one by one (`render_vis` per channel, as its API is used), with
  `preprocess=False` (the studio's models normalize themselves) and `fixed_image_size` = the padded
  size, so it feeds the model what the studio feeds it instead of upsampling to 224 px. Each call
  gets a fresh copy of the model (copy not timed): Lucent's hooks are never removed and would
  otherwise pile up call after call.
- The studio renders all channels in one batch (`studio.optvis.render`).
- The bare loop is what one writes by hand: pixels as a leaf tensor, Adam, frozen weights, a forward
  hook, the full forward pass, backward, step, clamp. The studio runs the same problem (pixel param,
  no transforms) twice: as it ships (early stop, channels-last) and with both off (same arithmetic
  as the bare loop, so the ratio is the framework's own overhead).
Times are the median of --repeats interleaved runs, after one warm-up of each.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.models import Classifier, build_net, small_cnn  # noqa: E402
from studio.optvis import channel, fft, pixel, render, standard  # noqa: E402


def lucent_modules():
    warnings.filterwarnings("ignore")  # torch.jit deprecation chatter from kornia 0.4.1
    try:
        from lucent.optvis import objectives, param, render as lucent_render, transform
    except ImportError as e:
        sys.exit(f"bench_optvis: Lucent is not installed ({e}); see bench/README.md")
    return objectives, param, lucent_render, transform


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


# --- the models -----------------------------------------------------------------------------------
def small_model(device) -> Classifier:
    torch.manual_seed(0)
    return Classifier(small_cnn(1, 10), [0.13], [0.31]).eval().to(device)


def resnet_model(device) -> Classifier:
    torch.manual_seed(0)
    net = build_net("torchvision", 3, 1000, arch="resnet18", weights=None)
    return Classifier(net, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).eval().to(device)


# --- the three ways to render -------------------------------------------------------------------
def lucent_one_by_one(model, layer: str, channels: list[int], size: int, image_channels: int, steps: int):
    objectives, param, lucent_render, transform = lucent_modules()
    lucent_layer = "net_" + layer.replace(".", "_")
    padded = size + 2 * 12  # what Lucid's standard transforms feed the model before scaling

    def run():
        total = 0.0
        for c in channels:
            fresh = copy.deepcopy(model)
            if image_channels == 3:
                param_f = lambda: param.image(size)  # noqa: E731 - FFT + colour decorrelation
            else:
                param_f = lambda: param.image(size, channels=image_channels)  # noqa: E731 - FFT, no decorrelation
            total += timed(lambda: lucent_render.render_vis(
                fresh, objectives.channel(lucent_layer, c), param_f, transforms=list(transform.standard_transforms),
                thresholds=(steps,), preprocess=False, progress=False, show_image=False,
                fixed_image_size=padded), model_device(model))
        return total
    return run


def studio_batched(model, layer, channels, size, image_channels, steps, precision, **options):
    spec = fft(size, channels=image_channels, decorrelate=image_channels == 3)
    objective = channel(layer, channels)
    device = model_device(model)
    return lambda: timed(lambda: render(model, objective, param=spec, transforms=standard(), steps=steps, lr=0.05,
                                        precision=precision, **options), device)


def studio_pixels(model, layer, channels, size, image_channels, steps, precision, **options):
    objective = channel(layer, channels)
    device = model_device(model)
    spec = pixel(size, channels=image_channels)
    return lambda: timed(lambda: render(model, objective, param=spec, steps=steps, lr=0.05,
                                        precision=precision, **options), device)


def bare_loop(model, layer, channels, size, image_channels, steps, precision="fp32"):
    """A hand-written batched gradient ascent on the same problem (no framework), same precision."""
    device = model_device(model)
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")

    def run():
        for p in model.parameters():
            p.requires_grad_(False)
        captured = {}
        hook = model.net.get_submodule(layer).register_forward_hook(lambda _m, _i, out: captured.update(a=out))
        generator = torch.Generator().manual_seed(0)
        x = (0.5 + 0.1 * torch.randn(len(channels), image_channels, size, size, generator=generator)).clamp(0, 1)
        x = x.to(device).requires_grad_(True)
        index = torch.tensor(channels, device=device)
        rows = torch.arange(len(channels), device=device)
        optimizer = torch.optim.Adam([x], lr=0.05)
        try:
            def loop():
                for _ in range(steps):
                    optimizer.zero_grad(set_to_none=True)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                        model(x)
                    (-captured["a"][rows, index].flatten(1).mean(1).sum()).backward()
                    optimizer.step()
                    with torch.no_grad():
                        x.clamp_(0, 1)
            return timed(loop, device)
        finally:
            hook.remove()
            for p in model.parameters():
                p.requires_grad_(True)
    return run


def model_device(model) -> torch.device:
    return next(model.parameters()).device


# --- measuring --------------------------------------------------------------------------------
def median_times(runs: dict, repeats: int) -> dict[str, float]:
    """Warm each run up once, then time them interleaved `repeats` times; medians in seconds."""
    for run in runs.values():
        run()
    samples = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(run())
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--small-steps", type=int, default=64)
    parser.add_argument("--resnet-steps", type=int, default=16)
    parser.add_argument("--resnet-channels", type=int, default=8, help="how many of layer2's 128 channels")
    parser.add_argument("--resnet-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32", help="the studio's precision: fp32 (as Lucent) or bf16")
    parser.add_argument("--quick", action="store_true", help="8 steps, 2 ResNet channels, one repeat")
    parser.add_argument("--out", default=None, help="markdown file (default bench/results/optvis-<device>.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.small_steps, args.resnet_steps, args.resnet_channels, args.repeats = 8, 4, 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    lucent_modules()

    small, resnet = small_model(device), resnet_model(device)
    filters = list(range(12))
    chans = list(range(args.resnet_channels))
    ss, rs, size = args.small_steps, args.resnet_steps, args.resnet_size
    prec = args.precision
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    t_small = median_times({
        "lucent": lucent_one_by_one(small, "conv2", filters, 28, 1, ss),
        "studio": studio_batched(small, "conv2", filters, 28, 1, ss, prec),
    }, args.repeats)
    t_resnet = median_times({
        "lucent": lucent_one_by_one(resnet, "layer2", chans, size, 3, rs),
        "studio": studio_batched(resnet, "layer2", chans, size, 3, rs, prec),
    }, args.repeats)
    t_bare_small = median_times({
        "bare": bare_loop(small, "conv2", filters, 28, 1, ss, prec),
        "studio": studio_pixels(small, "conv2", filters, 28, 1, ss, prec),
        "studio_same_work": studio_pixels(small, "conv2", filters, 28, 1, ss, prec, stop_early=False,
                                          memory_format="contiguous"),
    }, args.repeats)
    t_bare_resnet = median_times({
        "bare": bare_loop(resnet, "layer2", chans, size, 3, rs, prec),
        "studio": studio_pixels(resnet, "layer2", chans, size, 3, rs, prec),
        "studio_same_work": studio_pixels(resnet, "layer2", chans, size, 3, rs, prec, stop_early=False,
                                          memory_format="contiguous"),
    }, args.repeats)

    def faster(a, b):
        return a / b

    rows = [
        (f"small_cnn conv2, all 12 channels, 28 px, FFT, standard transforms, {ss} steps: Lucent one by one "
         "vs studio in one batch", t_small["lucent"], t_small["studio"], faster(t_small["lucent"], t_small["studio"]),
         "≥ 8× faster"),
        (f"ResNet-18 (weights=None) layer2, {len(chans)} channels, {size} px, FFT + colour decorrelation, standard "
         f"transforms, {rs} steps: per channel", t_resnet["lucent"] / len(chans), t_resnet["studio"] / len(chans),
         faster(t_resnet["lucent"], t_resnet["studio"]), "≥ 1.5× faster"),
        (f"small_cnn conv2, 12 channels, pixels, no transforms, {ss} steps: bare loop vs studio",
         t_bare_small["bare"], t_bare_small["studio"], t_bare_small["studio"] / t_bare_small["bare"],
         "≤ 1.3× the time"),
        ("… studio with early stop and channels-last off (same arithmetic as the bare loop)",
         t_bare_small["bare"], t_bare_small["studio_same_work"],
         t_bare_small["studio_same_work"] / t_bare_small["bare"], "≤ 1.3× the time"),
        (f"ResNet-18 layer2, {len(chans)} channels, {size} px, pixels, no transforms, {rs} steps: bare loop vs studio",
         t_bare_resnet["bare"], t_bare_resnet["studio"], t_bare_resnet["studio"] / t_bare_resnet["bare"],
         "≤ 1.3× the time"),
        ("… studio with early stop and channels-last off (same arithmetic as the bare loop)",
         t_bare_resnet["bare"], t_bare_resnet["studio_same_work"],
         t_bare_resnet["studio_same_work"] / t_bare_resnet["bare"], "≤ 1.3× the time"),
    ]
    env = (f"{platform.processor() or platform.machine()}, device {device}, {torch.get_num_threads()} CPU thread(s), "
           f"torch {torch.__version__}, studio precision {prec}, load average {load:.1f} at start, "
           f"median of {args.repeats} interleaved run(s)")
    lines = [f"Measured: {env}.", "",
             "| case | Lucent / bare (s) | studio (s) | ratio | target |", "| --- | --- | --- | --- | --- |"]
    for case, theirs, ours, ratio, target in rows:
        lines.append(f"| {case} | {theirs:.2f} | {ours:.2f} | {ratio:.2f}× | {target} |")
    command = "python bench/bench_optvis.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines += ["", f"Reproduce: `{command.strip()}`"]
    table = "\n".join(lines)
    print(table)
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"optvis-{device.type}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table + "\n")
    out.with_suffix(".json").write_text(json.dumps({"env": env, "rows": [
        {"case": c, "reference_s": a, "studio_s": b, "ratio": r, "target": t} for c, a, b, r, t in rows]}, indent=2))
    print(f"\nwritten to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
