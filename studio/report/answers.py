"""The quiz's answers (the CSV the gallery downloads) scored per group: `quiz_accuracy`, its 95% Wilson
interval and `quiz_answers` join the report's summary.

An answer is scored from its own row (`answer == top_side`), never from the page, so a CSV stays
scorable whatever the gallery shows later. Each row must name a render of this sweep, by job, path and
content hash: answers given on another sweep (or on renders since re-made) are refused, not mixed in.
"""

from __future__ import annotations

import csv
from pathlib import Path

from studio.errors import StudioError
from studio.report.quiz import SIDES, Question
from studio.report.stats import proportion_interval

COLUMNS = ("sweep", "question", "job", "group", "target", "seed", "image", "image_sha", "top_exemplar",
           "bottom_exemplar", "top_side", "answer", "correct", "answered_at")  # as the page writes them
NEEDED = ("sweep", "job", "image", "image_sha", "top_side", "answer")  # what scoring reads
QUIZ_METRICS = ("quiz_accuracy", "quiz_answers")  # what scoring adds to a group (with the accuracy's interval)


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        raise StudioError(f"quiz answers not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as e:
        raise StudioError(f"cannot read quiz answers {path}: {e}") from None
    missing = [c for c in NEEDED if c not in header]
    if missing:
        raise StudioError(f"quiz answers {path} lack the column(s) {', '.join(missing)}: a quiz CSV is the "
                          f"gallery's 'download answers' file (columns: {', '.join(COLUMNS)})")
    if not rows:
        raise StudioError(f"quiz answers {path} hold no answers")
    return rows


def _check_row(path: Path, n: int, row: dict, known: dict, sweep_dir: Path) -> Question:
    """The question a row answers; a StudioError names the first thing wrong with it."""
    for column in ("top_side", "answer"):
        if row[column] not in SIDES:
            raise StudioError(f"quiz answers {path} row {n}: {column} {row[column]!r} must be one of: "
                              f"{', '.join(SIDES)}")
    question = known.get((row["job"], row["image"], row["image_sha"]))
    if question is None:
        raise StudioError(f"quiz answers {path} do not match sweep {sweep_dir}: row {n} (sweep "
                          f"{row['sweep']!r}, job {row['job']}, {row.get('target') or row['image']}) is not one of "
                          f"its {len(known)} quiz renders; answer the quiz in {sweep_dir / 'gallery' / 'index.html'}")
    return question


def read_answers(path: Path, questions: list[Question], sweep_dir: Path) -> list[tuple[Question, bool]]:
    """(question, right?) per row of the CSV, every row checked against this sweep's questions first."""
    path = Path(path)
    rows = _read(path)
    known = {(q.job, q.image, q.image_sha): q for q in questions}
    checked = [_check_row(path, n, row, known, sweep_dir) for n, row in enumerate(rows, start=2)]  # row 1: header
    return [(q, row["answer"] == row["top_side"]) for q, row in zip(checked, rows)]


def score(answers: list[tuple[Question, bool]], summary: list[dict], names: list[str],
          group_of: dict[str, tuple]) -> None:
    """Add quiz_accuracy (mean, std, 95% Wilson interval) and quiz_answers to each summary group that has
    answers; group_of maps a job to its group's values."""
    by_group: dict[tuple, list[bool]] = {}
    for question, right in answers:
        by_group.setdefault(group_of[question.job], []).append(right)
    for entry in summary:
        marks = by_group.get(tuple(entry[n] for n in names))
        if not marks:
            continue
        n, hits = len(marks), sum(marks)
        mean = hits / n
        std = (sum((m - mean) ** 2 for m in marks) / (n - 1)) ** 0.5 if n > 1 else 0.0
        low, high = proportion_interval(hits, n)
        entry.update(quiz_accuracy=mean, quiz_accuracy_std=std, quiz_accuracy_ci_low=low,
                     quiz_accuracy_ci_high=high, quiz_answers=n)
