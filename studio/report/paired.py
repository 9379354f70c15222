"""A report's paired tests: every two groups (recipes) on the same targets and seeds, per item metric.

For each metric and series value (e.g. objective=class), every pair of column groups is compared on the
target x seed items both have, by a Wilcoxon signed-rank test; Holm's correction runs over the pairs of
one metric and series (one family: "which recipes differ on this metric for these targets"). A verdict
line per family names the best group by mean and whether it beats the next best significantly."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from studio.files import write_text
from studio.report.plots import group_label
from studio.report.stats import holm, min_pairs, signed_rank
from studio.report.tables import csv_text, markdown_table

COLUMNS = ["metric", "recipe_a", "recipe_b", "n", "median_diff", "p", "p_holm", "winner"]
# Item metrics where less is better; every other one is read as "more is better".
LOWER_IS_BETTER = ("deletion_auc", "randomized_similarity")


@dataclass
class Comparison:
    """paired.csv's records (COLUMNS, then the series columns), one verdict line per metric (and series
    value), and a note when some or all pairs could not be tested."""

    records: list[dict] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    note: str = ""


def _by_item(rows: list[dict], columns: list[str], series: list[str], metric: str) -> OrderedDict:
    """series values -> column label -> {(target, seed): value} for the complete rows that have the metric
    (the mean where a group has one target and seed twice)."""
    out: OrderedDict = OrderedDict()
    for row in rows:
        if row["status"] != "complete" or metric not in row["_item"]:
            continue
        values = tuple(row[k] for k in series)
        cells = out.setdefault(values, OrderedDict()).setdefault(group_label(row, columns), {})
        key = (row.get("_subject", row["job"]), row.get("seed"))
        cells.setdefault(key, []).append(row["_item"][metric])
    return OrderedDict((s, OrderedDict((c, {k: sum(v) / len(v) for k, v in items.items()})
                                       for c, items in groups.items())) for s, groups in out.items())


def _family(metric: str, groups: OrderedDict, need: int, alpha: float) -> tuple[list[dict], list[tuple]]:
    """The tested pairs of one metric and series value (Holm-corrected), and the (n, keys) of untested ones."""
    records, untested = [], []
    labels = list(groups)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            keys = [k for k in groups[a] if k in groups[b]]
            n, median, p = signed_rank([groups[a][k] for k in keys], [groups[b][k] for k in keys])
            if n < need:
                untested.append((n, keys))
                continue
            records.append({"metric": metric, "recipe_a": a, "recipe_b": b, "n": n, "median_diff": median, "p": p})
    for record, adjusted in zip(records, holm([r["p"] for r in records])):
        better = (record["median_diff"] < 0) == (metric in LOWER_IS_BETTER)
        significant = adjusted < alpha and record["median_diff"] != 0
        record.update(p_holm=adjusted, winner=(record["recipe_a"] if better else record["recipe_b"]) if significant else "")
    return records, untested


def _verdict(metric: str, label: str, means: dict, records: list[dict], alpha: float) -> str:
    """`metric [series]: best X (mean, CI); vs next best Y: ... significant or not`."""
    order = sorted(means, key=lambda g: means[g][0], reverse=metric not in LOWER_IS_BETTER)
    best, (mean, ci) = order[0], means[order[0]]
    head = f"{metric}{f' [{label}]' if label != 'all' else ''}: best {best} (mean {mean:.4g}"
    head += f", 95% CI {ci[0]:.4g} to {ci[1]:.4g})" if ci else ")"
    second = order[1]
    match = next((r for r in records if {r["recipe_a"], r["recipe_b"]} == {best, second}), None)
    if match is None:
        return f"{head}; vs {second}: not tested (too few shared targets x seeds)"
    sign = 1 if match["recipe_a"] == best else -1
    wins = sum(1 for r in records if r["winner"] == best)
    verdict = {best: "significant", second: f"significant the other way (the paired median favours {second})"}.get(
        match["winner"], "not significant")
    return (f"{head}; vs next best {second}: median difference {sign * match['median_diff'] + 0.0:+.3g} over "
            f"{match['n']} pairs, Holm p = {match['p_holm']:.2g}: {verdict} at {alpha:g}; "
            f"significantly better than {wins} of {len(order) - 1} others")


def _means(summary: list[dict], columns: list[str], series: list[str], label: str, metric: str) -> dict:
    return {group_label(s, columns): (s[metric], (s[f"{metric}_ci_low"], s[f"{metric}_ci_high"])
                                      if s.get(f"{metric}_ci_low") is not None else None)
            for s in summary if metric in s and group_label(s, series) == label}


def _note(untested: list[tuple], tested: int, need: int, alpha: float, noun: str) -> str:
    """Why no test (or not every test) could run, in one line."""
    if not untested:
        return ""
    n, keys = max(untested, key=lambda u: u[0])
    if tested:
        return f"{len(untested)} pair(s) of {noun} share under {need} target x seed items: not tested"
    targets, seeds = len({k[0] for k in keys}), len({k[1] for k in keys})
    more = math.ceil(need / max(targets, 1))
    return (f"none can be run: two {noun} share at most {n} target x seed item(s) "
            f"({targets} target(s) x {seeds} seed(s)), and a two-sided Wilcoxon signed-rank test needs {need} "
            f"to reach p < {alpha:g}; run more seeds (seeds={more} or more)")


def compare(rows: list[dict], summary: list[dict], columns: list[str], series: list[str], metrics: list[str],
            alpha: float = 0.05) -> Comparison:
    """Paired tests of every two column groups per item metric and series value (see the module doc).

    rows / summary: studio.report.tables' job rows and summary (with the metrics' intervals)."""
    result, need, untested = Comparison(), min_pairs(alpha), []
    noun = f"{' / '.join(columns)} groups".strip()  # "recipe groups"
    for metric in metrics:
        for values, groups in _by_item(rows, columns, series, metric).items():
            if len(groups) < 2:
                continue
            records, skipped = _family(metric, groups, need, alpha)
            untested += skipped
            for record in records:
                record.update(zip(series, values))
            result.records += records
            label = group_label(dict(zip(series, values)), series)
            result.verdicts.append(_verdict(metric, label, _means(summary, columns, series, label, metric),
                                            records, alpha))
    result.note = _note(untested, len(result.records), need, alpha, noun)
    if not result.records and not untested:
        result.note = "none: the sweep has one group, nothing to compare"
    return result


def write_paired(sweep_dir: Path, comparison: Comparison, series: list[str], alpha: float) -> dict[str, Path]:
    """paired.csv (COLUMNS + the series columns) and paired.md (verdicts, note, then the table)."""
    columns = [*COLUMNS, *series]
    write_text(sweep_dir / "paired.csv", csv_text(columns, comparison.records))
    text = [f"# Paired tests: {sweep_dir}\n",
            f"Wilcoxon signed-rank on the same targets and seeds, Holm-corrected per metric"
            f"{' and ' + ', '.join(series) if series else ''}; winner: the better group where p_holm < {alpha:g}.\n"]
    text += [f"- {line}" for line in comparison.verdicts]
    if comparison.note:
        text.append(f"\nPaired tests: {comparison.note}\n")
    text += ["\n## Every pair\n",
             markdown_table(columns, [[r.get(c, "") for c in columns] for r in comparison.records])]
    write_text(sweep_dir / "paired.md", "\n".join(text))
    return {"paired.csv": sweep_dir / "paired.csv", "paired.md": sweep_dir / "paired.md"}
