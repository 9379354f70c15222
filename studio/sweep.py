"""What makes a multirun resumable and honest about failures, whatever the launcher.

- A job whose run dir holds a complete manifest of the same resolved config is skipped: re-running a
  sweep (killed, or with a job that failed) renders only what is missing.
- A job that fails writes a manifest with status "failed" and its error, and the other jobs go on.
- When the multirun ends, `ExitCode` (a Hydra callback studio.cli adds to every command) looks at the
  sweep's jobs on disk, so `studio` exits non-zero even when jobs ran in other processes or machines.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from studio.files import why_not_creatable, write_json

USER_ERROR_EXIT = 2
CALLBACK_OVERRIDE = "++hydra.callbacks.studio_exit_code._target_=studio.sweep.ExitCode"
exit_code = 0  # set when a multirun ends; studio.cli.main returns it


def complete_for(run_dir: Path, cfg) -> bool:
    """Whether run_dir holds a complete manifest of this very config."""
    try:
        manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    config = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True), default=str))
    return manifest.get("status") == "complete" and manifest.get("config") == config


def manifest_metrics(run_dir: Path) -> dict:
    """The run metrics of run_dir's manifest ({} if it has none)."""
    try:
        return json.loads((Path(run_dir) / "manifest.json").read_text()).get("metrics") or {}
    except (OSError, ValueError):
        return {}


def record_failure(run_dir: Path, command: str, cfg, message: str, user_error: bool) -> None:
    """A failed job's manifest: what the report lists, and what a rerun does not skip."""
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - the failure may be an unresolvable config
        config = OmegaConf.to_container(cfg, resolve=False)
    write_json(Path(run_dir) / "manifest.json",
               {"command": command, "status": "failed", "error": message, "user_error": user_error,
                "config": config, "metrics": {}, "items": [], "artifacts": {}})


def sweep_exit_code(sweep_dir: Path) -> int:
    """2 if jobs of the sweep failed, all by a user's mistake; 1 if any failed otherwise (or was killed);
    0 if every job is complete."""
    from studio.report.jobs import find_jobs

    failed = [job for job in find_jobs(sweep_dir)[0] if job.status != "complete"]
    if not failed:
        return 0
    return USER_ERROR_EXIT if all(job.manifest.get("user_error") for job in failed) else 1


def check_output_dir(config, mode: str) -> None:
    """Exit with one error line if hydra.<mode>.dir cannot be created (a parent is a file, or not writable).

    Runs before Hydra makes the dir, which would fail with a traceback. Nothing is created here: the
    dir's name may hold a timestamp that Hydra resolves again."""
    try:
        path, command = Path(str(config.hydra[mode].dir)), str(config.get("command", ""))
    except Exception:  # noqa: BLE001 - an unresolvable dir: Hydra's own message says why
        return
    existing, why = why_not_creatable(path)
    if why is None or os.environ.get("STUDIO_DEBUG"):
        return
    print(f"studio {command}: error: cannot create the output dir {str(path)!r}: {str(existing)!r} {why}; "
          "choose another with hydra.run.dir=... (or hydra.sweep.dir=... with -m)", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)


def check_launcher(config) -> None:
    """Exit with one error line if the sweep's launcher cannot run it (studio.launchers), before the sweeper
    writes the sweep dir."""
    from studio.errors import StudioError
    from studio.launchers import preflight

    try:
        preflight(config.hydra)
    except StudioError as e:
        if os.environ.get("STUDIO_DEBUG"):
            raise
        print(f"studio {config.get('command', '')}: error: {e}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)


class ExitCode(Callback):
    """Hydra callback: when a multirun ends, set `exit_code` from the sweep's jobs on disk. It also
    refuses, in one line, an output dir that cannot be created (before Hydra tries to) and a launcher
    setting that cannot work (an unreachable Ray, an unwritable submitit folder)."""

    def on_run_start(self, config, **kwargs) -> None:
        check_output_dir(config, "run")

    def on_multirun_start(self, config, **kwargs) -> None:
        check_output_dir(config, "sweep")
        check_launcher(config)

    def on_multirun_end(self, config, **kwargs) -> None:
        global exit_code
        exit_code = sweep_exit_code(Path(str(config.hydra.sweep.dir)))
