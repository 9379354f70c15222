"""`studio <command> [hydra overrides]`: dispatch a command to Hydra with the command's own config.

Everything after the command is Hydra's: overrides, `-m` for multirun, `--help`, `--cfg job`.
A mistake the user can fix ends in one line on stderr and exit code 2; STUDIO_DEBUG=1 shows the trace.
In a multirun a failing job writes a manifest with status "failed" and the others go on; a job whose
complete manifest has the same config is skipped, so re-running a stopped sweep finishes it.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from pathlib import Path

from studio.errors import StudioError, unknown
from studio.validate import check_overrides, parse_overrides

CONF_DIR = Path(os.environ.get("STUDIO_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))
USER_ERROR_EXIT = 2
# Launchers whose configs come with an optional Hydra plugin: name -> (plugin module, pip extra).
LAUNCHER_PLUGINS = {"submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
                    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
                    "ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
                    "ray_aws": ("hydra_plugins.hydra_ray_launcher", "ray")}


def usage() -> str:
    from studio.commands import COMMANDS

    width = max(map(len, COMMANDS))
    lines = ["usage: studio <command> [key=value ...] [-m] [--help]", "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.help}" for name, cmd in COMMANDS.items()]
    lines += ["", "`studio <command> --help` lists the command's config groups and options.",
              "Examples: studio demo | studio train model=judge_cnn | studio layers model=resnet18"]
    return "\n".join(lines)


def config_choices(group: str) -> list[str]:
    """Names available in a config group (the YAML files of conf/<group>/)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_config_choices(overrides: list[str]) -> None:
    """Fail in one line on `group=name` naming a config that does not exist (Hydra says it in ten)."""
    for override in parse_overrides(overrides):
        group = override.key_or_group
        if group == "hydra/launcher" and str(override.value()) in LAUNCHER_PLUGINS:
            _check_launcher_plugin(str(override.value()))
        if group == "hydra" or group.startswith("hydra/") or not (CONF_DIR / group).is_dir():
            continue
        if override.is_delete():
            continue
        names = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        # `regularizer=[l2,tv]` selects several configs of one group at once
        names = [n for name in names for n in (name if isinstance(name, list) else [name])]
        choices = config_choices(group)
        for name in names:
            if str(name) not in choices:
                raise unknown(group.replace("/", "."), name, choices)


def _check_launcher_plugin(name: str) -> None:
    import importlib.util

    module, extra = LAUNCHER_PLUGINS[name]
    if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
        raise StudioError(f"hydra/launcher={name} needs its Hydra plugin: pip install 'feature-viz-studio[{extra}]'")


def _task(cfg) -> None:
    """Hydra's task function: run the command, write its manifest, mirror it to W&B."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    from studio import sweep
    from studio.commands import COMMANDS
    from studio.tracking import Tracker, write_manifest

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
            return
        if command == "report":  # the report joins its sweep's W&B group
            from studio.report import sweep_group

            group = sweep_group(cfg.sweep)
        with Tracker(cfg, command, run_dir, group) as tracker:
            result = COMMANDS[command].run(cfg, tracker, run_dir)
            if tracker.wandb_run_dir is not None:
                result.artifacts["wandb_run"] = str(tracker.wandb_run_dir)
            write_manifest(run_dir, command, cfg, result.metrics, result.items, result.artifacts)
            tracker.summary(result.metrics)
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


def checked_overrides(command: str, overrides: list[str]) -> list[str]:
    """The command line as Hydra will take it, checked before any work starts: the command, every group
    choice, every key and the type of every value (a StudioError names the first bad one)."""
    from studio.commands import COMMANDS

    if command not in COMMANDS:
        raise unknown("command", command, list(COMMANDS))
    overrides = list(overrides)
    if command == "report" and overrides and "=" not in overrides[0] and not overrides[0].startswith("-"):
        overrides[0] = _sweep_override(overrides[0])  # studio report <sweep dir>
    _check_one_mode(overrides)
    overrides = _experiment_overrides(command, overrides)
    check_config_choices(overrides)
    check_overrides(command, overrides, CONF_DIR)
    return overrides


# Hydra's flags that pick what a run does: it takes one (two end in its ValueError traceback)
MODES = {"-m": "-m/--multirun", "--multirun": "-m/--multirun", "-c": "--cfg", "--cfg": "--cfg",
         "-i": "--info", "--info": "--info", "-r": "--run", "--run": "--run",
         "-sc": "--shell-completion", "--shell-completion": "--shell-completion"}


def _check_one_mode(overrides: list[str]) -> None:
    given = list(dict.fromkeys(MODES[a] for a in overrides if a in MODES))
    if len(given) > 1:
        raise StudioError(f"{' and '.join(given)} cannot be combined: give one of them (to see a sweep's "
                          "config, run --cfg job with one value per key)")


def _sweep_override(path: str) -> str:
    """`studio report <dir>` -> `sweep='<absolute dir>'` (quoted: a path may hold Hydra's special characters)."""
    resolved = str(Path(path).resolve())
    if not Path(resolved).is_dir():
        raise StudioError(f"sweep dir not found: {path}")
    quote = "'" if "'" not in resolved else '"'
    return f"sweep={quote}{resolved}{quote}"


def _experiment_overrides(command: str, overrides: list[str]) -> list[str]:
    """`experiment=x` works on every command: where the command's config has no experiment slot in its
    defaults, it is appended (`+experiment=x`), which is what the slot would do."""
    from omegaconf import OmegaConf

    if not any(o.startswith("experiment=") for o in overrides):
        return overrides
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{command}.yaml")).get("defaults") or []
    if any(isinstance(d, dict) and any(str(k).split()[-1] == "experiment" for k in d) for d in defaults):
        return overrides
    return [f"+{o}" if o.startswith("experiment=") else o for o in overrides]


if __name__ == "__main__":
    sys.exit(main())
