"""A tuning trial as a recipe YAML: the trial's parameterization and regularizer choices and its tuned values,
in the shape of conf/recipe/*.yaml, usable with `+recipe=<name>` once its folder is on Hydra's search path."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from studio.files import write_text

RECIPE_GROUPS = ("param", "generator", "regularizer")  # the choices a recipe bundles (conf/recipe/*.yaml)


def usage(name: str, sweep_dir: Path) -> str:
    """The command line that renders with the recipe `name` written under sweep_dir/recipe/."""
    return f"studio visualize +recipe={name} 'hydra.searchpath=[file://{Path(sweep_dir).resolve()}]'"


def write_recipe(sweep_dir: Path, name: str, choices: dict, settings: dict, about: str) -> Path:
    """sweep_dir/recipe/<name>.yaml: `choices` ({group: choice or list of choices}) as defaults overrides,
    `settings` (a nested mapping: the regularizer's terms, lr, steps, ...) as its body; `about` is its first
    comment line."""
    defaults = [f"override /{group}: {_choice(choices[group])}" for group in RECIPE_GROUPS if group in choices]
    body = OmegaConf.to_yaml(OmegaConf.create(settings)) if settings else ""
    text = "\n".join(["# @package _global_", f"# {about}", f"# Use it: {usage(name, sweep_dir)}",
                      "defaults:", *(f"  - {d}" for d in defaults)]) + "\n" + body
    path = Path(sweep_dir) / "recipe" / f"{name}.yaml"
    write_text(path, text)
    return path


def trial_settings(config: dict, searched: dict) -> tuple[dict, dict]:
    """(choices, settings) of a recipe from a trial job's resolved config and its searched values: the
    regularizer's terms are written out whole over `regularizer: none` (a trial may combine several
    regularizer configs, which a choice cannot name), the other searched keys as they were set."""
    regularizer = dict(config.get("regularizer") or {})
    choices = {"regularizer": "auto" if regularizer.get("auto") else "none"}
    others = [f"{k}={v}" for k, v in searched.items() if not k.startswith("regularizer.")]
    settings = OmegaConf.to_container(OmegaConf.from_dotlist(others)) if others else {}
    if not regularizer.get("auto"):
        settings = {"regularizer": regularizer, **settings}
    return choices, settings


def _choice(choice) -> str:
    if isinstance(choice, (list, tuple)) or OmegaConf.is_list(choice):
        return "[" + ", ".join(str(c) for c in choice) + "]"
    return str(choice)
