"""A report's numbers: one row per job x item, the summary per group (mean and std), and the CSV and
Markdown files they are written as."""

from __future__ import annotations

import csv
import io
import math
from collections import OrderedDict
from pathlib import Path

from studio.errors import is_number
from studio.files import write_text
from studio.report.jobs import Job
from studio.report.stats import mean_interval

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SUBJECT_FIELDS = ("index", "target", "layer")  # what an item is of: one row of the grid
# Run metrics that count things rather than measure them.
BOOKKEEPING = ("images", "failed", "targets", "seeds")

def _subject(item: dict) -> str:
    parts = [f"#{item[k]}" if k == "index" else str(item[k]) for k in SUBJECT_FIELDS if k in item]
    return " ".join(parts) or str(item.get("image", "?"))


def _is_finite(value) -> bool:
    return is_number(value) and math.isfinite(value)


def _item_metrics(item: dict) -> dict:
    return {k: float(v) for k, v in (item.get("metrics") or {}).items()
            if _is_finite(v) or isinstance(v, bool)}


def _run_metrics(manifest: dict) -> dict:
    metrics = {k: float(v) for k, v in (manifest.get("metrics") or {}).items() if _is_finite(v)}
    if metrics.get("images") and "render_seconds" in metrics and "seconds_per_image" not in metrics:
        metrics["seconds_per_image"] = metrics["render_seconds"] / metrics["images"]
    return metrics


def _duplicates_item_metric(name: str, item_metrics) -> bool:
    """`objective_mean`, `target_prob_min`: run metrics that only summarize an item metric."""
    base, _, stat = name.rpartition("_")
    return name in BOOKKEEPING or (stat in ("mean", "min", "max") and base in item_metrics)


# --- rows and summary ----------------------------------------------------------------------------
def key_columns(jobs: list[Job], keys: list[str]) -> list[str]:
    """Column names of the group keys: `config.<key>` where the key is also a metric (objective=class
    beside the metric objective) or an item field with other values."""
    taken = {"job", "status", "error", "jobs", "failed", "images", "seconds_per_image"}
    for job in jobs:
        taken.update((job.manifest.get("metrics") or {}).keys())
        for item in job.manifest.get("items") or []:
            taken.update(k for k in keys if k in item and str(item[k]) != job.value(k))
            taken.update((item.get("metrics") or {}).keys())
    return [f"config.{k}" if k in taken else k for k in keys]


def job_rows(jobs: list[Job], keys: list[str], names: list[str], sweep_dir: Path) -> list[dict]:
    """One row per (job, item), group keys under their column names; a failed job is one row with its error."""
    rows = []
    for job in jobs:
        base = {"job": job.name, "status": job.status, **{n: job.value(k) for k, n in zip(keys, names)}}
        if job.status != "complete":
            rows.append({**base, "error": job.error, "_run": {}, "_item": {}})
            continue
        run = _run_metrics(job.manifest)
        items = job.manifest.get("items") or [{}]
        for item in items:
            fields = {k: v for k, v in item.items() if k != "metrics" and not isinstance(v, (dict, list))}
            images = {k: v for k, v in fields.items() if isinstance(v, str) and v.lower().endswith(IMAGE_SUFFIXES)}
            row = {**base, **{k: v for k, v in fields.items() if k not in images}}
            if item:
                row["_subject"] = _subject(item)
            for k, rel in images.items():
                row[k] = str((job.path / rel).relative_to(sweep_dir)) if job.path else rel
            row["_item"], row["_run"], row["_images"] = _item_metrics(item), run, images
            rows.append(row)
    return rows


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def split_metric_names(rows: list[dict]) -> tuple[list[str], list[str]]:
    item, run = [], []
    for row in rows:
        item += [k for k in row["_item"] if k not in item]
        run += [k for k in row["_run"] if k not in run]
    return item, run


def summary_metric_names(item: list[str], run: list[str]) -> list[str]:
    """Item metrics, then run metrics that are not bookkeeping or a summary of an item metric."""
    return item + [k for k in run if not _duplicates_item_metric(k, item) and k not in item]


def summarize(rows: list[dict], keys: list[str], metric_names: list[str]) -> list[dict]:
    """Per group: jobs, failed jobs, images, and mean / std of each metric (over images, or over jobs
    for a run metric); an item metric's mean also gets its 95% bootstrap interval (`<name>_ci_low` / `_ci_high`)
    over the group's targets x seeds."""
    groups: OrderedDict = OrderedDict()
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for values, members in groups.items():
        ok = [r for r in members if r["status"] == "complete"]
        jobs = {r["job"] for r in members}
        entry = {**dict(zip(keys, values)), "jobs": len(jobs),
                 "failed": len({r["job"] for r in members if r["status"] != "complete"}),
                 "images": sum(1 for r in ok if r.get("image"))}
        per_job = {r["job"]: r["_run"] for r in ok}
        for name in metric_names:
            item = any(name in r["_item"] for r in ok)
            if item:
                values_ = [r["_item"][name] for r in ok if name in r["_item"]]
            else:
                values_ = [m[name] for m in per_job.values() if name in m]
            if values_:
                entry[name], entry[f"{name}_std"] = _mean_std(values_)
            interval = mean_interval(values_) if item else None
            if interval:
                entry[f"{name}_ci_low"], entry[f"{name}_ci_high"] = interval
        out.append(entry)
    return out


# --- writing tables ------------------------------------------------------------------------------
def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def csv_text(columns: list[str], records: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in record.items()})
    return buffer.getvalue()


def _md_cell(value) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: list[str], records: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in record) + " |" for record in records]
    return "\n".join(lines) + "\n"


def flat_row(row: dict) -> dict:
    flat = {k: v for k, v in row.items() if not k.startswith("_")}
    flat.update(row["_item"])
    flat.update({f"run.{k}": v for k, v in row["_run"].items()})
    return flat


def _row_columns(rows: list[dict], keys: list[str], item_names, run_names) -> list[str]:
    fixed = ["job", "status", *keys]
    fields = []
    for row in rows:
        fields += [k for k in row if not k.startswith("_") and k not in fixed and k not in fields]
    fields.sort(key=lambda k: (k not in ("target", "seed"), k == "error", k == "image"))
    return fixed + fields + item_names + [f"run.{k}" for k in run_names]


def summary_markdown(summary: list[dict], keys: list[str], metric_names: list[str]) -> str:
    shown = [m for m in metric_names if any(m in s for s in summary)]
    columns = [*(keys or ["group"]), "jobs", "failed", "images", *shown]
    records = []
    for s in summary:
        cells = [s[k] for k in keys] if keys else ["all"]
        cells += [s["jobs"], s["failed"], s["images"]]
        cells += [_mean_cell(s, m) for m in shown]
        records.append(cells)
    return markdown_table(columns, records)


def _mean_cell(entry: dict, metric: str) -> str:
    """`mean [ci_low, ci_high]` where the mean has an interval, else `mean ± std` (or the value alone)."""
    if metric not in entry:
        return ""
    if f"{metric}_ci_low" in entry:
        return f"{entry[metric]:.4g} [{entry[metric + '_ci_low']:.4g}, {entry[metric + '_ci_high']:.4g}]"
    if f"{metric}_std" not in entry:  # a count per group (quiz_answers)
        return _fmt(entry[metric])
    return f"{entry[metric]:.4g} ± {entry[metric + '_std']:.2g}"


def _interval_columns(summary: list[dict], names: list[str]) -> list[str]:
    return [f"{n}_ci_{end}" for n in names if any(f"{n}_ci_low" in s for s in summary) for end in ("low", "high")]


def _with_group_intervals(flat: list[dict], summary: list[dict], keys: list[str], columns: list[str]) -> list[dict]:
    """table.csv's rows with their group's interval of each item metric (as `run.<name>` has its job's value)."""
    by_group = {tuple(s[k] for k in keys): s for s in summary}
    return [{**row, **{c: by_group[tuple(row[k] for k in keys)].get(c) for c in columns}} for row in flat]


def _group_metric_names(summary_names, item_names, run_names) -> list[str]:
    """Metrics of a whole group, from neither its items nor its jobs (the quiz's answers)."""
    return [n for n in summary_names if n not in item_names and n not in run_names]


def _group_metric_note(summary, summary_names, item_names, run_names) -> list[str]:
    names = [n for n in _group_metric_names(summary_names, item_names, run_names) if any(f"{n}_ci_low" in s for s in summary)]
    return [f"{', '.join(names)}: a share over the group's answers [95% Wilson interval].\n"] if names else []


def write_tables(sweep_dir: Path, rows, summary, keys, item_names, run_names, summary_names, failed,
                 headline: list[str] | None = None, sections: list[str] = ()) -> dict:
    columns = _row_columns(rows, keys, item_names, run_names)
    flat = [flat_row(r) for r in rows]
    intervals = _interval_columns(summary, item_names)
    for name in _group_metric_names(summary_names, item_names, run_names):  # measured per group (quiz_accuracy)
        intervals += [name, *_interval_columns(summary, [name])]
    split = len(columns) - len(run_names)  # the group's intervals after the item metrics, before run.<name>
    write_text(sweep_dir / "table.csv", csv_text([*columns[:split], *intervals, *columns[split:]],
                                                 _with_group_intervals(flat, summary, keys, intervals)))
    summary_columns = [*keys, "jobs", "failed", "images"]
    for name in summary_names:
        std = [f"{name}_std"] if any(f"{name}_std" in s for s in summary) else []  # none for a count
        summary_columns += [name, *std, *_interval_columns(summary, [name])]
    write_text(sweep_dir / "summary.csv", csv_text(summary_columns, summary))

    md_columns = [c for c in columns if not c.startswith("run.") and c not in ("status",)]
    text = [f"# Sweep report: {sweep_dir}\n",
            f"Groups by: {', '.join(keys) if keys else '(one group)'}; mean [95% bootstrap interval] over targets and "
            f"seeds (run metrics: mean ± std over jobs).\n", *_group_metric_note(summary, summary_names, item_names, run_names),
            *(["## Headline\n", summary_markdown(summary, keys, headline), ""] if headline else []),
            "## Summary\n", summary_markdown(summary, keys, summary_names)]
    if failed:
        text += ["\n## Failed jobs\n", markdown_table(["job", *keys, "error"],
                                          [[f["job"], *[f.get(k, "") for k in keys], f["error"]] for f in failed])]
    text += [f"\n{section}" for section in sections]
    text += ["\n## Every job × item\n", markdown_table(md_columns, [[r.get(c, "") for c in md_columns] for r in flat])]
    write_text(sweep_dir / "table.md", "\n".join(text))
    return {"table.csv": sweep_dir / "table.csv", "summary.csv": sweep_dir / "summary.csv",
            "table.md": sweep_dir / "table.md"}


def csv_and_markdown(rows: list[dict], columns: list[str]) -> tuple[str, str]:
    """(CSV, Markdown) renderings of the same rows (floats to 4 decimals in Markdown)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)

    def fmt(value):
        return f"{value:.4f}" if isinstance(value, float) else "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return buffer.getvalue(), "\n".join(lines) + "\n"
