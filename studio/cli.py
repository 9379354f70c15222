"""`studio <command> [hydra overrides]`: dispatch a command to Hydra with the command's own config.

Everything after the command is Hydra's: overrides, `-m` for multirun, `--help`, `--cfg job`.
A mistake the user can fix ends in one line on stderr and exit code 2; STUDIO_DEBUG=1 shows the trace.
In a multirun a failing job writes a manifest with status "failed" and the others go on; a job whose
complete manifest has the same config is skipped, so re-running a stopped sweep finishes it.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

from studio.commands import COMMANDS
from studio.config import CONF_DIR, checked_overrides
from studio.errors import StudioError

USER_ERROR_EXIT = 2


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: studio <command> [key=value ...] [-m] [--help]", "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items()]
    lines += ["", "`studio <command> --help` lists the command's config groups and options.",
              "Examples: studio demo | studio train model=judge_cnn | studio layers model=resnet18"]
    return "\n".join(lines)


def _task(cfg):
    """Hydra's task function: run the command, write its manifest, mirror it to W&B. Returns the job's
    tune.objectives value(s) for an optimizing sweeper (Optuna: studio/tune/), None without a `tune` section."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    from studio import sweep
    from studio.tracking import Tracker, write_manifest
    from studio.tune.objectives import objective_values

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    # a sweep's jobs share one W&B group: the absolute sweep dir, the same whatever the launcher or cwd
    group = str(Path(hydra_cfg.sweep.dir).resolve()) if multirun else str(hydra_cfg.run.dir)
    command = cfg.command
    try:
        OmegaConf.to_container(cfg, resolve=True)  # a ${...} that cannot resolve fails here, before any work
        if multirun and sweep.complete_for(run_dir, cfg):
            print(f"studio {command}: job {hydra_cfg.job.num} is complete for this config; skipped ({run_dir})")
            return objective_values(cfg.get("tune"), sweep.manifest_metrics(run_dir))
        group = COMMANDS[command].wandb_group(cfg) or group  # e.g. the report joins its sweep's W&B group
        with Tracker(cfg, command, run_dir, group) as tracker:
            result = COMMANDS[command].run(cfg, tracker)
            if tracker.wandb_run_dir is not None:
                result.artifacts["wandb_run"] = str(tracker.wandb_run_dir)
            write_manifest(run_dir, command, cfg, result.metrics, result.items, result.artifacts)
            tracker.summary(result.metrics)
        return objective_values(cfg.get("tune"), result.metrics)
    except (StudioError, MissingMandatoryValue, InterpolationResolutionError) as e:
        if os.environ.get("STUDIO_DEBUG"):
            raise
        message = str(e).splitlines()[0]
        key = getattr(e, "full_key", "") or "a value"
        if isinstance(e, MissingMandatoryValue):
            message = f"missing value for {key}: set it on the command line ({key}=...)"
        elif isinstance(e, InterpolationResolutionError):
            message = f"cannot resolve {key}: {message}"
        print(f"studio {command}: error: {message}", file=sys.stderr)
        if not multirun:
            sys.exit(USER_ERROR_EXIT)
        sweep.record_failure(run_dir, command, cfg, message, user_error=True)
    except Exception as e:
        if not multirun or os.environ.get("STUDIO_DEBUG"):
            raise
        traceback.print_exc()  # a bug, not a user mistake: the trace helps; the sweep goes on
        sweep.record_failure(run_dir, command, cfg, f"{type(e).__name__}: {e}".splitlines()[0], user_error=False)


def quiet_known_noise() -> None:
    """Silence third-party deprecation chatter that says nothing about the user's run."""
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*TensorBoard.*")
    # alembic (Optuna's SQLite schema tool, imported when Hydra scans its plugins) logs 7 "setup plugin" lines
    logging.getLogger("alembic").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, overrides = argv[0], argv[1:]
    try:
        overrides = checked_overrides(command, overrides)
    except StudioError as e:
        print(f"studio: error: {e}", file=sys.stderr)
        return USER_ERROR_EXIT

    import hydra

    if os.environ.get("STUDIO_DEBUG"):
        os.environ["HYDRA_FULL_ERROR"] = "1"  # the whole trace, not Hydra's trimmed one
    quiet_known_noise()
    from studio import sweep

    app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=command)(_task)
    # beside the user's overrides: argparse takes them as one run of positional arguments (-m, --cfg aside)
    at = next((i for i, a in enumerate(overrides) if "=" in a and not a.startswith("-")), len(overrides))
    sys.argv = [f"studio {command}", *overrides[:at], sweep.CALLBACK_OVERRIDE, *overrides[at:]]
    sweep.exit_code = 0
    app()
    return sweep.exit_code  # non-zero when a job of a multirun failed



if __name__ == "__main__":
    sys.exit(main())
