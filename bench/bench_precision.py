"""Is bf16 autocast worth it for training on this CPU? fp32 vs bf16 training steps, side by side.

Times forward + backward + Adam steps of the two models the studio trains most (small_cnn on 28 px
digits, batch 64; the diffusion U-Net, batch 64) in fp32 and under bf16 autocast, interleaved so that
both see the same machine load, and prints the bf16/fp32 time ratio beside what `${cpu_precision:}`
(studio.modes.cpu_training_precision) picks here. The trainer=cpu default follows these numbers: bf16
only where the CPU computes it natively (AVX512-BF16 or AMX).

    python bench/bench_precision.py            # both models, 10 steps each, best of 2 rounds (~2 min on AVX2)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from generators.unet import UNet
from studio.models import build_net
from studio.modes import cpu_training_precision


def small_cnn_step(net, x, y):
    return F.cross_entropy(net(x), y)


def unet_step(net, x, t):
    return F.mse_loss(net(x, t), x)


def seconds_per_step(net, loss_fn, inputs, bf16: bool, steps: int) -> float:
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net, *inputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    models = {"small_cnn": (build_net("small_cnn", 1, 10), small_cnn_step,
                            (torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))),
              "diffusion U-Net": (UNet(1, 32), unet_step, (torch.randn(64, 1, 28, 28), torch.randint(0, 1000, (64,))))}
    capability = torch.backends.cpu.get_cpu_capability()
    lines = [f"CPU capability {capability}, native bf16 "
             f"{torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()}, "
             f"{torch.get_num_threads()} threads; ${{cpu_precision:}} -> {cpu_training_precision()}", "",
             "| model | fp32 ms/step | bf16 ms/step | bf16 / fp32 |", "| --- | --- | --- | --- |"]
    print("\n".join(lines))
    for name, (net, loss_fn, inputs) in models.items():
        seconds_per_step(net, loss_fn, inputs, False, 2)  # warm-up: oneDNN primitives, allocator
        seconds_per_step(net, loss_fn, inputs, True, 2)
        times = {False: [], True: []}
        for _ in range(args.rounds):  # interleaved: both see the same load
            for bf16 in (False, True):
                times[bf16].append(seconds_per_step(net, loss_fn, inputs, bf16, args.steps))
        fp32, bf16 = min(times[False]), min(times[True])
        lines.append(f"| {name} | {fp32 * 1e3:.1f} | {bf16 * 1e3:.1f} | {bf16 / fp32:.2f} |")
        print(lines[-1])
    out = Path(__file__).parent / "results" / f"precision-cpu-{capability.lower()}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
