"""Inside the network: linear probes and 2-D embeddings, on synthetic truths and on the trained CNN."""

import json

import numpy as np
import pytest
import torch

from studio.activations import collect
from studio.embed import knn_separation, pca_2d, tsne_2d
from studio.errors import StudioError
from studio.probe import fit_probe, majority_accuracy
from studio.tracking import read_offline_run
from tests.conftest import QUIET_LOCAL, run_studio, run_studio_forked


def _labels(n=600, classes=5, seed=0):
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def test_probe_reads_a_layer_that_is_a_linear_function_of_the_label():
    y = _labels()
    mixing = torch.randn(5, 40, generator=torch.Generator().manual_seed(1))
    features = torch.nn.functional.one_hot(y, 5).float() @ mixing  # exactly linear in the label
    train, test = slice(0, 400), slice(400, None)
    probe = fit_probe(features[train], y[train], 5)
    assert probe.accuracy(features[test], y[test]) == 1.0


def test_probe_on_random_features_is_at_chance():
    y = _labels(n=2000)
    features = torch.randn(2000, 20, generator=torch.Generator().manual_seed(2))
    probe = fit_probe(features[:1500], y[:1500], 5)
    assert abs(probe.accuracy(features[1500:], y[1500:]) - 0.2) < 0.07
    assert majority_accuracy(y[:1500], y[1500:]) < 0.3


def test_probe_refuses_too_few_samples_per_class():
    with pytest.raises(StudioError, match="too few samples to probe: class 2 has 0"):
        fit_probe(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 3, 3]), 4)


def test_too_large_layer_says_pool_it(small_cnn, datamodule):
    x = datamodule.split("test")[0][:4]
    with pytest.raises(StudioError, match=r"layer 'conv1' gives 25088 features .*pool"):
        collect(small_cnn.model, x, ["conv1"], pool=28, max_features=16384)


def test_separation_orders_layers_on_the_trained_model(small_cnn, datamodule):
    x, y = datamodule.split("test")
    features = collect(small_cnn.model, x[:500], ["pixels", "fc1"])
    labels = y[:500].numpy()
    maps = {name: pca_2d(f) for name, f in features.items()}
    assert all(m.shape == (500, 2) for m in maps.values())
    assert knn_separation(maps["fc1"], labels) > knn_separation(maps["pixels"], labels) + 0.2
    tsne = tsne_2d(features["fc1"], seed=0)
    assert tsne.shape == (500, 2) and knn_separation(tsne, labels) > 0.9
    assert np.array_equal(tsne, tsne_2d(features["fc1"], seed=0))  # repeatable


def test_knn_separation_extremes():
    labels = np.repeat(np.arange(3), 20)
    apart = np.stack([labels * 100.0, np.zeros(60)], 1) + np.random.default_rng(0).normal(size=(60, 2))
    assert knn_separation(apart, labels) == 1.0
    mixed = np.random.default_rng(1).normal(size=(60, 2))
    assert knn_separation(mixed, labels) < 0.6


def test_probe_cli_numbers_table_plot_and_wandb(small_cnn, outputs, tmp_path):
    # three layers, not all 17: each layer's probe is its own fit (the demo's probe step runs them all)
    result = run_studio("probe", "probe.layers=[conv2,fc1]", f"hydra.run.dir={tmp_path}",
                        "trainer.enable_progress_bar=false", outputs=outputs)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    m = manifest["metrics"]
    # the numbers: accuracy rises from pixels to the last hidden layer, which is within
    # 2 points of the model itself; every baseline key is there
    assert m["probe_acc/fc1"] > m["probe_acc/pixels"] > m["probe_acc/majority"]
    assert abs(m["probe_acc/fc1"] - m["model_test_acc"]) <= 0.02
    assert m["probe_train_acc/fc1"] > 0.95  # the probe itself is not the weak link
    assert {"probe_acc/conv2", "probe_train_acc/conv2"} <= set(m)
    for name in ("probes.csv", "probes.md", "probes.png"):
        assert (tmp_path / name).stat().st_size > 0
    logged = read_offline_run(manifest["artifacts"]["wandb_run"])
    assert logged["summary"]["probe_acc/fc1"] == pytest.approx(m["probe_acc/fc1"])


def test_embed_cli_writes_maps_and_separation(small_cnn, outputs, tmp_path):
    result = run_studio("embed", "layers=[pixels,fc1]", "embed.images=300", f"hydra.run.dir={tmp_path}",
                        "trainer.enable_progress_bar=false", outputs=outputs)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["metrics"]["separation_pca/fc1"] > manifest["metrics"]["separation_pca/pixels"]
    assert [i["layer"] for i in manifest["items"]] == ["pixels", "fc1"]
    assert all((tmp_path / i["image"]).stat().st_size > 10_000 for i in manifest["items"])
    assert "wandb_run" in manifest["artifacts"]


def test_embed_unknown_layer_lists_names(outputs, small_cnn, tmp_path):
    result = run_studio_forked("embed", "layers=[conv9]", f"hydra.run.dir={tmp_path}", *QUIET_LOCAL, outputs=outputs)
    assert result.returncode == 2
    assert "unknown layer 'conv9'; choose from: " in result.stderr and "fc1" in result.stderr


def test_any_torchvision_model_by_layer_name(datamodule):
    from omegaconf import OmegaConf

    from studio.models import build_classifier

    cfg = OmegaConf.create({"name": "resnet18", "arch": "torchvision", "options": {"arch": "resnet18", "weights": None}})
    model = build_classifier(cfg, 1, 10, [0.5], [0.25])
    images, labels = datamodule.split("test")
    features = collect(model, images[:64], ["pixels", "layer1", "layer4", "avgpool"], pool=2)
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "pixels": (64, 784), "layer1": (64, 64 * 4), "layer4": (64, 512), "avgpool": (64, 512)}
    with pytest.raises(StudioError, match="unknown layer 'layer9'.*layer4"):
        collect(model, images[:4], ["layer9"])


def test_probe_on_a_few_training_images_takes_every_class(small_cnn, tmp_path):
    from studio.commands.probe import probe
    from studio.tracking import Tracker
    from tests.conftest import compose_config

    # mnist5k's training split is sorted by class: its first 100 images are all 0s
    cfg = compose_config("probe", ["probe.train_images=100", "probe.layers=[fc1]", "probe.max_iter=50",
                                   "logger=none", "trainer.enable_progress_bar=false"])
    with Tracker(cfg, "probe", tmp_path, str(tmp_path)) as tracker:
        result = probe(cfg, tracker, tmp_path)
    m = result.metrics
    assert m["probe_acc/fc1"] > 0.9 > 0.5 > m["probe_acc/majority"]  # 10 images of each class are plenty for fc1
    assert m["probe_acc/pixels"] > 0.5
