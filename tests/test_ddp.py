"""Data-parallel training on 2 CPU processes (trainer=ddp_cpu): a classifier through the CLI and a generator
through the Python API train once, land in the cache once (rank 0's weights, loadable with weights_only),
and score as the single-process run of the same recipe does."""

import copy
import math
from pathlib import Path

import pytest
import torch

from studio.train import accuracy, cache_key, trained_classifier
from studio.tracking import read_offline_run
from tests.conftest import FAST_GENERATOR, QUIET_TRAINER, compose_config, read_manifest, run_studio

# The shortest training whose test accuracy is stable from run to run (96.4% on 2 processes, 96.5% on one,
# measured); both sides train the same recipe, so the comparison needs no long run.
TWO_EPOCHS = ["trainer.max_epochs=2"]


@pytest.fixture(scope="session")
def small_cnn_2_epochs(outputs, datamodule):
    """small_cnn after TWO_EPOCHS in one process, cached for the session."""
    cfg = compose_config("train", [*TWO_EPOCHS, *QUIET_TRAINER])
    return trained_classifier(cfg.model, cfg.data, cfg.trainer, datamodule, cfg.paths.models)


def _entries(models: Path) -> list[str]:
    return sorted(p.name for p in models.iterdir())


def test_switching_to_two_processes_reuses_the_cached_model():
    """Same recipe (the batch is split between the processes), same cache entry: no retraining."""
    single, ddp = compose_config("train"), compose_config("train", ["trainer=ddp_cpu"])
    assert ddp.trainer.devices == 2 and ddp.trainer.accelerator == "cpu"
    assert cache_key(ddp.model, ddp.data, ddp.trainer) == cache_key(single.model, single.data, single.trainer)


def test_classifier_on_two_processes_trains_once_and_matches_one_process(small_cnn_2_epochs, datamodule,
                                                                         outputs, tmp_path):
    models = tmp_path / "models"
    args = ["train", "trainer=ddp_cpu", *TWO_EPOCHS, f"paths.models={models}"]  # stdout a file: epoch lines
    result = run_studio(*args, f"hydra.run.dir={tmp_path / 'first'}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert "Starting with 2 processes" in result.stdout + result.stderr
    # rank 0 reports the epochs; the other process is silent
    assert sum(line.startswith("small_cnn training: epoch ") for line in result.stdout.splitlines()) == 2
    manifest = read_manifest(tmp_path / "first")
    assert manifest["metrics"]["cached"] is False
    weights = Path(manifest["artifacts"]["checkpoint"])
    stem = weights.stem
    assert _entries(models) == [f"{stem}.json", f"{stem}.lock", f"{stem}.pt"]  # one entry, no work dir left

    model = copy.deepcopy(small_cnn_2_epochs.model)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    test_acc = accuracy(model, *datamodule.split("test"))
    assert test_acc == pytest.approx(manifest["metrics"]["test_acc"])  # the cached weights are the reported ones
    assert abs(test_acc - small_cnn_2_epochs.test_acc) <= 0.01

    # each process took half of data.batch_size: an epoch has as many optimizer steps as on one process
    rows = [r for r in read_offline_run(manifest["artifacts"]["wandb_run"])["history"] if "model-val_loss" in r]
    assert [r["model-epoch"] for r in rows] == [0, 1]  # one row per epoch: only rank 0 logs
    steps = rows[1]["trainer/global_step"] - rows[0]["trainer/global_step"]
    assert steps == math.ceil(len(datamodule.split("train")[1]) / datamodule.batch_size)

    again = run_studio(*args, f"hydra.run.dir={tmp_path / 'again'}", outputs=outputs)
    assert again.returncode == 0, again.stderr
    assert read_manifest(tmp_path / "again")["metrics"]["cached"] is True
    assert _entries(models) == [f"{stem}.json", f"{stem}.lock", f"{stem}.pt"]


def _test_elbo(module, datamodule) -> float:
    """Mean negative ELBO of the test images, nats per pixel (lower is better): a VAE's held-out score."""
    with torch.no_grad():
        return float(-module.realism(datamodule.split("test")[0]).mean())


def test_vae_on_two_processes_matches_one_process(vae, datamodule, tmp_path):
    from studio.api import load_generator

    module = load_generator("vae", overrides=["trainer=ddp_cpu", *FAST_GENERATOR["vae"], f"paths.models={tmp_path}"])
    (weights,) = tmp_path.glob("*.pt")
    assert _entries(tmp_path) == [f"{weights.stem}.json", f"{weights.stem}.lock", weights.name]
    assert torch.load(weights, map_location="cpu", weights_only=True).keys() == module.state_dict().keys()
    ddp, single = _test_elbo(module, datamodule), _test_elbo(vae.module, datamodule)
    assert abs(ddp - single) <= 0.01 * single, (ddp, single)
