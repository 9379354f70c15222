"""kill -9 in the middle of real CLI runs: training a classifier, training a generator, rendering.

After each kill, running the same command again completes, reuses what had finished (a cached model; the
last epoch checkpoint of a training), redoes what had not, and leaves no corrupt cache entry, no
half-written PNG and no stray temp file. (The sweep case is in test_report.py.) Each scenario is small:
a few epochs or steps, W&B off.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import HANG_SECONDS, QUIET_LOCAL, read_manifest, run_studio, run_studio_forked

# A classifier no other test trains (its own seed, 2 epochs), so every test here starts it uncached.
# Two epochs are enough: the kill comes right after the first epoch's checkpoint.
CLASSIFIER = ["train", "model.seed=101", "trainer.max_epochs=2", *QUIET_LOCAL]


def start_studio(*args: str, outputs: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    """The real CLI in its own process group (so the kill reaches every child), stdout+stderr to `log`."""
    env = {**os.environ, "STUDIO_OUTPUTS": str(outputs), "WANDB_SILENT": "true", **(env or {})}
    env.pop("STUDIO_DEBUG", None)
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "studio.cli", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def kill9_when(process: subprocess.Popen, ready, what: str, timeout: float = HANG_SECONDS) -> None:
    """SIGKILL the process group as soon as ready() holds; fails if the run ended first."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, f"the run ended before {what}"
            assert time.monotonic() < deadline, f"never saw {what}"
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it was killed"


def work_checkpoint(models: Path) -> bool:
    """A training has finished an epoch: its last.ckpt is in the cache's work dir."""
    return any(models.glob("*.work/last.ckpt"))


def assert_no_debris(tree: Path) -> None:
    """No temp file of an interrupted atomic write; every PNG and JSON under `tree` reads whole."""
    assert not [p for p in tree.rglob("*.tmp")], "stale temp files"
    for png in tree.rglob("*.png"):
        with Image.open(png) as image:
            image.load()  # raises on a truncated file
    for path in tree.rglob("*.json"):
        if "wandb" not in path.parts:
            json.loads(path.read_text())


def assert_cache_entries_whole(models: Path) -> list[Path]:
    """Every weights file has its sidecar and loads as plain weights; no work dir is left behind."""
    weights = sorted(models.glob("*.pt"))
    assert sorted(p.stem for p in models.glob("*.json")) == [p.stem for p in weights]
    for path in weights:
        assert torch.load(path, map_location="cpu", weights_only=True)
    assert not list(models.glob("*.work")), "a work dir outlived its cache entry"
    return weights


def resumed_after(stdout: str) -> int:
    found = re.search(r"resumed after epoch (\d+)", stdout)
    assert found, stdout
    return int(found.group(1))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Two processes start CLASSIFIER at once on an empty model cache: (results, models dir)."""
    root = tmp_path_factory.mktemp("concurrent")
    results = [None, None]

    def run(i):
        results[i] = run_studio(*CLASSIFIER, f"hydra.run.dir={root / f'run{i}'}", outputs=root / "out")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, root / "out" / "models", root


def test_two_processes_needing_the_same_model_train_it_once(uninterrupted):
    results, models, root = uninterrupted
    for result in results:
        assert result.returncode == 0, result.stderr
    said = sorted("reused from cache" in r.stdout for r in results)
    assert said == [False, True], [r.stdout for r in results]  # one trained it, the other waited and reused it
    assert len(assert_cache_entries_whole(models)) == 1
    manifests = [read_manifest(root / f"run{i}") for i in range(2)]
    assert manifests[0]["metrics"]["test_acc"] == manifests[1]["metrics"]["test_acc"]
    assert manifests[0]["artifacts"]["checkpoint"] == manifests[1]["artifacts"]["checkpoint"]


def test_killed_classifier_training_resumes_from_its_last_epoch(uninterrupted, tmp_path):
    outputs, models = tmp_path / "out", tmp_path / "out" / "models"
    process = start_studio(*CLASSIFIER, f"hydra.run.dir={tmp_path / 'killed'}", outputs=outputs,
                           log=tmp_path / "killed.log")
    kill9_when(process, lambda: work_checkpoint(models), "the first epoch checkpoint")
    assert not list(models.glob("*.pt")) and not list(models.glob("*.json")), "a cache entry from a killed run"
    assert not (tmp_path / "killed" / "manifest.json").exists()

    result = run_studio_forked(*CLASSIFIER, f"hydra.run.dir={tmp_path / 'again'}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    epochs = resumed_after(result.stdout)
    assert epochs == 1  # it went on from the killed run's checkpoint, not from epoch 0
    (weights,) = assert_cache_entries_whole(models)
    assert json.loads(weights.with_suffix(".json").read_text())["resumed_after_epoch"] == epochs
    manifest = read_manifest(tmp_path / "again")
    assert manifest["status"] == "complete" and manifest["metrics"]["cached"] is False
    assert_no_debris(tmp_path)
    # and it trained exactly the weights a run that was never interrupted trains
    _, uninterrupted_models, _ = uninterrupted
    (reference,) = uninterrupted_models.glob("*.pt")
    assert reference.name == weights.name
    resumed, expected = (torch.load(p, weights_only=True) for p in (weights, reference))
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)


def test_killed_generator_training_resumes_from_its_last_epoch(judge, eye, judged, tmp_path):
    outputs, models = tmp_path / "out", tmp_path / "out" / "models"
    models.mkdir(parents=True)
    statistics = judge.path.parent.glob("judge_statistics-*.npz")  # written by `judged`: not computed again here
    for path in (judge.path, judge.path.with_suffix(".json"), eye.path, eye.path.with_suffix(".json"), *statistics):
        shutil.copy(path, models / path.name)  # only the generator is left to train
    args = ["train-generator", "generator.max_epochs=2", "generator.seed=7", "samples=200", *QUIET_LOCAL]
    process = start_studio(*args, f"hydra.run.dir={tmp_path / 'killed'}", outputs=outputs,
                           log=tmp_path / "killed.log")
    kill9_when(process, lambda: work_checkpoint(models), "the first epoch checkpoint")
    assert not list(models.glob("dcgan-*.pt")) and not list(models.glob("dcgan-*.json"))

    result = run_studio_forked(*args, f"hydra.run.dir={tmp_path / 'again'}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert resumed_after(result.stdout) == 1
    # the rerun drew the samples of the epoch it trained, and only those
    drawn = sorted(p.name for p in (tmp_path / "again" / "samples").glob("samples_epoch*.png"))
    assert drawn == ["samples_epoch001.png"]
    weights = assert_cache_entries_whole(models)
    assert [p.name.split("-")[0] for p in weights] == ["dcgan", "judge_cnn", "strided_cnn"]
    assert json.loads(weights[0].with_suffix(".json").read_text())["resumed_after_epoch"] == 1
    manifest = read_manifest(tmp_path / "again")
    assert manifest["status"] == "complete" and manifest["metrics"]["cached"] is False
    assert_no_debris(tmp_path)


def test_killed_render_leaves_no_partial_output_and_reruns(small_cnn, outputs, tmp_path):
    run_dir, log = tmp_path / "render", tmp_path / "killed.log"
    steps = 600
    args = ["visualize", f"steps={steps}", "objective.channels=[0,1]", "judge_metrics=false", "progress=true",
            *QUIET_LOCAL, f"hydra.run.dir={run_dir}"]

    def rendering():  # the progress bar (stderr) has passed step 20
        counts = re.findall(rf"(\d+)/{steps}\b", log.read_text(errors="replace"))
        return bool(counts) and int(counts[-1]) >= 20

    # in a log file the bar writes a line every 30 s by default; this test reads it as it goes
    process = start_studio(*args, outputs=outputs, log=log, env={"STUDIO_PROGRESS_INTERVAL": "0.05"})
    kill9_when(process, rendering, "the render under way")
    assert not (run_dir / "manifest.json").exists()
    assert not list(run_dir.rglob("*.png"))  # nothing is written before the render is done
    assert_no_debris(run_dir)

    result = run_studio_forked(*args, outputs=outputs)  # the same command, the same run dir
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(run_dir)
    assert manifest["status"] == "complete" and [i["target"] for i in manifest["items"]] == ["conv2:0", "conv2:1"]
    for item in manifest["items"]:
        with Image.open(run_dir / item["image"]) as image:
            image.load()
            assert image.size == (28, 28)
    assert len((run_dir / "history.csv").read_text().splitlines()) == steps + 1
    assert_no_debris(run_dir)
