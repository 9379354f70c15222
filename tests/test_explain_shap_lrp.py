"""Shapley values (Kernel SHAP, GradientShap), LRP, guided backprop and the deconvnet."""

import pytest
import torch
from torch import nn

from studio.errors import StudioError
from studio.explain import build_method
from studio.explain.compare import MetricOptions, compare_methods
from studio.explain.shap import shapley_masks

GRID = {"segmentation": "grid", "segmentation_options": {"cell": 2}, "progress": False}
NEW = ["kernelshap", "gradientshap", "lrp", "guided_backprop", "deconvnet"]


def _linear(channels: int = 1, side: int = 8, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, classes)).eval()


def _two_layer(bias: bool = False) -> nn.Module:
    """x (N×1×2×2) → flatten → 4×3 → ReLU → 3×2: small enough to propagate by hand."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=bias), nn.ReLU(), nn.Linear(3, 2, bias=bias)).eval()
    with torch.no_grad():
        for layer in (model[1], model[3]):  # unit-scale weights: logits of order 1, not 0.01
            layer.weight.copy_(torch.randn_like(layer.weight))
    return model


@pytest.mark.parametrize("fill", ["constant", "blur"])
def test_kernel_shap_values_sum_to_the_output_gap_and_are_exact_on_a_linear_model(fill):
    """A linear model is additive in the segments, so its Shapley values are each segment's w·(x − baseline),
    and they sum to f(x) − f(baseline) exactly (the efficiency constraint), whatever the baseline."""
    model, x = _linear(channels=3), torch.rand(2, 3, 8, 8)
    shap = build_method("kernelshap", model, samples=200, fill=fill, **GRID)
    e = shap.explain(x, target=1)
    baseline = shap.baseline(x, e.segments)
    with torch.no_grad():
        gap = (model(x) - model(baseline))[:, 1]
    phi = e.weights[:, 0]
    assert torch.allclose(phi.sum(1), gap, atol=1e-4) and torch.allclose(e.intercept[:, 0], model(baseline)[:, 1])
    contribution = ((x - baseline) * model[1].weight[1].view(1, 3, 8, 8)).sum(1)  # N×H×W
    exact = torch.zeros_like(phi).scatter_add_(1, e.segments.flatten(1), contribution.flatten(1))
    assert torch.allclose(phi, exact, atol=1e-4)
    assert (shap.attribution(x, target=1).metrics["completeness_error"] < 1e-5).all()
    probs = build_method("kernelshap", model, samples=50, fill=fill, output="prob", **GRID)  # efficient on p too
    assert (probs.attribution(x, target=1).metrics["completeness_error"] < 1e-4).all()


def test_shapley_coalitions_start_at_both_ends_and_come_in_complementary_pairs():
    z = shapley_masks(torch.tensor([5, 3]), 12, torch.Generator().manual_seed(0))
    assert z.shape == (2, 12, 5)
    assert z[0, 0].all() and not z[:, 1].any() and z[1, 0].tolist() == [True, True, True, False, False]
    pairs, rest = z[:, 2:7], z[:, 7:12]
    present = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    assert torch.equal(rest, ~pairs & present[:, None])  # each draw and its complement
    on = z[:, 2:].sum(2)
    assert ((on >= 1) & (on <= torch.tensor([4, 2])[:, None])).all()  # never empty or full after the ends


def test_kernel_shap_is_complete_on_the_trained_model_and_finds_strokes(small_cnn, datamodule):
    x = datamodule.split("test")[0][:4]
    a = build_method("kernelshap", small_cnn.model, samples=300, progress=False).attribution(x)
    assert (a.metrics["completeness_error"] <= 0.05).all()
    top = a.maps.flatten(1).argmax(1)
    assert (x.flatten(1).gather(1, top[:, None]) > 0).float().mean() >= 0.75  # the top segment is on the digit


def test_gradient_shap_is_exact_on_a_linear_model_and_reports_its_completeness():
    model, x = _linear(), torch.rand(3, 1, 8, 8)
    a = build_method("gradientshap", model, baseline="zero", samples=8).attribution(x, target=2)
    assert torch.allclose(a.maps, x * model[1].weight[2].view(1, 1, 8, 8), atol=1e-5)
    assert (a.metrics["completeness_error"] < 1e-4).all()
    with pytest.raises(StudioError, match="unknown GradientShap baseline 'grey'; choose from: batch, zero"):
        build_method("gradientshap", model, baseline="grey")


def _hand_lrp(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """LRP-0 written out: R_j = a_j w_jt (sums to f_t), R_i = Σ_j x_i w_ij / z_j · R_j."""
    w1, w2 = model[1].weight.detach().T, model[3].weight.detach().T  # 4×3, 3×2
    a0 = x.flatten(1)
    z1 = a0 @ w1
    a1 = z1.clamp_min(0)
    r1 = a1 * w2[:, target]
    return (a0.unsqueeze(2) * w1 * (r1 / z1).nan_to_num().unsqueeze(1)).sum(2)


def test_lrp_matches_a_hand_computation_and_conserves_relevance_without_biases():
    model, x = _two_layer(), torch.rand(5, 1, 2, 2)
    lrp = build_method("lrp", model, first_layer="same")
    a = lrp.attribution(x, target=0)
    assert torch.allclose(a.maps.flatten(1), _hand_lrp(model, x, 0), atol=1e-4)
    assert (a.metrics["conservation_error"] <= 1e-3).all() and (a.metrics["bias_share"].abs() <= 1e-3).all()
    for first, rule in (("zbox", "epsilon"), ("zbox", "alpha_beta")):  # every rule conserves without biases
        metrics = build_method("lrp", model, first_layer=first, rule=rule).attribution(x, target=1).metrics
        assert (metrics["conservation_error"] <= 1e-3).all(), (first, rule)


def test_lrp_on_the_default_cnn_reports_what_the_folded_biases_absorb(small_cnn, datamodule):
    x = datamodule.split("test")[0][:4]
    a = build_method("lrp", small_cnn.model).attribution(x)
    # ε is tiny, so what is not conserved is what the biases (batch norm's shifts, folded) took
    assert torch.allclose(a.metrics["conservation_error"], a.metrics["bias_share"], atol=1e-3)
    assert a.metrics["bias_share"].mean() > 0.01
    assert a.maps.shape == (4, 1, 28, 28) and torch.isfinite(a.maps).all()


def test_lrp_on_a_layer_without_a_rule_names_it_and_what_would_work():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.GELU(), nn.Linear(3, 2)).eval()
    with pytest.raises(StudioError, match=r"^LRP has no rule for layer '2' \(GELU\); it propagates through "
                                          r"Conv2d, Linear, ReLU, .*: use method=ig, gradientshap or occlusion"):
        build_method("lrp", model)
    with pytest.raises(StudioError, match="alpha − beta = 1"):
        build_method("lrp", _two_layer(), rule="alpha_beta", alpha=1.0, beta=1.0)
    loose = nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2)).eval()
    with pytest.raises(StudioError, match="LRP folds batch norm into the convolution before it; '0' follows none"):
        build_method("lrp", loose)


@pytest.mark.parametrize("name,options,message", [
    ("kernelshap", {"samples": 3}, "Kernel SHAP needs samples ≥ 4 (all on, all off and a pair), got samples=3"),
    ("gradientshap", {"noise": -1.0}, "GradientShap needs samples ≥ 1 and noise ≥ 0, got samples=50, noise=-1.0"),
    ("lrp", {"rule": "z_plus"}, "unknown LRP rule 'z_plus'; choose from: alpha_beta, epsilon"),
], ids=["kernelshap-samples", "gradientshap-noise", "lrp-rule"])
def test_bad_options_name_the_value_and_what_works(name, options, message):
    with pytest.raises(StudioError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        build_method(name, _two_layer(), **options)


def test_deconvnet_ignores_the_forward_pass_and_guided_backprop_does_not():
    """Through one ReLU: deconvnet = W1ᵀ ReLU(w2_t) for every input; guided backprop also zeroes the hidden
    units the input switched off."""
    model, x = _two_layer(), torch.rand(4, 1, 2, 2) - 0.5
    w1, w2 = model[1].weight.detach(), model[3].weight.detach()
    deconv = build_method("deconvnet", model).attribute(x, target=1).flatten(1)
    assert torch.allclose(deconv, (w2[1].clamp_min(0) @ w1).expand(4, -1), atol=1e-6)
    guided = build_method("guided_backprop", model).attribute(x, target=1).flatten(1)
    active = (x.flatten(1) @ w1.T > 0).float()
    assert torch.allclose(guided, (active * w2[1].clamp_min(0)) @ w1, atol=1e-6)


def test_every_new_method_is_scored_and_sanity_checked_like_the_others(small_cnn, datamodule):
    x = datamodule.split("test")[0][:2]
    options = {"kernelshap": {"samples": 100, "progress": False}, "gradientshap": {"samples": 8}}
    result = compare_methods(small_cnn.model, x, NEW, options=options,
                             metrics=MetricOptions(stability_seeds=2, steps=5))
    for name in NEW:
        metrics = result.methods[name].metrics
        assert {"deletion_auc", "insertion_auc", "sanity"} <= set(metrics), name
        assert ("stability" in metrics) == (name in ("kernelshap", "gradientshap")), name
    assert {"completeness_error"} <= set(result.methods["kernelshap"].metrics)
    assert {"conservation_error", "bias_share"} <= set(result.methods["lrp"].metrics)


def test_kernel_shap_reads_lime_superpixels_from_the_config():
    from studio.adapters.explain import method_options
    from tests.conftest import compose_config

    cfg = compose_config("explain", ["explain.lime.segmentation=grid", "explain.lime.fill=mean"])
    options = method_options(cfg.explain)["kernelshap"]
    assert options["segmentation"] == "grid" and options["segmentation_options"] == {"cell": 4}
    assert options["fill"] == "mean" and options["samples"] == 1000
    assert method_options(cfg.explain)["lrp"]["rule"] == "epsilon"
