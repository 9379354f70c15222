"""`studio report <sweep dir>`: every job of a sweep side by side (studio/report/), written into the sweep
dir; this run's manifest lists the summary rows."""

from __future__ import annotations

from pathlib import Path

from studio.commands.shared import Result
from studio.errors import StudioError
from studio.report import print_report, report, sweep_group  # noqa: F401 - sweep_group: the registry's W&B group


def run(cfg, tracker) -> Result:
    """Report cfg.sweep into itself; the summary rows are this run's items."""
    options = cfg.get("report") or {}
    by = options.get("by")
    alpha = float(options.get("alpha", 0.05))
    if not 0 < alpha < 1:
        raise StudioError(f"report.alpha must lie between 0 and 1 (the paired tests' significance level), not {alpha:g}")
    result = report(Path(str(cfg.sweep)), by=list(by) if by and by != "auto" else None,
                    average_over=tuple(options.get("average_over") or ()), gallery=bool(options.get("gallery", True)),
                    tracker=tracker, cell=int(options.get("cell", 56)), paired=bool(options.get("paired", True)),
                    alpha=alpha, quiz=options.get("quiz") or None, quiz_seed=int(options.get("quiz_seed", 0)),
                    headline=options.get("headline") or None)
    print_report(result)
    metrics = {"jobs": result.jobs, "failed": len(result.failed), "images": len(result.rows)}
    if result.quiz:
        metrics.update(quiz_answers=result.quiz["answers"], quiz_right=result.quiz["right"])
    return Result(metrics, result.summary, {k: str(p.resolve()) for k, p in result.paths.items()})
