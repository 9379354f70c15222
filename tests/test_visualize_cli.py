"""`studio visualize` and the demo's visualizations through the real CLI: manifest, PNGs, W&B, errors."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from studio.errors import StudioError
from studio.optvis import channel, pixel, render
from studio.tracking import read_offline_run
from studio.visualize import report_failures, save_rendering, summary
from tests.conftest import assert_one_line_error, read_manifest, run_studio
from tests.test_optvis import overflowing_model

FAST = ["progress=false", "trainer.enable_progress_bar=false"]


def test_visualize_a_whole_layer_writes_manifest_pngs_and_wandb(small_cnn, outputs, tmp_path):
    result = run_studio("visualize", "objective=channel", "objective.layer=conv2", "objective.channels=all",
                        "regularizer=standard", "steps=32", "thresholds=[8]", f"hydra.run.dir={tmp_path}", *FAST,
                        outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert "12 image(s)" in result.stdout
    manifest = read_manifest(tmp_path)
    assert manifest["command"] == "visualize" and manifest["status"] == "complete"
    items = manifest["items"]
    assert [i["target"] for i in items] == [f"conv2:{c}" for c in range(12)]
    for item in items:
        assert set(item) == {"target", "seed", "image", "metrics"} and item["seed"] == 0
        assert set(item["metrics"]) == {"objective", "activation_gain"}
        assert item["metrics"]["activation_gain"] > 0
        with Image.open(tmp_path / item["image"]) as png:  # native size, grey like the data
            assert png.size == (28, 28) and png.mode == "L"
    assert manifest["metrics"]["images"] == 12 and manifest["metrics"]["failed"] == 0
    for key in ("grid", "grid_step8", "history"):
        assert (tmp_path / manifest["artifacts"][key]).is_file()
    assert (tmp_path / "history.csv").read_text().splitlines()[0].startswith("step,conv2:0@0,conv2:1@0")

    wandb_run = Path(manifest["artifacts"]["wandb_run"])
    logged = read_offline_run(wandb_run)
    assert logged["run"]["job_type"] == "visualize"
    rows = logged["history"]  # nested W&B values come back flattened: "visualize/grid/_type"
    assert any(row.get("visualize/grid/_type") == "image-file" for row in rows)
    assert any(row.get("visualize/images/_type") == "table-file" and row.get("visualize/images/nrows") == 12
               for row in rows)
    assert any("visualize/objective_mean" in row for row in logged["history"])
    # the grid PNG is in the run's media (offline tables keep their images only in the W&B artifact cache)
    assert [p.name.split("_")[0] for p in (wandb_run / "files" / "media" / "images").rglob("*.png")] == ["grid"]
    assert logged["summary"]["images"] == 12


def test_visualize_every_class_with_seeds(small_cnn, outputs, tmp_path):
    result = run_studio("visualize", "objective=class", "objective.classes=all", "seeds=2", "regularizer=none",
                        "logger=none", f"hydra.run.dir={tmp_path}", *FAST, outputs=outputs)
    assert result.returncode == 0, result.stderr
    items = read_manifest(tmp_path)["items"]
    assert [(i["target"], i["seed"]) for i in items] == [(f"class:{c}", s) for c in range(10) for s in (0, 1)]
    assert all(i["metrics"]["target_prob"] >= 0.99 for i in items)
    assert items[3]["image"] == "images/class_1_s1.png"


BAD_INPUTS = {
    "layer": (["objective.layer=conv9"], ["unknown layer 'conv9'; choose from:", "conv2", "fc1"]),
    "channel": (["objective.channels=[0,12]"], ["channel 12 is out of range: layer 'conv2' has 12 channels (0..11)"]),
    "class": (["objective=class", "objective.classes=10"],
              ["class 10 is out of range: the model has 10 classes (0..9)"]),
    "regularizer-term": (["+regularizer.tvv.weight=1"],
                         ["unknown regularizer 'tvv'; choose from:", "clip_contrib", "weight_decay"]),
    "param": (["param.name=pixels"], ["unknown param 'pixels'; choose from: fft, latent, pixel"]),
    "objective-name": (["objective.name=deepdream"],
                       ["unknown objective 'deepdream'; choose from:", "channel", "diversity", "layer"]),
    "diversity-seeds": (["objective=diversity"], ["set seeds=2 or more"]),
    "device": (["device=tpu"], ["unknown device 'tpu'; choose from: auto, cpu, cuda"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_before_any_training(outputs, tmp_path, case):
    from studio.tracking import Tracker
    from studio.visualize import visualize
    from tests.conftest import compose_config

    args, fragments = BAD_INPUTS[case]
    cfg = compose_config("visualize", [*args, "logger=none", f"paths.models={tmp_path / 'no-models'}"])
    with Tracker(cfg, "visualize", tmp_path, str(tmp_path)) as tracker, pytest.raises(StudioError) as error:
        visualize(cfg, tracker, tmp_path)
    assert len(str(error.value).splitlines()) == 1
    for fragment in fragments:
        assert fragment in str(error.value)
    assert not (tmp_path / "no-models").exists() and not (tmp_path / "images").exists()  # nothing trained or written


@pytest.mark.parametrize("args,fragments", [
    (["objective.layer=conv9"], ["unknown layer 'conv9'; choose from:", "conv2", "fc1"]),
    (["regularizer=smooth"], ["unknown regularizer 'smooth'; choose from:", "l2_tv", "standard"]),
], ids=["layer", "regularizer"])
def test_bad_input_fails_in_one_line_on_the_command_line(outputs, tmp_path, args, fragments):
    result = run_studio("visualize", *args, "logger=none", f"hydra.run.dir={tmp_path}", *FAST, outputs=outputs)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "manifest.json").exists() and not (tmp_path / "images").exists()


def test_a_failed_target_is_reported_and_the_rest_is_saved(tmp_path, capsys):
    rendering = render(overflowing_model(), channel("dup", [0, 1]), param=pixel(8, channels=1, init_sd=0.05),
                       steps=40, lr=0.02)
    report_failures(rendering, "visualize")
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "warning: stopped dup:1 seed 0: objective became inf at step" in warning[0]
    saved = save_rendering(rendering, tmp_path, tmp_path, 1)
    assert [i["target"] for i in saved.items] == ["dup:0"]
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["dup_0_s0.png"]
    assert summary(rendering)["failed"] == 1 and "dup:1 seed 0" in summary(rendering)["failures"][0]

    all_bad = render(overflowing_model(), channel("dup", 1), param=pixel(8, channels=1, init_sd=0.05), steps=40,
                     lr=0.02)
    with pytest.raises(StudioError, match=r"every target failed: dup:1 seed 0: objective became inf at step"):
        report_failures(all_bad, "visualize")


def test_visualize_is_listed_in_help(outputs):
    result = run_studio("--help", outputs=outputs)
    assert result.returncode == 0 and "  visualize" in result.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_renders_on_cuda_with_bf16(small_cnn):
    model = small_cnn.model
    r = render(model, channel("conv2", range(12)), steps=32, device="cuda")
    assert r.images.device.type == "cpu" and (r.activation_gain > 0).all()
    model.cpu()

