"""`studio <command> [hydra overrides]`: dispatch a command to Hydra with the command's own config.

Everything after the command is Hydra's: overrides, `-m` for multirun, `--help`, `--cfg job`.
A mistake the user can fix ends in one line on stderr and exit code 2; STUDIO_DEBUG=1 shows the trace.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from studio.errors import StudioError, unknown

CONF_DIR = Path(os.environ.get("STUDIO_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))
USER_ERROR_EXIT = 2


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
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    except HydraException:
        return  # a syntax error: Hydra's own message is the clearest
    for override in parsed:
        group = override.key_or_group
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


def _task(cfg) -> None:
    """Hydra's task function: run the command, write its manifest, mirror it to W&B."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf.errors import MissingMandatoryValue

    from studio.commands import COMMANDS
    from studio.tracking import Tracker, write_manifest

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    group = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else hydra_cfg.run.dir
    command = cfg.command
    try:
        with Tracker(cfg, command, run_dir, str(group)) as tracker:
            result = COMMANDS[command].run(cfg, tracker, run_dir)
            if tracker.wandb_run_dir is not None:
                result.artifacts["wandb_run"] = str(tracker.wandb_run_dir)
            write_manifest(run_dir, command, cfg, result.metrics, result.items, result.artifacts)
            tracker.summary(result.metrics)
    except (StudioError, MissingMandatoryValue) as e:
        if os.environ.get("STUDIO_DEBUG"):
            raise
        message = str(e).splitlines()[0]
        if isinstance(e, MissingMandatoryValue):
            key = getattr(e, "full_key", "") or "a value"
            message = f"missing value for {key}: set it on the command line ({key}=...)"
        print(f"studio {command}: error: {message}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)


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
    from studio.commands import COMMANDS

    command, overrides = argv[0], argv[1:]
    try:
        if command not in COMMANDS:
            raise unknown("command", command, list(COMMANDS))
        check_config_choices(overrides)
    except StudioError as e:
        print(f"studio: error: {e}", file=sys.stderr)
        return USER_ERROR_EXIT

    import hydra

    if os.environ.get("STUDIO_DEBUG"):
        os.environ["HYDRA_FULL_ERROR"] = "1"  # the whole trace, not Hydra's trimmed one
    quiet_known_noise()
    app = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=command)(_task)
    sys.argv = [f"studio {command}", *overrides]
    app()
    return 0


if __name__ == "__main__":
    sys.exit(main())
