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
    corrupt.write_bytes(bytes(range(64)))  # fixed garbage: random bytes would make the test a lottery
    with pytest.raises(StudioError, match="refusing to load checkpoint .*corrupt.pt"):
        load_state_dict_file(corrupt)


def test_a_lightning_checkpoint_loads_like_a_plain_state_dict(tmp_path):
    model = _model()
    path = tmp_path / "epoch=3.ckpt"  # what Lightning's ModelCheckpoint writes: the module's weights under "model."
    torch.save({"epoch": 3, "global_step": 84, "pytorch-lightning_version": "2.5.0",
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    other = _model()
    load_weights(other, load_state_dict_file(path), str(path))
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model.eval()(x), other.eval()(x))


def test_a_file_of_tensors_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(StudioError, match=r"checkpoint '.*list.pt' is not a state dict \(name -> tensor\)"):
        load_state_dict_file(path)


def _in_hub_cache(tmp_path, monkeypatch, weights, net: torch.nn.Module) -> dict:
    """Save `net`'s random weights where torch.hub looks before it downloads `weights` ($TORCH_HOME/hub/
    checkpoints/<file name of the URL>), so the pretrained code path runs offline; returns them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = tmp_path / "hub" / "checkpoints" / os.path.basename(weights.url)
    path.parent.mkdir(parents=True)
    state = net.state_dict()
    torch.save(state, path)
    return state


def _pretrained(weights: str, arch: str = "resnet18"):
    return compose_config("train", ["model=resnet18", f"model.options.arch={arch}", f"model.options.weights={weights}"])


def test_pretrained_torchvision_weights_get_a_new_head_and_their_own_normalization(tmp_path, monkeypatch):
    import torchvision.models as tvm

    weights = tvm.ResNet18_Weights.IMAGENET1K_V1
    saved = _in_hub_cache(tmp_path, monkeypatch, weights, tvm.resnet18())
    cfg = _pretrained("IMAGENET1K_V1")
    grey = build_classifier(cfg.model, 1, 10, [0.5], [0.25])
    loaded = grey.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items() if not k.startswith("fc."))
    assert loaded["fc.weight"].shape == (10, saved["fc.weight"].shape[1])  # a new 10-class head
    assert grey(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    imagenet = weights.transforms()
    assert grey.mean.flatten().tolist() == pytest.approx([sum(imagenet.mean) / 3])  # not the data's 0.5
    assert grey.std.flatten().tolist() == pytest.approx([sum(imagenet.std) / 3])
    rgb = build_classifier(cfg.model, 3, 10, [0.5] * 3, [0.25] * 3)
    assert rgb.mean.flatten().tolist() == pytest.approx(imagenet.mean)
    assert rgb.std.flatten().tolist() == pytest.approx(imagenet.std)


def test_unknown_pretrained_weights_list_the_valid_names(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(StudioError) as error:
        build_classifier(_pretrained("IMAGENET").model, 1, 10, [0.5], [0.25])
    assert str(error.value) == ("unknown torchvision weights 'IMAGENET' for resnet18; choose from: DEFAULT, "
                                "IMAGENET1K_V1 or null (untrained)")
    assert not any(tmp_path.iterdir())  # refused before any download


def test_a_broken_weights_download_is_one_line_naming_where_it_lies(tmp_path, monkeypatch):
    import torchvision.models as tvm

    weights = tvm.ResNet18_Weights.IMAGENET1K_V1
    _in_hub_cache(tmp_path, monkeypatch, weights, tvm.resnet18())
    # what an interrupted download through a captive portal leaves: a web page, not weights
    (tmp_path / "hub" / "checkpoints" / os.path.basename(weights.url)).write_bytes(b"<html>502 Bad Gateway</html>")
    with pytest.raises(StudioError) as error:
        build_classifier(_pretrained("DEFAULT").model, 1, 10, [0.5], [0.25])
    message = str(error.value)
    assert message.startswith("could not load torchvision weights 'DEFAULT' for resnet18 (UnpicklingError: invalid "
                              "load key, '<'.)")
    assert f"{tmp_path / 'hub' / 'checkpoints'}" in message and "model.options.weights=null" in message
    assert len(message.splitlines()) == 1


def test_pretrained_net_without_a_linear_head_cannot_take_other_classes(tmp_path, monkeypatch):
    import torchvision.models as tvm

    _in_hub_cache(tmp_path, monkeypatch, tvm.SqueezeNet1_1_Weights.DEFAULT, tvm.squeezenet1_1())  # a conv head
    with pytest.raises(StudioError, match=r"^torchvision squeezenet1_1 has no nn.Linear head to replace for 10 "
                                          r"classes; .*choose an arch that ends in one"):
        build_classifier(_pretrained("DEFAULT", arch="squeezenet1_1").model, 1, 10, [0.5], [0.25])


def test_the_early_layer_check_downloads_no_pretrained_weights(tmp_path, monkeypatch):
    from studio.models import check_layer_names, untrained_copy

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = _pretrained("IMAGENET1K_V1")
    assert untrained_copy(cfg.model, cfg.data) is None
    check_layer_names(cfg.model, cfg.data, ["no_such_layer"])  # left to the trained model's own check
    assert not any(tmp_path.iterdir())
