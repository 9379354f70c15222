"""A sweep of `studio dissect` jobs: per group and concept, how many units each job labels with it, and the
best unit (highest IoU) over the group's jobs.

Writes dissect.csv / dissect.md into the sweep dir; each job's strips (its units with the highest IoU) go to
the gallery, one card per unit with its concept and IoU. (The generic summary keeps the jobs' own
dissect/units_per_concept/<concept> means.)
"""

from __future__ import annotations

import statistics
from collections import OrderedDict
from pathlib import Path

from studio.files import write_text
from studio.report.jobs import Job
from studio.report.tables import csv_text, markdown_table
from studio.report.view_output import ViewOutput, group_of, image_card

COLUMNS = ["concept", "jobs", "labelled_units", "labelled_per_job", "best_iou", "best_unit"]


def _dissect_jobs(jobs: list[Job]) -> list[Job]:
    return [j for j in jobs if j.status == "complete" and j.manifest.get("command") == "dissect"]


def aggregate(jobs: list[Job], keys: list[str], names: list[str]) -> list[dict]:
    """One row per (group, concept): units labelled per job (mean and each job's), the best unit's IoU."""
    groups: OrderedDict = OrderedDict()
    for job in _dissect_jobs(jobs):
        groups.setdefault(tuple(group_of(job, keys, names).items()), []).append(job)
    rows = []
    for group, members in groups.items():
        concepts = list(OrderedDict.fromkeys(k.rpartition("/")[2] for j in members for k in j.manifest["metrics"]
                                             if k.startswith("dissect/units_per_concept/")))
        for concept in concepts:
            counts = [j.manifest["metrics"].get(f"dissect/units_per_concept/{concept}", 0) for j in members]
            best = max(((i["iou"], j.name, i["unit"]) for j in members for i in j.manifest.get("items") or []
                        if i["concept"] == concept), default=None)
            rows.append({**dict(group), "concept": concept, "jobs": len(members),
                         "labelled_units": statistics.fmean(counts), "labelled_per_job": " ".join(map(str, counts)),
                         "best_iou": best[0] if best else 0.0,
                         "best_unit": f"{best[2]} (job {best[1]})" if best else ""})
    return rows


def write(sweep_dir: Path, jobs: list[Job], keys: list[str], names: list[str]) -> ViewOutput:
    rows = aggregate(jobs, keys, names)
    write_text(sweep_dir / "dissect.csv", csv_text([*names, *COLUMNS], rows))
    table = markdown_table([*names, "concept", "units labelled (mean)", "per job", "best IoU", "best unit"],
                           [[*(r[n] for n in names), r["concept"], f"{r['labelled_units']:.3g}",
                             r["labelled_per_job"], f"{r['best_iou']:.3f}", r["best_unit"]] for r in rows])
    markdown = ("## Network Dissection across jobs\n\nPer concept: the units each job labels with it (IoU ≥ "
                "dissect.min_iou), and the unit whose best concept it is with the highest IoU, labelled or not "
                "(its strip is in the gallery where it is among a job's dissect.strips).\n\n" + table)
    write_text(sweep_dir / "dissect.md", f"# Network Dissection: {sweep_dir}\n\n{markdown}")
    return ViewOutput(markdown, rows, {"dissect.csv": sweep_dir / "dissect.csv", "dissect.md": sweep_dir / "dissect.md"},
                      _cards(sweep_dir, jobs, keys, names))


def _cards(sweep_dir: Path, jobs: list[Job], keys: list[str], names: list[str]) -> list[dict]:
    """A gallery card per strip: the unit, its best concept and IoU, labelled or not."""
    cards = []
    for job in _dissect_jobs(jobs):
        units = {i["unit"]: i for i in job.manifest.get("items") or []}
        for key, rel in (job.manifest.get("artifacts") or {}).items():
            unit = next((u for u in units if rel == f"dissect_{u.replace(':', '_')}.png"), None)
            if key.startswith("strip_") and unit and (job.path / rel).is_file():
                item = units[unit]
                cards.append(image_card(job, rel, sweep_dir, unit, keys, names, concept=item["concept"],
                                        iou=item["iou"], labelled=item["labelled"]))
    return cards
