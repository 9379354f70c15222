"""Command-specific views of a sweep: what the generic job × item table cannot say about a command's results.

A view is registered by the command that wrote the jobs' manifests (manifest["command"]). It reads those
jobs, writes its own files into the sweep dir and hands back what the generic report folds in:
- `covers`: prefixes of run metrics the view tabulates itself (left out of the summary, table.csv and the
  plots, where `studio tcav`'s 240 run metrics per job would otherwise be 240 columns and 240 plots);
- a Markdown section appended to table.md, rows mirrored to W&B, and image cards for the gallery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from studio.report.jobs import Job
from studio.report.view_output import ViewOutput


@dataclass(frozen=True)
class View:
    write: Callable[..., ViewOutput]  # (sweep_dir, jobs, keys, names) -> ViewOutput
    covers: tuple[str, ...] = ()


def _registry() -> dict[str, View]:
    from studio.report import dissect, tcav  # each view imports matplotlib only when it draws

    tcav_view = View(tcav.write, covers=("tcav/", "tcav_p/", "tcav_effect/", "tcav_rises/"))
    return {"tcav": tcav_view, "dissect": View(dissect.write)}


def views_for(jobs: list[Job]) -> dict[str, View]:
    """The views of the commands whose complete jobs are in the sweep."""
    commands = {j.manifest.get("command") for j in jobs if j.status == "complete"}
    return {name: view for name, view in _registry().items() if name in commands}
