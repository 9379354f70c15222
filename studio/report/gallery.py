"""The sweep gallery: one static page to browse every image of a sweep.

`gallery/index.html` is self-contained (inline CSS and JS, the data as inline JSON) and its images
are copied beside it under `gallery/images/`, so it works from file:// with no server and no
network, and the folder can be zipped and sent. The page filters by every varying choice, target
and seed, sorts by any metric, enlarges an image with its config and metrics, and shows two picked
images side by side. Its quiz view asks the two-choice questions of studio/report/quiz.py, with their
exemplars cut out under `gallery/quiz/`. studio.report builds the rows this module reads.
"""

from __future__ import annotations

import html
import json
import shutil
from importlib import resources
from pathlib import Path

from studio.files import atomic_path, write_text
from studio.report.quiz import page_data, write_tiles

TEMPLATE = "index.html"
FACETS_ALWAYS = ("regularizer", "param")  # filters a user expects even when the sweep did not vary them


def _copy(source: Path, target: Path) -> None:
    """Copy atomically: a killed report never leaves half an image."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _json_for_script(obj) -> str:
    """JSON that cannot end its <script> element early (no <, >, & characters)."""
    text = json.dumps(obj, default=str, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _facets(jobs, rows: list[dict], keys: list[str], varying: list[str]) -> list[str]:
    facets = [k for k in [*keys, *varying] if k not in ("target", "seed")]
    facets = list(dict.fromkeys(facets))
    facets += [k for k in FACETS_ALWAYS if k not in facets and any(k in j.choices for j in jobs)]
    if any("_subject" in r for r in rows):
        facets.append("target")
    if any("seed" in r for r in rows):
        facets.append("seed")
    return facets


def _clean(value):
    """Drop non-finite floats (JSON has no NaN) so the page's JSON.parse never fails."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _exemplars(job, row: dict, sweep_dir: Path) -> dict:
    """The item's natural exemplars (its manifest `exemplars`: top, bottom), shown beside its image."""
    image = row["_images"].get("image")
    item = next((i for i in job.manifest.get("items") or [] if i.get("image") == image), {})
    return {f"exemplars {k}": f"images/{(job.path / rel).relative_to(sweep_dir) if job.path else rel}"
            for k, rel in (item.get("exemplars") or {}).items()}


def gallery_data(sweep_dir: Path, jobs, rows: list[dict], keys: list[str], names: list[str], varying: list[str],
                 metrics: list[str], summary: list[dict] | None = None) -> dict:
    """What the page shows: cards (one per image), jobs (config, overrides, metrics), facets, metrics.

    keys: the group keys; names: their column names in rows and summary (studio.report.key_columns);
    metrics: the metric names to sort by (item metrics, then the jobs' own)."""
    facets = _facets(jobs, rows, keys, varying)
    by_name = {j.name: j for j in jobs}
    cards = []
    for row in rows:
        if row["status"] != "complete" or not row.get("image"):
            continue
        job = by_name[row["job"]]
        values = {k: str(job.value(k)) for k in facets if k not in ("target", "seed")}
        values.update({"target": str(row.get("_subject", "")), "seed": str(row.get("seed", ""))})
        card_metrics = {**row["_item"], **{k: v for k, v in row["_run"].items() if k in metrics and k not in row["_item"]}}
        images = {k: f"images/{row[k]}" for k in row["_images"]} | _exemplars(job, row, sweep_dir)
        fields = {k: v for k, v in row.items()
                  if not k.startswith("_") and k not in images and k not in ("status", "job", *names)}
        cards.append({"id": len(cards), "job": job.name, "image": images.pop("image"), "extra_images": images,
                      "group": " / ".join(str(row[n]) for n in names) if names else "all",
                      "facets": {k: values[k] for k in facets}, "fields": fields, "metrics": card_metrics})
    job_info = {j.name: {"status": j.status, "error": j.error, "choices": j.choices,
                         "overrides": [f"{k}={v}" for k, v in j.overrides.items()],
                         "metrics": (j.manifest.get("metrics") or {}) if j.status == "complete" else {},
                         "config": j.manifest.get("config") or {}} for j in jobs}
    return _clean({"title": f"Sweep gallery: {sweep_dir.parent.name}/{sweep_dir.name}", "sweep_dir": str(sweep_dir),
                   "by": names,
                   "facets": facets, "metrics": [m for m in metrics if any(m in c["metrics"] for c in cards)],
                   "cards": cards, "jobs": job_info,
                   "summary": summary or [],
                   "failed": [{"job": j.name, "error": j.error} for j in jobs if j.status != "complete"]})


def write_gallery(sweep_dir: Path, jobs, rows: list[dict], keys: list[str], names: list[str], varying: list[str],
                  metrics: list[str], summary: list[dict] | None = None, questions: list | None = None) -> Path:
    """Copy every image under sweep_dir/gallery/images/ (the quiz's exemplars under gallery/quiz/) and write
    sweep_dir/gallery/index.html."""
    out = Path(sweep_dir) / "gallery"
    data = gallery_data(Path(sweep_dir), jobs, rows, keys, names, varying, metrics, summary)
    data["quiz"] = page_data(questions or [], Path(sweep_dir))
    wanted = write_tiles(questions or [], Path(sweep_dir), out)
    for card in data["cards"]:
        for rel in [card["image"], *card["extra_images"].values()]:
            target = out / rel
            if target not in wanted:
                _copy(Path(sweep_dir) / rel.removeprefix("images/"), target)
                wanted.add(target)
    for folder in (out / "images", out / "quiz"):
        for old in folder.rglob("*") if folder.is_dir() else []:
            if old.is_file() and old not in wanted:  # images of jobs no longer in the sweep
                old.unlink()
    template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    page = (template.replace("__GALLERY_TITLE__", html.escape(data["title"]))
            .replace("__GALLERY_DATA__", _json_for_script(data)))
    write_text(out / "index.html", page)
    return out / "index.html"
