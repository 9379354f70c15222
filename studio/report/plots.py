"""A report's plots: each metric per group (bar, error bar = the mean's 95% interval, or std where the
metric has none) and the objective per step."""

from __future__ import annotations

import csv
import re
from collections import OrderedDict
from pathlib import Path

from studio.images import pyplot as _pyplot
from studio.images import save_figure
from studio.report.jobs import Job

# --- pictures ------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "metric"


def target_keys(rows: list[dict], keys: list[str]) -> list[str]:
    """Group keys whose values have disjoint targets (objective=class vs channel): rows, not columns."""
    out = []
    for key in keys:
        subjects: dict = {}
        for row in rows:
            if "_subject" in row:
                subjects.setdefault(row[key], set()).add(row["_subject"])
        sets = list(subjects.values())
        if len(sets) > 1 and all(not (a & b) for i, a in enumerate(sets) for b in sets[i + 1:]):
            out.append(key)
    return out


def group_label(row: dict, keys: list[str]) -> str:
    return " / ".join(str(row[k]) for k in keys) if keys else "all"


def plot_metrics(out_dir: Path, summary: list[dict], columns: list[str], series: list[str],
                 metric_names: list[str]) -> list[Path]:
    """One bar chart per metric: x = column groups, one bar per series (e.g. objective), error bar = the
    mean's 95% bootstrap interval (item metrics), or std (run metrics: no interval over jobs)."""
    plt = _pyplot()
    xs = list(OrderedDict.fromkeys(group_label(s, columns) for s in summary))
    names = list(OrderedDict.fromkeys(group_label(s, series) for s in summary))
    paths = []
    for metric in metric_names:
        if not any(metric in s for s in summary):
            continue
        having = [n for n in names if any(metric in s and group_label(s, series) == n for s in summary)]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(xs) * len(having) ** 0.5 + 1.5), 3.2))
        width = 0.8 / len(having)
        for j, name in enumerate(having):
            means, errors, pos = [], [], []
            for i, x in enumerate(xs):
                match = [s for s in summary if group_label(s, columns) == x and group_label(s, series) == name and metric in s]
                if match:
                    means.append(match[0][metric])
                    errors.append(_error_bar(match[0], metric))
                    pos.append(i - 0.4 + width * (j + 0.5))
            ax.bar(pos, means, width, yerr=list(zip(*errors)), capsize=2, label=name if series else None)
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs, rotation=30, ha="right")
        ax.set_ylabel(metric)
        spread = "mean, 95% CI" if any(f"{metric}_ci_low" in s for s in summary) else "mean ± std"
        ax.set_title(f"{metric} per {' / '.join(columns) or 'group'} ({spread})")
        if series:
            ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        path = out_dir / f"{_slug(metric)}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


def _error_bar(entry: dict, metric: str) -> tuple[float, float]:
    """(below, above) the mean: to the ends of its interval, or one std (0 for a single value or a count)."""
    mean = entry[metric]
    if f"{metric}_ci_low" in entry:
        return max(mean - entry[f"{metric}_ci_low"], 0.0), max(entry[f"{metric}_ci_high"] - mean, 0.0)
    std = entry.get(f"{metric}_std", 0.0)  # a count (quiz_answers) has neither
    return std, std


def _history(path: Path) -> tuple[list[str], list[list[float]]]:
    """history.csv: (column names, one list of values per step) without the step column."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)[1:]
        return header, [[float(v) for v in line[1:]] for line in reader if line]


def plot_history(path: Path, jobs: list[Job], keys: list[str], names: list[str], columns: list[str],
                 series: list[str]) -> Path | None:
    """Objective per step: one panel per series value, one line per column group (mean over images, band = std)."""
    curves: OrderedDict = OrderedDict()  # (series label, column label) -> list of per-image curves
    for job in jobs:
        rel = (job.manifest.get("artifacts") or {}).get("history") if job.status == "complete" else None
        if not rel or not (job.path / rel).is_file():
            continue
        _, steps = _history(job.path / rel)
        if not steps:
            continue
        values = {n: job.value(k) for k, n in zip(keys, names)}
        key = (group_label(values, series), group_label(values, columns))
        curves.setdefault(key, []).extend([[step[i] for step in steps] for i in range(len(steps[0]))])
    if not curves:
        return None
    import numpy as np

    plt = _pyplot()
    panels = list(OrderedDict.fromkeys(k[0] for k in curves))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for (p, label), members in curves.items():
            if p != panel:
                continue
            n = min(len(c) for c in members)
            data = np.array([c[:n] for c in members])
            mean, std = data.mean(0), data.std(0)
            x = np.arange(1, n + 1)
            ax.plot(x, mean, label=label, linewidth=1.2)
            ax.fill_between(x, mean - std, mean + std, alpha=0.08)
        ax.set_xlabel("step")
        ax.set_ylabel("objective")
        ax.set_title(f"objective per step{': ' + panel if series else ''}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
    return path
