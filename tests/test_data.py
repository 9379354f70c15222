"""Data sets: shapes, pixel range, class balance, deterministic stratified splits, clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from studio.data import ImageDataModule, build_datamodule
from studio.errors import StudioError
from tests.conftest import compose_config


def test_mnist5k_shapes_range_and_balance(datamodule):
    x_train, y_train = datamodule.split("train")
    x_val, y_val = datamodule.split("val")
    x_test, y_test = datamodule.split("test")
    assert (len(x_train), len(x_val), len(x_test)) == (3600, 400, 1000)
    assert x_train.shape[1:] == (1, 28, 28) and x_train.dtype == torch.float32
    assert x_train.min() == 0 and x_train.max() == 1  # [0, 1], and real digits use the full range
    assert torch.bincount(y_test).tolist() == [100] * 10  # stratified: every class exactly 10%
    assert torch.bincount(y_train).tolist() == [360] * 10
    assert datamodule.classes == [str(d) for d in range(10)]


def test_split_is_deterministic_disjoint_and_seeded():
    cfg = compose_config("train").data
    a, b = build_datamodule(cfg), build_datamodule(cfg)
    assert torch.equal(a.split("test")[0], b.split("test")[0])
    train, test = a.split("train")[0].flatten(1), a.split("test")[0].flatten(1)
    # no test digit is also a training digit (compare exact pixel rows)
    train_rows = {row.numpy().tobytes() for row in train}
    assert sum(row.numpy().tobytes() in train_rows for row in test) == 0
    other = build_datamodule(compose_config("train", ["data.split_seed=1"]).data)
    assert not torch.equal(a.split("test")[0], other.split("test")[0])


def test_fashion_mnist_from_debian_package():
    dm = build_datamodule(compose_config("train", ["data=fashion_mnist"]).data)
    x_test, y_test = dm.split("test")
    assert x_test.shape == (10000, 1, 28, 28)  # the official test split is kept
    assert len(dm.split("train")[0]) + len(dm.split("val")[0]) == 60000
    assert torch.bincount(y_test).tolist() == [1000] * 10
    assert dm.classes[9] == "Ankle boot"


def test_fashion_mnist_missing_files_says_how_to_install(tmp_path):
    dm = ImageDataModule("fashion_mnist", {"root": str(tmp_path)})
    with pytest.raises(StudioError, match="apt-get install dataset-fashion-mnist"):
        dm.setup()


def test_digits8x8_upsampled_to_config_size():
    dm = build_datamodule(compose_config("train", ["data=digits8x8"]).data)
    x, y = dm.split("train")
    assert x.shape[1:] == (1, 28, 28) and 0 <= x.min() and x.max() <= 1
    assert len(torch.unique(y)) == 10


def test_torchvision_offline_gives_one_clear_line(tmp_path):
    dm = ImageDataModule("torchvision", {"dataset": "CIFAR10", "root": str(tmp_path), "download": False})
    with pytest.raises(StudioError, match=r"CIFAR10 not found .*data.options.download=true"):
        dm.setup()


def _write_folder(root, channels, per_class=6, size=20):
    rng = np.random.default_rng(0)
    for name, level in (("cats", 40), ("dogs", 200)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shape = (size, size) if channels == 1 else (size, size, 3)
            pixels = np.clip(rng.normal(level, 10, shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_reads_grey_and_rgb(tmp_path, channels):
    _write_folder(tmp_path, channels)
    cfg = compose_config("train", ["data=image_folder", f"data.options.root={tmp_path}", "data.num_classes=2",
                                   f"data.channels={channels}", "data.size=16", "data.test_fraction=0.34"])
    dm = build_datamodule(cfg.data)
    x, y = dm.split("train")
    assert x.shape[1:] == (channels, 16, 16)
    assert dm.classes == ["cats", "dogs"]
    assert x[y == 0].mean() < 0.3 < x[y == 1].mean()  # dark cats, bright dogs survived the pipeline


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(StudioError, match="image folder not found"):
        ImageDataModule("image_folder", {"root": str(tmp_path / "nope"), "size": 8, "channels": 1}).setup()
    (tmp_path / "only").mkdir()
    with pytest.raises(StudioError, match="need at least 2"):
        ImageDataModule("image_folder", {"root": str(tmp_path), "size": 8, "channels": 1}).setup()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(StudioError, match="cannot read image .*broken.png"):
        ImageDataModule("image_folder", {"root": str(tmp_path), "size": 8, "channels": 1}).setup()


def test_config_that_disagrees_with_the_data_is_refused():
    with pytest.raises(StudioError, match=r"shape \(1, 28, 28\).*data.channels"):
        build_datamodule(compose_config("train", ["data.channels=3"]).data)


def test_torchvision_offline_hint_names_the_config_key(tmp_path):
    dm = ImageDataModule("torchvision", {"dataset": "MNIST", "root": str(tmp_path), "download": False})
    with pytest.raises(StudioError, match=r"^torchvision MNIST not found under .*; set data.options.download=true"):
        dm.setup()


def _write_idx(path, array: np.ndarray) -> None:
    """An uncompressed idx file as torchvision's MNIST readers expect: magic (ubyte, ndim), sizes, bytes."""
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_torchvision_fashion_mnist_already_on_disk_loads_offline(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "FashionMNIST" / "raw"  # torchvision's layout under data.options.root
    raw.mkdir(parents=True)
    written = {}
    for prefix, n in (("train", 40), ("t10k", 20)):
        images, labels = rng.integers(0, 256, (n, 28, 28)), np.tile(np.arange(10), n // 10)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[prefix] = images, labels
    dm = ImageDataModule("torchvision", {"dataset": "FashionMNIST", "root": str(tmp_path)}, val_fraction=0.25)
    x_test, y_test = dm.split("test")  # the official test split is kept as it is
    assert x_test.shape == (20, 1, 28, 28) and x_test.dtype == torch.float32 and y_test.dtype == torch.int64
    assert torch.equal(x_test, torch.from_numpy(written["t10k"][0]).float().div(255).unsqueeze(1))
    assert y_test.tolist() == written["t10k"][1].tolist()
    assert len(dm.split("train")[0]) + len(dm.split("val")[0]) == 40
    assert dm.classes[9] == "Ankle boot"


@pytest.mark.parametrize("dataset", ["MNIST", "CIFAR10"])  # MNIST tries its mirrors, CIFAR10 one URL
def test_torchvision_download_without_network_is_one_line(tmp_path, monkeypatch, dataset):
    import urllib.error
    import urllib.request

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    dm = ImageDataModule("torchvision", {"dataset": dataset, "root": str(tmp_path), "download": True})
    with pytest.raises(StudioError) as error:
        dm.setup()
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"could not download torchvision {dataset} to {tmp_path}: ")
    assert "Temporary failure in name resolution" in message


@pytest.mark.parametrize("fraction,reason", [(0.001, "test_size = 2 should be greater or equal to the number "
                                                     "of classes = 10"),
                                             (1.5, "must be a float in the range (0.0, 1.0)")])
def test_a_fraction_that_cannot_split_every_class_names_the_key(fraction, reason):
    dm = ImageDataModule("digits8x8", {}, test_fraction=fraction)
    with pytest.raises(StudioError) as error:
        dm.setup()
    message = str(error.value)
    assert message.startswith(f"cannot split 1797 images of 10 classes into test with data.test_fraction={fraction} (")
    assert reason in message and message.endswith("; use data.test_fraction between 0.0056 and 0.99")
    assert len(message.splitlines()) == 1


def test_every_class_needs_an_image_in_each_split(tmp_path):
    """Three splits need three images of every class: the message names the class, not a split's leftovers."""
    from PIL import Image

    for name, count in (("cats", 5), ("dogs", 2)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.new("L", (8, 8), 30 * i).save(tmp_path / name / f"{i}.png")
    dm = ImageDataModule("image_folder", {"root": str(tmp_path), "size": 8, "channels": 1})
    with pytest.raises(StudioError, match=r"^too few images: class 'dogs' has 2 image\(s\); the train, validation "
                                          r"and test splits need at least 3 per class \(one each\)$"):
        dm.setup()


def test_classes_in_turn_takes_every_class_before_any_twice():
    from studio.data import classes_in_turn

    labels = torch.tensor([0, 0, 0, 1, 1, 2])  # sorted by class, as mnist5k's splits are
    assert labels[classes_in_turn(labels, 3)].tolist() == [0, 1, 2]
    assert labels[classes_in_turn(labels, 5)].tolist() == [0, 1, 2, 0, 1]
