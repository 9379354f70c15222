"""Shared fixtures: one output tree per test session, trained models reused by every test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from studio.cli import CONF_DIR


WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ... under `pytest -n N`; None in one process


def pytest_configure(config):
    """Split the cores between pytest-xdist workers: torch threads per worker = cores / workers (the CLI
    subprocesses inherit it). Two workers with two threads each on two cores slow small ops 5-40x."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if WORKER and workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def outputs(tmp_path_factory) -> Path:
    """The session's outputs/ (models cache, W&B, runs), one for all xdist workers: the cache's file lock
    makes the first worker that needs a model train it and the others wait for it.
    STUDIO_TEST_OUTPUTS keeps it between sessions."""
    base = tmp_path_factory.getbasetemp()  # under xdist, a folder of the controller's basetemp
    path = Path(os.environ.get("STUDIO_TEST_OUTPUTS") or (base.parent if WORKER else base) / "outputs")
    path.mkdir(parents=True, exist_ok=True)
    os.environ["STUDIO_OUTPUTS"] = str(path)
    return path


def compose_config(command: str, overrides: list[str] | None = None):
    """The composed config of `studio <command> <overrides>`, as the CLI would see it (without hydra.*)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name=command, overrides=list(overrides or []))


QUIET_TRAINER = ["trainer.enable_progress_bar=false"]
QUIET_LOCAL = [*QUIET_TRAINER, "logger=none"]  # no progress bars, no W&B run: for runs a test only reads from disk


@pytest.fixture(scope="session")
def datamodule(outputs):
    from studio.data import build_datamodule

    return build_datamodule(compose_config("train").data)


def _trained(model: str):
    from studio.train import trained_classifier

    cfg = compose_config("train", [f"model={model}", *QUIET_TRAINER])
    from studio.data import build_datamodule

    return trained_classifier(cfg.model, cfg.data, cfg.trainer, build_datamodule(cfg.data), cfg.paths.models)


@pytest.fixture(scope="session")
def small_cnn(outputs):
    """The default classifier, trained once per session (the same cache entry `studio demo` uses)."""
    return _trained("small_cnn")


@pytest.fixture(scope="session")
def judge(outputs):
    """The independent judge, trained once per session."""
    return _trained("judge_cnn")


def run_studio(*args: str, outputs: Path, env: dict | None = None, timeout: int = 600):
    """Run the real CLI in a subprocess; returns CompletedProcess with text stdout/stderr."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("STUDIO_DEBUG", "HYDRA_FULL_ERROR")}
    full_env = {**inherited, "STUDIO_OUTPUTS": str(outputs), "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run([sys.executable, "-m", "studio.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


# A few epochs: enough for digit-like samples in tests; the default (README numbers) trains longer.
FAST_GENERATOR = {"dcgan": ["generator.max_epochs=6"], "vae": ["generator.max_epochs=6"]}


def _generator(arch: str, datamodule):
    from generators import trained_generator

    cfg = compose_config("train-generator", [f"generator={arch}", *FAST_GENERATOR[arch], *QUIET_TRAINER])
    return trained_generator(cfg.generator, cfg.data, cfg.trainer, datamodule, cfg.paths.models)


@pytest.fixture(scope="session")
def dcgan(outputs, datamodule):
    """A briefly trained DCGAN, once per session."""
    return _generator("dcgan", datamodule)


@pytest.fixture(scope="session")
def vae(outputs, datamodule):
    """A briefly trained VAE, once per session."""
    return _generator("vae", datamodule)


@pytest.fixture(scope="session")
def judged(judge, datamodule):
    """The judge with its real-image embedding (studio.metrics.Judge)."""
    from studio.metrics import Judge

    return Judge.for_data(judge.model, datamodule)


def read_manifest(run_dir: Path) -> dict:
    """A run's manifest.json."""
    import json

    return json.loads((Path(run_dir) / "manifest.json").read_text())


def assert_one_line_error(result, *fragments):
    """The CLI failed as a user mistake: exit 2 and one stderr line holding every fragment."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
