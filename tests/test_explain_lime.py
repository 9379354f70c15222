"""LIME: a surrogate that is exact on an exactly-linear model, repeatable, any channel count, fast enough
to use, high R² on the real model, and one-line errors for bad input."""

import copy

import pytest
import torch
from torch import nn

from studio.errors import StudioError
from studio.explain import LimeImage
from studio.explain.lime import fit_surrogate, kernel_weights, sample_masks
from studio.explain.segments import SEGMENTATIONS, segment
from studio.models import Classifier, build_net


class SegmentLinear(nn.Module):
    """logit_0 = Σ_s a_s · (pixel mass of segment s); logit_1 = its negative. Exactly linear in the
    on/off vector when hidden segments are filled with 0."""

    def __init__(self, segments: torch.Tensor, a: torch.Tensor):
        super().__init__()
        self.onehot = nn.functional.one_hot(segments.flatten(), int(segments.max()) + 1).float()  # HW×S
        self.a = a

    def forward(self, x):
        mass = x.sum(1).flatten(1) @ self.onehot  # N×S
        score = mass @ self.a
        return torch.stack([score, -score], 1)


@pytest.fixture(scope="module")
def digits(datamodule):
    return datamodule.split("test")[0][:6]


def test_r2_is_one_on_a_model_linear_in_the_segments():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 28, 28)
    segments = segment(x, "grid", cell=7)
    a = torch.randn(int(segments.max()) + 1)
    lime = LimeImage(SegmentLinear(segments[0], a), segmentation="grid", segmentation_options={"cell": 7},
                     fill="constant", output="logit", samples=1000, progress=False)
    e = lime.explain(x, target=0)
    assert e.r2.item() > 0.999 and e.r2_heldout.item() > 0.999
    true = a * (x[0, 0].flatten() @ SegmentLinear(segments[0], a).onehot)  # the exact per-segment effect
    assert torch.allclose(e.weights[0, 0], true, atol=0.02 * true.abs().max())
    assert e.local_pred.item() == pytest.approx(e.model_output.item(), rel=1e-2)  # ridge shrinks a little


def test_surrogate_solvers_recover_the_big_weights():
    torch.manual_seed(1)
    n, m, s = 2, 600, 12
    z = torch.rand(n, m, s) < 0.5
    beta = torch.zeros(n, s)
    beta[:, :3] = torch.tensor([3.0, -2.0, 1.5])
    y = (z.float() * beta[:, None, :]).sum(2, keepdim=True) + 0.5  # N×M×1
    w = kernel_weights(z, torch.full((n,), s), 0.25)
    present = torch.ones(n, s, dtype=torch.bool)
    for solver, kwargs in (("ridge", {"alpha": 1.0}), ("lasso", {"alpha": 0.05}), ("forward", {"num_features": 3})):
        intercept, weights = fit_surrogate(z, y, w, present, solver, **kwargs)
        assert set(weights[:, 0].abs().topk(3, dim=1).indices[0].tolist()) == {0, 1, 2}, solver
        assert intercept[:, 0] == pytest.approx(torch.full((n,), 0.5, dtype=torch.float64), abs=0.15), solver
        if solver == "forward":
            assert ((weights[:, 0] != 0).sum(1) == 3).all()
        if solver == "lasso":
            assert (weights[:, 0, 3:].abs() < 1e-6).float().mean() > 0.8  # l1 zeroes the irrelevant ones


def test_sampling_and_kernel_follow_lime():
    g = torch.Generator().manual_seed(0)
    num = torch.tensor([5, 3])
    z = sample_masks(num, 400, g)
    assert z[:, 0, :3].all() and z[0, 0].all() and not z[1, :, 3:].any()  # original first; absent segments off
    assert 0.4 < z[0, 1:].float().mean() < 0.6
    w = kernel_weights(z, num, 0.25)
    assert torch.allclose(w[:, 0], torch.ones(2, dtype=torch.float64))  # distance 0 → weight 1
    off = torch.zeros(1, 1, 5, dtype=torch.bool)
    assert kernel_weights(off, torch.tensor([5]), 0.25).item() == pytest.approx((2.718281828 ** -16) ** 0.5)


def test_repeatable_with_a_seed(small_cnn, digits):
    make = lambda seed: LimeImage(small_cnn.model, samples=300, heldout=50, seed=seed, progress=False)  # noqa: E731
    a, b, c = make(0).explain(digits[:3]), make(0).explain(digits[:3]), make(1).explain(digits[:3])
    assert torch.equal(a.weights, b.weights) and torch.equal(a.segments, b.segments)
    assert torch.equal(a.score, b.score)
    assert not torch.equal(a.weights, c.weights)


def test_r2_on_the_default_model(small_cnn, digits):
    predicted = small_cnn.model(digits).argmax(1)
    e = LimeImage(small_cnn.model, segmentation="slic", samples=1000, progress=False).explain(digits, target=predicted)
    assert e.r2.mean() >= 0.8, e.r2  # the bar, with the defaults (blur fill, logit output)
    assert e.r2_heldout.mean() >= 0.75, e.r2_heldout
    assert torch.equal(e.target, predicted) and e.intercept.shape == e.local_pred.shape == (6, 1)
    # the surrogate at "all segments on" is close to the model's own logit there
    assert (e.local_pred - e.model_output).abs().max() < 0.1 * e.model_output.abs().max()
    assert e.heatmap().shape == (6, 1, 28, 28)
    assert e.render("heatmap").shape == e.render("mask").shape == (6, 3, 28, 28)
    top = e.top_segments(3)
    painted = e.heatmap().flatten(1)
    assert torch.equal(painted.max(1).values, e.weights[:, 0].gather(1, top[:, :1]).squeeze(1))


@pytest.mark.parametrize("channels", [1, 3])
def test_every_segmentation_on_grey_and_rgb(channels):
    torch.manual_seed(0)
    model = Classifier(build_net("small_cnn", channels, 4), [0.5] * channels, [0.25] * channels).eval()
    x = torch.rand(2, channels, 32, 32)
    options = {"slic": {"n_segments": 30, "compactness": 0.3}, "quickshift": {"kernel_size": 2, "max_dist": 20},
               "felzenszwalb": {"scale": 20, "min_size": 5}, "grid": {"cell": 8}}
    for name in SEGMENTATIONS:
        for fill in ("mean", "constant", "blur"):
            e = LimeImage(model, segmentation=name, segmentation_options=options[name], fill=fill, samples=64,
                          heldout=16, progress=False).explain(x, target=[1, 2], top_labels=2)
            assert e.segments.shape == (2, 32, 32) and (e.num_segments >= 2).all(), name
            assert e.labels[:, 0].tolist() == [1, 2] and e.labels.shape == (2, 2)
            assert e.weights.shape == (2, 2, int(e.num_segments.max()))
            assert torch.isfinite(e.score).all()


def _error(fn, *fragments):
    with pytest.raises(StudioError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_bad_input_messages(small_cnn, digits):
    lime = LimeImage(small_cnn.model, samples=50, heldout=0, progress=False)
    _error(lambda: lime.explain(digits[0]), "N×C×H×W", "(1, 28, 28)")
    _error(lambda: lime.explain(digits.expand(-1, 3, -1, -1)), "3 channel", "expects 1")
    _error(lambda: lime.explain(torch.rand(1, 1, 2, 2)), "(1, 2, 2)", "do not fit the model")
    _error(lambda: lime.explain(digits, target=12), "target 12 is out of range", "10 classes (0..9)")
    _error(lambda: LimeImage(small_cnn.model, segmentation="grid", segmentation_options={"cell": 28},
                             progress=False).explain(digits), "'grid'", "produced 1 segment", "at least 2")
    _error(lambda: LimeImage(small_cnn.model, segmentation="watershed", progress=False).explain(digits),
           "unknown segmentation 'watershed'", "felzenszwalb, grid, quickshift, slic")
    broken = copy.deepcopy(small_cnn.model)
    with torch.no_grad():
        broken.net.fc.bias.fill_(float("nan"))
    _error(lambda: LimeImage(broken, samples=50, progress=False).explain(digits), "non-finite outputs", "image 0")
