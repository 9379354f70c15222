"""What a command's report view (studio/report/views.py) hands back, and the helpers the views share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from studio.report.jobs import Job


@dataclass
class ViewOutput:
    markdown: str                                     # a section for table.md ("## ..." and its table)
    rows: list[dict]                                  # its table's rows (W&B mirror, report.json)
    paths: dict[str, Path] = field(default_factory=dict)  # files written into the sweep dir
    cards: list[dict] = field(default_factory=list)   # gallery rows: {"job", "image", "_subject", fields...}


def group_of(job: Job, keys: list[str], names: list[str]) -> dict:
    return {n: job.value(k) for k, n in zip(keys, names)}


def image_card(job: Job, rel: str, sweep_dir: Path, subject: str, keys: list[str], names: list[str],
               **fields) -> dict:
    """A gallery row for one of a job's own images (a plot or strip, not a manifest item's image)."""
    image = str((job.path / rel).relative_to(sweep_dir))
    return {"job": job.name, "status": "complete", **group_of(job, keys, names), **fields, "image": image,
            "_subject": subject, "_item": {}, "_run": {}, "_images": {"image": rel}}
