"""The run's records: atomic files, the W&B mirror that never costs the local results, offline runs read back."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from studio.files import atomic_path, write_text
from studio.tracking import WANDB_DIRS, Tracker, read_offline_run
from tests.conftest import compose_config


@contextmanager
def offline_tracker(tmp_path: Path, monkeypatch, command: str = "layers"):
    """A Tracker around a real offline W&B run under tmp_path; W&B's environment variables are put back after."""
    for var in WANDB_DIRS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("WANDB_ERROR_REPORTING", raising=False)
    cfg = compose_config(command, ["logger=wandb", f"paths.wandb={tmp_path / 'wandb'}"])
    with Tracker(cfg, command, tmp_path / "run", str(tmp_path)) as tracker:
        assert tracker.run is not None, "W&B did not start"
        yield tracker


def read_when_written(run_dir, done, timeout: float = 20.0) -> dict:
    """read_offline_run once `done(run)` holds: run.finish() returns before W&B's service has written the
    whole file, so a read right after it may miss the last records."""
    deadline = time.monotonic() + timeout
    while True:
        run = read_offline_run(run_dir)
        if done(run) or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def _studio_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "studio" and r.levelno == logging.WARNING]


# --- atomic files ----------------------------------------------------------------------------------
def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "manifest.json"
    write_text(path, "the old, whole file")
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(path) as tmp:
            tmp.write_text("half of the new")
            raise OSError("disk full")
    assert path.read_text() == "the old, whole file"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


# --- W&B failures warn once and change nothing on disk ---------------------------------------------
def test_a_failing_wandb_finish_warns_once_and_raises_nothing(tmp_path, monkeypatch, caplog):
    from wandb.sdk.wandb_run import Run

    finish = Run.finish

    def broken(self, *args, **kwargs):
        raise ConnectionResetError("wandb-core went away")

    monkeypatch.setattr(Run, "finish", broken)
    with offline_tracker(tmp_path, monkeypatch) as tracker:
        run = tracker.run
    assert tracker.run is None
    assert _studio_warnings(caplog) == [
        "W&B finish failed (ConnectionResetError: wandb-core went away); results are still written to disk"]
    finish(run)  # what W&B itself does at exit


def test_an_unreadable_wandb_run_dir_is_none_with_a_warning(tmp_path, monkeypatch, caplog):
    from wandb.sdk.wandb_run import Run

    def broken(self):
        raise RuntimeError("run is not attached")

    with offline_tracker(tmp_path, monkeypatch) as tracker, pytest.MonkeyPatch.context() as patch:
        patch.setattr(Run, "dir", property(broken))
        assert tracker.wandb_run_dir is None  # the manifest then goes without artifacts.wandb_run
    assert _studio_warnings(caplog) == [
        "W&B run dir failed (RuntimeError: run is not attached); results are still written to disk"]


# --- reading offline runs back ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> tuple[Path, str]:
    """An offline run that logged a 100 kB value (one record over four 32 KiB blocks) and updated its config
    after init; its run dir and the value."""
    tmp_path = tmp_path_factory.mktemp("logged_run")
    big = "0123456789" * 10_000
    with pytest.MonkeyPatch.context() as monkeypatch, offline_tracker(tmp_path, monkeypatch) as tracker:
        tracker.log({"note": big, "loss": 0.25})
        tracker.run.config.update({"added_later": 7})
        run_dir = tracker.wandb_run_dir
    read_when_written(run_dir, lambda run: run["history"] and "added_later" in run["config"])
    return run_dir, big


def test_a_record_spanning_several_blocks_reads_back_whole(logged_run):
    run_dir, big = logged_run
    run = read_offline_run(run_dir)
    assert [(row["note"], row["loss"]) for row in run["history"]] == [(big, 0.25)]
    assert run["config"]["added_later"] == 7  # a config record after the run record
    assert run["run"]["job_type"] == "layers"


def test_a_run_file_with_zeros_at_its_end_reads_its_records(logged_run, tmp_path):
    run_dir, _ = logged_run
    original = next(Path(run_dir).glob("run-*.wandb"))
    (tmp_path / original.name).write_bytes(original.read_bytes() + bytes(64))  # a file cut short, zero-filled
    assert read_offline_run(tmp_path) == read_offline_run(run_dir)


def test_a_file_that_is_not_a_wandb_run_is_refused(tmp_path):
    (tmp_path / "run-abc.wandb").write_bytes(b"PK\x03\x04 a zip, not a run")
    with pytest.raises(ValueError, match="not a W&B run file"):
        read_offline_run(tmp_path)


def test_a_block_too_short_for_a_record_header_is_skipped():
    """LevelDB pads a block's last < 7 bytes with zeros; the next record starts at the next 32 KiB block."""
    from studio.tracking import _BLOCK, _FULL, _LOG_HEADER, _RECORD_HEADER, _log_records

    def record(payload: bytes) -> bytes:  # checksum (unchecked), length, type, payload
        return bytes(4) + len(payload).to_bytes(2, "little") + bytes([_FULL]) + payload

    first = b"a" * (_BLOCK - _LOG_HEADER - _RECORD_HEADER - 3)  # leaves 3 bytes: too few for a header
    raw = b":W&B" + bytes(_LOG_HEADER - 4) + record(first) + bytes(3) + record(b"second")
    assert len(raw) == _BLOCK + _RECORD_HEADER + len(b"second")
    assert list(_log_records(raw)) == [first, b"second"]


def test_a_dir_without_a_run_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no W&B run file \(run-\*\.wandb\) in '.*'; give an offline run's dir"):
        read_offline_run(tmp_path)
