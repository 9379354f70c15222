"""`studio visualize` and the demo's visualizations through the real CLI: manifest, PNGs, W&B, errors."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from studio.errors import StudioError
from studio.models import build_classifier
from studio.optvis import channel, pixel, render
from studio.tracking import read_offline_run
from studio.adapters import optvis as optvis_config
from studio.commands.visualize import log_rendering, report_failures, save_rendering, summary
from studio.images import to_pil
from tests.conftest import assert_one_line_error, compose_config, read_manifest, run_studio, run_studio_forked
from tests.test_tracking import offline_tracker, read_when_written
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
        assert set(item) == {"target", "seed", "image", "metrics", "exemplars", "dissect_label", "dissect_concept",
                             "dissect_iou"} and item["seed"] == 0  # each channel's Network Dissection label
        assert set(item["metrics"]) == {"objective", "activation_gain", "render_vs_exemplars", "path_similarity",
                                        "path_similarity_natural", "randomized_similarity"}
        assert item["metrics"]["activation_gain"] > 0
        with Image.open(tmp_path / item["image"]) as png:  # native size, grey like the data
            assert png.size == (28, 28) and png.mode == "L"
    assert manifest["metrics"]["images"] == 12 and manifest["metrics"]["failed"] == 0
    for key in ("grid", "grid_step8", "history", "grid_dissect"):
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
    media = sorted(p.name for p in (wandb_run / "files" / "media" / "images").rglob("*.png"))
    assert len(media) == 2 and media[0].startswith("grid_") and media[1].startswith("grid_dissect_")
    table = next(wandb_run.rglob("visualize/images_*.table.json"), None) or next(wandb_run.rglob("*.table.json"))
    columns = json.loads(table.read_text())["columns"]
    assert columns[:5] == ["target", "seed", "image", "exemplars_top", "exemplars_bottom"]
    assert {"dissect_label", "dissect_concept", "dissect_iou"} <= set(columns)
    assert logged["summary"]["images"] == 12


def test_visualize_every_class_with_seeds(small_cnn, outputs, tmp_path):
    # judge_metrics=false: nothing here reads a judge number, and scoring would build the judge's real-image
    # statistics and realism baselines (90 of this test's 100 CPU s); a fork, not a new interpreter: W&B is off
    result = run_studio_forked("visualize", "objective=class", "objective.classes=all", "seeds=2", "regularizer=none",
                               "exemplars.k=0", "judge_metrics=false", "logger=none", f"hydra.run.dir={tmp_path}",
                               *FAST, outputs=outputs)
    assert result.returncode == 0, result.stderr
    items = read_manifest(tmp_path)["items"]
    assert "exemplars" not in items[0] and "path_similarity" not in items[0]["metrics"]  # exemplars.k=0: off
    assert not (tmp_path / "exemplars").exists()
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
    "param": (["param.name=pixels"], ["unknown param 'pixels'; choose from: fft, guided, latent, pixel"]),
    "objective-name": (["objective.name=deepdream"],
                       ["unknown objective 'deepdream'; choose from:", "channel", "diversity", "layer"]),
    "diversity-seeds": (["objective=diversity"], ["set seeds=2 or more"]),
    "device": (["device=tpu"], ["unknown device 'tpu'; choose from: auto, cpu, cuda"]),
    "seeds": (["seeds=0"], ["seeds=0 must be at least 1"]),
    "batch-size": (["batch_size=0"], ["batch_size=0 must be at least 1"]),
    "exemplars-randomize-to": (["exemplars.randomize_to=conv9"],
                               ["exemplars.randomize_to='conv9' is not target or all or a layer of the model"]),
    "exemplars-heldout": (["exemplars.heldout=train"], ["exemplars.heldout=train must differ from exemplars.split"]),
    "exemplars-k": (["exemplars.k=-1"], ["exemplars.k=-1 must be at least 0"]),
    "size": (["param.size=2"], ["the model cannot take images of shape (1, 2, 2) (param.channels, param.size): ",
                                "Output size is too small"]),
    **({} if torch.cuda.is_available() else {
        "no-gpu": (["device=cuda"], ["device='cuda' but no CUDA GPU is available; use device=auto or cpu"])}),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_before_any_training(outputs, tmp_path, case):
    from studio.tracking import Tracker
    from studio.commands.visualize import run as visualize
    from tests.conftest import compose_config

    args, fragments = BAD_INPUTS[case]
    cfg = compose_config("visualize", [*args, "logger=none", f"paths.models={tmp_path / 'no-models'}"])
    with Tracker(cfg, "visualize", tmp_path, str(tmp_path)) as tracker, pytest.raises(StudioError) as error:
        visualize(cfg, tracker)
    assert len(str(error.value).splitlines()) == 1
    for fragment in fragments:
        assert fragment in str(error.value)
    assert not (tmp_path / "no-models").exists() and not (tmp_path / "images").exists()  # nothing trained or written


@pytest.mark.parametrize("args,fragments", [
    (["objective.layer=conv9"], ["unknown layer 'conv9'; choose from:", "conv2", "fc1"]),
    (["regularizer=smooth"], ["unknown regularizer 'smooth'; choose from:", "l2_tv", "standard"]),
], ids=["layer", "regularizer"])
def test_bad_input_fails_in_one_line_on_the_command_line(outputs, tmp_path, args, fragments):
    result = run_studio_forked("visualize", *args, "logger=none", f"hydra.run.dir={tmp_path}", *FAST, outputs=outputs)
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



def test_no_regularizer_at_all_passes_the_start_up_checks():
    from studio import config
    from studio.adapters import optvis as optvis_config

    assert config.checked_overrides("visualize", ["~regularizer"]) == ["~regularizer"]  # a deletion names no config
    regularization = optvis_config.build_regularization(compose_config("visualize", ["~regularizer"]).get("regularizer"))
    assert regularization.as_list() == [] and regularization.transforms == []


def test_an_image_of_other_than_1_or_3_channels_is_saved_as_their_mean_in_grey():
    image = torch.stack([torch.zeros(4, 5), torch.ones(4, 5)])  # 2 channels: 0 and 1
    png = to_pil(image)
    assert png.mode == "L" and png.size == (5, 4)
    assert png.getextrema() == (round(0.5 * 255),) * 2  # every pixel


def _untrained(name: str = "small_cnn"):
    cfg = compose_config("visualize", [f"model={name}"])
    return build_classifier(cfg.model, 1, 10, [0.5], [0.25])


def test_a_failing_wandb_image_warns_and_the_files_stay_on_disk(tmp_path, monkeypatch, caplog):
    import wandb

    rendering = render(_untrained(), channel("conv2", [0, 1]), param=pixel(28, channels=1), steps=4)
    saved = save_rendering(rendering, tmp_path, tmp_path, 1)

    def broken(*args, **kwargs):
        raise OSError("media dir is read-only")

    monkeypatch.setattr(wandb, "Image", broken)
    with offline_tracker(tmp_path / "wandb_run", monkeypatch, "visualize") as tracker, \
            caplog.at_level("WARNING", logger="studio"):
        log_rendering(tracker, rendering, saved, tmp_path, "visualize")
        run_dir = tracker.wandb_run_dir
    warnings = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert warnings == ["W&B images failed (OSError: media dir is read-only); results are still written to disk"]
    assert all((tmp_path / item["image"]).is_file() for item in saved.items) and saved.grid.is_file()
    logged = read_when_written(run_dir, lambda run: any("visualize/objective_mean" in row for row in run["history"]))
    assert any("visualize/objective_mean" in row for row in logged["history"])  # the curve still went to W&B
    assert not any(key.startswith(("visualize/grid", "visualize/images")) for row in logged["history"] for key in row)


def test_demo_skips_the_filter_renders_of_a_model_without_conv2(tmp_path, monkeypatch, capsys):
    from studio import config
    from studio.tracking import Tracker
    from studio.commands.visualize import demo_visualizations

    conf = tmp_path / "conf"  # the demo takes its pixel renders' steps from conf/param/pixel.yaml: 2 steps here
    shutil.copytree(config.CONF_DIR, conf)
    settings = (conf / "param" / "pixel.yaml").read_text()
    assert "render: {steps: 256," in settings
    (conf / "param" / "pixel.yaml").write_text(settings.replace("render: {steps: 256,", "render: {steps: 2,"))
    monkeypatch.setattr(config, "CONF_DIR", conf)
    cfg = compose_config("demo", ["model=resnet18", "logger=none"])  # `studio demo model=resnet18`
    with Tracker(cfg, "demo", tmp_path / "run", str(tmp_path)) as tracker:
        shown = demo_visualizations(cfg, tracker, tmp_path / "run", _untrained("resnet18"))
    assert "demo: resnet18 has no layer 'conv2'; skipping its filter renders" in capsys.readouterr().out
    assert sorted({item["render"] for item in shown.items}) == ["classes_l2_tv", "classes_none"]
    assert sorted(p.name for p in (tmp_path / "run" / "visualize").iterdir()) == ["classes_l2_tv", "classes_none"]


# --- the judge's numbers: what a caller of studio.judge.Judge is told --------------------------------------
@pytest.fixture(scope="module")
def untrained_judge(datamodule):
    """A judge (untrained judge_cnn) whose real images are the test split's classes 0..4 only."""
    from studio.judge import Judge

    x, y = datamodule.split("test")  # sorted by class: 100 of each
    first_five = y < 5
    return Judge(_untrained("judge_cnn"), x[:300], x[first_five], y[first_five]), x


def test_a_judge_without_a_linear_layer_is_refused(datamodule):
    from studio.judge import Judge

    cfg = compose_config("visualize", ["model@judge=resnet18", "judge.options.arch=squeezenet1_1"])
    squeezenet = build_classifier(cfg.judge, 1, 10, [0.5], [0.25])  # its classifier is a 1x1 conv
    x, y = datamodule.split("test")
    with pytest.raises(StudioError, match=r"^the judge SqueezeNet has no nn.Linear layer whose input embeds the "
                                          r"images; choose a judge whose classifier ends in one \(model@judge="):
        Judge(squeezenet, x[:20], x[:20], y[:20])


def test_realism_needs_three_images(untrained_judge):
    judge, x = untrained_judge
    with pytest.raises(StudioError, match=r"^realism needs at least 3 images to fit a covariance; got 2$"):
        judge.realism(x[:2])


def test_realism_of_a_class_with_no_real_images_names_the_classes_there_are(untrained_judge):
    judge, x = untrained_judge
    with pytest.raises(StudioError, match=r"^no real images of class 7 to compare with; the judge's real images "
                                          r"have classes 0, 1, 2, 3, 4$"):
        judge.realism(x[:3], [7, 7, 7])


def test_diversity_needs_two_seeds_of_a_target(untrained_judge):
    judge, x = untrained_judge
    with pytest.raises(StudioError, match=r"each of the 3 target\(s\) has 1 image: give 2 or more seeds"):
        judge.diversity(x[:3], ["class:0", "class:1", "class:2"])


@pytest.mark.parametrize("overrides, regularizer, steps, lr, optimizer", [
    ([], "l2_tv", 256, 0.1, "adam"),
    (["param=fft"], "l2_tv", 256, 0.1, "adam"),
    (["param=latent"], "none", 256, 0.1, "adam"),                       # no pixel penalty on G(z)
    (["param=latent", "generator=diffusion"], "none", 64, 0.1, "adam"),
    (["param=guided", "generator=diffusion"], "none", 50, 1.0, "sgd"),
    (["param=latent", "regularizer=tv", "steps=10", "lr=0.5"], "tv", 10, 0.5, "adam"),  # asked for: taken
], ids=["pixel", "fft", "latent", "latent-diffusion", "guided", "given"])
def test_the_default_recipe_is_the_parameterizations(overrides, regularizer, steps, lr, optimizer):
    from studio import config

    cfg = compose_config("visualize", overrides)
    expected = OmegaConf.to_container(config.load("regularizer", regularizer))
    assert OmegaConf.to_container(optvis_config.regularizer_config(cfg), resolve=True) == expected
    assert (cfg.steps, cfg.lr, cfg.optimizer) == (steps, lr, optimizer)
    if cfg.param.name == "guided":
        assert cfg.param.sampler_steps == steps  # one sampler step per render step


def test_an_auto_regularizer_without_a_recipe_names_the_choices():
    cfg = compose_config("visualize", ["param.render.regularizer=sharpen"])
    with pytest.raises(StudioError, match=r"regularizer=auto takes param.render.regularizer, which is 'sharpen': "
                                          r"not a regularizer; choose from: blur, clip, .*l2_tv"):
        optvis_config.regularizer_config(cfg)


def test_terms_added_to_the_auto_regularizer_go_on_top_of_the_recipe():
    cfg = compose_config("visualize", ["+regularizer.tv.weight=0.5", "+regularizer.l1.weight=0.01"])
    terms = OmegaConf.to_container(optvis_config.regularizer_config(cfg), resolve=True)
    assert terms == {"l2": {"weight": 0.1}, "tv": {"weight": 0.5}, "l1": {"weight": 0.01}}  # l2_tv, tv replaced
