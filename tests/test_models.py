"""Models: layer lookup by name, shapes, RGB nets on grey data, and safe checkpoint loading."""

import os
import pickle

import pytest
import torch

from studio.errors import StudioError
from studio.models import (Classifier, build_classifier, get_layer, layer_names, layer_shapes,
                           load_state_dict_file, load_weights)
from tests.conftest import compose_config


def _model(name="small_cnn", channels=1, classes=10):
    cfg = compose_config("train", [f"model={name}"])
    return build_classifier(cfg.model, channels, classes, [0.5] * channels, [0.25] * channels)


def test_small_cnn_layers_match_the_source_material():
    model = _model()
    shapes = layer_shapes(model, (1, 28, 28))
    assert shapes["conv2"] == (12, 14, 14)  # the source's 12 second-layer filters
    assert shapes["fc"] == (10,)
    assert layer_names(model)[:2] == ["conv1", "bn1"]


def test_unknown_layer_lists_the_valid_names():
    with pytest.raises(StudioError, match=r"unknown layer 'conv9'; choose from: .*conv2.*fc"):
        get_layer(_model(), "conv9")


def test_torchvision_resnet_runs_on_grey_and_rgb():
    grey = _model("resnet18", channels=1)
    assert grey(torch.rand(2, 1, 28, 28)).shape == (2, 10)  # grey repeated to RGB inside
    rgb = _model("resnet18", channels=3)
    assert rgb(torch.rand(2, 3, 64, 64)).shape == (2, 10)
    assert layer_shapes(rgb, (3, 128, 128))["layer2"] == (128, 16, 16)


def test_classifier_normalizes_inside():
    net = torch.nn.Identity()
    model = Classifier(net, [0.5], [0.25])
    assert torch.allclose(model(torch.full((1, 1, 2, 2), 0.75)), torch.ones(1, 1, 2, 2))


class _MakesAFile:
    """A pickle payload that would create a file if it were ever executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"conv1.weight": _MakesAFile(str(marker))}, f)
    with pytest.raises(StudioError, match=r"refusing to load checkpoint .*evil.pt.*not a plain weights file"):
        load_state_dict_file(evil)
    assert not marker.exists()


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    model = _model()
    path = tmp_path / "net.pt"
    torch.save(model.net.state_dict(), path)  # a bare net's state dict, as users save them
    other = _model()
    load_weights(other, load_state_dict_file(path), str(path))
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model.eval()(x), other.eval()(x))
    wrong = _model(classes=5)
    with pytest.raises(StudioError, match=r"does not fit this model: net.fc.weight has shape \(10, 128\), "
                                          r"expected \(5, 128\)"):
        load_weights(wrong, load_state_dict_file(path), str(path))


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(StudioError, match="checkpoint not found: .*absent.pt"):
        load_state_dict_file(tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(os.urandom(64))
    with pytest.raises(StudioError, match="refusing to load checkpoint .*corrupt.pt"):
        load_state_dict_file(corrupt)
