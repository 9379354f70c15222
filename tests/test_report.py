"""Sweeps and `studio report`: a real tiny multirun end to end, failed and killed jobs, resuming a sweep,
and the grouping rules on hand-made sweep dirs."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from studio import config, sweep
from studio.errors import StudioError
from studio.explain import METHODS
from studio.modes import eval_mode
from studio.report import report
from studio.tracking import read_offline_run, write_manifest
from tests.conftest import compose_config, run_studio, run_studio_forked

FAST = ["progress=false", "trainer.enable_progress_bar=false"]
TINY = ["experiment=compare_regularizers", "objective=class", "seeds=1", "steps=8", *FAST]


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _report_json(sweep: Path) -> dict:
    return json.loads((sweep / "report.json").read_text())


def _png_ok(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()
        return image.size


# --- a real sweep, end to end ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_sweep(small_cnn, judge, outputs, tmp_path_factory):
    """`studio visualize experiment=compare_regularizers` cut down to 2 recipes x 2 classes x 1 seed, joblib."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "compare"
    started = time.time()
    result = run_studio("visualize", *TINY, "objective.classes=[0,1]", "+recipe=none,l2", "hydra/launcher=joblib",
                        "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep_dir}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    return sweep_dir, result, started


def test_experiment_sweep_reports_table_plots_grid_and_gallery(tiny_sweep):
    sweep_dir, result, _ = tiny_sweep
    assert "report -> " in result.stdout and "gallery -> file://" in result.stdout
    rows = _csv(sweep_dir / "table.csv")
    assert [(r["recipe"], r["target"], r["seed"]) for r in rows] == [
        ("none", "class:0", "0"), ("none", "class:1", "0"), ("l2", "class:0", "0"), ("l2", "class:1", "0")]
    assert all(r["status"] == "complete" for r in rows)
    for column in ("objective", "activation_gain", "target_prob", "judge_correct", "run.judge_recognition",
                   "run.seconds_per_image"):
        assert all(r[column] != "" for r in rows), column
    for row in rows:  # the table's numbers are the job's manifest's numbers
        manifest = json.loads((sweep_dir / row["job"] / "manifest.json").read_text())
        item = next(i for i in manifest["items"] if i["target"] == row["target"])
        assert float(row["target_prob"]) == pytest.approx(item["metrics"]["target_prob"])
        assert (sweep_dir / row["image"]).is_file()

    summary = _csv(sweep_dir / "summary.csv")
    assert [s["recipe"] for s in summary] == ["none", "l2"]
    for s in summary:
        probs = [float(r["target_prob"]) for r in rows if r["recipe"] == s["recipe"]]
        mean = sum(probs) / 2
        assert (s["jobs"], s["failed"], s["images"]) == ("1", "0", "2")
        assert float(s["target_prob"]) == pytest.approx(mean)
        assert float(s["target_prob_std"]) == pytest.approx(math.sqrt(sum((p - mean) ** 2 for p in probs)))
    md = (sweep_dir / "table.md").read_text()
    assert "## Summary" in md and "| recipe | jobs | failed | images |" in md and "| l2 | 1 | 0 | 2 |" in md

    report_json = _report_json(sweep_dir)
    assert report_json["by"] == ["recipe"] and report_json["failed"] == [] and report_json["jobs"] == 2
    for name in ("plots/target_prob.png", "plots/judge_recognition.png", "plots/history.png", "comparison_grid.png"):
        assert name in report_json["files"]
        width, height = _png_ok(sweep_dir / name)
        assert width > 100 and height > 100
    assert report_json["grid"] == {"rows": ["class:0", "class:1"], "columns": ["none", "l2"]}

    page = (sweep_dir / "gallery" / "index.html").read_text()
    assert "<script src" not in page and "http://" not in page and "https://" not in page  # nothing to fetch
    copied = sorted(p.relative_to(sweep_dir / "gallery") for p in (sweep_dir / "gallery" / "images").rglob("*.png"))
    exemplars = [Path("images") / r["job"] / f"exemplars/{r['target'].replace(':', '_')}_{which}.png"
                 for r in rows for which in ("top", "bottom")]  # each image's natural exemplars, shown beside it
    assert copied == sorted([Path("images") / r["image"] for r in rows] + exemplars)


def test_the_quiz_shows_real_exemplars_and_its_top_one_excites_the_unit_more(tiny_sweep, small_cnn):
    from tests.test_quiz import quiz_data

    sweep_dir, _, _ = tiny_sweep
    questions = quiz_data(sweep_dir)["questions"]
    assert sorted((q["job"], q["target"]) for q in questions) == [(j, f"class:{c}") for j in ("0", "1") for c in (0, 1)]
    for q in questions:  # cut from the saved 3 x 3 grids: one 28 x 28 digit each, upscaled 4x
        pictures = []
        for which in ("top", "bottom"):
            with Image.open(sweep_dir / "gallery" / q[which]) as tile:
                assert tile.size == (112, 112)
                pixels = tile.convert("L").resize((28, 28), Image.NEAREST).tobytes()
            pictures.append(torch.frombuffer(bytearray(pixels), dtype=torch.uint8).float().reshape(1, 28, 28) / 255)
        with torch.no_grad(), eval_mode(small_cnn.model):
            logits = small_cnn.model(torch.stack(pictures))
        cls = int(q["target"].split(":")[1])
        assert logits[0, cls] > logits[1, cls]  # what the quiz calls the top exemplar is one for the unit


def test_a_one_seed_sweep_says_why_no_paired_test_can_run_and_still_reports(tiny_sweep):
    sweep_dir, result, _ = tiny_sweep  # seeds=1: 2 classes x 1 seed = 2 pairs per two recipes
    lines = [line for line in result.stdout.splitlines() if line.startswith("paired tests: ")]
    assert lines == ["paired tests: none can be run: two recipe groups share at most 2 target x seed item(s) "
                     "(2 target(s) x 1 seed(s)), and a two-sided Wilcoxon signed-rank test needs 6 to reach "
                     "p < 0.05; run more seeds (seeds=3 or more)"]
    assert next(csv.reader(open(sweep_dir / "paired.csv"))) == [  # the file, with no pair in it
        "metric", "recipe_a", "recipe_b", "n", "median_diff", "p", "p_holm", "winner"]
    assert lines[0].removeprefix("paired tests: ") in (sweep_dir / "paired.md").read_text()
    summary = {s["recipe"]: s for s in _csv(sweep_dir / "summary.csv")}  # the intervals are still there
    assert float(summary["l2"]["target_prob_ci_low"]) <= float(summary["l2"]["target_prob"])


def test_sweep_jobs_and_report_share_one_wandb_group(tiny_sweep, outputs):
    sweep_dir, _, started = tiny_sweep
    runs = [read_offline_run(p) for p in (outputs / "wandb" / "wandb").glob("offline-run-*")
            if p.is_dir() and p.stat().st_mtime >= started - 1 and any(p.glob("run-*.wandb"))]
    # .get: a run another xdist worker is writing right now may not hold its run record yet
    ours = [r for r in runs if r["run"].get("group") == str(sweep_dir.resolve())]
    assert sorted(r["run"]["job_type"] for r in ours) == ["report", "visualize", "visualize"]
    logged = next(r for r in ours if r["run"]["job_type"] == "report")
    assert any(row.get("report/summary/_type") == "table-file" and row.get("report/summary/nrows") == 2
               for row in logged["history"])
    assert logged["summary"]["report/jobs"] == 2 and logged["summary"]["report/failed"] == 0


def test_report_by_hand_rewrites_the_same_files(tiny_sweep, outputs, tmp_path):
    sweep_dir, _, _ = tiny_sweep
    before = (sweep_dir / "table.csv").read_text()
    result = run_studio_forked("report", str(sweep_dir), "logger=none", f"hydra.run.dir={tmp_path}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert (sweep_dir / "table.csv").read_text() == before
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["command"] == "report" and manifest["metrics"] == {"jobs": 2, "failed": 0, "images": 4}
    assert [s["recipe"] for s in manifest["items"]] == ["none", "l2"]


# --- failures, kills, reruns -----------------------------------------------------------------------
def test_failed_job_is_reported_and_the_others_still_run(small_cnn, outputs, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_studio("visualize", "experiment=compare_regularizers", "+recipe=none", "objective=channel",
                        "objective.layer=conv2,conv9", "objective.channels=[0,1]", "steps=4", "seeds=1",
                        "judge_metrics=false", "logger=none", f"hydra.sweep.dir={sweep_dir}", *FAST, outputs=outputs)
    assert result.returncode == 2, result.stderr  # a user's mistake in one job: the sweep says so at the end
    assert "studio visualize: error: unknown layer 'conv9'" in result.stderr
    assert json.loads((sweep_dir / "0" / "manifest.json").read_text())["status"] == "complete"
    failed = json.loads((sweep_dir / "1" / "manifest.json").read_text())
    assert failed["status"] == "failed" and "unknown layer 'conv9'" in failed["error"]

    report_json = _report_json(sweep_dir)  # written by the experiment's end-of-sweep callback
    assert report_json["by"] == ["objective.layer"]
    assert [(f["job"], f["objective.layer"]) for f in report_json["failed"]] == [("1", "conv9")]
    rows = _csv(sweep_dir / "table.csv")
    assert [(r["job"], r["status"], r["target"]) for r in rows] == [
        ("0", "complete", "conv2:0"), ("0", "complete", "conv2:1"), ("1", "failed", "")]
    assert "unknown layer 'conv9'" in rows[2]["error"]
    summary = {s["objective.layer"]: s for s in _csv(sweep_dir / "summary.csv")}
    assert (summary["conv2"]["failed"], summary["conv2"]["images"]) == ("0", "2")
    assert (summary["conv9"]["failed"], summary["conv9"]["images"]) == ("1", "0")
    assert "## Failed jobs" in (sweep_dir / "table.md").read_text()


def _manifests(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/manifest.json")}


def test_killed_sweep_is_reported_then_resumed_without_duplicates(small_cnn, outputs, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [*TINY, "objective.classes=[0]", "+recipe=none,l2,tv,l2_tv", "judge_metrics=false", "logger=none",
            f"hydra.sweep.dir={sweep_dir}"]
    env = {**os.environ, "STUDIO_OUTPUTS": str(outputs), "WANDB_SILENT": "true"}
    env.pop("STUDIO_DEBUG", None)
    process = subprocess.Popen([sys.executable, "-m", "studio.cli", "visualize", *args], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (sweep_dir / "0" / "manifest.json").exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the first job never finished"
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # kill -9 the whole sweep mid-way
        process.wait()
    done = _manifests(sweep_dir)
    assert done["0"]["status"] == "complete" and len(done) < 4, "the sweep finished before it was killed"
    first = (sweep_dir / "0" / "manifest.json").stat().st_mtime_ns

    result = run_studio_forked("report", str(sweep_dir), "logger=none", f"hydra.run.dir={tmp_path / 'r1'}",
                               outputs=outputs)
    assert result.returncode == 0, result.stderr
    failed = _report_json(sweep_dir)["failed"]
    assert len(failed) == 4 - len(done) and {"l2_tv"} <= {f["recipe"] for f in failed}
    assert all("killed" in f["error"] or "never started" in f["error"] for f in failed)

    result = run_studio_forked("visualize", *args, outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert "job 0 is complete for this config; skipped" in result.stdout
    assert (sweep_dir / "0" / "manifest.json").stat().st_mtime_ns == first  # not rendered again
    done = _manifests(sweep_dir)
    assert sorted(done) == ["0", "1", "2", "3"] and all(m["status"] == "complete" for m in done.values())
    rows = _csv(sweep_dir / "table.csv")
    assert sorted((r["recipe"], r["target"]) for r in rows) == sorted(
        (recipe, "class:0") for recipe in ("none", "l2", "tv", "l2_tv"))
    assert _report_json(sweep_dir)["failed"] == []
    for manifest_dir, manifest in done.items():  # every image a manifest names is a whole PNG
        for item in manifest["items"]:
            assert _png_ok(sweep_dir / manifest_dir / item["image"]) == (28, 28)


def test_only_a_complete_manifest_of_the_same_config_counts_as_done(outputs, tmp_path):
    cfg = compose_config("visualize", ["+recipe=l2", "steps=8"])
    assert not sweep.complete_for(tmp_path, cfg)
    write_manifest(tmp_path, "visualize", cfg, {}, [], {})
    assert sweep.complete_for(tmp_path, cfg)
    assert not sweep.complete_for(tmp_path, compose_config("visualize", ["+recipe=l2", "steps=9"]))
    assert not sweep.complete_for(tmp_path, compose_config("visualize", ["+recipe=tv", "steps=8"]))
    write_manifest(tmp_path, "visualize", cfg, {}, [], {}, status="failed")
    assert not sweep.complete_for(tmp_path, cfg)


def test_any_multirun_can_be_reported(outputs, tmp_path):
    sweep_dir = tmp_path / "sweep"  # `-m` before the overrides, a command without images
    result = run_studio_forked("layers", "-m", "model=small_cnn,judge_cnn", "logger=none",
                               f"hydra.sweep.dir={sweep_dir}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    result = run_studio_forked("report", str(sweep_dir), "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
                               outputs=outputs)
    assert result.returncode == 0, result.stderr
    rows = _csv(sweep_dir / "table.csv")
    assert {(r["model"], r["layer"]) for r in rows} >= {("small_cnn", "conv2"), ("judge_cnn", "fc")}
    summary = {s["model"]: s for s in _csv(sweep_dir / "summary.csv")}
    layers = {m: json.loads((sweep_dir / job / "manifest.json").read_text())["metrics"]["layers"]
              for job, m in (("0", "small_cnn"), ("1", "judge_cnn"))}
    assert {m: float(s["layers"]) for m, s in summary.items()} == layers


def test_report_errors_are_one_line(outputs, tmp_path):
    for args, fragment in (([str(tmp_path / "absent")], "sweep dir not found"),
                           ([str(tmp_path)], "no jobs in")):
        result = run_studio_forked("report", *args, "logger=none", f"hydra.run.dir={tmp_path / 'run'}",
                                   outputs=outputs)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], result.stderr


# --- grouping rules on hand-made sweeps ------------------------------------------------------------
def make_job(sweep_dir: Path, name: str, overrides: list[str], choices: dict, items: list[dict] | None,
             metrics: dict | None = None, status: str = "complete") -> Path:
    """A job dir as Hydra and `studio visualize` leave it; items=None: killed before its manifest."""
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {**choices, "hydra/launcher": "basic"}}}}),
                   job / ".hydra" / "hydra.yaml")
    if items is None:
        return job
    for k, item in enumerate(items):
        item.setdefault("image", f"images/{item['target'].replace(':', '_')}_s{item['seed']}.png")
        (job / item["image"]).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (28, 28), 40 * k % 256).save(job / item["image"])
    columns = [f"{i['target']}@{i['seed']}" for i in items]
    (job / "history.csv").write_text("step," + ",".join(columns) + "\n"
                                     + "".join(f"{s}," + ",".join(str(s * 0.1)
                                                                  for _ in columns) + "\n" for s in (1, 2, 3)))
    (job / "manifest.json").write_text(json.dumps({
        "command": "visualize", "status": status, "config": {"choices": choices, "overrides": overrides},
        "metrics": metrics or {}, "items": items, "artifacts": {"history": "history.csv"}}))
    return job


def _item(target: str, seed: int, **metrics) -> dict:
    return {"target": target, "seed": seed, "metrics": metrics}


def recipe_sweep(sweep_dir: Path) -> Path:
    """3 recipes x {class, channel} objectives, 2 seeds each; known metric values."""
    recipes = {"none": ("pixel", "none"), "l2": ("pixel", "l2"), "fft": ("fft", "standard")}
    k = 0
    for recipe, (param, regularizer) in recipes.items():
        for objective, targets in (("class", ["class:0", "class:1"]), ("channel", ["conv2:0"])):
            items = [_item(t, s, objective=1.0 + k + 0.1 * s, target_prob=0.1 * (k % 5) + 0.05 * s)
                     for t in targets for s in (0, 1)]
            make_job(sweep_dir, str(k), [f"+recipe={recipe}", f"objective={objective}"],
                     {"recipe": recipe, "objective": objective, "param": param, "regularizer": regularizer},
                     items, {"images": len(items), "render_seconds": 2.0 * len(items), "diversity": 0.5 + k})
            k += 1
    return sweep_dir


def test_groups_by_the_choice_that_determines_the_others(tmp_path):
    result = report(recipe_sweep(tmp_path), gallery=False)
    assert result.by == ["recipe", "objective"]  # param and regularizer follow from the recipe
    assert result.columns == ["recipe", "config.objective"]  # objective is a metric too
    assert [(s["recipe"], s["config.objective"]) for s in result.summary] == [
        (r, o) for r in ("none", "l2", "fft") for o in ("class", "channel")]
    none_class = result.summary[0]
    assert none_class["images"] == 4 and none_class["jobs"] == 1
    assert none_class["objective"] == pytest.approx(1.05) and none_class["objective_std"] == pytest.approx(
        math.sqrt(4 * 0.05 ** 2 / 3))  # over 2 targets x 2 seeds: 1.0, 1.1, 1.0, 1.1
    assert none_class["seconds_per_image"] == pytest.approx(2.0)  # render_seconds / images
    assert "images" not in result.metrics  # bookkeeping, not a metric
    # the objective changes the targets: its values share the grid's rows, the recipes are its columns
    assert _report_json(tmp_path)["grid"] == {"rows": ["class:0", "class:1", "conv2:0"], "columns": ["none", "l2", "fft"]}
    assert (tmp_path / "plots" / "diversity.png").is_file() and (tmp_path / "plots" / "history.png").is_file()


def test_factorial_sweep_keeps_both_choices_and_averages_seeds(tmp_path):
    k = 0
    for regularizer in ("none", "tv"):
        for param in ("pixel", "fft"):
            for seed in (0, 1):
                make_job(tmp_path, str(k), [f"regularizer={regularizer}", f"param={param}", f"seed={seed}"],
                         {"regularizer": regularizer, "param": param, "objective": "class"},
                         [_item("class:3", seed, target_prob=0.25 * seed + (0.5 if regularizer == "tv" else 0))])
                k += 1
    result = report(tmp_path, gallery=False)
    assert result.by == ["regularizer", "param"]
    assert [(s["regularizer"], s["param"], s["jobs"]) for s in result.summary] == [
        ("none", "pixel", 2), ("none", "fft", 2), ("tv", "pixel", 2), ("tv", "fft", 2)]
    assert [s["target_prob"] for s in result.summary] == pytest.approx([0.125, 0.125, 0.625, 0.625])
    assert report(tmp_path, by=["param"], gallery=False).by == ["param"]
    with pytest.raises(StudioError, match="unknown report.by key 'nope'; choose from: regularizer, param, seed"):
        report(tmp_path, by=["nope"], gallery=False)


def test_jobs_the_sweep_never_finished_are_failed_and_stale_dirs_left_out(tmp_path):
    OmegaConf.save(OmegaConf.create({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "max_batch_size": None,
                    "params": {"+recipe": "none,l2,tv"}},
        "overrides": {"task": ["objective=class"]}}}), tmp_path / "multirun.yaml")
    make_job(tmp_path, "0", ["+recipe=none", "objective=class"], {"recipe": "none"}, [_item("class:0", 0, p=0.5)])
    make_job(tmp_path, "1", ["+recipe=l2", "objective=class"], {"recipe": "l2"}, None)  # killed
    make_job(tmp_path, "3", ["+recipe=blur", "objective=class"], {"recipe": "blur"}, [_item("class:0", 0, p=0.1)])
    result = report(tmp_path, gallery=False)
    assert [(f["recipe"], f["error"].split(":")[0]) for f in result.failed] == [
        ("l2", "no manifest"), ("tv", "never started (the sweep stopped before it)")]
    assert _report_json(tmp_path)["left_out"] == ["3"]  # an earlier sweep's job in the same dir
    assert [(r["recipe"], r["status"]) for r in _csv(tmp_path / "table.csv")] == [
        ("none", "complete"), ("l2", "failed"), ("tv", "failed")]


def test_every_experiment_composes():
    for command, experiment in (("visualize", "compare_regularizers"), ("visualize", "all_filters"),
                                ("visualize", "gan_vs_pixel"), ("visualize", "prior_ladder"),
                                ("explain", "explain_compare")):
        overrides = [f"+experiment={experiment}"] if command == "visualize" else [f"experiment={experiment}"]
        cfg = compose_config(command, overrides)
        params = OmegaConf.load(config.CONF_DIR / "experiment" / f"{experiment}.yaml").hydra.sweeper.params
        for key, values in params.items():  # every swept value composes into a job config
            for value in str(values).split(","):
                job = compose_config(command, [*overrides, f"{key}={value}"])
                assert job.command == cfg.command
            if command == "explain":
                assert job.method in METHODS
    recipes = compose_config("visualize", ["+recipe=fft"])
    assert recipes.param.name == "fft" and "jitter" in recipes.regularizer


# --- crashes and failures around a sweep's jobs: the CLI in a fork of this process, which carries a monkeypatch
def _judge_cnn_runs_out_of_memory(monkeypatch) -> None:
    """Make torch fail inside judge_cnn (the only model with a dropout layer), as an out-of-memory would."""
    import torch

    def out_of_memory(*args, **kwargs):
        raise MemoryError("simulated: no memory left")

    monkeypatch.setattr(torch.nn.functional, "dropout", out_of_memory)


def test_a_job_that_crashes_is_recorded_as_failed_and_the_sweep_goes_on(outputs, tmp_path, monkeypatch):
    _judge_cnn_runs_out_of_memory(monkeypatch)
    sweep_dir = tmp_path / "sweep"
    result = run_studio_forked("layers", "-m", "model=judge_cnn,small_cnn", "logger=none",
                               f"hydra.sweep.dir={sweep_dir}", outputs=outputs)
    assert result.returncode == 1  # not 2: a crash is not the user's mistake
    assert "Traceback" in result.stderr and "MemoryError: simulated: no memory left" in result.stderr  # the trace helps
    crashed, after = (json.loads((sweep_dir / job / "manifest.json").read_text()) for job in ("0", "1"))
    assert (crashed["status"], crashed["user_error"]) == ("failed", False)
    assert crashed["error"] == "MemoryError: simulated: no memory left"
    assert crashed["config"]["model"]["name"] == "judge_cnn"
    assert after["status"] == "complete" and after["metrics"]["layers"] > 0  # the next job still ran


def test_the_same_crash_outside_a_sweep_ends_the_run_with_exit_1_and_no_manifest(outputs, tmp_path, monkeypatch):
    _judge_cnn_runs_out_of_memory(monkeypatch)
    result = run_studio_forked("layers", "model=judge_cnn", "logger=none", f"hydra.run.dir={tmp_path}",
                               outputs=outputs)
    assert result.returncode == 1
    assert "Error executing job with overrides: ['model=judge_cnn'" in result.stderr
    assert "MemoryError: simulated: no memory left" in result.stderr
    assert not (tmp_path / "manifest.json").exists()


def test_a_job_whose_config_does_not_resolve_still_leaves_a_failed_manifest(outputs, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_studio_forked("layers", "-m", "data.size=28,${nope}", "logger=none", f"hydra.sweep.dir={sweep_dir}",
                               outputs=outputs)
    assert result.returncode == 2  # a user's mistake, as any bad value
    assert "studio layers: error: cannot resolve data.size: Interpolation key 'nope' not found" in result.stderr
    assert json.loads((sweep_dir / "0" / "manifest.json").read_text())["status"] == "complete"
    failed = json.loads((sweep_dir / "1" / "manifest.json").read_text())
    assert (failed["status"], failed["user_error"]) == ("failed", True) and "'nope'" in failed["error"]
    assert failed["config"]["data"]["size"] == "${nope}"  # the config as given: it cannot be resolved


def test_an_output_dir_that_does_not_resolve_is_left_to_hydras_own_message(capsys):
    config = compose_config("layers", ["hydra.run.dir=${nope}"], with_hydra=True)
    sweep.check_output_dir(config, "run")  # no exit, no traceback from our callback
    assert capsys.readouterr().err == ""


def test_a_report_that_fails_after_a_sweep_is_one_line_and_raises_nothing(tmp_path, capsys):
    from studio.report import ReportCallback

    config = compose_config("visualize", ["logger=none", f"hydra.sweep.dir={tmp_path}"], with_hydra=True)  # no job
    ReportCallback().on_multirun_end(config)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"studio report: error: no jobs in {tmp_path}: expected job dirs with manifest.json (a `-m` "
                   "sweep's dir)"]


# --- what lies in a sweep dir besides the plain case ------------------------------------------------
def test_jobs_in_nested_dirs_are_found(tmp_path):
    for k, recipe in enumerate(("none", "l2")):  # hydra.sweep.subdir=${recipe}/${hydra.job.num}
        make_job(tmp_path, f"{recipe}/{k}", [f"+recipe={recipe}"], {"recipe": recipe}, [_item("class:0", 0, p=0.1 * k)])
    result = report(tmp_path, gallery=False)
    assert sorted(r["job"] for r in result.rows) == ["l2/1", "none/0"]
    assert [(s["recipe"], s["p"]) for s in result.summary] == [("l2", pytest.approx(0.1)), ("none", 0.0)]


def test_a_job_without_hydra_records_is_reported_from_its_manifest(tmp_path):
    make_job(tmp_path, "0", ["+recipe=none"], {"recipe": "none"}, [_item("class:0", 0, p=0.5)])
    job = make_job(tmp_path, "1", ["+recipe=l2"], {"recipe": "l2"}, [_item("class:0", 0, p=0.7)])
    for name in ("overrides.yaml", "hydra.yaml"):  # hydra.output_subdir=null: no .hydra/
        (job / ".hydra" / name).unlink()
    (job / ".hydra").rmdir()
    result = report(tmp_path, gallery=False)
    assert [(r["job"], r["status"], r["p"]) for r in _csv(tmp_path / "table.csv")] == [
        ("0", "complete", "0.5"), ("1", "complete", "0.7")]
    assert result.failed == []


def test_an_unreadable_manifest_is_a_failed_job(tmp_path):
    make_job(tmp_path, "0", ["+recipe=none"], {"recipe": "none"}, [_item("class:0", 0, p=0.5)])
    job = make_job(tmp_path, "1", ["+recipe=l2"], {"recipe": "l2"}, [_item("class:0", 0, p=0.7)])
    (job / "manifest.json").write_text('{"status": "compl')  # cut short
    result = report(tmp_path, gallery=False)
    assert result.failed == [{"job": "1", "recipe": "l2", "error": "unreadable manifest (JSONDecodeError)"}]


def test_another_sweeper_is_reported_from_the_jobs_on_disk(tmp_path):
    OmegaConf.save(OmegaConf.create({"hydra": {  # e.g. Optuna: which jobs it asks for is not known in advance
        "sweeper": {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
                    "params": {"+recipe": "choice(none,l2,tv)"}},
        "overrides": {"task": []}}}), tmp_path / "multirun.yaml")
    for k, recipe in enumerate(("none", "l2")):
        make_job(tmp_path, str(k), [f"+recipe={recipe}"], {"recipe": recipe}, [_item("class:0", 0, p=0.5)])
    result = report(tmp_path, gallery=False)
    assert result.jobs == 2 and result.failed == []  # no "never started" job guessed


def test_jobs_with_no_steps_draw_no_history(tmp_path):
    for k, recipe in enumerate(("none", "l2")):
        job = make_job(tmp_path, str(k), [f"+recipe={recipe}"], {"recipe": recipe}, [_item("class:0", 0, p=0.5)])
        (job / "history.csv").write_text("step,class:0@0\n")  # steps=0: the header alone
    report(tmp_path, gallery=False)
    assert "plots/history.png" not in _report_json(tmp_path)["files"]
    assert not (tmp_path / "plots" / "history.png").exists()


def test_a_metric_no_group_has_gets_no_plot(tmp_path):
    from studio.report.plots import plot_metrics

    summary = [{"recipe": "none", "p": 0.5, "p_std": 0.1}, {"recipe": "l2", "p": 0.7, "p_std": 0.0}]
    assert plot_metrics(tmp_path, summary, ["recipe"], [], ["p", "absent"]) == [tmp_path / "p.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]


def test_reporting_again_removes_the_plots_and_images_of_jobs_gone_from_the_sweep(tmp_path):
    make_job(tmp_path, "0", ["+recipe=none"], {"recipe": "none"}, [_item("class:0", 0, p=0.5)])
    make_job(tmp_path, "1", ["+recipe=l2"], {"recipe": "l2"}, [_item("class:1", 0, q=0.7)])  # the only job with q
    report(tmp_path)
    assert (tmp_path / "plots" / "q.png").is_file() and (tmp_path / "gallery" / "images" / "1").is_dir()
    shutil.rmtree(tmp_path / "1")
    report(tmp_path)
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == ["history.png", "p.png"]
    copied = [p.relative_to(tmp_path / "gallery" / "images") for p in (tmp_path / "gallery" / "images").rglob("*.png")]
    assert copied == [Path("0/images/class_0_s0.png")]


def test_a_nan_metric_reaches_the_gallery_as_null(tmp_path):
    make_job(tmp_path, "0", ["+recipe=none"], {"recipe": "none"}, [_item("class:0", 0, p=0.5)],
             metrics={"mark_lift": float("nan"), "images": 1})  # what a metric of no images is
    report(tmp_path)
    page = (tmp_path / "gallery" / "index.html").read_text()
    start = page.index('<script id="gallery-data" type="application/json">')
    text = page[page.index(">", start) + 1:page.index("</script>", start)]

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON: the page's JSON.parse would fail")

    data = json.loads(text, parse_constant=refuse)
    assert data["jobs"]["0"]["metrics"] == {"mark_lift": None, "images": 1}


def test_a_headline_puts_the_chosen_metrics_first_and_a_name_no_job_reports_is_named(tmp_path, capsys):
    """report.headline: the few numbers a reader wants first (the prior ladder's table), printed and at the top of
    table.md; every metric stays in the full summary. A misspelt metric is named; one of several is left out."""
    sweep = recipe_sweep(tmp_path / "sweep")
    result = report(sweep, headline=["target_prob", "diversity"], gallery=False)
    text = (sweep / "table.md").read_text()
    head = text[text.index("## Headline"):text.index("## Summary")]
    assert head.splitlines()[2].split(" | ")[-2:] == ["target_prob", "diversity |"]
    assert "objective" in text[text.index("## Summary"):].splitlines()[2]  # the full summary keeps the rest
    from studio.report import print_report

    capsys.readouterr()
    print_report(result)  # what the CLI and the sweep's callback print
    header = capsys.readouterr().out.splitlines()[0]
    assert header.endswith("target_prob | diversity |") and "objective |" not in header.split("images")[1]
    report(sweep, headline=["target_prob", "judge_recogniton"], gallery=False)
    assert "no job reports judge_recogniton (left out)" in capsys.readouterr().err
    with pytest.raises(StudioError, match="report.headline names 'judge_recogniton'.*choose from: .*target_prob"):
        report(sweep, headline=["judge_recogniton"], gallery=False)
