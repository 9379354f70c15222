"""Wall time of one sweep through each launcher: basic (jobs one after another in the studio's process),
submitit_local (each job a submitit process) and ray (each job a task on a Ray cluster started beforehand
with `ray start --head`, 2 CPUs, as a cluster would be). The sweep is the tests' (tests/test_launchers.py):
4 class-render jobs (recipes none, l2, tv, l2_tv x classes 0 and 1, 8 steps, no exemplars), then the
report; the models come from the cache (run any sweep once first). Launchers alternate within each
repeat, so a load that drifts hits them alike.

    python bench/launchers.py                    # 3 repeats, the README's table
    python bench/launchers.py --repeats 1 --extra logger=none
Writes bench/results/launchers-cpu.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["experiment=compare_regularizers", "objective=class", "objective.classes=[0,1]", "seeds=1", "steps=8",
         "exemplars.k=0", "+recipe=none,l2,tv,l2_tv", "progress=false", "trainer.enable_progress_bar=false"]
RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(num_cpus: int) -> tuple[subprocess.Popen, str, float]:
    """`ray start --head --block` on a free port; the process, its address and its start-up seconds."""
    port, started = free_port(), time.monotonic()
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             f"--port={port}", f"--num-cpus={num_cpus}", "--include-dashboard=false",
                             "--object-store-memory=78643200", "--disable-usage-stats",
                             f"--temp-dir={tempfile.mkdtemp(prefix='ray-', dir='/tmp')}",
                             # ports `ray start` would fix: free ones, so a test's cluster may run beside it
                             f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return head, f"127.0.0.1:{port}", time.monotonic() - started
        except OSError:
            if head.poll() is not None:
                sys.exit("ray start --head failed")
            time.sleep(0.2)


def sweep_seconds(launcher: list[str], extra: list[str]) -> float:
    """Wall seconds of `studio visualize <the sweep> <launcher>` into a new sweep dir (fails loudly)."""
    with tempfile.TemporaryDirectory(prefix="bench-launchers-") as tmp:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "studio.cli", "visualize", *SWEEP, *launcher, *extra,
                                 f"hydra.sweep.dir={tmp}/sweep"], capture_output=True, text=True)
        seconds = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"{launcher}: exit {result.returncode}\n{result.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray-cpus", type=int, default=2)
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every sweep")
    args = parser.parse_args()
    head, address, ray_start = start_ray(args.ray_cpus)
    launchers = {"basic": ["hydra/launcher=basic"], "submitit_local": ["hydra/launcher=submitit_local"],
                 "ray": ["hydra/launcher=ray", f"hydra.launcher.ray.init.address={address}"]}
    times: dict[str, list[float]] = {name: [] for name in launchers}
    try:
        for repeat in range(args.repeats):
            for name, launcher in launchers.items():
                times[name].append(sweep_seconds(launcher, args.extra))
                print(f"repeat {repeat}: {name} {times[name][-1]:.1f} s", flush=True)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait()
    write(times, ray_start, args)


def write(times: dict[str, list[float]], ray_start: float, args) -> None:
    basic = statistics.median(times["basic"])
    lines = [f"4-job class-render sweep + report, median of {args.repeats} (load average at the end: "
             f"{os.getloadavg()[0]:.1f}; Ray cluster start-up {ray_start:.1f} s, not counted)", "",
             "| launcher | wall s (median) | runs | vs basic |", "| --- | --- | --- | --- |"]
    for name, values in times.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.1f} | {', '.join(f'{v:.1f}' for v in values)} | {median / basic:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "launchers-cpu.md").write_text(text)
    (RESULTS / "launchers-cpu.json").write_text(json.dumps(
        {"times_s": times, "ray_start_s": ray_start, "extra": args.extra, "cpus": os.cpu_count()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
