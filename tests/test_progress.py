"""Progress in a log file: a line now and then, not every redraw of a bar (`make demo > log` held ~790 KB)."""

from __future__ import annotations

import io
import time

from studio.progress import LOG_INTERVAL, bar
from tests.conftest import QUIET_LOCAL, run_studio


def test_a_training_logged_to_a_file_prints_one_line_per_epoch(outputs, tmp_path):
    # a model cache of its own: a cached model would not train (another run of the suite may have cached it)
    result = run_studio("train", "trainer.max_epochs=2", *QUIET_LOCAL[1:], "trainer.enable_progress_bar=true",
                        f"paths.models={tmp_path / 'models'}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    epochs = [line for line in result.stdout.splitlines() if line.startswith("small_cnn training: epoch")]
    assert [line.split(":")[1] for line in epochs] == [" epoch 1/2", " epoch 2/2"]
    assert "val_loss" in epochs[-1] and "\r" not in result.stdout + result.stderr


def test_a_bar_in_a_file_writes_a_line_per_interval_not_per_step():
    log = io.StringIO()  # not a terminal
    for _ in bar(range(1000), desc="render", file=log):
        pass
    assert log.getvalue().count("render") <= 3 and "1000/1000" in log.getvalue()
    assert LOG_INTERVAL >= 10


def test_the_log_interval_can_be_set(monkeypatch):
    monkeypatch.setenv("STUDIO_PROGRESS_INTERVAL", "0")
    log = io.StringIO()
    for _ in bar(range(50), desc="render", file=log):
        time.sleep(0.001)
    assert log.getvalue().count("render") > 3


def test_a_disabled_bar_writes_nothing():
    log = io.StringIO()
    for _ in bar(range(10), enabled=False, file=log):
        time.sleep(0)
    assert log.getvalue() == ""
