"""The real CLI in a subprocess: commands, manifests, W&B offline runs read back, multirun, errors."""

import contextlib
import socket
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from studio.tracking import Tracker, read_offline_run
from tests.conftest import (FAST_GENERATOR, assert_one_line_error, compose_config, read_manifest, run_studio,
                            run_studio_forked)

QUIET = ["trainer.enable_progress_bar=false"]


def test_help_lists_every_command(outputs):
    result = run_studio("--help", outputs=outputs)
    assert result.returncode == 0
    for command in ("demo", "train", "layers"):
        assert f"  {command}" in result.stdout


def test_command_help_is_hydras(outputs):
    result = run_studio("train", "--help", outputs=outputs)
    assert result.returncode == 0
    assert "== Configuration groups ==" in result.stdout and "model: " in result.stdout


def test_unknown_command_and_unknown_choice(outputs):
    assert_one_line_error(run_studio("trian", outputs=outputs), "unknown command 'trian'", "demo, train, layers")
    assert_one_line_error(run_studio("train", "model=resnet99", outputs=outputs),
                    "unknown model 'resnet99'", "small_cnn", "judge_cnn", "resnet18", "checkpoint")
    assert_one_line_error(run_studio("train", "-m", "data=mnist5k,mnist6k", outputs=outputs), "unknown data 'mnist6k'")


def test_train_writes_manifest_and_a_readable_wandb_run(small_cnn, outputs, tmp_path):
    run_dir = tmp_path / "run"
    result = run_studio("train", f"hydra.run.dir={run_dir}", *QUIET, outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and "reused from cache" in result.stdout
    manifest = read_manifest(run_dir)
    assert manifest["command"] == "train" and manifest["status"] == "complete"
    assert manifest["metrics"]["test_acc"] == pytest.approx(small_cnn.test_acc)
    assert manifest["metrics"]["cached"] is True  # the session's trained model was reused
    assert Path(manifest["artifacts"]["checkpoint"]) == small_cnn.path.resolve()
    assert manifest["config"]["model"]["name"] == "small_cnn"

    wandb_run = Path(manifest["artifacts"]["wandb_run"])
    assert wandb_run.is_relative_to(outputs / "wandb") and wandb_run.name.startswith("offline-run-")
    logged = read_offline_run(wandb_run)
    assert logged["run"]["job_type"] == "train" and logged["run"]["group"] == str(run_dir)
    assert logged["summary"]["test_acc"] == pytest.approx(small_cnn.test_acc)
    assert logged["config"]["model"]["arch"] == "small_cnn"


def test_demo_runs_every_step(small_cnn, judge, dcgan, outputs, tmp_path):
    result = run_studio("demo", f"hydra.run.dir={tmp_path}", *QUIET, *FAST_GENERATOR["dcgan"], outputs=outputs)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(tmp_path)
    metrics = manifest["metrics"]
    assert metrics["model/test_acc"] >= 0.97 and metrics["judge/test_acc"] >= 0.97
    renders: dict = {}
    for item in manifest["items"]:
        if "render" in item:
            renders.setdefault(item["render"], []).append(item)
    assert {k: len(v) for k, v in renders.items()} == {"conv2_none": 12, "conv2_l2_tv": 12, "classes_none": 40,
                                                       "classes_l2_tv": 40, "classes_latent": 40}
    for name in ("conv2_none", "conv2_l2_tv"):
        assert metrics[f"visualize/{name}/activation_gain_min"] > 0.3
    for name in ("classes_none", "classes_l2_tv"):
        assert metrics[f"visualize/{name}/target_prob_min"] >= 0.99
    logged = read_offline_run(Path(manifest["artifacts"]["wandb_run"]))
    assert all(any(f"visualize/{name}/grid/_type" in row for row in logged["history"]) for name in renders)
    assert "visualize/classes_none/realism_ratio" in metrics and "probe_acc/fc1" in metrics
    assert "separation/fc1" in metrics
    # the dissect step: conv2's 12 units, their labels on the conv2 renders and a captioned grid each
    assert metrics["dissect/units"] == 12 and (tmp_path / manifest["artifacts"]["dissect/table_csv"]).is_file()
    for name in ("conv2_none", "conv2_l2_tv"):
        assert all("dissect_concept" in item for item in renders[name])
        assert sum(item["dissect_label"] is not None for item in renders[name]) == metrics["dissect/labelled_units"]
        assert (tmp_path / manifest["artifacts"][f"visualize/{name}/grid_dissect"]).is_file()
    for item in manifest["items"]:
        if "image" in item:
            assert (tmp_path / item["image"]).is_file(), item


def test_layers_prints_names_and_shapes(outputs, tmp_path):
    result = run_studio("layers", f"hydra.run.dir={tmp_path}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:2] == ["conv2", "Conv2d"] and "(12, 14, 14)" in line
               for line in result.stdout.splitlines())
    items = read_manifest(tmp_path)["items"]
    assert {"layer": "fc", "type": "Linear", "shape": [10]} in items


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_multirun_one_job_per_choice(outputs, tmp_path, launcher):
    result = run_studio("layers", "-m", "model=small_cnn,resnet18", f"hydra/launcher={launcher}",
                        f"hydra.sweep.dir={tmp_path}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    jobs = sorted(p.parent for p in tmp_path.glob("*/manifest.json"))
    assert [read_manifest(j)["config"]["model"]["name"] for j in jobs] == ["small_cnn", "resnet18"]


def test_logger_none_still_writes_theread_manifest(outputs, tmp_path):
    result = run_studio("layers", "logger=none", f"hydra.run.dir={tmp_path}", outputs=outputs)
    assert result.returncode == 0 and "wandb_run" not in read_manifest(tmp_path)["artifacts"]


def test_missing_data_files_fail_in_one_line(outputs, tmp_path):
    result = run_studio_forked("train", "data=fashion_mnist", f"data.options.root={tmp_path / 'absent'}",
                               f"hydra.run.dir={tmp_path / 'run'}", outputs=outputs)
    assert_one_line_error(result, "Fashion-MNIST not found", "apt-get install dataset-fashion-mnist")
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_bad_checkpoints_fail_in_one_line(outputs, tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"\x80\x04cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    result = run_studio_forked("layers", "model=checkpoint", f"model.path={evil}", f"hydra.run.dir={tmp_path / 'r1'}",
                               outputs=outputs)
    assert_one_line_error(result, "refusing to load checkpoint", "evil.pt")
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "r1" / "manifest.json").exists()
    result = run_studio_forked("layers", "model=checkpoint", f"model.path={tmp_path / 'absent.pt'}", outputs=outputs)
    assert_one_line_error(result, "checkpoint not found", "absent.pt")
    result = run_studio_forked("layers", "model=checkpoint", outputs=outputs)
    assert_one_line_error(result, "missing value for model.path")


def test_user_checkpoint_loads(small_cnn, outputs, tmp_path):
    result = run_studio_forked("train", "model=checkpoint", f"model.path={small_cnn.path}",
                               f"hydra.run.dir={tmp_path}", *QUIET, "logger=none", outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert read_manifest(tmp_path)["metrics"]["test_acc"] == pytest.approx(small_cnn.test_acc)


def test_debug_flag_shows_the_trace(outputs):
    result = run_studio("layers", "model=checkpoint", "model.path=/nonexistent.pt", outputs=outputs,
                        env={"STUDIO_DEBUG": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_console_script_is_installed():
    assert (Path(sys.executable).parent / "studio").exists()


@pytest.fixture
def silent_server():
    """A local 'W&B server' that accepts connections and never answers (a network that hangs)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []  # held open, unanswered

    def serve():
        with contextlib.suppress(OSError):  # the server closed at teardown
            while True:
                accepted.append(server.accept())

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.parametrize("fault", ["no API key", "network hangs", "dir not writable"])
def test_wandb_failure_warns_once_and_keeps_local_results(fault, outputs, tmp_path, silent_server):
    env = {"HOME": str(tmp_path / "home"), "NETRC": str(tmp_path / "none"), "WANDB_API_KEY": ""}
    args = ["logger=wandb", f"hydra.run.dir={tmp_path / 'run'}", "logger.init_timeout=5"]
    if fault == "no API key":
        args.append("logger.mode=online")
    elif fault == "network hangs":  # a valid-looking key, and a server that never replies
        env.update(WANDB_API_KEY="a" * 40, WANDB_BASE_URL=silent_server)
        args.append("logger.mode=online")
    else:  # paths.wandb under a regular file: not creatable, even by root
        (tmp_path / "a-file").write_text("")
        args.append(f"paths.wandb={tmp_path / 'a-file' / 'wandb'}")
    # the bound: init_timeout (5 s) plus the command itself, never a hang
    result = run_studio("layers", *args, outputs=outputs, env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "W&B" in line]
    assert len(warnings) == 1 and "W&B init failed" in warnings[0], warnings
    assert "results are still written to disk" in warnings[0]
    assert read_manifest(tmp_path / "run")["status"] == "complete"
    assert "conv2" in result.stdout  # the command's own output


def test_a_wandb_run_that_dies_midway_warns_once_and_the_command_goes_on(tmp_path, caplog):
    """A real offline run, finished under the tracker (as a crashed W&B service would leave it): every later
    call fails inside wandb; the tracker warns once and each call returns, so the command goes on."""
    cfg = compose_config("layers", ["logger=wandb", f"paths.wandb={tmp_path / 'wandb'}"])
    image = tmp_path / "a.png"
    Image.new("L", (4, 4)).save(image)
    with caplog.at_level("WARNING", logger="studio"), Tracker(cfg, "layers", tmp_path / "run", "g") as tracker:
        assert tracker.run is not None and tracker.wandb_run_dir.is_dir()
        tracker.run.finish()
        tracker.log({"a": 1})
        tracker.log_table("table", [{"a": 1}])
        tracker.log_images("images", [image])
        tracker.summary({"a": 1})
    warnings = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("W&B log failed (UsageError"), warnings
    assert "results are still written to disk" in warnings[0]
