"""`studio explain` through the real CLI: panels, maps, manifest items, the W&B table, one-line errors."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from studio.explain import method_names
from studio.models import build_net
from studio.tracking import read_offline_run
from tests.conftest import QUIET_TRAINER, assert_one_line_error, compose_config, run_studio, run_studio_forked
from tests.test_tracking import offline_tracker, read_when_written


def test_explain_all_methods_writes_panels_manifest_and_wandb(small_cnn, datamodule, outputs, tmp_path):
    result = run_studio("explain", "method=all", "data.split=test", "explain.images=2",
                        "explain.metrics.stability_seeds=2", f"hydra.run.dir={tmp_path}", *QUIET_TRAINER,
                        outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert "reused from cache" in result.stdout and "deletion" in result.stdout
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["command"] == "explain" and manifest["status"] == "complete"

    # one item per (image, method), with the keys; its map and its image's panel exist
    items = manifest["items"]
    x, y = datamodule.split("test")
    shown = sorted({item["index"] for item in items})
    assert sorted(y[shown].tolist()) == [0, 1]  # the classes in turn (the split is sorted by class)
    assert sorted((item["index"], item["method"]) for item in items) == sorted(
        (i, name) for i in shown for name in method_names("all", small_cnn.model))  # no attention maps: a CNN
    predictions = small_cnn.model(x).argmax(1)
    for item in items:
        assert item["target"] == item["prediction"] == int(predictions[item["index"]])  # explain.target=pred
        assert Image.open(tmp_path / item["image"]).size[0] >= 112  # 28 px maps upscaled to be readable
        assert (tmp_path / item["panel"]).is_file()
        m = item["metrics"]
        assert 0 <= m["deletion_auc"] <= 1 and 0 <= m["insertion_auc"] <= 1 and "sanity" in m
        assert ("r2" in m and "r2_heldout" in m) == (item["method"] == "lime")
        stochastic = ("lime", "smoothgrad", "kernelshap", "gradientshap")
        assert ("stability" in m) == (item["method"] in stochastic)
    assert sorted(p.name for p in (tmp_path / "panels").glob("*.png")) == [f"{i:05d}.png" for i in shown]
    panel = Image.open(tmp_path / "panels" / f"{shown[0]:05d}.png")
    assert panel.size[0] > 3 * panel.size[1]  # image | one column per method, side by side

    metrics = manifest["metrics"]
    assert metrics["lime/r2"] >= 0.8 and metrics["images"] == 2
    assert {"random/deletion_auc", "random/insertion_auc", "ig/ig_delta", "smoothgrad/stability"} <= set(metrics)
    assert {"kernelshap/completeness_error", "gradientshap/completeness_error", "lrp/conservation_error",
            "lrp/bias_share", "guided_backprop/sanity", "deconvnet/deletion_auc"} <= set(metrics)
    assert metrics["kernelshap/completeness_error"] <= 0.05

    # the W&B mirror, read back from the offline run on disk
    logged = read_offline_run(manifest["artifacts"]["wandb_run"])
    assert logged["run"]["job_type"] == "explain"
    assert logged["summary"]["lime/r2"] == metrics["lime/r2"]
    assert logged["summary"]["explanations/_type"] == "table-file"
    table_file = Path(manifest["artifacts"]["wandb_run"]) / "files" / logged["summary"]["explanations/path"]
    table = json.loads(table_file.read_text())
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    assert len(rows) == len(items)
    lime_rows = {row["index"]: row for row in rows if row["method"] == "lime"}
    for item in items:
        if item["method"] == "lime":
            assert lime_rows[item["index"]]["r2"] == item["metrics"]["r2"]


def test_one_method_and_the_true_label_as_target(small_cnn, outputs, tmp_path):
    result = run_studio("explain", "method=gradcam", "explain.images=3", "explain.target=label",
                        f"hydra.run.dir={tmp_path}", "logger=none", *QUIET_TRAINER, outputs=outputs)
    assert result.returncode == 0, result.stderr
    items = json.loads((tmp_path / "manifest.json").read_text())["items"]
    assert [item["method"] for item in items] == ["gradcam"] * 3
    assert all(item["target"] == item["label"] for item in items)


def test_bad_input_is_one_line_and_writes_nothing(small_cnn, outputs, tmp_path):
    broken = {k: v.clone() for k, v in small_cnn.model.state_dict().items()}
    broken["net.fc.bias"].fill_(float("nan"))
    torch.save(broken, tmp_path / "nan.pt")
    torch.save(build_net("small_cnn", 3, 10).state_dict(), tmp_path / "rgb.pt")
    torch.save(build_net("torchvision", 3, 10).state_dict(), tmp_path / "resnet.pt")  # residual adds: no LRP rule
    cases = {
        "target": (["explain.target=12"], ["explain.target 12 is out of range", "10 classes (0..9)"]),
        "one_segment": (["method=lime", "explain.lime.segmentation=grid", "explain.lime.segmentations.grid.cell=28"],
                        ["segmentation 'grid'", "produced 1 segment", "at least 2"]),
        "nan": (["model=checkpoint", f"model.path={tmp_path / 'nan.pt'}"], ["non-finite outputs (nan/inf)"]),
        "channels": (["model=checkpoint", f"model.path={tmp_path / 'rgb.pt'}"],
                     ["does not fit this model", "net.conv1.weight has shape (32, 3, 3, 3)", "expected (32, 1, 3, 3)"]),
        "lrp_no_rule": (["method=lrp", "model=checkpoint", "model.arch=torchvision",
                         f"model.path={tmp_path / 'resnet.pt'}"],
                        ["LRP has no rule for layer 'net' (ResNet); it propagates through Conv2d, Linear, ReLU",
                         "use method=ig, gradientshap or occlusion for this model"]),
    }
    for name, (args, fragments) in cases.items():
        result = run_studio_forked("explain", *args, "explain.images=2", "logger=none",
                                   f"hydra.run.dir={tmp_path / name}", *QUIET_TRAINER, outputs=outputs)
        assert_one_line_error(result, *fragments)
        left = {p.name for p in (tmp_path / name).iterdir()} - {".hydra", "explain.log"}  # Hydra's own records
        assert not left, (name, left)  # no manifest, panels or maps


@pytest.mark.parametrize("args,message", [
    (["explain.target=seven"], "explain.target 'seven' is not valid; choose from: pred, label or a class index 0..9"),
    (["explain.images=0"], "explain.images must be ≥ 1, got 0"),
    (["explain.clever_hans=true"], "explain.clever_hans=true needs marked data (data=mnist5k_marked or "
                                   "experiment=clever_hans); got data=mnist5k"),
    (["experiment=clever_hans", "data.options.test_rate=0"],
     "no marked images in data.split=test; set data.options.test_rate > 0"),
], ids=["target", "images", "clever_hans-data", "clever_hans-no-mark"])
def test_bad_input_is_refused_before_any_training(tmp_path, args, message):
    from studio.errors import StudioError
    from studio.commands.explain import run as explain
    from studio.tracking import Tracker

    cfg = compose_config("explain", [*args, "logger=none", f"paths.models={tmp_path / 'no-models'}"])
    with Tracker(cfg, "explain", tmp_path, str(tmp_path)) as tracker, pytest.raises(StudioError) as error:
        explain(cfg, tracker)
    assert str(error.value) == message
    assert not (tmp_path / "no-models").exists() and not (tmp_path / "panels").exists()  # nothing trained or written


def test_a_failing_wandb_table_warns_and_the_maps_and_metrics_are_kept(small_cnn, datamodule, tmp_path, monkeypatch,
                                                                       caplog):
    import wandb

    from studio.commands.explain import explain_run

    def broken(*args, **kwargs):
        raise OSError("media dir is read-only")

    monkeypatch.setattr(wandb, "Image", broken)
    cfg = compose_config("explain", ["method=saliency", "explain.metrics.sanity=false"])
    x, y = datamodule.split("test")
    with offline_tracker(tmp_path / "wandb_run", monkeypatch, "explain") as tracker, \
            caplog.at_level("WARNING", logger="studio"):
        metrics, items = explain_run(cfg, small_cnn.model, x[:1], y[:1], torch.tensor([0]), ["saliency"],
                                     tmp_path / "out", tracker)
        run_dir = tracker.wandb_run_dir
    warnings = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert warnings == ["W&B table failed (OSError: media dir is read-only); results are still written to disk"]
    assert (tmp_path / "out" / items[0]["image"]).is_file() and (tmp_path / "out" / items[0]["panel"]).is_file()
    logged = read_when_written(run_dir, lambda run: "saliency/deletion_auc" in run["summary"])
    assert logged["summary"]["saliency/deletion_auc"] == metrics["saliency/deletion_auc"]  # the numbers went on
    assert not any(key.startswith("explanations") for key in logged["summary"])
