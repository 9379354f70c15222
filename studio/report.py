"""`studio report <sweep dir>`: every job of a sweep side by side, in numbers and pictures.

Each job's manifest.json stays the source of truth; the report only reads them (and each job's
.hydra/ files, for what the job was asked to do) and writes into the sweep dir:

    table.csv, table.md    one row per job x item (image): the job's varying choices, the item's fields,
                           its metrics and the job's metrics (`run.<name>` in the CSV); table.md starts
                           with the summary
    summary.csv            one row per group: mean and std of every numeric metric over the group's
                           images (item metrics) or jobs (run metrics)
    report.json            all of the above, machine-readable, plus the failed jobs
    plots/<metric>.png     each metric per group (mean, error bar = std)
    plots/history.png      the objective per step, mean over each group's images (band = std)
    comparison_grid.png    rows = targets, columns = groups
    gallery/index.html     every image, with its copy under gallery/images/ (see studio/gallery)

A *group* is a value of the config choices that vary across the sweep's jobs (e.g. `recipe`, or
`regularizer` and `param`), seeds averaged over. Choices that another varying choice determines
(`regularizer` when `recipe` varies) are left out of the group, and choices that change the targets
themselves (`objective`) become rows of the grid instead of columns.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from studio.errors import StudioError
from studio.files import atomic_path, write_json, write_text

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SUBJECT_FIELDS = ("index", "target", "layer")  # what an item is of: one row of the grid
# Run metrics that count things rather than measure them.
BOOKKEEPING = ("images", "failed", "targets", "seeds")


@dataclass
class Job:
    """One job of the sweep as found on disk."""

    name: str                    # its directory relative to the sweep dir ("3"), or "(job k)" if never started
    path: Path | None
    status: str                  # complete | failed
    error: str = ""
    choices: dict = field(default_factory=dict)    # config group -> choice (hydra.runtime.choices)
    overrides: dict = field(default_factory=dict)  # key -> value of the job's command-line overrides
    manifest: dict = field(default_factory=dict)

    def value(self, key: str) -> str:
        if key in self.choices:
            return self.choices[key]
        return self.overrides.get(key, "")


@dataclass
class Report:
    """What `report` wrote (paths) and found (rows per image, summary per group, failed jobs)."""

    sweep_dir: Path
    by: list[str]          # the group keys
    columns: list[str]     # their column names in rows and summary (config.<key> where a metric has the name)
    rows: list[dict]
    summary: list[dict]
    metrics: list[str]
    failed: list[dict]
    jobs: int
    paths: dict[str, Path]


# --- finding the jobs ----------------------------------------------------------------------------
def _override_dict(overrides: list[str]) -> dict[str, str]:
    out = {}
    for text in overrides:
        key, sep, value = str(text).partition("=")
        key = key.lstrip("+~")
        if sep and re.split(r"[./]", key)[0] != "hydra":
            out[key] = value
    return out


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Directories under the sweep dir that hold a job (its .hydra/ or its manifest), in job order."""
    found = set()
    for marker in ("manifest.json", ".hydra/overrides.yaml"):
        for path in sweep_dir.glob(f"*/{marker}"):
            found.add(path.parent if marker == "manifest.json" else path.parent.parent)
        for path in sweep_dir.glob(f"*/*/{marker}"):
            found.add(path.parent if marker == "manifest.json" else path.parent.parent)
    found = {d for d in found if d.relative_to(sweep_dir).parts[0] not in ("gallery", "plots")}
    found = {d for d in found if d.parent not in found}  # a job's own subfolders are not jobs

    def order(d: Path):
        parts = d.relative_to(sweep_dir).parts
        return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]

    return sorted(found, key=order)


def _expected_overrides(sweep_dir: Path) -> list[list[str]] | None:
    """The override list of every job the sweep asked for (basic sweeper), from multirun.yaml; None if unknown."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        cfg = OmegaConf.load(sweep_dir / "multirun.yaml")
        if not str(cfg.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return None
        params = cfg.hydra.sweeper.get("params") or {}
        arguments = [f"{k}={v}" for k, v in params.items()] + list(cfg.hydra.overrides.task)
        parsed = OverridesParser.create().parse_overrides(arguments)
        return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception:  # noqa: BLE001 - another sweeper, an old or hand-edited file: use what is on disk
        return None


def _read_job(sweep_dir: Path, path: Path) -> Job | None:
    """The job in `path`, or None for a single run's dir that happens to lie in the sweep dir."""
    job = Job(name=str(path.relative_to(sweep_dir)), path=path, status="failed")
    hydra_dir = path / ".hydra"
    try:
        job.overrides = _override_dict(OmegaConf.to_container(OmegaConf.load(hydra_dir / "overrides.yaml")))
        hydra = OmegaConf.load(hydra_dir / "hydra.yaml").hydra
        if str(hydra.get("mode")) == "RUN":
            return None
        job.choices = {k: str(v) for k, v in OmegaConf.to_container(hydra.runtime.choices).items()
                       if not k.startswith("hydra")}
    except Exception:  # noqa: BLE001 - no .hydra/ (hydra.output_subdir=null): the manifest alone
        pass
    try:
        job.manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        job.error = "no manifest: the job was killed or crashed before it finished"
        return job
    except (OSError, ValueError) as e:
        job.error = f"unreadable manifest ({type(e).__name__})"
        return job
    job.status = "complete" if job.manifest.get("status") == "complete" else "failed"
    if job.status != "complete":
        job.error = str(job.manifest.get("error") or f"status {job.manifest.get('status')!r}")
    return job


def find_jobs(sweep_dir: str | Path) -> tuple[list[Job], list[str]]:
    """The sweep's jobs in job order, and the job dirs left out (from an earlier, different sweep there)."""
    sweep_dir = Path(sweep_dir)
    on_disk = [job for job in (_read_job(sweep_dir, d) for d in _job_dirs(sweep_dir)) if job is not None]
    expected = _expected_overrides(sweep_dir)
    if expected is None:
        return on_disk, []
    by_overrides = {}
    for job in on_disk:
        by_overrides.setdefault(tuple(sorted(job.overrides.items())), job)
    jobs = []
    for k, overrides in enumerate(expected):
        key = tuple(sorted(_override_dict(overrides).items()))
        job = by_overrides.pop(key, None)
        if job is None:
            job = Job(name=f"(job {k})", path=None, status="failed", error="never started (the sweep stopped before it)",
                      overrides=_override_dict(overrides))
        jobs.append(job)
    return jobs, [job.name for job in by_overrides.values()]


# --- grouping ------------------------------------------------------------------------------------
def _determines(jobs: list[Job], a: str, b: str) -> bool:
    seen = {}
    for job in jobs:
        if seen.setdefault(job.value(a), job.value(b)) != job.value(b):
            return False
    return True


def varying_keys(jobs: list[Job], average_over=("seed",)) -> list[str]:
    """Config choices and overrides whose value differs between jobs: overrides first, in their order."""
    keys = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    for job in jobs:
        keys += [k for k in job.choices if k not in keys]
    return [k for k in keys if k not in average_over and len({job.value(k) for job in jobs}) > 1]


def group_keys(jobs: list[Job], average_over=("seed",)) -> list[str]:
    """The varying keys minus those another varying key determines (regularizer when recipe varies)."""
    keys = varying_keys(jobs, average_over)
    kept = []
    for i, b in enumerate(keys):
        if not any(_determines(jobs, a, b) and (j < i or not _determines(jobs, b, a))
                   for j, a in enumerate(keys) if a != b):
            kept.append(b)
    return kept


def _subject(item: dict) -> str:
    parts = [f"#{item[k]}" if k == "index" else str(item[k]) for k in SUBJECT_FIELDS if k in item]
    return " ".join(parts) or str(item.get("image", "?"))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _item_metrics(item: dict) -> dict:
    return {k: float(v) for k, v in (item.get("metrics") or {}).items()
            if _is_number(v) or isinstance(v, bool)}


def _run_metrics(manifest: dict) -> dict:
    metrics = {k: float(v) for k, v in (manifest.get("metrics") or {}).items() if _is_number(v)}
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


def _rows(jobs: list[Job], keys: list[str], names: list[str], sweep_dir: Path) -> list[dict]:
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


def _metric_names(rows: list[dict]) -> tuple[list[str], list[str]]:
    item, run = [], []
    for row in rows:
        item += [k for k in row["_item"] if k not in item]
        run += [k for k in row["_run"] if k not in run]
    return item, run


def _summary_metric_names(item: list[str], run: list[str]) -> list[str]:
    """Item metrics, then run metrics that are not bookkeeping or a summary of an item metric."""
    return item + [k for k in run if not _duplicates_item_metric(k, item) and k not in item]


def summarize(rows: list[dict], keys: list[str], metric_names: list[str]) -> list[dict]:
    """Per group: jobs, failed jobs, images, and mean / std of each metric (over images, or over jobs
    for a run metric)."""
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
            if any(name in r["_item"] for r in ok):
                values_ = [r["_item"][name] for r in ok if name in r["_item"]]
            else:
                values_ = [m[name] for m in per_job.values() if name in m]
            if values_:
                entry[name], entry[f"{name}_std"] = _mean_std(values_)
        out.append(entry)
    return out


# --- writing tables ------------------------------------------------------------------------------
def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _csv(columns: list[str], records: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in record.items()})
    return buffer.getvalue()


def _md_cell(value) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _md(columns: list[str], records: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in record) + " |" for record in records]
    return "\n".join(lines) + "\n"


def _flat_row(row: dict) -> dict:
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


def _summary_md(summary: list[dict], keys: list[str], metric_names: list[str]) -> str:
    shown = [m for m in metric_names if any(m in s for s in summary)]
    columns = [*(keys or ["group"]), "jobs", "failed", "images", *shown]
    records = []
    for s in summary:
        cells = [s[k] for k in keys] if keys else ["all"]
        cells += [s["jobs"], s["failed"], s["images"]]
        cells += [f"{s[m]:.4g} ± {s[m + '_std']:.2g}" if m in s else "" for m in shown]
        records.append(cells)
    return _md(columns, records)


def write_tables(sweep_dir: Path, rows, summary, keys, item_names, run_names, summary_names, failed) -> dict:
    columns = _row_columns(rows, keys, item_names, run_names)
    flat = [_flat_row(r) for r in rows]
    write_text(sweep_dir / "table.csv", _csv(columns, flat))
    summary_columns = [*keys, "jobs", "failed", "images"]
    for name in summary_names:
        summary_columns += [name, f"{name}_std"]
    write_text(sweep_dir / "summary.csv", _csv(summary_columns, summary))

    md_columns = [c for c in columns if not c.startswith("run.") and c not in ("status",)]
    text = [f"# Sweep report: {sweep_dir}\n",
            f"Groups by: {', '.join(keys) if keys else '(one group)'}; mean ± std over targets and seeds "
            f"(run metrics: over jobs).\n", "## Summary\n", _summary_md(summary, keys, summary_names)]
    if failed:
        text += ["\n## Failed jobs\n", _md(["job", *keys, "error"],
                                          [[f["job"], *[f.get(k, "") for k in keys], f["error"]] for f in failed])]
    text += ["\n## Every job × item\n", _md(md_columns, [[r.get(c, "") for c in md_columns] for r in flat])]
    write_text(sweep_dir / "table.md", "\n".join(text))
    return {"table.csv": sweep_dir / "table.csv", "summary.csv": sweep_dir / "summary.csv",
            "table.md": sweep_dir / "table.md"}


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


def _label(row: dict, keys: list[str]) -> str:
    return " / ".join(str(row[k]) for k in keys) if keys else "all"


def _savefig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(out_dir: Path, summary: list[dict], columns: list[str], series: list[str],
                 metric_names: list[str]) -> list[Path]:
    """One bar chart per metric: x = column groups, one bar per series (e.g. objective), error bar = std."""
    plt = _pyplot()
    xs = list(OrderedDict.fromkeys(_label(s, columns) for s in summary))
    names = list(OrderedDict.fromkeys(_label(s, series) for s in summary))
    paths = []
    for metric in metric_names:
        if not any(metric in s for s in summary):
            continue
        having = [n for n in names if any(metric in s and _label(s, series) == n for s in summary)]
        fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(xs) * len(having) ** 0.5 + 1.5), 3.2))
        width = 0.8 / len(having)
        for j, name in enumerate(having):
            means, stds, pos = [], [], []
            for i, x in enumerate(xs):
                match = [s for s in summary if _label(s, columns) == x and _label(s, series) == name and metric in s]
                if match:
                    means.append(match[0][metric])
                    stds.append(match[0][f"{metric}_std"])
                    pos.append(i - 0.4 + width * (j + 0.5))
            ax.bar(pos, means, width, yerr=stds, capsize=2, label=name if series else None)
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs, rotation=30, ha="right")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per {' / '.join(columns) or 'group'} (mean ± std)")
        if series:
            ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        path = out_dir / f"{_slug(metric)}.png"
        _savefig(fig, path)
        paths.append(path)
    return paths


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
        key = (_label(values, series), _label(values, columns))
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
    _savefig(fig, path)
    return path


def _load_rgb(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def comparison_grid(path: Path, rows: list[dict], columns: list[str], cell: int = 56) -> tuple[list, list] | None:
    """Rows = targets (subjects), columns = column groups; each cell the lowest seed's image.
    Returns the (row, column) labels, or None when there is no image."""
    import numpy as np

    cells: OrderedDict = OrderedDict()
    column_labels: list[str] = []
    for row in rows:
        if row["status"] != "complete" or not row.get("image") or "_subject" not in row:
            continue
        label = _label(row, columns)
        if label not in column_labels:
            column_labels.append(label)
        key = (row["_subject"], label)
        seed = row.get("seed", 0)
        if key not in cells or (isinstance(seed, (int, float)) and seed < cells[key][0]):
            cells[key] = (seed if isinstance(seed, (int, float)) else 0, row["image"])
    if not cells:
        return None
    subjects = list(OrderedDict.fromkeys(k[0] for k in cells))
    sweep_dir = path.parent
    images = {k: _load_rgb(sweep_dir / v[1]) for k, v in cells.items()}
    size = max(max(a.shape[:2]) for a in images.values())
    factor = max(1, cell // size)
    side, pad = size * factor, 2
    mosaic = np.full((len(subjects) * (side + pad) + pad, len(column_labels) * (side + pad) + pad, 3), 128, np.uint8)
    for (subject, label), array in images.items():
        r, c = subjects.index(subject), column_labels.index(label)
        array = array.repeat(factor, 0).repeat(factor, 1)
        y, x = pad + r * (side + pad), pad + c * (side + pad)
        mosaic[y:y + array.shape[0], x:x + array.shape[1]] = array
    plt = _pyplot()
    h, w = mosaic.shape[:2]
    fig, ax = plt.subplots(figsize=(w / 100 + 1.6, h / 100 + 1.2))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([pad + c * (side + pad) + side / 2 for c in range(len(column_labels))])
    ax.set_xticklabels(column_labels, rotation=30, ha="left", fontsize=8)
    ax.xaxis.tick_top()
    ax.set_title(f"rows: targets; columns: {' / '.join(columns) or 'all'} (lowest seed)", fontsize=9, pad=28)
    ax.set_yticks([pad + r * (side + pad) + side / 2 for r in range(len(subjects))])
    ax.set_yticklabels(subjects, fontsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    _savefig(fig, path)
    return subjects, column_labels


# --- the report ----------------------------------------------------------------------------------
def report(sweep_dir: str | Path, by: list[str] | None = None, average_over=("seed",), gallery: bool = True,
           tracker=None, cell: int = 56) -> Report:
    """Aggregate a sweep dir's jobs into tables, plots, a comparison grid and the gallery (see the module doc).

    by: the keys that make a group (default: the varying choices, see group_keys); average_over: keys
    averaged within a group. tracker: a studio.tracking.Tracker to mirror the summary to W&B."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise StudioError(f"sweep dir not found: {sweep_dir}")
    jobs, stale = find_jobs(sweep_dir)
    if not jobs:
        raise StudioError(f"no jobs in {sweep_dir}: expected job dirs with manifest.json (a `-m` sweep's dir)")
    keys = list(by) if by else group_keys(jobs, tuple(average_over))
    unknown = [k for k in keys if not any(k in j.choices or k in j.overrides for j in jobs)]
    if unknown:
        raise StudioError(f"unknown report.by key {unknown[0]!r}; choose from: "
                          f"{', '.join(varying_keys(jobs, ()) or ['(nothing varies)'])}")
    names = key_columns(jobs, keys)
    rows = _rows(jobs, keys, names, sweep_dir)
    item_names, run_names = _metric_names(rows)
    summary_names = _summary_metric_names(item_names, run_names)
    summary = summarize(rows, names, summary_names)
    failed = [{"job": j.name, **{n: j.value(k) for k, n in zip(keys, names)}, "error": j.error}
              for j in jobs if j.status != "complete"]

    paths = write_tables(sweep_dir, rows, summary, names, item_names, run_names, summary_names, failed)
    series = target_keys(rows, names)
    columns = [n for n in names if n not in series]
    plots = plot_metrics(sweep_dir / "plots", summary, columns, series, summary_names)
    history = plot_history(sweep_dir / "plots" / "history.png", jobs, keys, names, columns, series)
    grid_path = sweep_dir / "comparison_grid.png"
    layout = comparison_grid(grid_path, rows, columns, cell)
    grid = grid_path if layout else None
    paths.update({f"plots/{p.name}": p for p in plots})
    if history:
        paths["plots/history.png"] = history
    for old in (sweep_dir / "plots").glob("*.png"):  # plots of metrics an earlier report had
        if old not in (*plots, history):
            old.unlink()
    if grid:
        paths["comparison_grid.png"] = grid
    if gallery:
        from studio.gallery import write_gallery

        paths["gallery/index.html"] = write_gallery(sweep_dir, jobs, rows, keys, names, varying_keys(jobs, ()),
                                                    summary_names, summary)
    result = Report(sweep_dir, keys, names, rows, summary, summary_names, failed, len(jobs), paths)
    write_json(sweep_dir / "report.json", {
        "sweep_dir": str(sweep_dir), "by": keys, "columns": names, "jobs": len(jobs), "failed": failed, "left_out": stale,
        "metrics": summary_names, "summary": summary,
        "grid": {"rows": layout[0], "columns": layout[1]} if layout else None,
        "rows": [_flat_row(r) for r in rows],
        "files": {k: str(p.relative_to(sweep_dir)) for k, p in paths.items()}})
    paths["report.json"] = sweep_dir / "report.json"
    if tracker is not None:
        _mirror(tracker, result, grid, plots + ([history] if history else []))
    return result


def _mirror(tracker, result: Report, grid: Path | None, plots: list[Path]) -> None:
    """The summary table (and the grid and plots) to W&B; the files on disk stay the source of truth."""
    columns = [*result.columns, "jobs", "failed", "images"]
    for name in result.metrics:
        columns += [name, f"{name}_std"]
    tracker.log_table("report/summary", [{c: s.get(c) for c in columns} for s in result.summary])
    if grid:
        tracker.log_images("report/comparison_grid", [grid])
    for plot in plots:  # one key each: W&B shows images of one key at one size
        tracker.log_images(f"report/plots/{plot.stem}", [plot])
    tracker.summary({"report/jobs": result.jobs, "report/failed": len(result.failed)})


def sweep_group(sweep_dir) -> str:
    """The W&B group of a sweep's jobs (studio.cli uses the resolved sweep dir), so the report joins it."""
    return str(Path(str(sweep_dir)).resolve())


def _print(result: Report) -> None:
    md = _summary_md(result.summary, result.columns, result.metrics)
    print(md, end="")
    if result.failed:
        print(f"{len(result.failed)} of {result.jobs} job(s) failed:")
        for f in result.failed:
            print(f"  {f['job']}: {f['error']}")
    print(f"report -> {result.paths['table.md']}")
    if "gallery/index.html" in result.paths:
        print(f"gallery -> {result.paths['gallery/index.html'].resolve().as_uri()}")


def command(cfg, tracker, run_dir: Path):
    """The `report` command: report cfg.sweep into itself; the summary rows are this run's items."""
    from studio.runs import Result

    options = cfg.get("report") or {}
    by = options.get("by")
    result = report(Path(str(cfg.sweep)), by=list(by) if by and by != "auto" else None,
                    average_over=tuple(options.get("average_over") or ()), gallery=bool(options.get("gallery", True)),
                    tracker=tracker, cell=int(options.get("cell", 56)))
    _print(result)
    metrics = {"jobs": result.jobs, "failed": len(result.failed), "images": len(result.rows)}
    return Result(metrics, result.summary, {k: str(p.resolve()) for k, p in result.paths.items()})


class ReportCallback(Callback):
    """Hydra callback: report the sweep when a multirun ends (hydra.callbacks in an experiment config).

    Runs on the machine that launched the sweep, whatever the launcher. A failed report warns and
    never hides the jobs' own results."""

    def __init__(self, by=None, average_over=("seed",), gallery: bool = True):
        self.by, self.average_over, self.gallery = by, average_over, gallery

    def on_multirun_end(self, config, **kwargs) -> None:
        import sys

        from studio.tracking import Tracker

        sweep_dir = Path(str(config.hydra.sweep.dir))
        cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            with Tracker(cfg, "report", sweep_dir, sweep_group(sweep_dir)) as tracker:
                result = report(sweep_dir, by=list(self.by) if self.by else None,
                                average_over=tuple(self.average_over or ()), gallery=self.gallery, tracker=tracker)
        except StudioError as e:
            print(f"studio report: error: {e}", file=sys.stderr)
            return
        _print(result)

