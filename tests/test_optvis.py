"""Feature visualization from Python: activations rise, classes are reached, renders are repeatable,
every regularizer moves the image the way it claims, and bad input fails in one line."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from studio.config import config_choices
from studio.errors import StudioError
from studio.models import Classifier, build_net
from studio.optvis import (blur, channel, class_, clip_contrib, clip_norm, deepdream, direction, diversity, fft,
                           hf, jitter, l1, l2, neuron, pixel, register, render, standard, tv, weight_decay)
from studio.optvis import regularizers
from studio.optvis.regularizers import (REGULARIZERS, high_frequency, l1_penalty, l2_penalty, total_variation)
from studio.optvis.render import concat
from studio.optvis.transforms import compose, pad, rotate, scale
from studio.adapters import optvis as optvis_config
from studio.commands.visualize import render_config
from tests.conftest import compose_config

FILTERS = [0, 3, 6, 9]  # four of conv2's twelve: enough to see every effect, cheap on two cores


def test_every_conv2_filter_rises_well_above_its_start(small_cnn):
    r = render(small_cnn.model, channel("conv2", range(12)), steps=64)
    assert r.images.shape == (12, 1, 28, 28) and r.targets[7] == "conv2:7"
    assert 0 <= r.images.min() and r.images.max() <= 1
    # well above: the final objective beats the start by at least half a unit and by 50 % of its size
    assert (r.activation_gain > 0.5).all(), r.activation_gain
    assert (r.objective > r.start + 0.5 * r.start.abs()).all()
    assert r.history["objective"].shape == (64, 12)
    assert r.history["objective"][-8:].mean() > r.history["objective"][:8].mean()


@pytest.mark.parametrize("regularizer", ["none", "l2_tv"])
def test_class_renders_reach_099_on_the_model_itself(small_cnn, regularizer):
    cfg = compose_config("visualize", ["objective=class", f"regularizer={regularizer}", "progress=false"])
    spec = optvis_config.build_param(cfg.param)  # the shipped defaults: steps, lr, log-softmax, l2_tv weights
    rendering = render_config(small_cnn.model, cfg.objective, spec, optvis_config.build_regularization(cfg.regularizer),
                              *optvis_config.render_options(cfg))
    assert rendering.targets == [f"class:{i}" for i in range(10)]
    assert rendering.target_prob.min() >= 0.99, rendering.target_prob
    with torch.no_grad():  # the probability is the model's own verdict on the saved pixels
        again = small_cnn.model(rendering.images).softmax(1).diagonal()
    assert torch.allclose(again, rendering.target_prob, atol=1e-5)


def test_same_seed_same_pixels_other_seed_other_pixels(small_cnn):
    def run(seeds):
        return render(small_cnn.model, channel("conv2", [1, 5]), steps=12, seeds=seeds, transforms=standard(),
                      regularizers=[0.1 * tv(), blur(0.5, every=4), clip_contrib(0.1, every=4)])

    a, b, c = run([0]), run([0]), run([1])
    assert torch.equal(a.images, b.images) and torch.equal(a.history["total"], b.history["total"])
    assert not torch.equal(a.images, c.images)
    both = run([0, 1])  # a seed's starting image does not depend on what else is in the batch
    assert torch.equal(both.start_images[0], a.start_images[0]) and both.seeds == [0, 1, 0, 1]
    assert both.targets == ["conv2:1", "conv2:1", "conv2:5", "conv2:5"]


def test_one_channel_and_rgb_models_both_render(small_cnn):
    grey = render(small_cnn.model, channel("conv3", [0, 1]), param=fft(28, channels=1), steps=24)
    assert grey.images.shape == (2, 1, 28, 28) and (grey.activation_gain > 0).all()

    torch.manual_seed(0)
    resnet = Classifier(build_net("torchvision", 3, 10, arch="resnet18", weights=None),
                        [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    rgb = render(resnet, channel("layer2", [0, 1]), param=fft(48, channels=3), steps=8, transforms=[jitter(4)])
    assert rgb.images.shape == (2, 3, 48, 48) and (rgb.activation_gain > 0).all()
    assert not torch.equal(rgb.images[0, 0], rgb.images[0, 1])  # colour, not grey in three channels
    px = render(resnet, channel("layer1.0.conv1", 3), param=pixel(32, channels=3, decorrelate=True), steps=8)
    assert px.images.shape == (1, 3, 32, 32) and px.activation_gain.item() > 0


def _counting(module: nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_forward_pass_stops_after_the_deepest_needed_layer(small_cnn):
    model = small_cnn.model
    fc_calls = _counting(model.net.fc)
    fast = render(model, channel("conv2", [2, 4]), steps=10)
    assert len(fc_calls) == 2  # the probe and the final evaluation; none of the 10 steps
    slow = render(model, channel("conv2", [2, 4]), steps=10, stop_early=False)
    assert len(fc_calls) == 2 + 12
    assert torch.allclose(fast.images, slow.images, atol=1e-6)

    torch.manual_seed(0)
    resnet = Classifier(build_net("torchvision", 3, 10, arch="resnet18", weights=None), [0.5] * 3, [0.25] * 3)
    layer3 = _counting(resnet.net.layer3)
    relu = _counting(resnet.net.layer1[0].relu)  # called twice per pass: the stop waits for the second call
    render(resnet, channel("layer1.0.relu", 0), param=pixel(32, channels=3), steps=3)
    assert len(layer3) == 2 and len(relu) == 2 * (2 + 3)


def test_weights_stay_frozen_and_modes_are_restored(small_cnn):
    model = small_cnn.model.train()
    render(model, class_([0, 1]), steps=3)
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    model.eval()


def test_objectives_are_batch_aware_and_compose_like_maths():
    acts = {"conv": torch.arange(4 * 3 * 2 * 2, dtype=torch.float32).view(4, 3, 2, 2),
            "logits": torch.tensor([[1.0, 2.0, 3.0]] * 4)}
    two = channel("conv", [0, 2])  # 2 targets x 2 seeds: elements (0, 0, 2, 2)
    assert two(acts).tolist() == [acts["conv"][0, 0].mean(), acts["conv"][1, 0].mean(),
                                  acts["conv"][2, 2].mean(), acts["conv"][3, 2].mean()]
    combined = 2 * two - two + 1 - 0.5 * class_(1)
    assert torch.allclose(combined(acts), two(acts) + 1 - 1.0)
    assert combined.targets == ("conv:0", "conv:2") and combined.layers == {"conv", "logits"}
    assert (-two)(acts).tolist() == [-v for v in two(acts).tolist()]
    assert neuron("conv", 1, x=0, y=1)(acts).tolist() == [acts["conv"][b, 1, 1, 0] for b in range(4)]
    assert torch.allclose(class_(2, log_softmax=True)(acts), acts["logits"].log_softmax(1)[:, 2])
    assert torch.allclose(deepdream("conv")(acts), acts["conv"].pow(2).flatten(1).mean(1))
    v = torch.tensor([1.0, 0.0, -1.0])
    assert torch.allclose(direction("conv", v)(acts), (acts["conv"][:, 0] - acts["conv"][:, 2]).flatten(1).mean(1))
    with pytest.raises(StudioError, match="cannot combine objectives with 2 and 3 targets"):
        channel("conv", [0, 1]) + channel("conv", [0, 1, 2])


def test_diversity_makes_seeds_of_one_target_differ(small_cnn):
    model = small_cnn.model

    def gram_diversity(images):  # what diversity() claims to raise: dissimilar conv2 Gram matrices
        acts = {}
        hook = model.net.conv2.register_forward_hook(lambda _m, _i, out: acts.update(conv2=out))
        with torch.no_grad():
            model(images)
        hook.remove()
        return diversity("conv2")(acts).mean()

    seeds, target = [0, 1, 2, 3], channel("conv2", 6)
    alone = render(model, target, steps=48, seeds=seeds)
    # relative_to: the weight is a share of the target's gradient, so it means the same on any trained model
    # (measured on small_cnn trained with seeds 0, 1, 2: the Gram diversity rose by 0.69, 0.57, 0.65)
    diverse = render(model, target + 0.5 * diversity("conv2", relative_to=target), steps=48, seeds=seeds)
    assert gram_diversity(diverse.images) > gram_diversity(alone.images) + 0.3


# --- regularizers: each moves the image the way it claims ---------------------------------------
def _zeros(images):
    return (images == 0).float().mean()


CLAIMS = {  # name -> (regularizers, transforms, measure, direction): measure(with) vs measure(none)
    "l2": ([1.0 * l2()], [], l2_penalty, "lower"),
    "l1": ([1.0 * l1()], [], l1_penalty, "lower"),
    "tv": ([1.0 * tv()], [], total_variation, "lower"),
    "hf": ([3.0 * hf()], [], high_frequency, "lower"),
    "blur": ([blur(0.5, every=4)], [], total_variation, "lower"),
    "weight_decay": ([weight_decay(0.05)], [], l2_penalty, "lower"),
    "clip_norm": ([clip_norm(0.5, every=8)], [], _zeros, "higher"),  # ~40 % are already 0: clip more
    "clip_contrib": ([clip_contrib(0.5, every=8)], [], _zeros, "higher"),
}


@pytest.fixture(scope="module")
def unregularized(small_cnn):
    return render(small_cnn.model, channel("conv2", FILTERS), steps=48)


def test_every_registered_regularizer_has_a_claim_test():
    assert set(REGULARIZERS) == set(CLAIMS)


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_regularizer_changes_the_image_in_the_direction_it_claims(small_cnn, unregularized, name):
    regs, transforms, measure, way = CLAIMS[name]
    r = render(small_cnn.model, channel("conv2", FILTERS), steps=48, regularizers=regs, transforms=transforms)
    before, after = measure(unregularized.images).mean(), measure(r.images).mean()
    assert (after < 0.95 * before) if way == "lower" else (after > before * 1.05), (name, before, after)
    assert (r.activation_gain > 0).all()  # regularized, the filters still fire more than at the start


@pytest.mark.parametrize("transforms", [[jitter(4)], standard()], ids=["jitter", "standard"])
def test_transforms_make_class_renders_robust_to_them(small_cnn, transforms):
    model, objective = small_cnn.model, class_(range(10), log_softmax=True)

    def prob_under(images):
        torch.manual_seed(123)
        apply = compose(transforms)
        with torch.no_grad():
            return torch.stack([model(apply(images)).softmax(1).diagonal() for _ in range(8)]).mean()

    plain = render(model, objective, steps=64)
    robust = render(model, objective, steps=64, transforms=transforms)
    assert prob_under(robust.images) > prob_under(plain.images) + 0.1


def test_regularizer_configs_build_and_list_the_registry_on_a_typo():
    built = optvis_config.build_regularization(compose_config("visualize", ["regularizer=standard"]).regularizer)
    assert [type(t).__name__ for t in built.transforms] == ["pad", "jitter", "scale", "rotate", "jitter"]
    both = optvis_config.build_regularization({"l2": {"weight": 0.5}, "blur": {"weight": 1.0, "every": 2}})
    assert both.penalty is not None and [(p.name, p.every) for p in both.projections] == [("blur", 2)]
    as_list = optvis_config.build_regularization([{"name": "tv", "weight": 2.0}])
    assert as_list.penalty.name.startswith("2.0 * tv")
    with pytest.raises(StudioError, match=r"unknown regularizer 'tvv'; choose from: .*blur.*jitter.*l2.*tv"):
        optvis_config.build_regularization({"tvv": {"weight": 1}})
    with pytest.raises(StudioError, match="regularizer 'tv' has no option 'gamma'; its options: beta"):
        optvis_config.build_regularization({"tv": {"weight": 1, "gamma": 2}})
    with pytest.raises(StudioError, match="transform 'jitter' takes no weight"):
        optvis_config.build_regularization({"jitter": {"weight": 1, "pixels": 2}})


@pytest.mark.parametrize("name", config_choices("regularizer"))
def test_every_regularizer_config_builds_and_renders(small_cnn, name):
    cfg = compose_config("visualize", [f"regularizer={name}"])  # auto: the pixel recipe's
    built = optvis_config.build_regularization(optvis_config.regularizer_config(cfg))
    r = render(small_cnn.model, channel("conv2", [0, 1]), steps=8, transforms=built.transforms,
               regularizers=built.as_list())
    assert r.images.shape == (2, 1, 28, 28) and not r.failed


def test_a_new_regularizer_is_one_registered_function():
    @register("brightness", "penalty", 1.0)
    def brightness(images, target: float = 0.5):
        return (images.mean((1, 2, 3)) - target).abs()

    try:
        built = optvis_config.build_regularization({"brightness": {"weight": 2.0, "target": 0.1}})
        acts = {"image": torch.full((3, 1, 4, 4), 0.3)}
        assert torch.allclose(built.penalty(acts), torch.full((3,), 0.4))
    finally:
        del REGULARIZERS["brightness"]


# --- parameterizations and transforms -----------------------------------------------------------
@pytest.mark.parametrize("spec", [pixel(20, channels=1), pixel(20, channels=3, decorrelate=True),
                                  fft(20, channels=3), fft(21, channels=1)],
                         ids=["pixel", "pixel-rgb", "fft-rgb", "fft-odd"])
def test_params_show_valid_images_and_load_them_back(spec):
    image = spec.build([0, 1], "cpu")
    params_, image_fn = image  # Lucent-style unpacking
    x = image_fn()
    assert x.shape == (2, spec.channels, *spec.size) and 0 <= x.min() and x.max() <= 1
    assert all(p.requires_grad and p.is_leaf for p in params_)
    target = torch.rand_like(x) * 0.9 + 0.05
    image.load(target)
    assert torch.allclose(image(), target, atol=1e-4)


def test_transforms_are_batched_per_image_and_fuse_exactly():
    x = torch.rand(6, 1, 16, 16)
    torch.manual_seed(0)
    shifted = jitter(5)(x)
    moved = [next((dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)
                  if torch.allclose(shifted[b, :, 3:-3, 3:-3], torch.roll(x[b], (dy, dx), (1, 2))[:, 3:-3, 3:-3],
                                    atol=1e-5)) for b in range(6)]
    assert len(set(moved)) > 1  # every image has its own integer shift
    torch.manual_seed(1)
    fused = compose([scale([1.1]), rotate([5.0])])(x)
    torch.manual_seed(1)
    matrices = scale([1.1]).matrices(6, 16, 16, "cpu") @ rotate([5.0]).matrices(6, 16, 16, "cpu")
    from studio.optvis.transforms import warp
    assert torch.allclose(fused, warp(x, matrices), atol=1e-6)
    assert compose(standard())(x).shape == (6, 1, 40, 40)  # padded by 12, nothing upsampled


# --- bad input --------------------------------------------------------------------------------
def test_bad_targets_fail_in_one_line(small_cnn):
    model = small_cnn.model
    with pytest.raises(StudioError, match=r"unknown layer 'conv9'; choose from: bn1, bn2.*conv2.*fc"):
        render(model, channel("conv9", 0), steps=1)
    with pytest.raises(StudioError, match=r"channel 12 is out of range: layer 'conv2' has 12 channels \(0\.\.11\)"):
        render(model, channel("conv2", [3, 12]), steps=1)
    with pytest.raises(StudioError, match=r"class 10 is out of range: the model has 10 classes \(0\.\.9\)"):
        render(model, class_(10), steps=1)
    with pytest.raises(StudioError, match=r"unknown optimizer 'adamm'; choose from: adam, adamw, rmsprop, sgd"):
        render(model, class_(1), steps=1, optimizer="adamm")
    with pytest.raises(StudioError, match=r"threshold 9 is outside the 4 optimization steps"):
        render(model, class_(1), steps=4, thresholds=[2, 9])
    with pytest.raises(StudioError, match=r"the model cannot take images of shape \(3, 28, 28\)"):
        render(model, class_(1), param=pixel(28, channels=3), steps=1)
    cfg = compose_config("visualize", ["objective.channels=[1,99]"])
    with pytest.raises(StudioError, match=r"channel 99 is out of range: layer 'conv2' has 12 channels"):
        optvis_config.objective_targets(cfg.objective, {"conv2": (12, 14, 14)})
    with pytest.raises(StudioError, match=r"unknown objective 'chanel'; choose from: channel, class, direction"):
        optvis_config.build_objective(compose_config("visualize", ["objective.name=chanel"]).objective, [0])
    with pytest.raises(StudioError, match=r"unknown param 'pixels'; choose from: fft, guided, latent, pixel"):
        optvis_config.build_param({"name": "pixels", "size": 28, "channels": 1})
    with pytest.raises(StudioError, match=r"param 'fft' has no option 'decay'; its options: size, channels, sd"):
        optvis_config.build_param({"name": "fft", "size": 28, "channels": 1, "decay": 2})


class Overflow(nn.Module):
    """Duplicates a grey image into two channels; channel 1 overflows to +inf once a pixel passes 0.95."""

    def forward(self, x):
        return torch.cat([x, torch.where(x > 0.95, torch.full_like(x, float("inf")), x)], dim=1)


def overflowing_model() -> Classifier:
    net = nn.Sequential(OrderedDict(dup=Overflow(), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                    fc=nn.Linear(2, 2)))
    return Classifier(net, [0.0], [1.0])


def test_a_target_that_turns_inf_stops_and_the_others_go_on():
    r = render(overflowing_model(), channel("dup", [0, 1]), param=pixel(8, channels=1, init_sd=0.05), steps=40,
               lr=0.02)
    assert list(r.failed) == [1] and "objective became inf at step" in r.failed[1]
    step = int(r.failed[1].rsplit(" ", 1)[1])
    assert 1 < step < 40  # it went wrong during the optimization, not at the start
    assert r.succeeded == [0] and r.activation_gain[0] > 0.2 and torch.isfinite(r.images[0]).all()


# --- objective algebra and objective-config mistakes (no model: activations by hand) -----------------
def test_objective_algebra_keeps_targets_and_computes_what_it_says():
    acts = {"conv2": torch.rand(4, 12, 5, 5), "logits": torch.randn(4, 10)}
    a, b = channel("conv2", [1, 2]), class_([3, 4])
    base_a, base_b = a(acts), b(acts)
    assert torch.allclose((a + b)(acts), base_a + base_b) and torch.allclose((2 + a)(acts), 2 + base_a)
    assert torch.allclose((a - b)(acts), base_a - base_b) and torch.allclose((1 - a)(acts), 1 - base_a)
    assert torch.allclose((a * 3)(acts), 3 * base_a) and torch.allclose((a / 2)(acts), base_a / 2)
    assert torch.allclose((-a)(acts), -base_a)
    assert (a + b).targets == ("conv2:1", "conv2:2") and (a + b).classes == (3, 4)
    assert repr(a * 3) == "Objective(channel(conv2, [1, 2]) * 3)"
    with pytest.raises(TypeError):
        a + "conv2"
    with pytest.raises(StudioError, match="cannot combine objectives with 2 and 3 targets"):
        a + class_([1, 2, 3])
    with pytest.raises(StudioError, match="a batch of 5 images cannot be split evenly among 2 targets"):
        a({"conv2": torch.rand(5, 12, 5, 5)})


def test_neuron_direction_and_diversity_refuse_what_they_cannot_measure():
    with pytest.raises(StudioError, match=r"neuron needs a layer with a spatial map; 'fc1' has shape \(128,\)"):
        neuron("fc1", 0)({"fc1": torch.rand(1, 128)})
    with pytest.raises(StudioError, match=r"neuron position \(x=9, y=0\) is outside 'conv2''s 5x5 map"):
        neuron("conv2", 0, x=9, y=0)({"conv2": torch.rand(1, 12, 5, 5)})
    tilted = direction("conv2", torch.ones(12), cossim_pow=2.0)
    acts = {"conv2": torch.rand(2, 12, 5, 5)}
    assert (tilted(acts) < direction("conv2", torch.ones(12))(acts)).all()  # cos < 1 scales the dot down
    with pytest.raises(StudioError, match="direction has 12 values but layer 'conv2' has 8 channels"):
        tilted({"conv2": torch.rand(2, 8, 5, 5)})
    with pytest.raises(StudioError, match="direction has 12 values but layer 'conv2' has 8 channels"):
        tilted.check({"conv2": (8, 5, 5)})
    with pytest.raises(StudioError, match="layer 'pool9' produced no tensor output"):
        deepdream("pool9").check({"conv2": (12, 5, 5)})
    with pytest.raises(StudioError, match="diversity: a batch of 3 cannot be cut into 2 groups"):
        diversity("conv2", groups=2)({"conv2": torch.rand(3, 12, 5, 5)})
    assert torch.equal(diversity("conv2", groups=2)({"conv2": torch.rand(2, 12, 5, 5)}), torch.zeros(2))


@pytest.mark.parametrize("overrides,message", [
    (["objective.channels='1,x'"], r"channels='1,x' is not 'all', an int or a list of ints"),
    (["objective.channels=[]"], "channels is empty"),
    (["objective.channels=[a]"], r"channels=\['a'\] is not 'all', an int or a list of ints"),
    (["objective.layer=null"], "objective 'channel' needs a layer: set objective.layer=<name>"),
    (["objective.layer=pool9"], "layer 'pool9' produced no tensor output"),
    (["objective=direction", "objective.vector=null"], r"needs objective.vector=\[v_0,...,v_C-1\]"),
    (["objective=direction", "objective.vector=[a,b]"], r"objective.vector=\['a', 'b'\] is not a list of numbers"),
    (["objective=direction", "objective.vector=[[[1]]]"], r"must be a list of C numbers .* got shape \(1, 1, 1\)"),
    (["objective=direction", "objective.vector=[1,2]"], "objective.vector has 2 values but layer 'conv2' has 12"),
])
def test_objective_config_mistakes_are_one_line(overrides, message):
    cfg = compose_config("visualize", overrides).objective
    with pytest.raises(StudioError, match=message):
        optvis_config.objective_targets(cfg, {"conv2": (12, 14, 14), "logits": (10,)})


def test_objective_configs_build_what_they_name():
    shapes = {"conv2": (12, 14, 14), "logits": (10,)}
    cfg = compose_config("visualize", ["objective.channels='3, 5'"]).objective  # a string list works too
    assert optvis_config.objective_targets(cfg, shapes) == [3, 5]
    cfg = compose_config("visualize", ["objective=direction", "objective.vector=[[1,0,0,0,0,0,0,0,0,0,0,0],"
                                       "[0,1,0,0,0,0,0,0,0,0,0,0]]"]).objective
    targets = optvis_config.objective_targets(cfg, shapes)
    assert targets == [0, 1] and optvis_config.build_objective(cfg, targets).targets == ("direction:conv2:0",
                                                                                  "direction:conv2:1")
    cfg = compose_config("visualize", ["objective=layer"]).objective
    assert optvis_config.objective_targets(cfg, shapes) == [None]


# --- smaller API promises: every branch a caller can reach ---------------------------------------
def test_channel_takes_a_tensor_of_indices_like_a_list():
    acts = {"conv": torch.rand(4, 3, 2, 2)}
    from_tensor, from_list = channel("conv", torch.tensor([0, 2])), channel("conv", [0, 2])
    assert from_tensor.targets == from_list.targets == ("conv:0", "conv:2")
    assert torch.equal(from_tensor(acts), from_list(acts))


def test_diversity_config_is_the_channel_plus_weighted_diversity():
    cfg = compose_config("visualize", ["objective=diversity", "objective.channels=[1,2]",
                                       "objective.weight=3.0"]).objective
    targets = optvis_config.objective_targets(cfg, {"conv2": (12, 14, 14)})
    built = optvis_config.build_objective(cfg, targets)
    acts = {"conv2": torch.rand(4, 12, 5, 5)}
    expected = channel("conv2", [1, 2])(acts) + 3.0 * diversity("conv2", groups=2)(acts)
    assert built.targets == ("conv2:1", "conv2:2") and torch.allclose(built(acts), expected)


@pytest.mark.parametrize("strength", [1.0, 30.0])
def test_relative_diversity_pulls_as_hard_as_its_objective_on_any_scale_of_activations(strength):
    """relative_to: per element, the diversity term's gradient has about the norm of the objective's, however strong
    the layer's activations (a fixed weight's pull shrinks as they grow); its value is the plain similarity."""
    a = (strength * torch.rand(4, 12, 5, 5)).requires_grad_()
    target = channel("conv2", [1, 2])
    relative = diversity("conv2", groups=2, relative_to=target)
    norms = [torch.autograd.grad(term({"conv2": a}).sum(), a)[0].flatten(1).norm(dim=1) for term in (target, relative)]
    assert torch.allclose(norms[0], norms[1], rtol=0.1)  # not exact: an element also moves the others' similarity
    assert torch.allclose(relative({"conv2": a}), diversity("conv2", groups=2)({"conv2": a}))


def test_relative_diversity_balances_at_the_input_when_its_objective_reads_another_layer():
    from studio.optvis.objectives import INPUT, Objective

    x = torch.rand(4, 1, 6, 6, requires_grad=True)
    conv = torch.nn.Conv2d(1, 12, 3)
    acts = {INPUT: x, "conv2": conv(x), "fc1": (3 * x).flatten(1)}  # fc1 does not depend on conv2
    upstream = Objective(lambda a: a["fc1"].mean(1), {"fc1"})
    relative = diversity("conv2", groups=2, relative_to=upstream)
    norms = [torch.autograd.grad(term(acts).sum(), x, retain_graph=True)[0].flatten(1).norm(dim=1)
             for term in (upstream, relative)]
    # about equal on average: an element's pull also moves its group's other similarities, at their scales
    assert float(norms[1].mean()) == pytest.approx(float(norms[0].mean()), rel=0.15)
    without_input = {k: v for k, v in acts.items() if k != INPUT}  # nowhere to compare: the plain similarity
    assert torch.equal(relative(without_input), diversity("conv2", groups=2)(without_input))


@pytest.mark.parametrize("build,shown", [(lambda: pixel(0), "param size 0 with 1 channel"),
                                         (lambda: fft((28, -1), channels=3), r"param size \(28, -1\) with 3"),
                                         (lambda: pixel(28, channels=0), "param size 28 with 0 channel")])
def test_a_param_that_is_not_an_image_is_refused(build, shown):
    with pytest.raises(StudioError, match=shown + r".* is not an image; give positive numbers"):
        build()


def test_latent_param_without_a_generator_names_the_generators():
    with pytest.raises(StudioError, match=r"param=latent needs a generator: generator=vae, generator=dcgan, generator=diffusion"):
        optvis_config.build_param({"name": "latent"})


def test_tv_with_beta_1_is_the_mean_gradient_length():
    image = torch.tensor([[[[0.0, 0.3], [0.4, 0.0]]]])  # one gradient: dx = 0.3, dy = 0.4, length 0.5
    assert total_variation(image, beta=1.0).item() == pytest.approx(0.5, abs=1e-6)
    assert total_variation(image, beta=2.0).item() == pytest.approx(0.25, abs=1e-6)


@pytest.mark.parametrize("projection", [blur(0.0), clip_norm(0.0), clip_contrib(0.0), weight_decay(0.0)],
                         ids=["blur", "clip_norm", "clip_contrib", "weight_decay"])
def test_a_projection_of_strength_zero_leaves_the_image_as_it_is(projection):
    images = torch.rand(2, 1, 8, 8)
    assert torch.equal(projection(images, torch.randn_like(images)), images)


def test_penalty_names_only_the_penalties():
    with pytest.raises(StudioError, match=r"unknown penalty 'blur'; choose from: hf, l1, l2, tv$"):
        regularizers.penalty("blur")


def test_no_regularizer_config_builds_nothing():
    for spec in (None, {}, []):
        built = optvis_config.build_regularization(spec)
        assert built.as_list() == [] and built.transforms == []


@pytest.mark.parametrize("spec,message", [
    ([{"weight": 1.0}], r"regularizer term \{'weight': 1.0\} needs a name; choose from: blur, .*tv"),
    ("l2", r"regularizer config 'l2' is neither a mapping of terms .* nor a list of terms"),
    ({"l2": 0.5}, r"regularizer term 'l2': 0.5 is not a mapping of its settings \(weight, every, options\)"),
    ({"scale": {"factors": []}}, r"transform 'scale' with \{'factors': \[\]\}: a random transform needs at least "
                                 "one value"),
    ({"jitter": {}}, r"transform 'jitter' with \{\}: .*missing 1 required positional argument: 'pixels'"),
    ({"pad": {"pixels": 2, "mode": "mirror"}}, r"unknown pad mode 'mirror'; choose from: constant, reflect"),
    ({"l2": {"every": 2}}, r"penalty 'l2' applies every step; remove its 'every'"),
    ({"blur": {"every": 0}}, r"regularizer 'blur': every=0 must be at least 1"),
], ids=["no-name", "not-a-mapping", "term-not-a-mapping", "empty-table", "missing-option", "pad-mode",
        "penalty-every", "every-0"])
def test_regularizer_config_mistakes_are_one_line(spec, message):
    with pytest.raises(StudioError, match=message):
        optvis_config.build_regularization(spec)


def test_transform_reprs_read_as_the_calls_that_make_them():
    names = {"pad": pad, "jitter": jitter, "scale": scale, "rotate": rotate}
    x = torch.rand(3, 1, 12, 12)
    for transform in [*standard(), pad(2, mode="reflect"), pad(3, value=0.0)]:
        rebuilt = eval(repr(transform), names)  # noqa: S307 - our own reprs
        assert repr(rebuilt) == repr(transform)
        torch.manual_seed(0)
        expected = transform(x)
        torch.manual_seed(0)
        assert torch.equal(rebuilt(x), expected), repr(transform)


def test_pad_modes_fill_the_border_as_named():
    x = torch.rand(1, 1, 6, 6)
    reflected, replicated = pad(2, mode="reflect")(x), pad(2, mode="replicate")(x)
    assert reflected.shape == replicated.shape == (1, 1, 10, 10)
    assert torch.equal(reflected[0, 0, 0, 2:-2], x[0, 0, 2]) and torch.equal(reflected[0, 0, 2:-2, 2:-2], x[0, 0])
    assert torch.equal(replicated[0, 0, 0, 2:-2], x[0, 0, 0]) and torch.equal(replicated[0, 0, 2:-2, 0], x[0, 0, :, 0])


def test_renders_of_target_chunks_concatenate_into_one():
    model = overflowing_model()

    def run(targets):
        return render(model, channel("dup", targets), param=pixel(8, channels=1, init_mean=0.8, init_sd=0.05),
                      steps=12, lr=0.02, seeds=[0, 1], thresholds=[4, 12])

    whole, first, second = run([0, 1]), run([0]), run([1])
    joined = concat([first, second])
    assert joined.targets == whole.targets == ["dup:0", "dup:0", "dup:1", "dup:1"]
    assert joined.seeds == [0, 1, 0, 1] and sorted(joined.snapshots) == [4, 12]
    assert list(joined.failed) == list(whole.failed) == [2, 3]  # the second chunk's failures, shifted by its offset
    assert joined.history["objective"].shape == (12, 4)
    assert torch.allclose(joined.images, whole.images, atol=1e-6)
    assert torch.allclose(joined.snapshots[4], whole.snapshots[4], atol=1e-6)


def test_a_model_without_parameters_renders():
    model = Classifier(nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten())), [0.0], [1.0])
    r = render(model, channel("pool", 0), param=pixel(8, channels=1), steps=8)
    assert r.images.shape == (1, 1, 8, 8) and r.activation_gain.item() > 0


@pytest.mark.parametrize("options,message", [
    ({"regularizers": ["l2"]}, r"regularizer 'l2' is neither a penalty objective nor a projection; give penalties"),
    ({"precision": "fp8"}, r"unknown precision 'fp8'; choose from: auto, fp32, bf16, fp16"),
    ({"memory_format": "nhwc"}, r"unknown memory_format 'nhwc'; choose from: auto, channels_last, contiguous"),
    ({"seeds": []}, r"render needs at least one seed"),
    ({"steps": -1}, r"steps=-1 must be at least 0"),
    ({"stepz": 3}, r"render has no option 'stepz'; its options: steps, lr, optimizer, "),
], ids=["regularizer", "precision", "memory_format", "seeds", "steps", "unknown-option"])
def test_bad_render_arguments_fail_in_one_line(options, message):
    with pytest.raises(StudioError, match=message):
        render(overflowing_model(), channel("dup", 0), param=pixel(8, channels=1), **{"steps": 2, **options})


def test_an_optimizer_callable_is_used_as_given():
    model, objective, spec = overflowing_model(), channel("dup", 0), pixel(8, channels=1)
    named = render(model, objective, spec, steps=5, lr=0.05, optimizer="sgd")
    given = render(model, objective, spec, steps=5, lr=0.05, optimizer=lambda ps, lr: torch.optim.SGD(ps, lr=lr))
    adam = render(model, objective, spec, steps=5, lr=0.05, optimizer="adam")
    assert torch.equal(given.images, named.images) and not torch.equal(given.images, adam.images)


class Flat(nn.Module):
    """x.view(N, -1): fails on channels-last activations."""

    def forward(self, x):
        return x.view(len(x), -1)


def test_channels_last_is_refused_by_a_viewing_model_that_auto_runs_contiguous():
    torch.manual_seed(0)
    model = Classifier(nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), flat=Flat(), fc=nn.Linear(4 * 6 * 6, 2))),
                       [0.5] * 3, [0.25] * 3)
    spec = pixel(8, channels=3)
    with pytest.raises(StudioError, match=r"memory_format=channels_last: the model cannot take images of shape "
                                          r"\(3, 8, 8\): view size .*; memory_format=auto runs such a model"):
        render(model, channel("conv", 0), param=spec, steps=2, memory_format="channels_last")
    assert model.net.conv.weight.is_contiguous()  # the caller's weights keep their layout
    auto = render(model, channel("conv", 0), param=spec, steps=4, memory_format="auto")
    assert auto.activation_gain.item() > 0


def test_an_objective_of_the_image_alone_never_runs_the_model():
    model = overflowing_model()
    calls = _counting(model.net)
    r = render(model, -1.0 * l2(), param=pixel(8, channels=1), steps=10, lr=0.05)
    assert calls == [] and r.activation_gain.item() > 0 and r.target_prob is None


def test_every_objective_config_has_a_registered_kind():
    """conf/objective/<name>.yaml and the adapter's OBJECTIVES name the same objectives, one to one."""
    assert sorted(optvis_config.OBJECTIVES) == config_choices("objective")
    for name in config_choices("objective"):
        assert optvis_config.objective_kind({"name": name}) is optvis_config.OBJECTIVES[name]
