"""Shared fixtures: one output tree per test session, trained models reused by every test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from studio.config import CONF_DIR


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


def compose_config(command: str, overrides: list[str] | None = None, with_hydra: bool = False):
    """The composed config of `studio <command> <overrides>`, as the CLI would see it (without hydra.*; with
    it, as Hydra hands it to callbacks, when with_hydra)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name=command, overrides=list(overrides or []), return_hydra_config=with_hydra)


QUIET_TRAINER = ["trainer.enable_progress_bar=false"]
QUIET_LOCAL = [*QUIET_TRAINER, "logger=none"]  # no progress bars, no W&B run: for runs a test only reads from disk


@pytest.fixture(scope="session")
def datamodule(outputs):
    from studio.data import build_datamodule

    return build_datamodule(compose_config("train").data)


def _trained(model: str, *overrides: str):
    from studio.train import trained_classifier

    cfg = compose_config("train", [f"model={model}", *overrides, *QUIET_TRAINER])
    from studio.data import build_datamodule

    return trained_classifier(cfg.model, cfg.data, cfg.trainer, build_datamodule(cfg.data), cfg.paths.models)


@pytest.fixture(scope="session")
def small_cnn(outputs):
    """The default classifier, trained once per session (the same cache entry `studio demo` uses)."""
    return _trained("small_cnn")


FAST_VIT = ["model=vit_tiny", "model.trainer.max_epochs=5"]  # a short run: far above chance, not its 96%


@pytest.fixture(scope="session")
def vit_tiny(outputs):
    """The small Vision Transformer after a short training (FAST_VIT), once per session."""
    return _trained("vit_tiny", *FAST_VIT[1:])


@pytest.fixture(scope="session")
def judge(outputs):
    """The independent judge, trained once per session."""
    return _trained("judge_cnn")


@pytest.fixture(scope="session")
def eye(outputs):
    """The judge's second realism view (model@eye: strided_cnn), trained once per session."""
    return _trained("strided_cnn")


# How long a CLI run may take before the test calls it a hang: generous, for slow CPUs (a guard, not a timing
# test; the demo alone took 10+ min on a 2-core AVX2 CPU with the suite's other worker busy).
HANG_SECONDS = 1800


def run_studio(*args: str, outputs: Path, env: dict | None = None, timeout: int = HANG_SECONDS):
    """Run the real CLI in a subprocess; returns CompletedProcess with text stdout/stderr."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("STUDIO_DEBUG", "HYDRA_FULL_ERROR")}
    full_env = {**inherited, "STUDIO_OUTPUTS": str(outputs), "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run([sys.executable, "-m", "studio.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def run_studio_forked(*args: str, outputs: Path, env: dict | None = None, timeout: int = HANG_SECONDS):
    """The same CLI run as run_studio, in a fork of this test process instead of a new interpreter.

    A fork is a separate process with its own exit code, stdout and stderr, and its state dies with it;
    it only skips the ~4 s of importing torch, Hydra and sklearn again (~6 s with coverage). For the
    many runs that fail in a second (the bad-input table), that is most of their time. Runs that start
    W&B stay in run_studio: a fork would share this process's W&B state."""
    return finish_forked(start_forked(*args, outputs=outputs, env=env), timeout)


def start_forked(*args: str, outputs: Path, env: dict | None = None):
    """Fork `studio <args>` and return at once; finish_forked waits for it. (Forks started together run
    side by side.)"""
    import tempfile

    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        _studio_in_this_process(args, outputs, env, out, err)
    return pid, ["studio", *args], out, err, time.monotonic()


def finish_forked(started, timeout: int = HANG_SECONDS) -> subprocess.CompletedProcess:
    import signal

    pid, argv, out, err, start = started
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > start + timeout:  # a hang must fail the test, not the whole suite
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise subprocess.TimeoutExpired(argv, timeout)
        time.sleep(0.02)
    with out, err:
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, os.waitstatus_to_exitcode(done[1]), out.read(), err.read())


def _studio_in_this_process(args, outputs: Path, env: dict | None, out, err):
    """What `python -m studio.cli <args>` does, in a forked child, then os._exit with its exit code."""
    code = 1
    try:
        import torch

        torch.set_num_threads(1)  # OpenMP's thread pool does not survive a fork
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
        for key in ("STUDIO_DEBUG", "HYDRA_FULL_ERROR"):
            os.environ.pop(key, None)
        os.environ.update({"STUDIO_OUTPUTS": str(outputs), "WANDB_SILENT": "true", **(env or {})})
        from studio.cli import main

        sys.argv = ["studio", *args]
        try:
            code = main()
        except SystemExit as e:  # what the interpreter makes of it
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - uncaught: the interpreter prints the trace and exits 1
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)


# A few epochs: enough for digit-like samples in tests; the default (README numbers) trains longer.
FAST_GENERATOR = {"dcgan": ["generator.max_epochs=3"], "vae": ["generator.max_epochs=6"],
                  "diffusion": ["generator.max_epochs=3"]}


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
def diffusion(outputs, datamodule):
    """A briefly trained diffusion model, once per session."""
    return _generator("diffusion", datamodule)


@pytest.fixture(scope="session")
def judged(judge, eye, datamodule):
    """The judge with its real-image embeddings and the eye as its second realism view (studio.judge.Judge),
    as the commands build it, from the same cache of its real-image statistics."""
    from studio.commands.shared import _statistics_cache
    from studio.judge import Judge

    cache = _statistics_cache(compose_config("visualize"), judge.path, eye.path)
    return Judge.for_data(judge.model, datamodule, eyes={"eye": eye.model}, cache=cache)


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
