"""The start-up check of `key=value` overrides: a misspelt key or a wrong type fails before any work starts.

Hydra would refuse a misspelt key in ten lines and take `steps=abc` without a word (the string fails
deep inside a run). Here every value override is looked up in the command's composed defaults (for each
config group choice the command line selects) and its value checked against the type of the default:
one line that names the key, the bad value and what would be valid.

The YAML defaults are the schema: a key whose default is a bool takes a bool, an int an int, a float a
number, a list a list, a mapping a mapping; a string or null default takes anything (many string
options also take numbers, e.g. `precision=32`). Keys that take several types are listed in FLEXIBLE.
An override Hydra cannot parse, and a sweep (`key=a,b`) without -m, are one line here too.
"""

from __future__ import annotations

import difflib
import itertools
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from studio.errors import StudioError, is_number

# Leaf keys whose default is one type but which take others too: "all | an int | a list", Lightning's
# `devices=auto`, a numeric `precision`.
FLEXIBLE = {"channels", "classes", "devices", "precision", "target", "num_nodes"}
_MAX_COMPOSES = 24  # group choices checked per command line (a sweep over every recipe is 10)


# Hydra's command-line flags that take the next argument as their value (not an override)
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun"}
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic"


def parse_overrides(arguments: list[str]) -> list:
    """Hydra's parsed overrides of a command line (flags left out); one that does not parse is a one-line
    StudioError naming it (Hydra's own says it in three lines, after a stack trace hint)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, parsed, skip = OverridesParser.create(), [], False
    for text in arguments:
        if skip or text.startswith("-"):
            skip = not skip and text in _FLAGS_WITH_VALUE
            continue
        try:
            parsed += parser.parse_overrides([text])
        except HydraException as e:
            lines = [line for line in str(e).splitlines()
                     if line.strip() and not line.startswith(("See https", "Error parsing override"))]
            raise StudioError(f"cannot parse {text!r}: {lines[0] if lines else 'syntax error'}; quote a value that "
                              f"holds = , [ ] or spaces (key='a=b'); grammar: {GRAMMAR}") from None
    return parsed


def check_overrides(command: str, overrides: list[str], conf_dir: Path) -> None:
    """Raise a one-line StudioError for the first value override naming no key, or of the wrong type."""
    parsed = parse_overrides(overrides)
    groups = [o for o in parsed if (conf_dir / o.key_or_group).is_dir() and not o.is_delete()]
    values = [o for o in parsed if o not in groups and not _skipped(o)]
    if not ({"-m", "--multirun"} & set(overrides) or _experiment_sweeps(groups, conf_dir)):
        _check_no_sweep(parsed, groups)
    if not values:
        return
    configs = _composed(command, groups, conf_dir)
    if not configs:
        return  # the groups themselves do not compose: Hydra reports that
    for override in values:
        key = override.key_or_group
        defaults = [node for node in (_default(cfg, key) for cfg in configs) if node is not _ABSENT]
        if not defaults:
            raise _auto_group(key, configs) or _unknown_key(key, configs)
        if override.is_interval_sweep():
            continue
        given = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        for value in given:
            if not any(_fits(value, default, key) for default in defaults):
                raise StudioError(f"bad value for {key}: {value!r} is not {_kind(defaults[0])} "
                                  f"(the default is {key}={_show(defaults[0])})")


def _experiment_sweeps(groups: list, conf_dir: Path) -> bool:
    """Whether a chosen experiment makes the run a multirun by itself (`hydra.mode: MULTIRUN`)."""
    for override in groups:
        if override.key_or_group == "experiment":
            for name in (override.sweep_string_iterator() if override.is_sweep_override()
                         else [override.get_value_element_as_str()]):
                path = conf_dir / "experiment" / f"{name}.yaml"
                if path.is_file() and OmegaConf.select(OmegaConf.load(path), "hydra.mode") == "MULTIRUN":
                    return True
    return False


def _check_no_sweep(parsed: list, groups: list) -> None:
    """`key=a,b` without -m: Hydra refuses it in four lines; one line says what it could mean."""
    for override in parsed:
        if override.is_sweep_override():
            key, value = override.get_key_element(), ",".join(override.sweep_string_iterator())
            meant = (f"{key}=[{value}] to combine these configs" if override in groups else
                     f"{key}=[{value}] for a list, {key}='{value}' for one string")
            raise StudioError(f"{override.input_line!r} gives several values, a sweep: add -m for one job per "
                              f"value, or write {meant}")


def _skipped(override) -> bool:
    """Overrides with no default to check against: Hydra's own settings, additions, deletions."""
    key = override.key_or_group
    return key == "hydra" or key.startswith(("hydra.", "hydra/")) or override.is_add() \
        or override.is_force_add() or override.is_delete()


def _composed(command: str, groups: list, conf_dir: Path) -> list[DictConfig]:
    """The command's config for the first choice of every group, then with each other choice of each
    swept group in turn (a key need exist in only one: `regularizer=none,l2 regularizer.weight=...`)."""
    from hydra import compose, initialize_config_dir

    choices = [[f"{o.get_key_element()}={v}" for v in (o.sweep_string_iterator() if o.is_sweep_override()
                                                         else [o.get_value_element_as_str()])] for o in groups]
    first = [c[0] for c in choices]
    variants = [first] + [first[:i] + [alt] + first[i + 1:] for i, c in enumerate(choices) for alt in c[1:]]
    configs = []
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir)):
        for variant in itertools.islice(variants, _MAX_COMPOSES):
            try:
                configs.append(compose(config_name=command, overrides=variant))
            except Exception:  # noqa: BLE001 - an unknown choice or a broken experiment: reported elsewhere
                continue
    return configs


_ABSENT = object()


def _node(cfg: DictConfig, key: str):
    """The raw default at dotted `key` (interpolations unresolved), or _ABSENT."""
    node = cfg
    for part in key.split("."):
        if isinstance(node, DictConfig) and part in node.keys():  # `in node` is False for ??? values
            node = node._get_node(part)
            node = node if isinstance(node, (DictConfig, ListConfig)) else node._value()
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _ABSENT
    return node


def _default(cfg: DictConfig, key: str):
    """_node, with an interpolation (`steps: ${param.render.steps}`) replaced by what it resolves to: its
    type is the schema."""
    node = _node(cfg, key)
    if isinstance(node, str) and "${" in node:
        try:
            resolved = OmegaConf.select(cfg, key)
        except Exception:  # noqa: BLE001 - resolves only at run time (${now:...}, a missing value): any string
            return node
        return node if resolved is None else resolved
    return node


def _fits(value, default, key: str) -> bool:
    if value is None or default is None or key.rsplit(".", 1)[-1] in FLEXIBLE:
        return True
    if isinstance(default, str):
        return True  # strings, and interpolations (`${...}`) whose type is known only when resolved
    if isinstance(value, str) and value.startswith("${"):
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return is_number(value)
    if isinstance(default, ListConfig):
        return isinstance(value, list)
    return isinstance(value, dict)  # a mapping: the last type a YAML default can have


def _kind(default) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an int"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, ListConfig):
        return "a list like [a,b]"
    return "a mapping like {k:v}"


def _show(default) -> str:
    if isinstance(default, (DictConfig, ListConfig)):
        return str(OmegaConf.to_container(default)).replace(" ", "")
    return str(default).lower() if isinstance(default, bool) else str(default)


def _auto_group(key: str, configs: list[DictConfig]) -> StudioError | None:
    """`regularizer.tv.weight=0.5` while regularizer=auto (conf/regularizer/auto.yaml, the default): the
    recipe's terms are chosen at run time, so say how to set one."""
    group = key.split(".")[0]
    if "." not in key or not all(isinstance(n := _node(c, group), DictConfig) and n.get("auto") for c in configs):
        return None
    return StudioError(f"unknown config key {key!r}: {group}=auto (the default) takes the parameterization's recipe "
                       f"and has no terms of its own; name one to change its terms ({group}=l2_tv {key}=...) or add "
                       f"a term on top (+{key}=...)")


def _unknown_key(key: str, configs: list[DictConfig]) -> StudioError:
    """`unknown config key 'objective.chanels' (did you mean objective.channels?); objective has: ...`,
    listing the keys of the longest prefix of `key` that exists (in whichever group choice has it)."""
    parts = key.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        parent = ".".join(parts[:depth])
        nodes = [node for node in (_node(cfg, parent) if parent else cfg for cfg in configs)
                 if isinstance(node, DictConfig)]
        if nodes:
            break
    leaf = parts[depth]
    valid = sorted({str(k) for node in nodes for k in node.keys()})
    where, prefix = (parent, f"{parent}.") if parent else ("the config", "")
    close = difflib.get_close_matches(leaf, valid, n=1)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
    listed = ", ".join(valid) if valid else f"no keys (add one with +{key}=...)"
    return StudioError(f"unknown config key {key!r}{hint}; {where} has: {listed}")
