"""Is channels-last worth it for training the studio's classifiers on this CPU? Contiguous vs channels-last
training steps, side by side.

Times forward + backward + Adam steps of the three classifiers the studio trains (small_cnn, the judge's
judge_cnn and the eye's strided_cnn; 28 px digits, batch 64, the precision `${cpu_precision:}` picks here),
with weights and batch contiguous and in channels-last layout, interleaved so that both see the same
machine load, and prints the channels-last / contiguous time ratio. studio.fit.training_layout picks
channels-last by these numbers.

    python bench/bench_memory_format.py                # 20 steps each, best of 3 rounds, torch's threads
    OMP_NUM_THREADS=1 python bench/bench_memory_format.py   # one thread: what each test worker gets
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench_precision import seconds_per_step as timed_steps, small_cnn_step
from studio.models import build_net
from studio.modes import cpu_training_precision

LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def seconds_per_step(net, x, y, layout, bf16: bool, steps: int) -> float:
    """bench_precision's timed training steps, with weights and batch in `layout`."""
    net.to(memory_format=layout)
    return timed_steps(net, small_cnn_step, (x.contiguous(memory_format=layout), y), bf16, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    precision = cpu_training_precision()
    bf16 = precision.startswith("bf16")
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    capability = torch.backends.cpu.get_cpu_capability()
    lines = [f"CPU capability {capability}, {torch.get_num_threads()} threads, precision {precision}", "",
             "| model | contiguous ms/step | channels-last ms/step | channels-last / contiguous |",
             "| --- | --- | --- | --- |"]
    print("\n".join(lines))
    for name in ("small_cnn", "judge_cnn", "strided_cnn"):
        net = build_net(name, 1, 10)
        for layout in LAYOUTS.values():  # warm-up: oneDNN primitives, allocator
            seconds_per_step(net, x, y, layout, bf16, 2)
        times = {layout: [] for layout in LAYOUTS}
        for _ in range(args.rounds):  # interleaved: both see the same load
            for layout, memory_format in LAYOUTS.items():
                times[layout].append(seconds_per_step(net, x, y, memory_format, bf16, args.steps))
        contiguous, channels_last = min(times["contiguous"]), min(times["channels_last"])
        lines.append(f"| {name} | {contiguous * 1e3:.1f} | {channels_last * 1e3:.1f} | "
                     f"{channels_last / contiguous:.2f} |")
        print(lines[-1])
    out = Path(__file__).parent / "results" / f"memory-format-cpu-{capability.lower()}-{torch.get_num_threads()}t.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
