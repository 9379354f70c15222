"""`studio explain` through the real CLI: panels, maps, manifest items, the W&B table, one-line errors."""

import json

from studio.explain import METHODS
from studio.tracking import read_offline_run
from tests.conftest import QUIET_TRAINER, run_studio


def _one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_explain_all_methods_writes_panels_manifest_and_wandb(small_cnn, outputs, tmp_path):
    result = run_studio("explain", "method=all", "data.split=test", "explain.images=2",
                        "explain.metrics.stability_seeds=2", f"hydra.run.dir={tmp_path}", *QUIET_TRAINER,
                        outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert "reused from cache" in result.stdout and "deletion" in result.stdout
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["command"] == "explain" and manifest["status"] == "complete"
    items = manifest["items"]
    assert len(items) == 2 * len(METHODS)
    assert {item["method"] for item in items} == set(METHODS)
    for item in items:
        assert (tmp_path / item["image"]).is_file() and (tmp_path / item["panel"]).is_file()
        assert {"target", "method", "image", "metrics"} <= set(item)
        assert {"deletion_auc", "insertion_auc"} <= set(item["metrics"])
    lime = [item for item in items if item["method"] == "lime"]
    assert all({"r2", "r2_heldout", "stability"} <= set(item["metrics"]) for item in lime)
    assert len(list((tmp_path / "panels").glob("*.png"))) == 2
    metrics = manifest["metrics"]
    assert metrics["lime/r2"] >= 0.8 and metrics["lime/deletion_auc"] < metrics["random/deletion_auc"]

    logged = read_offline_run(manifest["artifacts"]["wandb_run"])
    assert logged["run"]["job_type"] == "explain"
    assert logged["summary"]["lime/r2"] == metrics["lime/r2"]
    assert logged["summary"]["explanations/_type"] == "table-file"  # the W&B table, one row per item
    assert logged["summary"]["explanations/nrows"] == len(items)


def test_one_method(small_cnn, outputs, tmp_path):
    result = run_studio("explain", "method=gradcam", "explain.images=1", "explain.target=label",
                        f"hydra.run.dir={tmp_path}", "logger=none", *QUIET_TRAINER, outputs=outputs)
    assert result.returncode == 0, result.stderr
    items = json.loads((tmp_path / "manifest.json").read_text())["items"]
    assert [item["method"] for item in items] == ["gradcam"] and items[0]["target"] == items[0]["label"]


def test_bad_input_is_one_line_and_writes_nothing(small_cnn, outputs, tmp_path):
    for args, fragments in (
            (["method=bogus"], ["unknown method 'bogus'", "all, gradcam, ig, lime, occlusion, saliency, smoothgrad"]),
            (["explain.target=12"], ["explain.target 12 is out of range", "10 classes"]),
            (["method=lime", "explain.lime.segmentation=grid", "explain.lime.segmentations.grid.cell=28"],
             ["produced 1 segment", "at least 2"])):
        run_dir = tmp_path / args[-1].replace("=", "_")
        result = run_studio("explain", *args, "explain.images=1", "logger=none", f"hydra.run.dir={run_dir}",
                            *QUIET_TRAINER, outputs=outputs)
        _one_line_error(result, *fragments)
        assert not (run_dir / "manifest.json").exists() and not (run_dir / "panels").exists()
