"""The conf dir and everything done with it before a command runs: the command line checked against it
(commands, group choices, keys, value types), and configs composed or loaded from Python.

`STUDIO_CONF_DIR` points the studio at another conf dir (the tests use it for broken configs).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from omegaconf import OmegaConf

from studio.commands import COMMANDS
from studio.errors import StudioError, unknown
from studio.validate import check_overrides, parse_overrides


def _cpu_precision() -> str:
    from studio.modes import cpu_training_precision  # torch, imported only when a config asks

    return cpu_training_precision()


# ${cpu_precision:} in conf/: the training precision this CPU runs fastest (studio.modes.cpu_training_precision).
# Resolved where a config is read, so the cache keys hold the precision the weights were trained in.
OmegaConf.register_new_resolver("cpu_precision", _cpu_precision, replace=True)


def _prior_norm(latent_dim, fraction=1.0) -> float:
    return float(fraction) * math.sqrt(int(latent_dim))


# ${prior_norm:<latent_dim>,<fraction>} in conf/: that fraction of sqrt(latent_dim), the norm of a typical draw of
# z ~ N(0, I), so a latent norm bound in a generator's recipe means the same at any latent size.
OmegaConf.register_new_resolver("prior_norm", _prior_norm, replace=True)

CONF_DIR = Path(os.environ.get("STUDIO_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))
# Launchers whose configs come with an optional Hydra plugin: name -> (plugin module, pip extra).
LAUNCHER_PLUGINS = {"submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
                    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
                    "ray": ("hydra_plugins.hydra_ray_launcher", "ray"),
                    "ray_aws": ("hydra_plugins.hydra_ray_launcher", "ray")}
# The same for sweepers (hydra/sweeper=<name>, or an experiment that picks one in its defaults).
SWEEPER_PLUGINS = {"optuna": ("hydra_plugins.hydra_optuna_sweeper", "optuna")}


def load(*parts: str):
    """One YAML of the conf dir as it is on disk, unresolved: load("probe") is conf/probe.yaml,
    load("objective", "class") is conf/objective/class.yaml."""
    from omegaconf import OmegaConf

    *groups, name = parts
    return OmegaConf.load(CONF_DIR.joinpath(*groups, f"{name}.yaml"))


def compose(config_name: str, overrides: list[str] | None = None):
    """conf/<config_name>.yaml with overrides, as `studio <command>` would compose it (without hydra.*);
    works inside a running Hydra app (the demo composes the other commands' configs) and outside it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))


def config_choices(group: str, search_dirs: tuple[Path, ...] = ()) -> list[str]:
    """Names available in a config group: the YAML files of conf/<group>/ and of <dir>/<group>/ for each
    folder the command line adds to Hydra's search path (e.g. a tuning sweep's recipe/tuned_*.yaml)."""
    return sorted({p.stem for root in (CONF_DIR, *search_dirs) for p in (Path(root) / group).glob("*.yaml")})


def search_dirs(parsed: list) -> tuple[Path, ...]:
    """The folders of `hydra.searchpath=[file://<dir>, ...]` on the command line (pkg:// entries aside)."""
    for override in parsed:
        if override.key_or_group == "hydra.searchpath" and isinstance(override.value(), list):
            return tuple(Path(str(v)[len("file://"):]) for v in override.value() if str(v).startswith("file://"))
    return ()


def check_config_choices(overrides: list[str]) -> None:
    """Fail in one line on `group=name` naming a config that does not exist (Hydra says it in ten)."""
    parsed = parse_overrides(overrides)
    extra = search_dirs(parsed)
    for override in parsed:
        group = override.key_or_group
        if group == "hydra/launcher" and str(override.value()) in LAUNCHER_PLUGINS:
            _check_launcher_plugin(str(override.value()))
        if group in ("hydra/sweeper", "experiment") and not override.is_sweep_override():
            _check_sweeper_plugin(group, str(override.value()))
        if group == "hydra" or group.startswith("hydra/") or not (CONF_DIR / group).is_dir():
            continue
        if override.is_delete():
            continue
        names = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        # `regularizer=[l2,tv]` selects several configs of one group at once
        names = [n for name in names for n in (name if isinstance(name, list) else [name])]
        choices = config_choices(group, extra)
        for name in names:
            if str(name) not in choices:
                raise unknown(group.replace("/", "."), name, choices)


def _check_launcher_plugin(name: str) -> None:
    _require_plugin("hydra/launcher", name, LAUNCHER_PLUGINS)


def _check_sweeper_plugin(group: str, name: str) -> None:
    """hydra/sweeper=optuna, or an experiment whose defaults pick it, without the plugin installed: one line."""
    if group == "experiment":
        path = CONF_DIR / "experiment" / f"{name}.yaml"
        text = path.read_text() if path.is_file() else ""
        name = next((s for s in SWEEPER_PLUGINS if f"override /hydra/sweeper: {s}" in text), "")
    if name in SWEEPER_PLUGINS:
        _require_plugin("hydra/sweeper", name, SWEEPER_PLUGINS)


def _require_plugin(group: str, name: str, plugins: dict[str, tuple[str, str]]) -> None:
    """`group=name` whose Hydra plugin (module, extra) is not installed: one line naming the extra to install."""
    import importlib.util

    module, extra = plugins[name]
    if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
        raise StudioError(f"{group}={name} needs its Hydra plugin: pip install 'feature-viz-studio[{extra}]'")


def checked_overrides(command: str, overrides: list[str]) -> list[str]:
    """The command line as Hydra will take it, checked before any work starts: the command, every group
    choice, every key and the type of every value (a StudioError names the first bad one)."""
    if command not in COMMANDS:
        raise unknown("command", command, list(COMMANDS))
    overrides = list(overrides)
    positional = COMMANDS[command].positional
    if positional and overrides and "=" not in overrides[0] and not overrides[0].startswith("-"):
        overrides[0] = _path_override(positional, overrides[0])  # e.g. studio report <sweep dir>
    overrides = _flag_overrides(COMMANDS[command].flags, overrides)
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


def _path_override(key: str, path: str) -> str:
    """`studio report <dir>` -> `sweep='<absolute dir>'` (quoted: a path may hold Hydra's special characters)."""
    resolved = str(Path(path).resolve())
    if not Path(resolved).is_dir():
        raise StudioError(f"{key} dir not found: {path}")
    return _quoted(key, resolved)


def _quoted(key: str, path: str) -> str:
    """`key='<path>'`, quoted: a path may hold Hydra's special characters."""
    quote = "'" if "'" not in path else '"'
    return f"{key}={quote}{path}{quote}"


def _flag_overrides(flags, overrides: list[str]) -> list[str]:
    """`--quiz <file>` (or `--quiz=<file>`) -> `report.quiz='<absolute file>'`: a command's file flags, checked here
    so a missing file costs no work."""
    out, given = [], iter(overrides)
    for arg in given:
        flag, _, value = arg.partition("=")
        key = dict(flags).get(flag)
        if key is None:
            out.append(arg)
            continue
        value = value or next(given, "")
        if not value or value.startswith("-"):
            raise StudioError(f"{flag} needs a file: {flag} <file>")
        path = Path(value).resolve()
        if not path.is_file():
            raise StudioError(f"{flag} file not found: {value}")
        out.append(_quoted(key, str(path)))
    return out


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
