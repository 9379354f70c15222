"""The smallest difference `studio report`'s paired tests can detect: a power simulation.

Paired differences d_i ~ Normal(shift, 1) over n target x seed pairs (shift in standard deviations of
the paired difference, Cohen's d_z); a two-sided Wilcoxon signed-rank test (scipy, as
studio/report/stats.py runs it) rejects at alpha, or at alpha / m, the strictest step of Holm's
correction over m comparisons (10 recipes: 45 pairs). Prints, per n, the smallest shift detected in
>= 80% of draws.

    python bench/power_paired.py                       # n = 20 ... 60, m = 45
    python bench/power_paired.py --n 40 48 --m 45 --draws 4000
    python bench/power_paired.py --sweep <sweep dir>   # also: that shift in each metric's own units
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

SHIFTS = np.round(np.arange(0.05, 2.01, 0.05), 2)


def power(n: int, shift: float, threshold: float, draws: int, rng) -> float:
    d = rng.normal(shift, 1.0, (draws, n))
    return float(np.mean(wilcoxon(d, axis=1).pvalue < threshold))


def smallest_shift(n: int, threshold: float, draws: int, target: float = 0.8, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    return next((float(s) for s in SHIFTS if power(n, s, threshold, draws, rng) >= target), float("nan"))


def paired_sd(sweep_dir: Path) -> dict[tuple[str, str], float]:
    """Per (metric, objective): the median over recipe pairs of the SD of their paired differences."""
    rows = list(csv.DictReader(open(sweep_dir / "paired.csv")))
    table = list(csv.DictReader(open(sweep_dir / "table.csv")))
    series = "config.objective" if table and "config.objective" in table[0] else None
    out = defaultdict(list)
    for r in rows:
        def values(recipe):
            return {(t["target"], t["seed"]): float(t[r["metric"]]) for t in table if t["recipe"] == recipe
                    and t.get(r["metric"]) and (not series or t[series] == r.get(series))}
        a, b = values(r["recipe_a"]), values(r["recipe_b"])
        d = [a[k] - b[k] for k in a if k in b]
        if len(d) > 2:
            out[(r["metric"], r.get(series, ""))].append(float(np.std(d, ddof=1)))
    return {k: float(np.median(v)) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20, 24, 30, 36, 40, 48, 50, 60])
    parser.add_argument("--m", type=int, default=45, help="comparisons in one Holm family")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--sweep", type=Path, help="a reported sweep dir: shifts in its metrics' units")
    args = parser.parse_args()
    print(f"| n pairs | smallest shift (SD of the paired difference) with 80% power: alpha {args.alpha:g} "
          f"| alpha / {args.m} (Holm, worst step) |\n|---|---|---|")
    found = {}
    for n in args.n:
        found[n] = (smallest_shift(n, args.alpha, args.draws), smallest_shift(n, args.alpha / args.m, args.draws))
        print(f"| {n} | {found[n][0]:.2f} | {found[n][1]:.2f} |")
    if args.sweep:
        print("\n| metric | objective | median SD of paired differences | detectable (alpha / m) at its n |")
        print("|---|---|---|---|")
        per_series = {"class": 10, "channel": 12}
        seeds = len({r["seed"] for r in csv.DictReader(open(args.sweep / "table.csv"))})
        for (metric, series), sd in sorted(paired_sd(args.sweep).items()):
            n = per_series.get(series, 0) * seeds
            shift = found[n][1] if n in found else smallest_shift(n, args.alpha / args.m, args.draws)
            print(f"| {metric} | {series} | {sd:.3g} | {shift * sd:.3g} (n = {n}) |")


if __name__ == "__main__":
    main()
