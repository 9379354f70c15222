"""The studio from Python (studio/api.py): the cached trained models in one line, no Hydra in sight."""

from __future__ import annotations

import pytest
import torch

import studio
from studio.errors import StudioError
from studio.train import accuracy
from tests.conftest import FAST_GENERATOR


def test_load_classifier_gives_the_cached_model_the_cli_trained(small_cnn, datamodule):
    model = studio.load_classifier()  # small_cnn on mnist5k: the session's cache entry, not a new training
    x, y = datamodule.split("test")
    assert not model.training and accuracy(model, x, y) == small_cnn.test_acc > 0.95
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), small_cnn.model.state_dict().values()))


def test_load_generator_gives_the_cached_generator(vae):
    generator = studio.load_generator("vae", overrides=FAST_GENERATOR["vae"])  # the session's brief VAE
    images = generator.sample(8, seed=0)
    assert images.shape == (8, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(images, vae.module.sample(8, seed=0))


@pytest.mark.parametrize("call,message", [
    (lambda: studio.load_classifier(model="resnet19"), r"^unknown model 'resnet19'; choose from: "),
    (lambda: studio.load_classifier(data="mnist"), r"^unknown data 'mnist'; choose from: .*mnist5k"),
    (lambda: studio.load_generator(overrides=["generator.lattent_dim=8"]),
     r"^unknown config key 'generator.lattent_dim' \(did you mean generator.latent_dim\?\)"),
])
def test_a_bad_name_is_one_line_naming_it(call, message, outputs):
    with pytest.raises(StudioError, match=message):
        call()


def test_studio_has_no_other_attributes():
    with pytest.raises(AttributeError, match="module 'studio' has no attribute 'load_model'"):
        studio.load_model  # noqa: B018
