"""The Clever Hans experiment: a model that learned a corner mark, and explanations that find it."""

import json

import pytest
import torch

from studio.errors import StudioError
from studio.data import load_marked
from studio.explain import method_names
from studio.explain.clever_hans import mark_found_pixels, mark_found_segments
from studio.mark import Mark
from studio.explain.compare import MetricOptions, compare_methods
from studio.commands.explain import clever_hans_story
from studio.data import classes_in_turn
from tests.conftest import QUIET_TRAINER, compose_config, run_studio

GRADIENT_METHODS = ["saliency", "smoothgrad", "ig", "occlusion", "gradcam"]


@pytest.fixture(scope="module")
def marked(outputs):
    """(config, data module, trained model) of `studio explain experiment=clever_hans` (same cache entry)."""
    from studio.data import build_datamodule
    from studio.train import trained_classifier

    cfg = compose_config("explain", ["experiment=clever_hans", *QUIET_TRAINER])
    dm = build_datamodule(cfg.data)
    return cfg, dm, trained_classifier(cfg.model, cfg.data, cfg.trainer, dm, cfg.paths.models).model


def test_mark_geometry_and_detection():
    x = torch.zeros(3, 1, 28, 28)
    mark = Mark(size=4, corner="lower_left", margin=2)
    rows, cols = mark.box(28, 28)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (22, 26, 2, 6)
    planted = mark.plant(x[:2])
    assert mark.present(planted).all() and not mark.present(x).any() and x.sum() == 0
    assert mark.region(28, 28).sum() == 16
    with pytest.raises(StudioError, match="unknown mark corner 'middle'"):
        Mark(corner="middle")


def test_marked_data_puts_the_mark_on_one_class_in_training_and_on_every_class_in_test(marked):
    cfg, dm, _ = marked
    mark, k = Mark(), cfg.data.options.mark_class
    x, y = dm.split("train")
    on = mark.present(x)
    assert on[y == k].all() and not on[y != k].any()
    xt, yt = dm.split("test")
    on_test = mark.present(xt)
    for c in range(10):  # about half of every class's test images carry the mark
        assert 0.3 < on_test[yt == c].float().mean() < 0.7


def test_found_helpers():
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[6:8, 0:2] = True
    segments = torch.zeros(1, 8, 8, dtype=torch.long)
    segments[0, 6:8, 0:2] = 1
    assert mark_found_segments(torch.tensor([[1, 0]]), segments, region).item()
    assert not mark_found_segments(torch.tensor([[0, -1]]), segments, region).item()
    heat = torch.zeros(1, 1, 8, 8)
    heat[0, 0, 6:8, 0:2] = 1.0
    assert mark_found_pixels(heat, region, top_fraction=0.0625).item()
    assert not mark_found_pixels(-heat, region, top_fraction=0.0625).item()


def test_the_model_leans_on_the_mark(marked):
    cfg, dm, model = marked
    x, y = dm.split("test")
    story = clever_hans_story(model, x, y, Mark(), cfg.data.options.mark_class)
    assert story["clean_acc"] > 0.9                       # a good digit classifier on clean images ...
    assert story["mark_lift"] > 0.02                      # ... whose class-0 probability rises with the mark
    assert story["mark_class_recall_marked"] > story["mark_class_recall_unmarked"]


def test_explanations_point_at_the_mark(marked):
    cfg, dm, model = marked
    x, y = dm.split("test")
    mark = Mark()
    marked_ones = mark.present(x).nonzero().flatten()
    chosen = marked_ones[classes_in_turn(y[marked_ones], 20)]  # two of every class, as `studio explain` picks
    assert set(y[chosen].tolist()) == set(range(10))
    result = compare_methods(model, x[chosen], ["lime", *GRADIENT_METHODS], target=cfg.data.options.mark_class,
                             options={"lime": {"samples": 500, "heldout": 0, "progress": False},
                                      "smoothgrad": {"samples": 20}},
                             metrics=MetricOptions(stability_seeds=0, sanity=False, steps=10),
                             region=mark.region(28, 28))
    found = {name: r.metrics["mark_found"].mean().item() for name, r in result.methods.items()}
    assert found["lime"] >= 0.9, found
    assert sum(found[name] >= 0.9 for name in GRADIENT_METHODS) >= 2, found


def test_cli_experiment_writes_mark_found(marked, outputs, tmp_path):
    result = run_studio("explain", "experiment=clever_hans", "explain.images=4", "explain.metrics.sanity=false",
                        "explain.metrics.stability_seeds=0", "logger=none", f"hydra.run.dir={tmp_path}",
                        *QUIET_TRAINER, outputs=outputs)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    metrics, items = manifest["metrics"], manifest["items"]
    for name in ("lime", *GRADIENT_METHODS):
        assert 0 <= metrics[f"mark_found_{name}"] <= 1
    assert metrics["mark_found_lime"] >= 0.75 and metrics["mark_found_ig"] >= 0.75
    assert {"clever_hans/hijack_rate", "clever_hans/clean_acc", "clever_hans/mark_lift"} <= set(metrics)
    assert len(list((tmp_path / "panels").glob("*.png"))) == 4
    _, dm, _ = marked
    x, _ = dm.split("test")
    assert Mark().present(x[[item["index"] for item in items]]).all()  # only marked images are explained
    assert {item["target"] for item in items} == {0}  # "why the mark's class?" ...
    assert sorted({item["label"] for item in items}) == [0, 1, 2, 3]  # ... asked of marked digits of every class
    assert all(isinstance(item["metrics"]["mark_found"], bool) for item in items)


def test_demo_explains_test_digits_and_the_clever_hans_model(small_cnn, marked, tmp_path):
    """`studio demo`'s explanation step (in-process, with fewer images and metrics than the demo's)."""
    from studio.commands.explain import demo_explanations
    from studio.tracking import Tracker

    cfg = compose_config("demo", ["logger=none", "explain.images=2", "+explain.metrics.sanity=false",
                                  "+explain.metrics.stability_seeds=0", *QUIET_TRAINER])
    with Tracker(cfg, "demo", tmp_path, str(tmp_path)) as tracker:
        result = demo_explanations(cfg, tracker, tmp_path, small_cnn.model)
    assert {(item["run"], item["method"]) for item in result.items} == {
        (run, name) for run in ("explain", "clever_hans")
        for name in method_names("all", small_cnn.model)}  # every method that applies to a CNN, in both runs
    assert len(result.items) == 2 * 2 * len(method_names("all", small_cnn.model))
    for item in result.items:
        assert (tmp_path / item["image"]).is_file() and (tmp_path / item["panel"]).is_file()
    m = result.metrics
    assert m["explain/lime/r2"] >= 0.8 and "clever_hans/mark_found_lime" in m
    assert "clever_hans/lime/r2" in m and "clever_hans/clean_acc" in m


def test_a_mark_that_is_not_a_square_or_does_not_fit_is_refused():
    with pytest.raises(StudioError, match="mark size must be ≥ 1 and margin ≥ 0, got size=0, margin=2"):
        Mark(size=0)
    with pytest.raises(StudioError, match="mark size must be ≥ 1 and margin ≥ 0, got size=4, margin=-1"):
        Mark(margin=-1)
    with pytest.raises(StudioError, match="a 30px mark with margin 2 does not fit a 28×28 image; use size "
                                          r"\+ margin ≤ 28"):
        Mark(size=30).plant(torch.zeros(1, 1, 28, 28))


@pytest.fixture
def two_classes(monkeypatch):
    """A tiny registered source with its own test set: (train images, labels, test images, labels)."""
    from studio.data import SOURCES, Images

    x, y = torch.rand(40, 1, 8, 8) * 0.5, torch.arange(40) % 2
    xt, yt = torch.rand(30, 1, 8, 8) * 0.5, torch.arange(30) % 2
    monkeypatch.setitem(SOURCES, "two_classes", lambda: Images(x, y, ["a", "b"], xt, yt))
    return x, y, xt, yt


@pytest.mark.parametrize("options,message", [
    ({"base": "marked"}, "the marked source cannot wrap itself; set data.options.base to another source"),
    ({"test_rate": 1.5}, r"test_rate must be in \[0, 1\], got 1.5"),
    ({"other_rate": -0.1}, r"other_rate must be in \[0, 1\], got -0.1"),
    ({"mark_class": 2}, r"mark_class 2 is out of range; two_classes has 2 classes \(0\.\.1\)"),
], ids=["itself", "test_rate", "other_rate", "mark_class"])
def test_marked_data_mistakes_are_one_line(two_classes, options, message):
    with pytest.raises(StudioError, match=message):
        load_marked(**{"base": "two_classes", "size": 2, "margin": 1, **options})


def test_a_base_with_its_own_test_set_keeps_it_and_marks_it(two_classes):
    x, y, xt, yt = two_classes
    data = load_marked(base="two_classes", mark_class=1, size=2, margin=1, test_rate=1.0)
    mark = Mark(size=2, margin=1)
    elsewhere = ~mark.region(8, 8)
    assert torch.equal(data.test_labels, yt) and mark.present(data.test_images).all()
    assert torch.equal(data.test_images[:, :, elsewhere], xt[:, :, elsewhere])  # the base's own test images
    assert torch.equal(data.labels, y) and torch.equal(mark.present(data.images), y == 1)
