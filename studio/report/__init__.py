"""`studio report <sweep dir>`: every job of a sweep side by side, in numbers and pictures.

Each job's manifest.json stays the source of truth; the report only reads them (and each job's
.hydra/ files, for what the job was asked to do) and writes into the sweep dir:

    table.csv, table.md    one row per job x item (image): the job's varying choices, the item's fields,
                           its metrics, its group's interval of each item metric (`<metric>_ci_low` /
                           `_ci_high`) and the job's metrics (`run.<name>` in the CSV); table.md starts
                           with the summary
    summary.csv            one row per group: mean and std of every numeric metric over the group's
                           images (item metrics, with the mean's 95% bootstrap interval) or jobs (run metrics)
    paired.csv, paired.md  every two groups on the same targets and seeds, per item metric: Wilcoxon
                           signed-rank, Holm-corrected (studio/report/paired.py); paired.md starts with
                           one verdict line per metric
    report.json            all of the above, machine-readable, plus the failed jobs
    plots/<metric>.png     each metric per group (mean, error bar = 95% interval, or std for run metrics)
    plots/history.png      the objective per step, mean over each group's images (band = std)
    comparison_grid.png    rows = targets, columns = groups
    gallery/index.html     every image, with its copy under gallery/images/ (studio/report/gallery.py), and
                           the two-choice quiz (studio/report/quiz.py); `quiz=answers.csv` scores its
                           answers per group (quiz_accuracy with its Wilson interval; studio/report/answers.py)
    tcav.*, dissect.*      a sweep of `studio tcav` / `studio dissect` jobs: their own tables and plot, a section
                           of table.md, their plots and strips in the gallery (studio/report/views.py)

A *group* is a value of the config choices that vary across the sweep's jobs (e.g. `recipe`, or
`regularizer` and `param`), seeds averaged over. Choices that another varying choice determines
(`regularizer` when `recipe` varies) are left out of the group, and choices that change the targets
themselves (`objective`) become rows of the grid instead of columns.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from studio.errors import StudioError
from studio.files import write_json
from studio.report.grid import comparison_grid
from studio.report.jobs import find_jobs, group_keys, varying_keys
from studio.report.answers import QUIZ_METRICS, read_answers, score
from studio.report.paired import Comparison, compare, write_paired
from studio.report.trials import Tuning, find_tuning, write_trials
from studio.report.plots import plot_history, plot_metrics, target_keys
from studio.report.quiz import quiz_questions
from studio.report.tables import (flat_row, split_metric_names, job_rows, summary_markdown, summary_metric_names, key_columns,
                                  summarize, write_tables)
from studio.report.view_output import ViewOutput
from studio.report.views import views_for


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
    comparison: Comparison | None = None  # the paired tests (None: report(paired=False))
    quiz: dict | None = None  # the scored quiz answers: file, answers, right, questions (None: no quiz=)
    headline: list[str] | None = None  # the summary metrics printed and put first in table.md (None: all)
    tuning: Tuning | None = None  # an Optuna search's trials, best trial / front and recipes (studio/report/trials.py)
    views: dict | None = None  # the command views' table rows ({"tcav": [...]}; studio/report/views.py)


# --- the report ----------------------------------------------------------------------------------
def report(sweep_dir: str | Path, by: list[str] | None = None, average_over=("seed",), gallery: bool = True,
           tracker=None, cell: int = 56, paired: bool = True, alpha: float = 0.05, quiz: str | Path | None = None,
           quiz_seed: int = 0, headline: list[str] | None = None) -> Report:
    """Aggregate a sweep dir's jobs into tables, paired tests, plots, a comparison grid and the gallery
    (see the module doc).

    by: the keys that make a group (default: the varying choices, see group_keys); average_over: keys
    averaged within a group; paired: test every two groups (alpha: the significance level after Holm).
    quiz: a CSV of the gallery quiz's answers to score per group; quiz_seed: draws the quiz's questions.
    headline: summary metrics to print and show first in table.md; tracker: mirrors the summary to W&B."""
    sweep_dir = Path(sweep_dir)
    jobs, stale, keys = _jobs_and_keys(sweep_dir, by, average_over)
    names = key_columns(jobs, keys)
    rows = job_rows(jobs, keys, names, sweep_dir)
    views = _views(sweep_dir, jobs, keys, names, rows)
    item_names, run_names = split_metric_names(rows)
    summary_names = summary_metric_names(item_names, run_names)
    summary = summarize(rows, names, summary_names)
    failed = [{"job": j.name, **{n: j.value(k) for k, n in zip(keys, names)}, "error": j.error}
              for j in jobs if j.status != "complete"]
    questions = quiz_questions(sweep_dir, jobs, rows, names, quiz_seed) if gallery or quiz else []  # hashes every render
    scored = _score_quiz(Path(quiz), questions, sweep_dir, rows, names, summary) if quiz else None  # before any write
    summary_names += list(QUIZ_METRICS) if scored else []
    headline = _check_headline(headline, summary_names)

    paths = write_tables(sweep_dir, rows, summary, names, item_names, run_names, summary_names, failed, headline,
                         [v.markdown for v in views.values()])
    for view in views.values():
        paths.update(view.paths)
    series = target_keys(rows, names)
    columns = [n for n in names if n not in series]
    comparison = compare(rows, summary, columns, series, item_names, alpha) if paired else None
    if comparison is not None:
        paths.update(write_paired(sweep_dir, comparison, series, alpha))
    for name in ("paired.csv", "paired.md") if comparison is None else ():  # an earlier report's
        (sweep_dir / name).unlink(missing_ok=True)
    layout = _pictures(sweep_dir, jobs, rows, summary, keys, names, columns, series, summary_names, cell, paths)
    tuning = find_tuning(sweep_dir, jobs)
    paths.update(write_trials(sweep_dir, tuning) if tuning else {})
    if gallery:
        from studio.report.gallery import write_gallery

        cards = [card for view in views.values() for card in view.cards]
        paths["gallery/index.html"] = write_gallery(sweep_dir, jobs, rows + cards, keys, names,
                                                    varying_keys(jobs, ()), summary_names, summary, questions)
    result = Report(sweep_dir, keys, names, rows, summary, summary_names, failed, len(jobs), paths, comparison,
                    scored, headline, tuning, {name: v.rows for name, v in views.items()})
    paths["report.json"] = _write_json(result, stale, layout)
    if tracker is not None:
        _mirror(tracker, result, paths.get("comparison_grid.png"),
                [p for k, p in paths.items() if k.startswith("plots/")], views)
    return result


def _write_json(result: Report, stale: list[str], layout) -> Path:
    """report.json: everything the report found, for programs (paths relative to the sweep dir)."""
    r, path = result, result.sweep_dir / "report.json"
    write_json(path, {
        "sweep_dir": str(r.sweep_dir), "by": r.by, "columns": r.columns, "jobs": r.jobs, "failed": r.failed,
        "left_out": stale, "metrics": r.metrics, "summary": r.summary,
        "paired": vars(r.comparison) if r.comparison is not None else None, "quiz": r.quiz,
        "grid": {"rows": layout[0], "columns": layout[1]} if layout else None,
        "rows": [flat_row(row) for row in r.rows], "views": r.views or {},
        "files": {k: str(p.relative_to(r.sweep_dir)) for k, p in r.paths.items()}})
    return path


def _score_quiz(path: Path, questions, sweep_dir: Path, rows, names, summary) -> dict:
    """Score the quiz answers in `path` into the summary (quiz_accuracy, quiz_answers per group)."""
    answers = read_answers(path, questions, sweep_dir)
    score(answers, summary, names, {r["job"]: tuple(r[n] for n in names) for r in rows})
    return {"file": str(path), "answers": len(answers), "right": sum(right for _, right in answers),
            "questions": len(questions), "interval": "95% Wilson score interval per group"}


def _jobs_and_keys(sweep_dir: Path, by, average_over) -> tuple[list, list[str], list[str]]:
    """The sweep's jobs, the job dirs left out, and the group keys (report.by, checked, or the varying ones)."""
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
    return jobs, stale, keys


def _views(sweep_dir: Path, jobs, keys, names, rows: list[dict]) -> dict[str, ViewOutput]:
    """The command views' files (studio/report/views.py); the run metrics they tabulate themselves are
    taken out of `rows` (in place), so the summary, table.csv and plots/ do not repeat them."""
    views = views_for(jobs)
    covered = tuple(prefix for view in views.values() for prefix in view.covers)
    if covered:
        for row in rows:
            row["_run"] = {k: v for k, v in row["_run"].items() if not k.startswith(covered)}
    return {name: view.write(sweep_dir, jobs, keys, names) for name, view in views.items()}


def _pictures(sweep_dir: Path, jobs, rows, summary, keys, names, columns, series, summary_names, cell: int,
              paths: dict) -> tuple | None:
    """plots/ and comparison_grid.png (added to paths); plots of metrics an earlier report had are removed.
    Returns the grid's (row, column) labels, or None when there is no image."""
    plots = plot_metrics(sweep_dir / "plots", summary, columns, series, summary_names)
    history = plot_history(sweep_dir / "plots" / "history.png", jobs, keys, names, columns, series)
    paths.update({f"plots/{p.name}": p for p in plots})
    if history:
        paths["plots/history.png"] = history
    for old in (sweep_dir / "plots").glob("*.png"):
        if old not in (*plots, history):
            old.unlink()
    layout = comparison_grid(sweep_dir / "comparison_grid.png", rows, columns, cell)
    if layout:
        paths["comparison_grid.png"] = sweep_dir / "comparison_grid.png"
    return layout


def _mirror(tracker, result: Report, grid: Path | None, plots: list[Path], views: dict[str, ViewOutput]) -> None:
    """The summary table (and the grid and plots) to W&B; the files on disk stay the source of truth."""
    columns = [*result.columns, "jobs", "failed", "images"]
    for name in result.metrics:
        columns += [name, f"{name}_std"]
        columns += [c for c in (f"{name}_ci_low", f"{name}_ci_high") if any(c in s for s in result.summary)]
    tracker.log_table("report/summary", [{c: s.get(c) for c in columns} for s in result.summary])
    if grid:
        tracker.log_images("report/comparison_grid", [grid])
    for plot in plots:  # one key each: W&B shows images of one key at one size
        tracker.log_images(f"report/plots/{plot.stem}", [plot])
    for name, view in views.items():
        tracker.log_table(f"report/{name}", view.rows)
        if f"{name}.png" in view.paths:
            tracker.log_images(f"report/{name}", [view.paths[f"{name}.png"]])
    tracker.summary({"report/jobs": result.jobs, "report/failed": len(result.failed)})


def sweep_group(sweep_dir) -> str:
    """The W&B group of a sweep's jobs (studio.cli uses the resolved sweep dir), so the report joins it."""
    return str(Path(str(sweep_dir)).resolve())


def _check_headline(headline, summary_names: list[str]) -> list[str] | None:
    """report.headline as a list of summary metrics. Names no job reports are left out with a warning (an
    experiment's headline still fits a sweep run with some metrics off); if none is left: one line, before any
    file is written."""
    if not headline:
        return None
    names = [str(headline)] if isinstance(headline, str) else [str(n) for n in headline]
    unknown = [n for n in names if n not in summary_names]
    if len(unknown) == len(names):
        raise StudioError(f"report.headline names {unknown[0]!r}, which no job of this sweep reports; choose from: "
                          f"{', '.join(summary_names)}")
    if unknown:
        print(f"studio report: warning: report.headline: no job reports {', '.join(unknown)} (left out)", file=sys.stderr)
    return [n for n in names if n not in unknown]


def print_report(result: Report) -> None:
    md = summary_markdown(result.summary, result.columns, result.headline or result.metrics)
    print(md, end="")
    if result.comparison is not None:
        for line in result.comparison.verdicts:
            print(line)
        if result.comparison.note:
            print(f"paired tests: {result.comparison.note}")
    if result.failed:
        print(f"{len(result.failed)} of {result.jobs} job(s) failed:")
        for f in result.failed:
            print(f"  {f['job']}: {f['error']}")
    if result.quiz:
        q = result.quiz
        print(f"quiz: {q['answers']} answer(s) from {q['file']}, {q['right']} right ({q['right'] / q['answers']:.0%}); "
              f"quiz_accuracy per group with its 95% Wilson interval in the tables")
    print(f"report -> {result.paths['table.md']}")
    if result.tuning is not None:
        print_tuning(result.tuning, result.sweep_dir)
    if "paired.md" in result.paths:
        print(f"paired tests -> {result.paths['paired.md']}")
    for name in result.views or {}:  # the command views (studio/report/views.py)
        if f"{name}.md" in result.paths:
            print(f"{name} across jobs -> {result.paths[f'{name}.md']}")
    if "gallery/index.html" in result.paths:
        print(f"gallery -> {result.paths['gallery/index.html'].resolve().as_uri()}")


def print_tuning(tuning: Tuning, sweep_dir: Path) -> None:
    """The search's best trial (or front) and the line that renders with each recipe."""
    from studio.tune.recipe import usage

    print(f"trials -> {sweep_dir / 'trials.md'}")
    for name, number in tuning.recipes.items():
        trial = next(t for t in tuning.trials if t.number == number)
        scores = ", ".join(f"{o} = {v:.4g}" for o, v in zip(tuning.objectives, trial.values))
        print(f"{'best' if len(tuning.recipes) == 1 else 'Pareto front'}: trial {number} ({scores}) -> "
              f"recipe/{name}.yaml; use it: {usage(name, sweep_dir)}")


class ReportCallback(Callback):
    """Hydra callback: report the sweep when a multirun ends (hydra.callbacks in an experiment config).

    Runs on the machine that launched the sweep, whatever the launcher. A failed report warns and
    never hides the jobs' own results."""

    def __init__(self, by=None, average_over=("seed",), gallery: bool = True, headline=None):
        self.by, self.average_over, self.gallery = by, average_over, gallery
        self.headline = list(headline) if headline else None

    def on_multirun_end(self, config, **kwargs) -> None:
        from studio.tracking import Tracker

        sweep_dir = Path(str(config.hydra.sweep.dir))
        cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            with Tracker(cfg, "report", sweep_dir, sweep_group(sweep_dir)) as tracker:
                result = report(sweep_dir, by=list(self.by) if self.by else None,
                                average_over=tuple(self.average_over or ()), gallery=self.gallery, tracker=tracker,
                                headline=self.headline)
        except StudioError as e:
            print(f"studio report: error: {e}", file=sys.stderr)
            return
        print_report(result)
