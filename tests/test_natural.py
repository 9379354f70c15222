"""The natural choice among a class render's starts (studio/optvis/natural.py, render's natural_edge)."""

from __future__ import annotations

import pytest
import torch

from studio.errors import StudioError
from studio.optvis import channel, class_, latent, render
from studio.optvis.natural import RealManifold, natural_choice
from studio.optvis.render import RenderOptions
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def digits(datamodule):
    """(training images, 40 held-out test digits 4 per class, their classes)."""
    images, labels = datamodule.split("test")
    order = torch.cat([torch.nonzero(labels == c).flatten()[:4] for c in range(10)])
    return datamodule.split("train")[0], images[order], labels[order]


@pytest.fixture(scope="module")
def manifold(small_cnn, digits):
    return RealManifold(small_cnn.model, digits[0])


def test_real_digits_lie_on_the_manifold_and_blurred_ones_off_it(manifold, digits):
    """Calibration on known answers: held-out real digits sit near the training digits' manifold, the same digits
    blurred and uniform noise far outside it, in that order; the set's Fréchet distance orders them alike."""
    from torchvision.transforms.functional import gaussian_blur

    real = digits[1]
    blurred = gaussian_blur(real, kernel_size=9, sigma=1.5)
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(0))
    outside = [manifold.outside(x).median() for x in (real, blurred, noise)]
    assert outside[0] < 1.5 < outside[1] < outside[2]
    assert manifold.frechet(real) < manifold.frechet(blurred) < manifold.frechet(noise)


def test_natural_choice_swaps_a_render_off_the_manifold_for_a_recognized_one_nearer_it(manifold, digits):
    """Start 0 renders blurred digits, start 1 the real ones: every element off the manifold takes start 1 when its
    probability reaches the floor, and none takes a start the model recognizes less."""
    from torchvision.transforms.functional import gaussian_blur

    real = digits[1]
    blurred = gaussian_blur(real, kernel_size=9, sigma=1.5)
    kept = torch.zeros(len(real), dtype=torch.long)
    sure, unsure = torch.ones(len(real)), torch.full((len(real),), 0.5)
    floor = torch.full((len(real),), 0.95)
    off, on = manifold.outside(blurred), manifold.outside(real)
    swaps = (off > 1.0) & (on < off)
    assert swaps.sum() >= 30  # most blurred digits lie off the manifold, their real originals nearer it
    assert torch.equal(natural_choice(manifold, [blurred, real], [sure, sure], kept, 1.0, floor), swaps.long())
    assert (natural_choice(manifold, [blurred, real], [sure, unsure], kept, 1.0, floor) == 0).all()
    half = torch.arange(len(real)) % 2 == 0  # only the even elements recognized from start 1
    choice = natural_choice(manifold, [blurred, real], [sure, torch.where(half, sure, unsure)], kept, 1.0, floor)
    assert torch.equal(choice, (swaps & half).long())
    # a render already inside the edge stays, however near another start's lies
    assert (on <= 1.0).any()
    choice = natural_choice(manifold, [real, real.flip(0)], [sure, sure], kept, 1.0, floor)
    assert (choice[on <= 1.0] == 0).all()


def test_swaps_that_would_take_the_set_away_from_the_real_digits_are_not_made(manifold, digits):
    """Each element nearer the manifold alone, the set farther from the real digits: forty copies of the most
    typical digit are each nearer than the real set's own digits, but no variety is left, so the set keeps its
    first choice."""
    real = digits[1]
    outside = manifold.outside(real)
    typical = real[outside.argmin()].expand_as(real).clone()
    kept = torch.zeros(len(real), dtype=torch.long)
    sure = torch.ones(len(real))
    edge = float(outside.min()) / 2  # every element counts as outside: each would swap alone
    assert manifold.frechet(typical) > manifold.frechet(real)
    assert (manifold.outside(typical) < outside + 1e-6).all()
    assert torch.equal(natural_choice(manifold, [real, typical], [sure, sure], kept, edge, sure * 0.95), kept)


def test_render_shows_the_natural_choice_among_its_starts(small_cnn, dcgan, digits):
    """render(natural_edge=...) renders every start and shows, per element, the start natural_choice picks from
    those renders; the renders it shows are each some start's, reach the retry threshold or the kept render's
    probability, and the set is no farther from the real digits than the retry alone leaves it."""
    train = digits[0]
    spec = latent(dcgan.module, start_candidates=3)
    objective = class_([1, 4, 7], log_softmax=True)
    run = lambda param, **more: render(small_cnn.model, objective, param=param, steps=24, lr=0.1,  # noqa: E731
                                       seeds=[0, 1, 2, 3], **more)
    tries = [run(spec.ranked(r)) for r in range(3)]
    retried = run(spec, retry_below=0.95)
    edge = 0.5  # the 3-epoch GAN's renders lie outside the real digits: most are candidates to swap
    natural = run(spec, retry_below=0.95, natural_edge=edge, natural_images=train)
    manifold = RealManifold(small_cnn.model, train)
    stacked = torch.stack([t.images for t in tries])
    kept = torch.stack([(stacked[:, b] == retried.images[b]).flatten(1).all(1).int().argmax() for b in range(12)])
    floor = retried.target_prob.clamp(max=0.95)
    expected = natural_choice(manifold, [t.images for t in tries], [t.target_prob for t in tries], kept, edge, floor)
    shown = torch.stack([stacked[int(s), b] for b, s in enumerate(expected)])
    assert torch.equal(natural.images, shown)
    assert (natural.target_prob >= floor).all()
    assert torch.equal(natural.history["objective"].T[expected == 2], tries[2].history["objective"].T[expected == 2])
    assert manifold.frechet(natural.images) <= manifold.frechet(retried.images)
    # off for an objective with no class, and with natural_edge=None: the renders of the retry alone
    assert torch.equal(render(small_cnn.model, channel("conv2", [1]), param=spec, steps=4, natural_edge=edge,
                              natural_images=train).images,
                       render(small_cnn.model, channel("conv2", [1]), param=spec, steps=4).images)
    assert torch.equal(run(spec, retry_below=0.95, natural_edge=None, natural_images=train).images, retried.images)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), True, "far"])
def test_a_bad_natural_edge_is_refused_in_one_line(bad):
    with pytest.raises(StudioError, match=rf"natural_edge={bad} must be a positive number"):
        RenderOptions(natural_edge=bad).check()


def test_a_natural_choice_without_real_images_is_refused_before_rendering(small_cnn, dcgan):
    spec = latent(dcgan.module, start_candidates=2)
    for images, found in ((None, "NoneType"), (torch.rand(3, 1, 28, 28), r"\(3, 1, 28, 28\)")):
        with pytest.raises(StudioError, match=rf"natural_edge=1.0 needs natural_images, .* found {found}"):
            render(small_cnn.model, class_([1]), param=spec, steps=2, natural_edge=1.0, natural_images=images)


def test_the_gans_recipe_on_mnist5k_makes_the_natural_choice_and_other_recipes_do_not():
    assert compose_config("visualize", ["param=latent", "generator=dcgan"]).natural_edge == 1.0
    assert compose_config("visualize", ["param=latent", "generator=dcgan", "data=fashion_mnist"]).natural_edge is None
    assert compose_config("visualize", ["param=latent", "generator=vae"]).natural_edge is None
    assert compose_config("visualize", []).natural_edge is None
    assert compose_config("visualize", ["param=latent", "natural_edge=null"]).natural_edge is None


def test_the_randomized_models_rerender_makes_no_natural_choice():
    from studio.commands.visualize import _randomized_options

    options = RenderOptions(retry_below=0.95, natural_edge=1.0, natural_images=torch.rand(8, 1, 28, 28))
    again = _randomized_options(options)
    assert again.natural_edge is None and again.natural_images is None and again.retry_below is None


def test_the_manifold_reads_an_rgb_torchvision_model_through_512_dimensions(digits):
    """resnet18's 9,600 convolution statistics are reduced by PCA to 512: held-out digits lie nearer the training
    digits than noise does, even in an untrained network's statistics."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    rgb = lambda x: x.expand(-1, 3, -1, -1)  # noqa: E731
    manifold = RealManifold(resnet18(num_classes=10).eval(), rgb(digits[0][:800]))
    assert manifold.reference.shape == (800, 512)
    real, noise = rgb(digits[1]), torch.rand(40, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    assert manifold.outside(real).median() < manifold.outside(noise).median()
    assert manifold.frechet(real) < manifold.frechet(noise)


def test_a_model_without_convolutions_is_refused_in_one_line_that_names_the_way_out(digits):
    from torch import nn

    with pytest.raises(StudioError, match=r"natural_edge: .* has no nn.Conv2d.*; or set natural_edge=null"):
        RealManifold(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), digits[0][:100])
