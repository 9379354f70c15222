"""The gallery's two-choice quiz outside the browser: its questions (a render, one top and one bottom
exemplar cut from their grids, seeded sides), and `studio report --quiz answers.csv` scoring the answers
per recipe with a Wilson interval. The clicks themselves are in tests/test_gallery_browser.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.errors import StudioError
from studio.images import grid, grid_tiles, save_png, square_columns
from studio.report import report
from studio.report.answers import COLUMNS
from studio.report.stats import proportion_interval
from tests.conftest import assert_one_line_error, run_studio_forked
from tests.test_report import _item, make_job, recipe_sweep

K = 4  # exemplars per side in the hand-made sweeps


def top_shade(cell: int) -> float:
    """Grey level of a hand-made top exemplar (bright, one level per cell); bottom ones are dark."""
    return 0.9 - 0.05 * cell


def bottom_shade(cell: int) -> float:
    return 0.1 + 0.05 * cell


def with_exemplars(sweep_dir: Path, k: int = K) -> Path:
    """Give every item of a hand-made sweep its natural exemplars as `studio visualize` saves them: a
    k-image grid of the top ones and one of the bottom ones, `exemplars: {top, bottom}` in the item."""
    for path in sweep_dir.glob("*/manifest.json"):
        manifest = json.loads(path.read_text())
        manifest["config"]["exemplars"] = {"k": k}
        for item in manifest["items"]:
            item["exemplars"] = {}
            for which, shade in (("top", top_shade), ("bottom", bottom_shade)):
                rel = f"exemplars/{item['target'].replace(':', '_')}_{which}.png"
                cells = torch.stack([torch.full((1, 28, 28), shade(n)) for n in range(k)])
                save_png(grid(cells, square_columns(k)), path.parent / rel)
                item["exemplars"][which] = rel
        path.write_text(json.dumps(manifest))
    return sweep_dir


def quiz_data(sweep_dir: Path) -> dict:
    text = (sweep_dir / "gallery" / "index.html").read_text()
    start = text.index('type="application/json">') + len('type="application/json">')
    return json.loads(text[start:text.index("</script>", start)])["quiz"]


def shade_of(path: Path) -> float:
    with Image.open(path) as image:
        values = np.unique(np.asarray(image.convert("L")))
    assert len(values) == 1, "a cut-out exemplar holds one cell, no grid padding"
    return float(values[0]) / 255


def answers_csv(path: Path, questions: list[dict], sweep: str, pick) -> Path:
    """The CSV the page downloads, for answers pick(question) -> "left" / "right"."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for i, q in enumerate(questions):
            side = pick(q)
            writer.writerow({"sweep": sweep, "question": i, "job": q["job"], "group": q["group"], "target": q["target"],
                             "seed": q["seed"], "image": q["image"], "image_sha": q["image_sha"], "top_exemplar": q["top"],
                             "bottom_exemplar": q["bottom"], "top_side": q["top_side"], "answer": side,
                             "correct": int(side == q["top_side"]), "answered_at": "2026-12-04T22:00:00Z"})
    return path


@pytest.fixture
def sweep(tmp_path) -> Path:
    """3 recipes x {class: 2 targets, channel: 1} x 2 seeds, each item with K top and K bottom exemplars."""
    return with_exemplars(recipe_sweep(tmp_path / "exp" / "2026-12-04_22-00-00"))


# --- questions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 4, 5, 9])
def test_grid_tiles_cut_a_saved_grid_back_into_its_images(tmp_path, count):
    images = torch.rand(count, 3, 20, 20, generator=torch.Generator().manual_seed(count))
    save_png(grid(images, square_columns(count)), tmp_path / "grid.png")
    with Image.open(tmp_path / "grid.png") as mosaic:
        cells = grid_tiles(mosaic, count, square_columns(count))
    assert len(cells) == count
    for image, cell in zip(images, cells):  # each cell is its image, upscaled (nearest) as grid() shows it
        upscaled = torch.nn.functional.interpolate(image[None], scale_factor=cell.width // 20, mode="nearest")[0]
        expected = (upscaled * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert cell.size == (upscaled.shape[2], upscaled.shape[1])
        assert (np.asarray(cell) == expected).all()
    with Image.open(tmp_path / "grid.png") as mosaic, pytest.raises(ValueError, match="not a grid of 5 cells, 5 per row"):
        grid_tiles(mosaic, 5, 5)


def test_every_image_with_exemplars_is_a_question_with_one_top_and_one_bottom_exemplar(sweep):
    report(sweep)
    quiz = quiz_data(sweep)
    gallery = sweep / "gallery"
    assert quiz["sweep"] == "exp/2026-12-04_22-00-00"
    assert len(quiz["questions"]) == 18  # every render: 3 recipes x 3 targets x 2 seeds
    assert {q["image"] for q in quiz["questions"]} == {r["image"] for r in csv.DictReader(open(sweep / "table.csv"))}
    for q in quiz["questions"]:
        assert (gallery / q["render"]).read_bytes() == (sweep / q["image"]).read_bytes()
        assert shade_of(gallery / q["top"]) == pytest.approx(top_shade(q["top_cell"]), abs=1 / 255)
        assert shade_of(gallery / q["bottom"]) == pytest.approx(bottom_shade(q["bottom_cell"]), abs=1 / 255)
    assert {q["top_side"] for q in quiz["questions"]} == {"left", "right"}
    assert len({q["top_cell"] for q in quiz["questions"]}) > 1  # not always the most extreme exemplar
    groups = [q["group"] for q in quiz["questions"]]  # recipe / objective: 6 groups, one of each in turn
    assert len(set(groups[:6])) == 6 and len(set(groups[6:12])) == 6


def test_the_questions_are_the_same_in_every_report_and_move_with_the_seed(sweep):
    report(sweep)
    first = quiz_data(sweep)
    report(sweep)
    assert quiz_data(sweep) == first
    report(sweep, quiz_seed=1)
    other = quiz_data(sweep)
    assert other["key"] != first["key"]
    assert [q["top_side"] for q in other["questions"]] != [q["top_side"] for q in first["questions"]]
    on_disk = {p.relative_to(sweep / "gallery").as_posix() for p in (sweep / "gallery" / "quiz").rglob("*.png")}
    assert on_disk == {q[w] for q in other["questions"] for w in ("top", "bottom")}  # the old seed's cut-outs went


def test_a_sweep_without_exemplars_has_no_questions(tmp_path):
    report(recipe_sweep(tmp_path))
    assert quiz_data(tmp_path)["questions"] == []


# --- scoring -------------------------------------------------------------------------------------------
def test_wilson_interval_stays_inside_zero_and_one_and_narrows_with_more_answers():
    low, high = proportion_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(10 / (10 + 1.959964 ** 2))  # the score interval's closed form
    assert proportion_interval(0, 10)[0] == 0.0
    assert proportion_interval(0, 0) is None
    small, large = proportion_interval(7, 10), proportion_interval(70, 100)
    assert small[0] < large[0] < 0.7 < large[1] < small[1]


def test_report_quiz_adds_accuracy_per_recipe_with_its_interval(sweep, tmp_path):
    report(sweep)
    quiz = quiz_data(sweep)
    asked = quiz["questions"][:10]
    path = answers_csv(tmp_path / "answers.csv", asked, quiz["sweep"], lambda q: "left")
    result = report(sweep, quiz=path)
    assert result.quiz == {"file": str(path), "answers": 10, "right": sum(q["top_side"] == "left" for q in asked),
                           "questions": 18, "interval": "95% Wilson score interval per group"}
    for entry in result.summary:
        group = f"{entry['recipe']} / {entry['config.objective']}"
        marks = [q["top_side"] == "left" for q in asked if q["group"] == group]
        assert entry["quiz_answers"] == len(marks)
        assert entry["quiz_accuracy"] == pytest.approx(sum(marks) / len(marks))
        low, high = proportion_interval(sum(marks), len(marks))
        assert (entry["quiz_accuracy_ci_low"], entry["quiz_accuracy_ci_high"]) == pytest.approx((low, high))
    rows = list(csv.DictReader(open(sweep / "table.csv")))
    summary = {(s["recipe"], s["config.objective"]): s for s in result.summary}
    for row in rows:  # every image's row carries its group's accuracy, as it carries its group's intervals
        assert float(row["quiz_accuracy"]) == pytest.approx(summary[row["recipe"], row["config.objective"]]["quiz_accuracy"])
    md = (sweep / "table.md").read_text()
    assert "quiz_accuracy | quiz_answers" in md and "95% Wilson interval" in md
    saved = json.loads((sweep / "report.json").read_text())
    assert saved["quiz"]["answers"] == 10 and "quiz_accuracy" in saved["metrics"]
    assert (sweep / "plots" / "quiz_accuracy.png").is_file()


def test_cli_report_quiz_flag_scores_the_answers(sweep, tmp_path, outputs):
    report(sweep)
    quiz = quiz_data(sweep)
    path = answers_csv(tmp_path / "answers.csv", quiz["questions"][:6], quiz["sweep"], lambda q: q["top_side"])
    result = run_studio_forked("report", str(sweep), "--quiz", str(path), "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
                               outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert f"quiz: 6 answer(s) from {path}, 6 right (100%)" in result.stdout
    summary = list(csv.DictReader(open(sweep / "summary.csv")))
    assert [float(s["quiz_accuracy"]) for s in summary] == [1.0] * 6  # one answer per group, all right
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["metrics"]["quiz_answers"] == 6


def test_answers_from_another_sweep_are_one_clear_error_and_nothing_is_written(sweep, tmp_path, outputs):
    other = tmp_path / "other" / "2026-12-01_09-00-00"  # another sweep: other targets
    for k, recipe in enumerate(("none", "tv")):
        make_job(other, str(k), [f"+recipe={recipe}"], {"recipe": recipe, "objective": "class"},
                 [_item("class:7", s, target_prob=0.5) for s in (0, 1)])
    report(with_exemplars(other))
    quiz = quiz_data(other)
    path = answers_csv(tmp_path / "answers.csv", quiz["questions"], quiz["sweep"], lambda q: "left")
    result = run_studio_forked("report", str(sweep), "--quiz", str(path), "logger=none",
                               f"hydra.run.dir={tmp_path / 'run'}", outputs=outputs)
    assert_one_line_error(result, f"quiz answers {path} do not match sweep {sweep}", "row 2",
                          "sweep 'other/2026-12-01_09-00-00'", "class:7", "not one of its 18 quiz renders")
    assert not (sweep / "table.csv").exists() and not (sweep / "gallery").exists()
    assert not (tmp_path / "run" / "manifest.json").exists()


@pytest.mark.parametrize("change, message", [
    (lambda row: row.update(answer="up"), "row 3: answer 'up' must be one of: left, right"),
    (lambda row: row.pop("image_sha"), "lack the column(s) image_sha"),
])
def test_a_broken_answers_file_names_what_is_wrong(sweep, tmp_path, change, message):
    report(sweep)
    quiz = quiz_data(sweep)
    path = answers_csv(tmp_path / "answers.csv", quiz["questions"][:3], quiz["sweep"], lambda q: "left")
    rows = list(csv.DictReader(open(path)))
    change(rows[1])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[1]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(StudioError, match=message.replace("(", r"\(").replace(")", r"\)")):
        report(sweep, quiz=path)


def test_quiz_flag_without_its_file_fails_before_any_work(sweep, tmp_path, outputs):
    result = run_studio_forked("report", str(sweep), "--quiz", str(tmp_path / "nope.csv"), outputs=outputs)
    assert_one_line_error(result, "--quiz file not found:", "nope.csv")
    with pytest.raises(StudioError, match="quiz answers not found: .*nope.csv"):  # report.quiz= / Python
        report(sweep, quiz=tmp_path / "nope.csv")
    assert not (sweep / "table.csv").exists()
