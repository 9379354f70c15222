"""A sweep of `studio tcav` jobs: per group, concept, layer and class, the TCAV score over the group's jobs
(seeds of the random sets, or repeats) with each job's p-value and in how many jobs it was significant.

Writes tcav.csv / tcav.md and tcav.png (rows: concepts, columns: layers; per class one bar per group, the
mean score with the jobs' range, hatched where not significant in every job) into the sweep dir; each
job's own tcav.png goes to the gallery.
"""

from __future__ import annotations

import statistics
from collections import OrderedDict
from pathlib import Path

from studio.files import write_text
from studio.images import pyplot, save_figure
from studio.report.jobs import Job
from studio.report.tables import csv_text, markdown_table
from studio.report.view_output import ViewOutput, group_of, image_card

COLUMNS = ["concept", "layer", "class", "jobs", "score", "score_min", "score_max", "random_score", "p_values",
           "p_max", "significant_jobs", "logit_change"]


def aggregate(jobs: list[Job], keys: list[str], names: list[str]) -> list[dict]:
    """One row per (group, concept, layer, class) over the group's complete tcav jobs."""
    cells: OrderedDict = OrderedDict()
    for job in jobs:
        if job.status != "complete" or job.manifest.get("command") != "tcav":
            continue
        group = tuple(group_of(job, keys, names).items())
        for item in job.manifest.get("items") or []:
            cells.setdefault((group, item["concept"], item["layer"], item["class"]), []).append(item)
    rows = []
    for (group, concept, layer, klass), items in cells.items():
        scores, ps = [i["score"] for i in items], [i["p_value"] for i in items]
        rows.append({**dict(group), "concept": concept, "layer": layer, "class": klass, "jobs": len(items),
                     "score": statistics.fmean(scores), "score_min": min(scores), "score_max": max(scores),
                     "random_score": statistics.fmean(i["random_score"] for i in items),
                     "p_values": " ".join(f"{p:.2g}" for p in ps), "p_max": max(ps),
                     "significant_jobs": sum(bool(i["significant"]) for i in items),
                     "logit_change": _mean_effect(items)})
    return rows


def _mean_effect(items: list[dict]) -> float | None:
    """The mean over jobs of the concept's effect on the logit (studio/concepts/intervention.py); None for a
    folder concept (and for jobs written before the effect existed)."""
    changes = [i["logit_change"] for i in items if i.get("logit_change") is not None]
    return statistics.fmean(changes) if changes else None


def write(sweep_dir: Path, jobs: list[Job], keys: list[str], names: list[str]) -> ViewOutput:
    rows = aggregate(jobs, keys, names)
    columns = [*names, *COLUMNS]
    write_text(sweep_dir / "tcav.csv", csv_text(columns, rows))
    table = markdown_table([*names, "concept", "layer", "class", "score [min, max]", "random", "p per job",
                            "significant", "logit change"],
                           [[*(r[n] for n in names), r["concept"], r["layer"], r["class"],
                             f"{r['score']:.3f} [{r['score_min']:.3f}, {r['score_max']:.3f}]",
                             f"{r['random_score']:.3f}", r["p_values"], f"{r['significant_jobs']} of {r['jobs']}",
                             "" if r["logit_change"] is None else f"{r['logit_change']:+.2f}"]
                            for r in rows])
    markdown = ("## TCAV across jobs\n\nPer concept, layer and class: the mean score over the group's jobs with "
                "their range, the mean random score, each job's p-value, in how many jobs it was significant "
                "(tcav.png: hatched where not significant in every job) and, for a built-in concept, the mean "
                "change of the class's logit when the concept is drawn on its images.\n\n" + table)
    write_text(sweep_dir / "tcav.md", f"# TCAV: {sweep_dir}\n\n{markdown}")
    paths = {"tcav.csv": sweep_dir / "tcav.csv", "tcav.md": sweep_dir / "tcav.md"}
    if rows:
        save_figure(_plot(rows, names), sweep_dir / "tcav.png", dpi=90)
        paths["tcav.png"] = sweep_dir / "tcav.png"
    cards = [image_card(j, "tcav.png", sweep_dir, "tcav", keys, names, plot="TCAV scores (grey: not significant)")
             for j in jobs if j.status == "complete" and j.manifest.get("command") == "tcav"
             and (j.path / "tcav.png").is_file()]
    return ViewOutput(markdown, rows, paths, cards)


def _plot(rows: list[dict], names: list[str]):
    """Rows: concepts; columns: layers; per class, one bar per group (mean, whiskers: the jobs' range)."""
    concepts, layers, classes, groups = (list(OrderedDict.fromkeys(_key(r, n) for r in rows))
                                         for n in ("concept", "layer", "class", names))
    plt = pyplot()
    fig, axes = plt.subplots(len(concepts), len(layers), squeeze=False, sharey=True,
                             figsize=(max(4.0, 0.28 * len(classes) * len(groups)) * len(layers), 2.2 * len(concepts)))
    colours, width = plt.get_cmap("tab10"), 0.8 / len(groups)
    by_cell = {(r["concept"], r["layer"], r["class"], _key(r, names)): r for r in rows}
    for (i, concept), (j, layer) in ((a, b) for a in enumerate(concepts) for b in enumerate(layers)):
        ax = axes[i, j]
        for g, group in enumerate(groups):
            got = [(c, by_cell[concept, layer, k, group]) for c, k in enumerate(classes)
                   if (concept, layer, k, group) in by_cell]
            for c, r in got:  # one bar at a time: the hatch says "not significant in every job"
                ax.bar(c + (g - (len(groups) - 1) / 2) * width, r["score"], width, color=colours(g % 10),
                       hatch=None if r["significant_jobs"] == r["jobs"] else "///", alpha=0.9,
                       yerr=[[r["score"] - r["score_min"]], [r["score_max"] - r["score"]]], error_kw={"lw": 0.7},
                       label=group if c == got[0][0] and i == j == 0 else None)
        ax.axhline(0.5, color="black", lw=0.5, ls=":")
        ax.set_xticks(range(len(classes)), [str(k) for k in classes], fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{concept} in {layer}", fontsize=8)
    for i in range(len(concepts)):
        axes[i, 0].set_ylabel("TCAV score")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), fontsize=7, loc="upper right", title=" / ".join(names) or None,
               title_fontsize=7, bbox_to_anchor=(1.0, 1.0), bbox_transform=fig.transFigure)
    fig.subplots_adjust(right=0.82, hspace=0.5)
    fig.suptitle("TCAV per class (mean over jobs, whiskers: range; hatched: not significant in every job)",
                 fontsize=9)
    return fig


def _key(row: dict, fields) -> str:
    """A row's value of one field, or its group label (several fields joined)."""
    if isinstance(fields, str):
        return row[fields]
    return " / ".join(str(row[n]) for n in fields) if fields else "all"
