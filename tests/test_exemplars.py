"""Natural exemplars and the render sanity checks (issue 16): the search agrees with a loop over the images,
the cascade randomizes exactly the layers it names, the metrics reach the manifest, the W&B mirror and
the gallery, and bad settings are one line."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from PIL import Image

from studio import sanity
from studio.adapters.exemplars import ExemplarSettings, cascade_layer
from studio.errors import StudioError
from studio.models import build_classifier
from studio.optvis import channel, class_
from studio.optvis.exemplars import find_exemplars, rank
from studio.report import report
from tests.conftest import QUIET_LOCAL, compose_config, read_manifest, run_studio_forked
from tests.test_report import make_job

METRICS = {"render_vs_exemplars", "path_similarity", "path_similarity_natural", "randomized_similarity"}


def _small_cnn(seed: int = 0):
    torch.manual_seed(seed)
    cfg = compose_config("train").model
    model = build_classifier(cfg, 1, 10, [0.1], [0.3]).eval()
    with torch.no_grad():  # trained-looking weights: nothing at its init values, so a re-init shows
        for name, tensor in model.net.state_dict().items():
            if not tensor.is_floating_point():
                tensor.fill_(7)  # num_batches_tracked
            elif "running_var" in name:
                tensor.add_(torch.rand_like(tensor))
            else:
                tensor.add_(torch.randn_like(tensor) * 0.1)
    return model


def _brute_force(model, images, layer: str | None, index: int) -> list[float]:
    """The objective of every image, one image per forward pass, read off a hook (or the logits)."""
    seen = {}
    module = model.net.get_submodule(layer) if layer else None
    handle = module.register_forward_hook(lambda _m, _i, out: seen.update(out=out)) if module else None
    values = []
    with torch.no_grad():
        for image in images:
            logits = model(image[None])
            values.append(float(seen["out"][0, index].mean()) if layer else float(logits[0, index]))
    if handle:
        handle.remove()
    return values


def test_exemplar_search_agrees_with_a_brute_force_loop():
    model = _small_cnn()
    images = torch.rand(37, 1, 28, 28)
    objectives = [channel("conv2", c) for c in range(12)] + [class_(3), channel("fc1", 5)]
    truth = [("conv2", c) for c in range(12)] + [(None, 3), ("fc1", 5)]
    found = find_exemplars(model, objectives, images, k=5, batch_size=8)  # batches of 8, the last one 5
    assert found.targets == [f"conv2:{c}" for c in range(12)] + ["class:3", "fc1:5"]
    for t, (layer, index) in enumerate(truth):
        values = _brute_force(model, images, layer, index)
        assert found.values[:, t].tolist() == pytest.approx(values, abs=1e-5)
        order = sorted(range(len(images)), key=lambda i: (-values[i], i))
        assert found.top[t].tolist() == order[:5]
        assert found.bottom[t].tolist() == sorted(range(len(images)), key=lambda i: (values[i], i))[:5]
        assert found.top_values()[t].tolist() == pytest.approx(sorted(values, reverse=True)[:5], abs=1e-5)


def test_ties_go_to_the_lower_index_and_k_must_fit():
    top, bottom = rank(torch.tensor([[1.0], [2.0], [2.0], [0.0], [0.0]]), 3)
    assert top.tolist() == [[1, 2, 0]] and bottom.tolist() == [[3, 4, 0]]
    with pytest.raises(StudioError, match=r"cannot take the top 6 of 5 images: k must be 1..5"):
        rank(torch.zeros(5, 1), 6)
    with pytest.raises(StudioError, match="one target at a time"):
        find_exemplars(_small_cnn(), [channel("conv2", [0, 1])], torch.rand(4, 1, 28, 28), k=2)


def test_cascading_randomization_changes_exactly_the_weights_it_claims_to():
    model = _small_cnn()
    before = copy.deepcopy(model.state_dict())
    randomized, changed = sanity.cascade_randomized(model, "conv2", seed=0)
    assert changed == ["fc", "fc1", "bn3", "conv3", "bn2", "conv2"]  # from the top layer down
    after = randomized.state_dict()
    for key, value in before.items():
        module = key.removeprefix("net.").rsplit(".", 1)[0]
        assert torch.equal(model.state_dict()[key], value), f"the original's {key} changed"
        if module in changed:
            assert not torch.equal(after[key], value), f"{key} claims to be randomized but kept its value"
        else:
            assert torch.equal(after[key], value), f"{key} is not in the cascade but changed"
    again, _ = sanity.cascade_randomized(model, "conv2", seed=0)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in after.items())  # same seed, same weights
    assert sanity.cascade_randomized(model, "relu2")[1] == changed  # a ReLU: down to the layer that feeds it
    assert sanity.cascade_randomized(model, None)[1] == ["fc"]  # a class: the top layer
    everything = sanity.cascade_randomized(model, "conv1")[1]
    assert everything[-2:] == ["bn1", "conv1"] and len(everything) == 8
    with pytest.raises(StudioError, match="unknown layer 'conv9'; choose from:"):
        sanity.cascade_randomized(model, "conv9")


def test_the_cascade_setting_names_the_layer_it_stops_at():
    settings = ExemplarSettings(9, "train", "val")
    layers, weights = ["conv1", "relu1", "conv2", "fc"], ["conv1", "conv2", "fc"]
    assert cascade_layer(settings, "conv2", layers, weights) == "conv2"
    assert cascade_layer(settings, None, layers, weights) is None
    assert cascade_layer(ExemplarSettings(9, "train", "val", randomize_to="all"), "conv2", layers, weights) == "conv1"
    assert cascade_layer(ExemplarSettings(9, "train", "val", randomize_to="relu1"), None, layers, weights) == "relu1"


def test_similarities_are_what_the_readme_says():
    a = torch.rand(3, 1, 8, 8)
    assert sanity.image_correlation(a, a).tolist() == pytest.approx([1.0] * 3)
    assert sanity.image_correlation(a, 1 - a).tolist() == pytest.approx([-1.0] * 3)
    assert sanity.image_correlation(a, torch.full_like(a, 0.5)).tolist() == [0.0] * 3  # a flat image
    features = {"conv": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "fc": torch.tensor([[2.0], [-3.0]])}
    center = {"conv": torch.zeros(2), "fc": torch.zeros(1)}
    reference = {"conv": torch.tensor([[1.0, 0.0]]), "fc": torch.tensor([[1.0]])}
    # per layer, cosine to the reference image, then the mean over layers: (1 + 1) / 2 and (0 - 1) / 2
    assert sanity.path_similarity(features, reference, center).tolist() == pytest.approx([1.0, -0.5])
    scale = sanity.exemplar_scale(torch.tensor([3.0, -1.0]), torch.tensor(2.0), torch.tensor(0.0))
    assert scale.tolist() == [1.5, -0.5]


@pytest.mark.parametrize("objective,reference", [
    (["objective.channels=[0,5]"], "the top 3 exemplars of the val split (the targets have no class)"),
    (["objective=class", "objective.classes=[3]", "seeds=2"], "the val split's images of the target's class"),
], ids=["channels", "class"])
def test_visualize_writes_exemplars_and_the_checks_into_the_manifest(small_cnn, outputs, tmp_path, objective,
                                                                     reference):
    result = run_studio_forked("visualize", *objective, "steps=16", "exemplars.k=3", "exemplars.in_grid=2",
                               "judge_metrics=false", "progress=false", f"hydra.run.dir={tmp_path}", *QUIET_LOCAL,
                               outputs=outputs)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(tmp_path)
    for item in manifest["items"]:
        assert METRICS <= set(item["metrics"])
        assert -1 <= item["metrics"]["randomized_similarity"] <= 1
        stem = item["target"].replace(":", "_")
        assert item["exemplars"] == {"top": f"exemplars/{stem}_top.png", "bottom": f"exemplars/{stem}_bottom.png"}
        for path in item["exemplars"].values():
            with Image.open(tmp_path / path) as png:  # a 2x2 grid of the 3 images, upscaled for viewing
                assert png.size == (2 * 112 + 6, 2 * 112 + 6)
    metrics = manifest["metrics"]
    assert metrics["path_similarity_reference"] == reference
    assert {f"{m}_mean" for m in METRICS} <= set(metrics) and metrics["exemplar_seconds"] > 0
    assert metrics["randomized_layers"][0] == "fc"
    seeds = 2 if "seeds=2" in objective else 1
    with Image.open(tmp_path / "grid.png") as png:  # each target's seeds, then 2 exemplars
        assert png.size[0] == (seeds + 2) * 112 + 2 * (seeds + 3)
    assert (tmp_path / manifest["artifacts"]["grid_randomized"]).is_file()


def test_the_gallery_shows_an_items_exemplars(tmp_path):
    items = [{"target": "conv2:0", "seed": 0, "metrics": {"path_similarity": 0.4},
              "exemplars": {"top": "exemplars/conv2_0_top.png", "bottom": "exemplars/conv2_0_bottom.png"}}]
    job = make_job(tmp_path, "0", ["+recipe=none"], {"recipe": "none"}, items)
    for path in items[0]["exemplars"].values():
        (job / path).parent.mkdir(exist_ok=True)
        Image.new("L", (28, 28), 200).save(job / path)
    report(tmp_path)
    page = (tmp_path / "gallery" / "index.html").read_text()
    start = page.index('<script id="gallery-data" type="application/json">')
    card = json.loads(page[page.index(">", start) + 1:page.index("</script>", start)])["cards"][0]
    assert card["extra_images"] == {"exemplars top": "images/0/exemplars/conv2_0_top.png",
                                    "exemplars bottom": "images/0/exemplars/conv2_0_bottom.png"}
    assert (tmp_path / "gallery" / "images" / "0" / "exemplars" / "conv2_0_top.png").is_file()


def test_the_demo_checks_every_render_and_re_renders_only_the_filters(small_cnn, datamodule, tmp_path, monkeypatch):
    import shutil

    from studio import config
    from studio.commands.visualize import demo_visualizations
    from studio.tracking import Tracker

    conf = tmp_path / "conf"  # the demo takes its pixel renders' steps from conf/param/pixel.yaml: 2 steps here
    shutil.copytree(config.CONF_DIR, conf)
    settings = (conf / "param" / "pixel.yaml").read_text()
    (conf / "param" / "pixel.yaml").write_text(settings.replace("render: {steps: 256,", "render: {steps: 2,"))
    monkeypatch.setattr(config, "CONF_DIR", conf)
    cfg = compose_config("demo", ["logger=none", "exemplars.k=2"])
    with Tracker(cfg, "demo", tmp_path / "run", str(tmp_path)) as tracker:
        shown = demo_visualizations(cfg, tracker, tmp_path / "run", small_cnn.model, dm=datamodule)
    for item in shown.items:
        assert (tmp_path / "run" / item["exemplars"]["top"]).is_file()
        expected = METRICS if item["render"].startswith("conv2") else METRICS - {"randomized_similarity"}
        assert expected == METRICS & set(item["metrics"]), item["render"]
    assert shown.metrics["visualize/conv2_none/exemplar_seconds"] == shown.metrics["visualize/conv2_l2_tv/exemplar_seconds"]


def test_edge_cases_of_the_checks_are_one_line():
    from collections import OrderedDict

    from omegaconf import OmegaConf
    from torch import nn

    from studio.adapters.exemplars import exemplar_settings
    from studio.commands.render_checks import beside

    class Scale(nn.Module):  # a layer with weights and no init of its own
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.w

    net = nn.Sequential(OrderedDict(fc=nn.Linear(4, 4), scale=Scale()))
    randomized, changed = sanity.cascade_randomized(net, "fc")
    assert changed == ["scale", "fc"] and not torch.equal(randomized.scale.w, net.scale.w)
    with pytest.raises(StudioError, match="Sequential has no convolution or linear layer to randomize"):
        sanity.cascade_randomized(nn.Sequential(Scale()))
    with pytest.raises(StudioError, match="needs at least one convolution or linear layer"):
        sanity.path_similarity({}, {}, {})
    with pytest.raises(StudioError, match="cannot take the top 5 of 4 images"):
        find_exemplars(_small_cnn(), [channel("conv2", 0)], torch.rand(4, 1, 28, 28), k=5)
    assert exemplar_settings(OmegaConf.create({})) is None  # a config without an exemplars block
    with pytest.raises(StudioError, match="exemplars.batch_size=0 must be at least 1"):
        exemplar_settings(OmegaConf.create({"exemplars": {"k": 3, "batch_size": 0}}))
    assert cascade_layer(ExemplarSettings(9, "train", "val", randomize_to="all"), None, ["relu"], []) is None
    assert beside(None, ExemplarSettings(9, "train", "val", in_grid=0)) is None


def test_exemplars_of_another_size_are_resized_for_the_grid(tmp_path):
    from studio.commands.visualize import save_rendering
    from studio.optvis import pixel, render

    rendering = render(_small_cnn(), channel("conv2", [0, 1]), param=pixel(16, channels=1), steps=1)
    save_rendering(rendering, tmp_path, tmp_path, 1, beside={f"conv2:{c}": torch.rand(2, 1, 28, 28) for c in (0, 1)})
    with Image.open(tmp_path / "grid.png") as png:  # 16 px renders upscaled 7x; the 28 px exemplars resized to 16
        assert png.size == (3 * 112 + 4 * 2, 2 * 112 + 3 * 2)
