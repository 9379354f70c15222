"""Config -> the explain engine: the `explain` block of conf/explain.yaml as plain constructor options
per method and as MetricOptions. Driven by the method registry (studio/explain/registry.py): a method's
`block`, `config_keys` and `from_block` say where its options come from."""

from __future__ import annotations

from studio.adapters import plain
from studio.explain import METHODS
from studio.explain.compare import MetricOptions
from studio.explain.registry import MethodSpec


def _options(spec: MethodSpec, ecfg, common: dict) -> dict:
    """One method's options: its block through `from_block`, its keys of `explain`, then `common`."""
    node = ecfg.get(spec.block) if spec.block else None
    block = spec.from_block(plain(node) if node is not None else {})
    return {**block, **{option: plain(ecfg.get(key)) for option, key in spec.config_keys.items()}, **common}


def method_options(ecfg) -> dict[str, dict]:
    """Constructor keyword arguments of every registered method (name -> options) from the `explain` block:
    its own block, its keys of `explain` itself, and the shared batch_size and seed."""
    common = {"batch_size": int(ecfg.batch_size), "seed": int(ecfg.seed)}
    return {name: _options(spec, ecfg, common) for name, spec in METHODS.items()}


def chosen_layers(ecfg, names: list[str]) -> list[str]:
    """The layer names the config gives the methods `names` (e.g. explain.gradcam_layer), unset ones left out:
    checked against the model before any training."""
    layers = []
    for spec in (METHODS[name] for name in names):
        options = _options(spec, ecfg, {}) if spec.layer_options else {}
        layers += [options[option] for option in spec.layer_options if options.get(option)]
    return layers


def metric_options(ecfg) -> MetricOptions:
    """explain.metrics plus the shared batch_size and seed."""
    return MetricOptions(**plain(ecfg.metrics), batch_size=int(ecfg.batch_size), seed=int(ecfg.seed))
