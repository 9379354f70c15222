"""Same config and seed, run twice on CPU: the same manifest and the same bytes in every output file.

Each command runs twice into its own run dir (tmp/a, tmp/b), the two side by side to halve the wall
time, each in a process forked from the test's (the CLI's entry point, without importing torch again):
both start from the same process state, as two fresh `studio` processes would. The demo is left out: it costs ~45 s a run here and is made of the commands below (train, the
generator, visualize, probe, embed, explain), each checked on its own.

What a manifest comparison leaves out, and why (nothing else):
- every key whose name holds "seconds" (train_seconds, render_seconds, lime/seconds, a report's
  seconds_per_image and their _std): wall-clock timings, different on every run by nature;
- artifacts.wandb_run: the W&B run's own directory, named by its time and random run id (W&B is off
  here with logger=none, so it is absent anyway).
The run dirs themselves never appear in a manifest (item and artifact paths are relative to the run
dir), so nothing has to be left out for a/b. Of the files, Hydra's own are left out: .hydra/ (its record
of the run, which names the run dir) and the job log <command>.log (every line starts with a timestamp).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import FAST_GENERATOR, QUIET_LOCAL, finish_forked, read_manifest, start_forked



def side_by_side(outputs: Path, *jobs: list[str]) -> list:
    """Run each job (a list of CLI args) in its own process (a fork of this one), all at once; every one
    must succeed."""
    results = [finish_forked(started) for started in [start_forked(*job, outputs=outputs) for job in jobs]]
    for job, result in zip(jobs, results):
        assert result.returncode == 0, (job, result.stderr[-3000:])
    return results


def twice(outputs: Path, tmp_path: Path, *args: str) -> tuple[Path, Path]:
    """`studio <args>` into tmp_path/a and tmp_path/b, side by side."""
    side_by_side(outputs, *([*args, *QUIET_LOCAL, f"hydra.run.dir={tmp_path / run}"] for run in "ab"))
    return tmp_path / "a", tmp_path / "b"


def comparable(value):
    """A manifest without what differs on every run by nature (see the module docstring)."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if "seconds" not in k and k != "wandb_run"}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def output_files(run_dir: Path) -> dict[str, bytes]:
    """Every file a run wrote (relative path -> bytes), without the manifest and Hydra's .hydra/ and job log."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != "manifest.json" and p.suffix != ".log"
            and ".hydra" not in p.relative_to(run_dir).parts}


def assert_same_runs(a: Path, b: Path, pngs_at_least: int = 1) -> dict:
    manifest = read_manifest(a)
    assert manifest["status"] == "complete"
    assert comparable(manifest) == comparable(read_manifest(b))
    files_a, files_b = output_files(a), output_files(b)
    assert sorted(files_a) == sorted(files_b)
    assert sum(name.endswith(".png") for name in files_a) >= pngs_at_least
    different = [name for name in files_a if files_a[name] != files_b[name]]
    assert not different, f"different bytes: {different}"
    return manifest


def test_train_and_layers(small_cnn, outputs, tmp_path):
    """Training twice from scratch (not once and then from the cache) gives the same weights and manifest."""
    args = ["train", "model.seed=202", "trainer.max_epochs=1"]  # a model no other test trains
    models = outputs / "models"
    for old in models.glob("small_cnn-*.json"):  # a kept STUDIO_TEST_OUTPUTS may hold it already
        if '"seed": 202' in old.read_text():
            old.unlink()
    layers = ["layers", "logger=none"]
    side_by_side(outputs, [*args, *QUIET_LOCAL, f"hydra.run.dir={tmp_path / 'a'}"],
                 [*layers, f"hydra.run.dir={tmp_path / 'layers_a'}"])
    weights = Path(read_manifest(tmp_path / "a")["artifacts"]["checkpoint"])
    first = torch.load(weights, weights_only=True)
    weights.with_suffix(".json").unlink()  # out of the cache: run b trains it again
    weights.unlink()
    side_by_side(outputs, [*args, *QUIET_LOCAL, f"hydra.run.dir={tmp_path / 'b'}"],
                 [*layers, f"hydra.run.dir={tmp_path / 'layers_b'}"])

    manifest = assert_same_runs(tmp_path / "a", tmp_path / "b", pngs_at_least=0)
    assert manifest["metrics"]["cached"] is False  # both runs trained
    second = torch.load(weights, weights_only=True)
    assert all(torch.equal(first[k], second[k]) for k in first)
    manifest = assert_same_runs(tmp_path / "layers_a", tmp_path / "layers_b", pngs_at_least=0)
    assert manifest["metrics"]["layers"] > 0


def test_train_generator(dcgan, judge, outputs, tmp_path):
    a, b = twice(outputs, tmp_path, "train-generator", *FAST_GENERATOR["dcgan"], "samples=200")
    assert_same_runs(a, b, pngs_at_least=2)  # samples.png, class_shares.png


@pytest.fixture(scope="module")
def render_sweeps(small_cnn, judge, outputs, tmp_path_factory) -> tuple[Path, Path]:
    """The same two-job visualize sweep, twice (a, b): the standard regularizer draws random pad, jitter,
    scale and rotation per image and step, and the judge scores the images."""
    root = tmp_path_factory.mktemp("render_sweeps")
    side_by_side(outputs, *(["visualize", "-m", "seed=0,3", "device=cpu", "steps=24", "thresholds=[8]", "seeds=2",
                             "objective.channels=[0,5]", "regularizer=standard", "progress=false", *QUIET_LOCAL,
                             f"hydra.sweep.dir={root / run}"] for run in "ab"))
    return root / "a", root / "b"


def test_visualize(render_sweeps):
    a, b = render_sweeps
    for job in ("0", "1"):
        manifest = assert_same_runs(a / job, b / job, pngs_at_least=6)  # 4 images, grid, grid_step8
        assert len(manifest["items"]) == 4 and "realism_ratio" in manifest["metrics"]


def test_probe(small_cnn, outputs, tmp_path):
    a, b = twice(outputs, tmp_path, "probe", "probe.layers=[conv2,fc1]", "probe.max_iter=50")
    manifest = assert_same_runs(a, b)  # probes.png
    assert "probe_acc/fc1" in manifest["metrics"]


def test_embed(small_cnn, outputs, tmp_path):
    a, b = twice(outputs, tmp_path, "embed", "layers=[pixels,conv2]", "embed.images=200")
    assert_same_runs(a, b, pngs_at_least=2)


def test_explain(small_cnn, outputs, tmp_path):
    a, b = twice(outputs, tmp_path, "explain", "explain.images=2", "explain.lime.samples=200",
                 "explain.lime.heldout=50", "explain.smoothgrad.samples=8", "explain.ig.steps=8",
                 "explain.metrics.steps=8", "explain.metrics.stability_seeds=2", "explain.kernelshap.samples=200",
                 "explain.gradientshap.samples=8")
    manifest = assert_same_runs(a, b, pngs_at_least=14)  # 2 panels + 2 maps per method
    assert {item["method"] for item in manifest["items"]} >= {"lime", "smoothgrad", "occlusion", "kernelshap",
                                                              "gradientshap", "lrp"}


def test_report(render_sweeps, outputs, tmp_path):
    """The same sweep reported twice: the same manifest, and the same tables, plots and gallery."""
    sweep = render_sweeps[0]
    written = {}
    for run in "ab":
        side_by_side(outputs, ["report", str(sweep), "logger=none", f"hydra.run.dir={tmp_path / run}"])
        written[run] = {name: data for name, data in output_files(sweep).items()
                        if not name.split("/")[0].isdigit()}  # the report's files, not the jobs'
    manifest = assert_same_runs(tmp_path / "a", tmp_path / "b", pngs_at_least=0)
    assert manifest["metrics"]["jobs"] == 2
    assert sorted(written["a"]) == sorted(written["b"])
    assert sum(name.endswith(".png") for name in written["a"]) >= 3
    assert [n for n in written["a"] if written["a"][n] != written["b"][n]] == []

