"""Gradient methods behind one verb, and the metrics that say how far to trust a map."""

import pytest
import torch
from torch import nn

from studio.errors import StudioError
from studio.explain import METHODS, build_method, heatmap, method_names
from studio.explain.compare import MetricOptions, compare_methods
from studio.explain.registry import Attribution, Column, MethodSpec, register
from studio.explain.gradients import IntegratedGradients, default_gradcam_layer
from studio.data import classes_in_turn
from studio.blur import gaussian_blur
from studio.explain.metrics import (deletion_insertion, jaccard, pixel_order, randomized_copy,
                                    spearman, stability, weighted_r2)
from studio.models import Classifier, build_net

FAST = {"lime": {"samples": 300, "heldout": 50, "progress": False}, "smoothgrad": {"samples": 10},
        "kernelshap": {"samples": 100, "progress": False}, "gradientshap": {"samples": 8}}
NOISE_SEGMENTS = {"n_segments": 30, "compactness": 1.0}  # pure-noise test images: let position shape the segments


@pytest.fixture(scope="module")
def digits(datamodule):
    x, y = datamodule.split("test")
    return x[:6], y[:6]


@pytest.mark.parametrize("channels", [1, 3])
def test_every_method_returns_maps_for_grey_and_rgb(channels):
    torch.manual_seed(0)
    model = Classifier(build_net("small_cnn", channels, 5), [0.5] * channels, [0.25] * channels).eval()
    x = torch.rand(3, channels, 32, 32)
    for name in method_names("all", model):  # attention maps need a ViT: tests/test_vit.py
        segmenting = name in ("lime", "kernelshap")
        options = {**FAST.get(name, {}), **({"segmentation_options": NOISE_SEGMENTS} if segmenting else {})}
        maps = build_method(name, model, **options).attribute(x, target=torch.tensor([0, 2, 4]))
        assert maps.shape[0] == 3 and maps.shape[-2:] == (32, 32) and maps.shape[1] in (1, channels), name
        assert heatmap(maps).shape == (3, 1, 32, 32) and torch.isfinite(maps).all(), name


def test_integrated_gradients_completeness(small_cnn, digits):
    x, _ = digits
    model = small_cnn.model
    ig = IntegratedGradients(model, steps=200)
    target = model(x).argmax(1)
    maps = ig.attribute(x, target)
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, target[:, None]).squeeze(1)
    # Σ IG = f(x) - f(x') (Sundararajan et al.): within 2% of the logit gap, and captum's delta agrees
    assert torch.allclose(maps.flatten(1).sum(1), gap, rtol=0.02, atol=0.05)
    assert (ig.last_delta.abs() <= 0.02 * gap.abs() + 0.05).all()


def test_deletion_of_lime_and_ig_beats_a_random_order(small_cnn, datamodule):
    x, y = datamodule.split("test")
    x = x[classes_in_turn(y, 10)]  # one digit of every class
    result = compare_methods(small_cnn.model, x, ["lime", "ig", "gradcam"],
                             options={"lime": {"progress": False}},
                             metrics=MetricOptions(stability_seeds=0, sanity=False, steps=28))
    random_deletion = result.baseline["deletion_auc"].mean()
    for name in ("lime", "ig"):
        assert result.methods[name].metrics["deletion_auc"].mean() < random_deletion, name
    assert result.methods["lime"].metrics["insertion_auc"].mean() > result.baseline["insertion_auc"].mean()
    assert result.methods["lime"].metrics["r2"].mean() >= 0.8


def test_stability_and_randomization_sanity(small_cnn, digits):
    x, _ = digits
    result = compare_methods(small_cnn.model, x[:3], ["lime", "smoothgrad", "gradcam"], options=FAST,
                             metrics=MetricOptions(stability_seeds=3, steps=10))
    lime, smooth, cam = (result.methods[n].metrics for n in ("lime", "smoothgrad", "gradcam"))
    assert "stability" in lime and "stability" in smooth and "stability" not in cam  # deterministic
    assert ((lime["stability"] > 0) & (lime["stability"] <= 1)).all()
    # Grad-CAM depends on the learned weights: its map changes after re-initialization (Adebayo et al.)
    assert cam["sanity"].mean() < 0.5


def test_metric_helpers():
    a = torch.tensor([[0, 1, 2]])
    assert jaccard(a, torch.tensor([[2, 1, 0]])).item() == 1.0
    assert jaccard(a, torch.tensor([[3, 4, 2]])).item() == pytest.approx(1 / 5)
    assert stability([a, a, a]).item() == 1.0
    y = torch.rand(2, 50, 1, dtype=torch.float64)
    w = torch.rand(2, 50, dtype=torch.float64)
    assert torch.allclose(weighted_r2(y, y, w), torch.ones(2, 1, dtype=torch.float64))
    m = torch.rand(2, 1, 8, 8)
    assert torch.allclose(spearman(m, 2 * m + 1), torch.ones(2))
    rank = pixel_order(m)
    assert (rank.flatten(1).sort(1).values == torch.arange(64)).all()
    assert rank[0].view(-1)[m[0].flatten().argmax()] == 0  # the brightest pixel goes first
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(gaussian_blur(x, 2.0).mean(), x.mean(), atol=0.02)


def test_deleting_what_a_map_ranks_first_hurts_more(small_cnn, digits):
    """A map that ranks the digit's strokes first must beat one that ranks the black background first:
    deleting strokes (→ 0) drops the probability at once, deleting background changes nothing."""
    x, _ = digits
    model = small_cnn.model
    target = model(x).argmax(1)
    strokes_first = deletion_insertion(model, x, pixel_order(x), target, steps=14)
    background_first = deletion_insertion(model, x, pixel_order(-x), target, steps=14)
    assert (strokes_first["deletion_auc"] < background_first["deletion_auc"] - 0.3).all()
    assert strokes_first["insertion_auc"].mean() > background_first["insertion_auc"].mean()
    for scores in (strokes_first, background_first):
        assert ((scores["deletion_auc"] >= 0) & (scores["deletion_auc"] <= 1)).all()


def test_randomized_copy_changes_every_layer_but_keeps_the_original(small_cnn):
    model = small_cnn.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    twin = randomized_copy(model, seed=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(twin.net.conv1.weight, model.net.conv1.weight)
    assert torch.equal(twin.mean, model.mean)  # the input normalization is not a learned weight


def test_gradcam_layers_and_method_names(small_cnn):
    assert default_gradcam_layer(small_cnn.model) == "conv3"
    resnet = Classifier(build_net("torchvision", 3, 10, arch="resnet18"), [0.5] * 3, [0.25] * 3)
    assert default_gradcam_layer(resnet) == "layer4"
    assert method_names("all") == list(METHODS) and method_names("ig") == ["ig"]
    with pytest.raises(StudioError, match="unknown method 'bogus'; choose from: all, .*gradcam, .*ig, .*lime"):
        method_names("bogus")
    with pytest.raises(StudioError, match="unknown layer 'conv9'"):
        build_method("gradcam", small_cnn.model, layer="conv9")
    with pytest.raises(StudioError, match="unknown IG baseline 'grey'"):
        build_method("ig", small_cnn.model, baseline="grey")



def _linear(channels: int = 1, side: int = 8, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, classes)).eval()


def _with_nan_in_image(n: int, bad: int) -> torch.Tensor:
    x = torch.rand(n, 1, 8, 8)
    x[bad, 0, 3, 3] = float("nan")
    return x


class Maps(nn.Module):
    """Returns feature maps, not N×classes scores."""

    def forward(self, x):
        return x.repeat(1, 2, 1, 1)


@pytest.mark.parametrize("model,x,target,message", [
    (_linear(), torch.zeros(2, 1, 8, 8, dtype=torch.uint8), 0,
     r"images must be floats in \[0, 1\], got dtype torch.uint8"),
    (_linear(), _with_nan_in_image(3, 1), 0,
     r"images contain non-finite values \(nan/inf\), first in image 1; give finite floats in \[0, 1\]"),
    (Maps(), torch.rand(2, 1, 8, 8), 0, r"the model must return N×classes scores, got shape \(2, 2, 8, 8\)"),
    (_linear(), torch.rand(2, 1, 8, 8), [0, 1, 2], r"got 3 targets for 2 images; give one target or one per image"),
], ids=["uint8", "nan", "not-scores", "targets"])
def test_bad_images_models_and_targets_fail_in_one_line(model, x, target, message):
    with pytest.raises(StudioError, match=message):
        build_method("saliency", model).attribute(x, target)


@pytest.mark.parametrize("options,shown", [({"samples": 0}, "samples=0, noise=0.15"),
                                           ({"noise": -0.1}, "samples=50, noise=-0.1")])
def test_smoothgrad_refuses_no_samples_or_negative_noise(options, shown):
    with pytest.raises(StudioError, match=f"SmoothGrad needs samples ≥ 1 and noise ≥ 0, got {shown}"):
        build_method("smoothgrad", _linear(), **options)


@pytest.mark.parametrize("baseline,make", [("mean", lambda x: x.mean((2, 3), keepdim=True).expand_as(x)),
                                           ("blur", lambda x: gaussian_blur(x, 0.1 * 8))], ids=["mean", "blur"])
def test_integrated_gradients_start_from_the_baseline_they_name(baseline, make):
    """On a linear model IG is exact: (x − x') times the target's weights."""
    model, x = _linear(channels=3), torch.rand(2, 3, 8, 8)
    maps = IntegratedGradients(model, steps=8, baseline=baseline).attribute(x, target=1)
    weights = model[1].weight[1].detach().view(1, 3, 8, 8)
    assert torch.allclose(maps, (x - make(x)) * weights, atol=1e-5)


def test_occlusion_window_larger_than_the_image_names_both():
    with pytest.raises(StudioError, match=r"occlusion window 40 px is larger than the 8×8 image; use window ≤ 8"):
        build_method("occlusion", _linear(), window=40).attribute(torch.rand(1, 1, 8, 8), 0)


def test_gradcam_needs_a_layer_with_feature_maps():
    with pytest.raises(StudioError, match=r"Grad-CAM needs a convolutional layer; this model has none \(give layer="):
        build_method("gradcam", _linear())
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    with pytest.raises(StudioError, match=r"Grad-CAM needs a layer with N×C×H×W output; '2' gives shape \(2, 1\)"):
        build_method("gradcam", conv, layer="2").attribute(torch.rand(2, 1, 8, 8), 0)


def test_a_blur_of_sigma_zero_is_an_unchanged_copy():
    x = torch.rand(2, 3, 8, 8)
    blurred = gaussian_blur(x, 0.0)
    assert torch.equal(blurred, x) and blurred.data_ptr() != x.data_ptr()


def test_a_panel_shows_an_rgb_image_in_colour(tmp_path):
    import numpy as np
    from PIL import Image

    from studio.explain.panels import save_panel

    red = torch.zeros(3, 16, 16)
    red[0] = 1.0
    path = save_panel(red, {"ig": torch.rand(16, 16)}, {"ig": "r2 0.9"}, "a red square", tmp_path / "panel.png")
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    assert (pixels == [255, 0, 0]).all(1).sum() > 100  # pure red: the image itself, not its grey mean


class NoisyInput:
    """x·(1 + scale·noise): a stand-in for a new method, registered by the test as its engine file would."""

    def __init__(self, model, scale: float = 0.1, batch_size: int = 64, seed: int = 0):
        self.model, self.scale, self.seed = model, scale, seed

    def attribute(self, x, target=None, seed=None):
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(self.seed if seed is None else seed))
        return x * (1 + self.scale * noise)

    def attribution(self, x, target=None, segments=None, seed=None):
        maps = self.attribute(x, target, seed)
        return Attribution(maps, {"brightness": maps.flatten(1).mean(1)})


@pytest.fixture
def noisy_input():
    spec = register(MethodSpec("noisy_input", NoisyInput, block="noisy_input", metrics=("brightness",),
                               columns=(Column("brightness", "bright", 6),),
                               caption=lambda s: [f"b {s['brightness']:.2f}"], stochastic=True))
    yield spec
    del METHODS[spec.name]


def test_a_registered_method_needs_no_other_edit(noisy_input, small_cnn, digits, capsys):
    """The adapter, the comparison, the W&B columns, the captions and the summary all follow the registry."""
    from studio.adapters.explain import method_options
    from studio.commands.explain import _caption, _print_summary, item_metrics
    from tests.conftest import compose_config

    assert method_names("all")[-1] == "noisy_input"
    cfg = compose_config("explain", ["+explain.noisy_input.scale=0.5"])
    assert method_options(cfg.explain)["noisy_input"] == {"scale": 0.5, "batch_size": 64, "seed": 0}
    result = compare_methods(small_cnn.model, digits[0][:3], ["noisy_input"], options={"noisy_input": {"scale": 0.5}},
                             metrics=MetricOptions(stability_seeds=2, sanity=False, steps=5))
    assert list(result.methods["noisy_input"].metrics) == ["deletion_auc", "insertion_auc", "brightness", "stability"]
    assert item_metrics() == ("deletion_auc", "insertion_auc", "r2", "r2_heldout", "ig_delta", "completeness_error",
                              "conservation_error", "bias_share", "brightness", "stability", "sanity", "mark_found",
                              "background_share", "background_share_clean")
    scores = {"deletion_auc": 0.1, "insertion_auc": 0.9, "brightness": 0.25, "stability": 0.5}
    assert _caption("noisy_input", scores) == "del 0.10 ins 0.90\nb 0.25 stab 0.50"
    _print_summary(result, {"random/deletion_auc": 0.2, "random/insertion_auc": 0.5}, "")
    header, row = capsys.readouterr().out.splitlines()
    assert header.startswith("method      deletion insertion    R² R² held compl. conserv.  bias bright stable "
                             "random.  mark backgr.  (AUC")
    name, *cells = row.split()  # its own column filled, the others' empty; no sanity, mark or background asked for
    assert name == "noisy_input" and [c == "-" for c in cells] == [False, False, True, True, True, True, True, False,
                                                                   False, True, True, True]


def test_a_seed_given_to_the_call_leaves_the_method_its_own(small_cnn, digits):
    x = digits[0][:2]
    smooth = build_method("smoothgrad", small_cnn.model, samples=4)
    maps = smooth.attribute(x, 0, seed=3)
    assert smooth.seed == 0
    assert torch.equal(maps, build_method("smoothgrad", small_cnn.model, samples=4, seed=3).attribute(x, 0))
    assert not torch.equal(maps, smooth.attribute(x, 0))


def test_a_method_name_registers_once():
    from studio.explain.registry import register

    with pytest.raises(ValueError, match="explanation method 'ig' is registered twice"):
        register(METHODS["ig"])
    assert list(METHODS)[:6] == ["lime", "saliency", "smoothgrad", "ig", "occlusion", "gradcam"]  # unchanged
