"""The background-colour Clever Hans: training backgrounds that tell the class, a clean test split, and
every method's share of attribution mass on the background beside the clean model's."""

import json

import pytest
import torch

from studio.background import Background
from studio.errors import StudioError
from studio.explain import method_names
from studio.explain.clever_hans import background_share
from tests.conftest import QUIET_TRAINER, compose_config, run_studio

EXPERIMENT = ["experiment=clever_hans_background", *QUIET_TRAINER]


def test_paint_region_and_present_on_hand_made_images():
    x = torch.zeros(2, 1, 4, 4)
    x[:, :, 1:3, 1:3] = 1.0  # a 2×2 "stroke" in the middle of each image
    background = Background(levels=(0.25, 0.5))
    painted = background.paint(x, torch.tensor([0, 1]))
    assert painted[0, 0, 0, 0] == 0.25 and painted[1, 0, 0, 0] == 0.5 and (painted[:, :, 1:3, 1:3] == 1).all()
    assert torch.equal(background.present(painted, torch.tensor([0, 1])), torch.tensor([True, True]))
    assert not background.present(x, torch.tensor([0, 1])).any()  # black backgrounds are not the levels
    assert not background.present(painted, torch.tensor([1, 0])).any()  # nor another class's
    stroke = torch.zeros(4, 4, dtype=torch.bool)
    stroke[1:3, 1:3] = True
    for images in (x, painted):  # the same pixels, painted or not
        assert torch.equal(background.region(images), (~stroke).expand(2, 4, 4))


def test_background_share_is_the_attribution_mass_on_the_background():
    region = torch.zeros(2, 2, 2, dtype=torch.bool)
    region[:, 0, :] = True  # the top row is background
    maps = torch.tensor([[[[3.0, -1.0], [2.0, 2.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    share = background_share(maps, region)
    assert share[0].item() == pytest.approx(4 / 8)  # |3| + |−1| of |3| + |−1| + |2| + |2|
    assert share[1].item() == 0.0  # an all-zero map puts nothing anywhere
    rgb = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 3.0]]]])  # channels summed: 1 on top, 3 below
    assert background_share(rgb, region[:1]).item() == pytest.approx(0.25)


@pytest.mark.parametrize("levels,ink,message", [
    ((), 0.2, r"background levels are empty; give one level in \[0, 1\] per class"),
    ((0.1, 1.5), 0.2, r"background levels must be in \[0, 1\], got 1.5"),
    ((0.1,), 0.0, r"background ink must be in \(0, 1\], got 0.0"),
])
def test_a_bad_background_is_one_line(levels, ink, message):
    with pytest.raises(StudioError, match=message):
        Background(levels, ink)


def test_the_training_background_tells_the_class_and_the_test_split_is_clean(outputs):
    """Train and validation: the darkest pixel of every image is its class's level, so brightness alone
    names the class; test: the plain mnist5k test digits, where brightness names nothing."""
    from studio.data import build_datamodule

    cfg = compose_config("explain", EXPERIMENT)
    dm, plain = build_datamodule(cfg.data), build_datamodule(compose_config("explain").data)
    levels = torch.tensor(list(cfg.data.options.levels))

    def brightness_accuracy(split: str) -> float:  # the class whose level is nearest the darkest pixel
        x, y = dm.split(split)
        guess = (x.flatten(1).amin(1)[:, None] - levels).abs().argmin(1)
        return float((guess == y).float().mean())

    assert brightness_accuracy("train") == 1.0 and brightness_accuracy("val") == 1.0
    assert brightness_accuracy("test") <= 0.15  # chance is 0.1: every test image looks like class 0's level
    assert torch.equal(dm.split("test")[0], plain.split("test")[0])  # the clean digits themselves
    assert torch.equal(dm.split("train")[1], plain.split("train")[1])  # the same digits, painted


def test_the_experiment_composes():
    from studio.config import config_choices

    cfg = compose_config("explain", EXPERIMENT)
    assert cfg.data.source == "background" and cfg.explain.background and not cfg.explain.clever_hans
    assert cfg.data.split == "val" and cfg.data.options.test_rate == 0  # painted images explained, clean test
    assert cfg.data.options.base in config_choices("data")  # the clean model's data
    assert len(cfg.data.options.levels) == cfg.data.num_classes
    assert cfg.method == "all" and cfg.explain.images == 64


def test_cli_run_reports_background_share_beside_the_clean_model(outputs, tmp_path, small_cnn):
    """One short training of each model (1 epoch), 2 images, every method: the metrics in the manifest."""
    result = run_studio("explain", *EXPERIMENT, "trainer.max_epochs=1", "explain.images=2",
                        "explain.lime.samples=200", "explain.lime.heldout=0", "explain.kernelshap.samples=200",
                        "explain.smoothgrad.samples=8", "explain.gradientshap.samples=8",
                        "explain.metrics.sanity=false", "explain.metrics.stability_seeds=0", "explain.metrics.steps=10",
                        "logger=none", f"hydra.run.dir={tmp_path}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert "clean model: small_cnn on mnist5k" in result.stdout
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    metrics, items = manifest["metrics"], manifest["items"]
    applying = method_names("all", small_cnn.model)  # every method that can explain a CNN (no attention maps)
    for name in applying:
        assert 0 <= metrics[f"background_share/{name}"] <= 1 and 0 <= metrics[f"background_share_clean/{name}"] <= 1
    assert {"background/clean_acc", "background/own_background_acc", "background/follows_background"} <= set(metrics)
    assert metrics["background/clean_acc"] == pytest.approx(metrics["model/test_acc"], abs=1e-3)  # the clean test
    assert len(items) == 2 * len(applying) and {item["label"] for item in items} == {0, 1}
    for item in items:
        assert 0 <= item["metrics"]["background_share"] <= 1 and 0 <= item["metrics"]["background_share_clean"] <= 1
