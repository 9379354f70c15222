"""Sweeps beyond one process, for real: submitit jobs on this machine (hydra/launcher=submitit_local, the
launcher code submitit_slurm shares) and a local Ray cluster the test starts and stops
(hydra/launcher=ray). Each is one 4-job class-render sweep (4 recipes x 2 classes, 8 steps, no exemplars, no
judge metrics), then the report; and the settings that cannot work fail in one line with no sweep dir."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from studio.tracking import read_offline_run
from tests.conftest import HANG_SECONDS, assert_one_line_error, run_studio, run_studio_forked

RECIPES = ["none", "l2", "tv", "l2_tv"]
# judge_metrics=false: these tests check how jobs are launched, killed, resumed and reported, never a judge
# number, and each job would build the judge's real-image statistics again (~18 CPU s a job, 9 jobs)
SWEEP = ["experiment=compare_regularizers", "objective=class", "objective.classes=[0,1]", "seeds=1", "steps=8",
         "exemplars.k=0", "judge_metrics=false", f"+recipe={','.join(RECIPES)}", "progress=false",
         "trainer.enable_progress_bar=false"]


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _manifests(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/manifest.json")}


def _job_id(job_dir: Path) -> str:
    """The id the launcher gave the job (hydra.job.id): submitit's job id, or the Ray launcher's."""
    return str(OmegaConf.load(job_dir / ".hydra" / "hydra.yaml").hydra.job.id)


def _job_log(job_dir: Path) -> str:
    """The stdout of the submitit job that last ran this sweep job (its log in the submitit folder)."""
    job_id = _job_id(job_dir)
    return "".join(p.read_text() for p in job_dir.parent.glob(f".submitit/{job_id}/{job_id}_*_log.out"))


def _assert_report_aggregates_every_job(sweep_dir: Path) -> None:
    rows = _csv(sweep_dir / "table.csv")
    assert sorted((r["recipe"], r["target"]) for r in rows) == sorted(
        (recipe, f"class:{c}") for recipe in RECIPES for c in (0, 1))
    assert all(r["status"] == "complete" and (sweep_dir / r["image"]).is_file() for r in rows)
    summary = {s["recipe"]: s for s in _csv(sweep_dir / "summary.csv")}
    assert sorted(summary) == sorted(RECIPES)
    assert all((s["jobs"], s["failed"], s["images"]) == ("1", "0", "2") for s in summary.values())
    assert json.loads((sweep_dir / "report.json").read_text())["failed"] == []
    assert (sweep_dir / "gallery" / "index.html").is_file()


def _env(outputs: Path) -> dict:
    env = {**os.environ, "STUDIO_OUTPUTS": str(outputs), "WANDB_SILENT": "true"}
    env.pop("STUDIO_DEBUG", None)
    return env


# --- submitit ------------------------------------------------------------------------------------------
def _kill9_the_last_job(sweep_dir: Path, driver: subprocess.Popen) -> str:
    """kill -9 the process running the sweep's last job (job 3) while it works; its job number.

    A local submitit job is a controller process (its pid is the job id, hydra.job.id) that runs the job
    in a child process: that child is what gets killed, as the OOM killer or a user would. The last job,
    because the launcher collects results in job order and stops at the first job that failed, cancelling
    the rest: killing job 3 lets jobs 0-2 finish first."""
    job_dir, deadline = sweep_dir / "3", time.monotonic() + 300
    while driver.poll() is None and not (job_dir / "manifest.json").exists():
        assert time.monotonic() < deadline, "job 3 never started"
        try:
            controller = int(_job_id(job_dir))
            children = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
        except Exception:  # noqa: BLE001 - not started yet, or Hydra is still writing hydra.yaml
            children = []
        if children:
            os.kill(int(children[0]), signal.SIGKILL)
            return job_dir.name
        time.sleep(0.05)
    raise AssertionError("job 3 finished before it could be killed")


@pytest.fixture(scope="module")
def submitit_sweep(small_cnn, judge, outputs, tmp_path_factory):
    """The sweep through submitit_local with its last job killed by kill -9 mid-way, then the same command again."""
    base = tmp_path_factory.mktemp("submitit")
    sweep_dir, log = base / "sweep", base / "first.log"
    args = ["visualize", *SWEEP, "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep_dir}"]
    with open(log, "w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "studio.cli", *args], env=_env(outputs), stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            killed = _kill9_the_last_job(sweep_dir, driver)
            driver.wait(timeout=HANG_SECONDS)
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
                driver.wait()
    first = {name: (sweep_dir / name / "manifest.json").stat().st_mtime_ns for name in _manifests(sweep_dir)}
    rerun = run_studio(*args, outputs=outputs)
    return SimpleNamespace(dir=sweep_dir, first_rc=driver.returncode, first_log=log.read_text(), killed=killed,
                           first=first, rerun=rerun)


def test_submitit_sweep_runs_each_job_as_a_submitit_job(submitit_sweep):
    sweep_dir = submitit_sweep.dir
    assert submitit_sweep.rerun.returncode == 0, submitit_sweep.rerun.stderr
    for k in range(4):  # each job ran in its own submitit job, whose folder holds its pickled result
        job_id = _job_id(sweep_dir / str(k))
        assert list((sweep_dir / ".submitit" / job_id).glob(f"{job_id}_*_result.pkl")), job_id
    assert "Submitit 'local' sweep output dir" in submitit_sweep.first_log


def test_submitit_job_killed_with_kill9_resumes_on_rerun(submitit_sweep):
    sweep_dir, killed = submitit_sweep.dir, submitit_sweep.killed
    assert submitit_sweep.first_rc != 0  # the first sweep did not pretend to be complete
    assert killed not in submitit_sweep.first and len(submitit_sweep.first) == 3  # the others finished
    assert "has not produced any output" in submitit_sweep.first_log  # submitit names the job that died
    for name, mtime in submitit_sweep.first.items():  # finished jobs are skipped, not rendered again
        assert f"job {name} is complete for this config; skipped" in _job_log(sweep_dir / name)
        assert (sweep_dir / name / "manifest.json").stat().st_mtime_ns == mtime
    assert "skipped" not in _job_log(sweep_dir / killed)
    done = _manifests(sweep_dir)
    assert sorted(done) == ["0", "1", "2", "3"] and all(m["status"] == "complete" for m in done.values())


def test_submitit_sweep_report_aggregates_every_job(submitit_sweep):
    assert "report -> " in submitit_sweep.rerun.stdout
    _assert_report_aggregates_every_job(submitit_sweep.dir)


def test_submitit_jobs_share_one_wandb_group(submitit_sweep):
    group = str(submitit_sweep.dir.resolve())
    for name, manifest in _manifests(submitit_sweep.dir).items():
        run = read_offline_run(manifest["artifacts"]["wandb_run"])["run"]
        assert (run["group"], run["job_type"]) == (group, "visualize"), name


def test_unwritable_submitit_folder_is_one_line_and_no_sweep_dir(outputs, tmp_path):
    (tmp_path / "a_file").write_text("")
    sweep_dir = tmp_path / "sweep"
    result = run_studio_forked("visualize", "-m", "+recipe=none,l2", "steps=2", "hydra/launcher=submitit_local",
                               f"hydra.launcher.submitit_folder={tmp_path}/a_file/submitit/%j",
                               f"hydra.sweep.dir={sweep_dir}", outputs=outputs)
    assert_one_line_error(result, f"cannot write the submitit folder '{tmp_path}/a_file/submitit/%j'",
                          "is not a directory", "hydra.launcher.submitit_folder=")
    assert not sweep_dir.exists()


# --- Ray -----------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _own_ports() -> list[str]:
    """Free ports for what `ray start` would put on fixed ones (client server 10001, dashboard agent 52365):
    two clusters at once (xdist workers, a benchmark) must not collide."""
    return [f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}"]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_cluster(outputs):
    """A real Ray cluster on this machine (`ray start --head` on a free port), capped for a small machine:
    2 CPUs, no dashboard, a 75 MiB object store. Stopped, with every process it started, at teardown."""
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--object-store-memory=78643200", "--disable-usage-stats",
         f"--temp-dir={temp_dir}", *_own_ports()], env=_env(outputs), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True)  # the workers inherit STUDIO_OUTPUTS; its process group is the whole cluster
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        # `ray start --block` stops what it started (1.8 s here), when the signal reaches it alone: with
        # SIGTERM to the whole group its processes die under it and it hung until the SIGKILL below
        head.terminate()
        try:
            head.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_sweep(small_cnn, judge, outputs, ray_cluster, tmp_path_factory):
    """The sweep on the cluster, from Python (studio.run_sweep: the CLI in a child process)."""
    import studio

    sweep_dir = tmp_path_factory.mktemp("ray") / "sweep"
    overrides = [*SWEEP, "logger=none", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={ray_cluster}"]
    return studio.run_sweep("visualize", overrides, sweep_dir=sweep_dir)


def test_ray_sweep_runs_on_the_cluster_and_lands_in_the_sweep_dir(ray_sweep):
    sweep_dir = ray_sweep
    done = _manifests(sweep_dir)
    assert sorted(done) == ["0", "1", "2", "3"] and all(m["status"] == "complete" for m in done.values())
    assert [_job_id(sweep_dir / str(k)) for k in range(4)] == [f"job_id_for_{k}" for k in range(4)]  # Ray's ids


def test_ray_sweep_report_aggregates_every_job(ray_sweep):
    _assert_report_aggregates_every_job(ray_sweep)


def test_unreachable_ray_is_one_line_and_no_sweep_dir(outputs, tmp_path):
    sweep_dir, port = tmp_path / "sweep", _free_port()  # nothing listens there
    result = run_studio_forked("visualize", "-m", "+recipe=none,l2", "steps=2", "hydra/launcher=ray",
                               f"hydra.launcher.ray.init.address=127.0.0.1:{port}", f"hydra.sweep.dir={sweep_dir}",
                               outputs=outputs)
    assert_one_line_error(result, f"Ray is not reachable at hydra.launcher.ray.init.address=127.0.0.1:{port}",
                          "ray start --head", "address=auto")
    assert not sweep_dir.exists()


def test_unreachable_ray_from_python_is_the_same_one_line_error(outputs, tmp_path):
    import studio
    from studio.errors import StudioError

    sweep_dir, port = tmp_path / "sweep", _free_port()
    with pytest.raises(StudioError) as caught:
        studio.run_sweep("visualize", ["+recipe=none,l2", "steps=2", "hydra/launcher=ray",
                                       f"hydra.launcher.ray.init.address=127.0.0.1:{port}"], sweep_dir=sweep_dir)
    assert str(caught.value).startswith(f"Ray is not reachable at hydra.launcher.ray.init.address=127.0.0.1:{port} (")
    assert not sweep_dir.exists()
