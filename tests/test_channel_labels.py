"""`studio visualize` links each rendered channel to its Network Dissection label: the same label and IoU that
`studio dissect` gives the unit, in the items, a captioned grid and the gallery; off where asked or where the
targets are not channels; a bad concept is one line. And the demo's dissect step labels its conv2 renders."""

from __future__ import annotations

import json

import pytest
import torch

from studio.concepts.dissect import dissect, layer_maps
from studio.concepts.masks import builtin_masks
from tests.conftest import QUIET_LOCAL, assert_one_line_error, compose_config, read_manifest, run_studio_forked

QUICK = ["steps=16", "judge_metrics=false", "exemplars.k=0", "progress=false", *QUIET_LOCAL]


@pytest.fixture(scope="module")
def labelled(small_cnn, outputs, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("labelled")
    result = run_studio_forked("visualize", "objective.channels=all", *QUICK, f"hydra.run.dir={run_dir}",
                               outputs=outputs)
    assert result.returncode == 0, result.stderr
    return run_dir, read_manifest(run_dir), result.stdout


def test_every_conv2_channel_carries_the_label_studio_dissect_gives_its_unit(labelled, small_cnn, datamodule):
    run_dir, manifest, stdout = labelled
    images = datamodule.split("test")[0]
    masks = builtin_masks(images, ["ink", "background", "loop_interior", "stroke_end", "top_half", "bottom_half"])
    units = dissect(layer_maps(small_cnn.model, images, "conv2"), masks)  # the engine `studio dissect` runs
    items = manifest["items"]
    assert [i["target"] for i in items] == [f"conv2:{k}" for k in range(12)]
    for item, unit in zip(items, units):
        concept, iou = unit.ranked()[0]
        assert item["dissect_concept"] == concept and item["dissect_iou"] == pytest.approx(iou, abs=1e-4)
        assert item["dissect_label"] == unit.label()
    labelled_count = sum(i["dissect_label"] is not None for i in items)
    assert labelled_count >= 1  # measured: 4 of 12 (loop_interior 2, top_half 1, bottom_half 1)
    assert manifest["metrics"]["dissect_labelled_channels"] == labelled_count
    assert f"{labelled_count} of 12 conv2 channels labelled by Network Dissection" in stdout
    assert (run_dir / manifest["artifacts"]["grid_dissect"]).stat().st_size > 5_000


def test_a_channel_rendered_from_several_seeds_counts_once_among_the_labelled():
    from studio.commands.channel_labels import label_items

    labels = {"conv2:0": ("ink", "ink", 0.2), "conv2:1": (None, "stroke_end", 0.01)}
    items = [{"target": f"conv2:{k}", "seed": seed} for k in range(3) for seed in range(4)]
    assert label_items(items, labels) == 1  # one channel, however many seeds (items) show it
    assert [i.get("dissect_label") for i in items[:5]] == ["ink"] * 4 + [None]
    assert "dissect_concept" not in items[-1]  # conv2:2 was not dissected


def test_a_sweep_gallery_captions_the_channels_with_their_labels(labelled, outputs, tmp_path):
    run_dir, manifest, _ = labelled
    sweep = tmp_path / "sweep"
    result = run_studio_forked("visualize", "-m", "objective.channels=[0,1]", "seed=0,1", *QUICK,
                               f"hydra.sweep.dir={sweep}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert run_studio_forked("report", str(sweep), "logger=none", outputs=outputs).returncode == 0
    page = (sweep / "gallery" / "index.html").read_text()
    start = page.index('<script id="gallery-data" type="application/json">')
    cards = json.loads(page[page.index(">", start) + 1:page.index("</script>", start)])["cards"]
    by_target = {i["target"]: i for i in manifest["items"]}
    assert len(cards) == 4
    for card in cards:
        assert card["fields"]["dissect_concept"] == by_target[card["facets"]["target"]]["dissect_concept"]
    assert "card.fields.dissect_label" in page  # the caption shows it


@pytest.mark.parametrize("case", ["off", "classes", "no maps"])
def test_no_labels_where_they_are_not_asked_for_or_do_not_apply(case, small_cnn, outputs, tmp_path):
    args = {"off": ["objective.channels=[0,1]", "dissect_labels.enabled=false"],
            "classes": ["objective=class", "objective.classes=[0]"],
            "no maps": ["objective.layer=fc1", "objective.channels=[0,1]"]}[case]
    result = run_studio_forked("visualize", *args, *QUICK, f"hydra.run.dir={tmp_path}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(tmp_path)
    assert not any("dissect_label" in i for i in manifest["items"]) and "grid_dissect" not in manifest["artifacts"]
    assert not (tmp_path / "grid_dissect.png").exists()
    assert ("fc1 has no C×H×W maps, so its channels get no dissect label" in result.stdout) == (case == "no maps")


def test_an_unknown_label_concept_is_one_line_before_anything_is_written(outputs, tmp_path):
    result = run_studio_forked("visualize", "dissect_labels.concepts=[ink,edge]", *QUICK,
                               f"hydra.run.dir={tmp_path}", outputs=outputs)
    assert_one_line_error(result, "unknown built-in concept 'edge' for dissect", "ink, background, mark")
    assert not (tmp_path / "grid.png").exists()


def test_the_demo_dissects_conv2_and_labels_its_renders(small_cnn, outputs, tmp_path):
    from studio.commands import channel_labels
    from studio.commands.dissect import demo_step
    from studio.images import save_png
    from studio.tracking import Tracker

    cfg = compose_config("demo", ["logger=none", "trainer.enable_progress_bar=false"])
    with Tracker(cfg, "demo", tmp_path, str(tmp_path)) as tracker:
        result, rows = demo_step(cfg, tracker, tmp_path / "dissect")
        assert [r["unit"] for r in rows] == [f"conv2:{k}" for k in range(12)]
        assert result.metrics["dissect/labelled_units"] == sum(r["labelled"] for r in rows) >= 1
        strips = [v for k, v in result.artifacts.items() if k.startswith("dissect/strip_")]
        assert len(strips) >= 4 and all((tmp_path / s).is_file() for s in strips)
        items = []  # what the demo's conv2 renders hand over: real PNGs, one per channel
        for k in range(12):
            save_png(torch.rand(1, 28, 28), tmp_path / "visualize" / "conv2_l2_tv" / f"conv2_{k}.png")
            items.append({"target": f"conv2:{k}", "render": "conv2_l2_tv", "seed": 0,
                          "image": f"visualize/conv2_l2_tv/conv2_{k}.png"})
        items.append({"target": "class:0", "render": "classes_l2_tv", "seed": 0, "image": "x.png"})
        artifacts = channel_labels.label_demo(items, rows, tmp_path, tracker)
    assert [i.get("dissect_concept") for i in items[:12]] == [r["concept"] for r in rows]
    assert [i["dissect_label"] is not None for i in items[:12]] == [r["labelled"] for r in rows]
    assert "dissect_concept" not in items[12]
    assert (tmp_path / artifacts["visualize/conv2_l2_tv/grid_dissect"]).stat().st_size > 5_000


def test_python_gets_the_same_labels_as_the_rendered_channels(labelled):
    import studio
    from studio.errors import StudioError

    _, manifest, _ = labelled
    labels = studio.dissect_labels("conv2")  # the session's cached small_cnn
    assert {u: (v["label"], v["concept"]) for u, v in labels.items()} == {
        i["target"]: (i["dissect_label"], i["dissect_concept"]) for i in manifest["items"]}
    with pytest.raises(StudioError, match="layer 'fc1' gives 128 features per image, no spatial maps"):
        studio.dissect_labels("fc1")
