"""A sweep's jobs as found on disk (manifest.json and .hydra/ of each job dir), and which of their config
choices vary: the keys a report groups by."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf



@dataclass
class Job:
    """One job of the sweep as found on disk."""

    name: str                    # its directory relative to the sweep dir ("3"), or "(job k)" if never started
    path: Path | None
    status: str                  # complete | failed
    error: str = ""
    choices: dict = field(default_factory=dict)    # config group -> choice (hydra.runtime.choices)
    overrides: dict = field(default_factory=dict)  # key -> value of the job's command-line overrides
    manifest: dict = field(default_factory=dict)

    def value(self, key: str) -> str:
        if key in self.choices:
            return self.choices[key]
        return self.overrides.get(key, "")



# --- finding the jobs ----------------------------------------------------------------------------
def _override_dict(overrides: list[str]) -> dict[str, str]:
    out = {}
    for text in overrides:
        key, sep, value = str(text).partition("=")
        key = key.lstrip("+~")
        if sep and re.split(r"[./]", key)[0] != "hydra":
            out[key] = value
    return out


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Directories under the sweep dir that hold a job (its .hydra/ or its manifest), in job order."""
    found = set()
    for marker in ("manifest.json", ".hydra/overrides.yaml"):
        for path in sweep_dir.glob(f"*/{marker}"):
            found.add(path.parent if marker == "manifest.json" else path.parent.parent)
        for path in sweep_dir.glob(f"*/*/{marker}"):
            found.add(path.parent if marker == "manifest.json" else path.parent.parent)
    found = {d for d in found if d.relative_to(sweep_dir).parts[0] not in ("gallery", "plots")}
    found = {d for d in found if d.parent not in found}  # a job's own subfolders are not jobs

    def order(d: Path):
        parts = d.relative_to(sweep_dir).parts
        return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]

    return sorted(found, key=order)


def _expected_overrides(sweep_dir: Path) -> list[list[str]] | None:
    """The override list of every job the sweep asked for (basic sweeper), from multirun.yaml; None if unknown."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        cfg = OmegaConf.load(sweep_dir / "multirun.yaml")
        if not str(cfg.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
            return None
        params = cfg.hydra.sweeper.get("params") or {}
        arguments = [f"{k}={v}" for k, v in params.items()] + list(cfg.hydra.overrides.task)
        parsed = OverridesParser.create().parse_overrides(arguments)
        return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception:  # noqa: BLE001 - another sweeper, an old or hand-edited file: use what is on disk
        return None


def _read_job(sweep_dir: Path, path: Path) -> Job | None:
    """The job in `path`, or None for a single run's dir that happens to lie in the sweep dir."""
    job = Job(name=str(path.relative_to(sweep_dir)), path=path, status="failed")
    hydra_dir = path / ".hydra"
    try:
        job.overrides = _override_dict(OmegaConf.to_container(OmegaConf.load(hydra_dir / "overrides.yaml")))
        hydra = OmegaConf.load(hydra_dir / "hydra.yaml").hydra
        if str(hydra.get("mode")) == "RUN":
            return None
        job.choices = {k: str(v) for k, v in OmegaConf.to_container(hydra.runtime.choices).items()
                       if not k.startswith("hydra")}
    except Exception:  # noqa: BLE001 - no .hydra/ (hydra.output_subdir=null): the manifest alone
        pass
    try:
        job.manifest = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        job.error = "no manifest: the job was killed or crashed before it finished"
        return job
    except (OSError, ValueError) as e:
        job.error = f"unreadable manifest ({type(e).__name__})"
        return job
    job.status = "complete" if job.manifest.get("status") == "complete" else "failed"
    if job.status != "complete":
        job.error = str(job.manifest.get("error") or f"status {job.manifest.get('status')!r}")
    return job


def find_jobs(sweep_dir: str | Path) -> tuple[list[Job], list[str]]:
    """The sweep's jobs in job order, and the job dirs left out (from an earlier, different sweep there)."""
    sweep_dir = Path(sweep_dir)
    on_disk = [job for job in (_read_job(sweep_dir, d) for d in _job_dirs(sweep_dir)) if job is not None]
    expected = _expected_overrides(sweep_dir)
    if expected is None:
        return on_disk, []
    by_overrides = {}
    for job in on_disk:
        by_overrides.setdefault(tuple(sorted(job.overrides.items())), job)
    jobs = []
    for k, overrides in enumerate(expected):
        key = tuple(sorted(_override_dict(overrides).items()))
        job = by_overrides.pop(key, None)
        if job is None:
            job = Job(name=f"(job {k})", path=None, status="failed", error="never started (the sweep stopped before it)",
                      overrides=_override_dict(overrides))
        jobs.append(job)
    return jobs, [job.name for job in by_overrides.values()]


# --- grouping ------------------------------------------------------------------------------------
def _determines(jobs: list[Job], a: str, b: str) -> bool:
    seen = {}
    for job in jobs:
        if seen.setdefault(job.value(a), job.value(b)) != job.value(b):
            return False
    return True


def varying_keys(jobs: list[Job], average_over=("seed",)) -> list[str]:
    """Config choices and overrides whose value differs between jobs: overrides first, in their order."""
    keys = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    for job in jobs:
        keys += [k for k in job.choices if k not in keys]
    return [k for k in keys if k not in average_over and len({job.value(k) for job in jobs}) > 1]


def group_keys(jobs: list[Job], average_over=("seed",)) -> list[str]:
    """The varying keys minus those another varying key determines (regularizer when recipe varies)."""
    keys = varying_keys(jobs, average_over)
    kept = []
    for i, b in enumerate(keys):
        if not any(_determines(jobs, a, b) and (j < i or not _determines(jobs, b, a))
                   for j, a in enumerate(keys) if a != b):
            kept.append(b)
    return kept
