"""Config -> the feature-visualization engine (studio/optvis): objectives, parameterizations,
regularizers and render options from a visualize config (conf/objective, conf/param,
conf/regularizer, conf/visualize.yaml). The engine itself takes plain Python values.

An objective kind is registered once, in OBJECTIVES, with everything the command needs to know about
it: how it is built for a list of targets, how its targets come from the model's layer shapes, whether
it names a layer, how many seeds it needs and how a run of it is labelled. Adding an objective is one
entry here (plus its function in optvis/objectives.py) and one YAML in conf/objective/.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch

from studio.adapters import plain
from studio.errors import StudioError, lookup
from studio.optvis import params, regularizers
from studio.optvis.objectives import (LOGITS, Objective, channel, class_, deepdream, direction, diversity, neuron,
                                      resolve_indices)
from studio.optvis.render import RenderOptions


# --- objectives ------------------------------------------------------------------------------------
def _layer(cfg: dict) -> str:
    layer = cfg.get("layer")
    if not layer:
        raise StudioError(f"objective {cfg['name']!r} needs a layer: set objective.layer=<name> "
                          "(`studio layers` lists them)")
    return str(layer)


def _channels(cfg: dict, shapes: dict) -> list[int]:
    layer = _layer(cfg)
    if layer not in shapes:
        raise StudioError(f"layer {layer!r} produced no tensor output; choose another layer")
    return resolve_indices(cfg.get("channels", "all"), shapes[layer][0], "channel", layer)


def _vectors(cfg: dict) -> torch.Tensor:
    """objective.vector as a (T, C) float tensor: one list of C values, or T such lists."""
    raw = cfg.get("vector")
    if raw is None:
        raise StudioError("objective direction needs objective.vector=[v_0,...,v_C-1] (one value per channel)")
    try:
        v = torch.as_tensor(raw, dtype=torch.float32)
    except (TypeError, ValueError):
        raise StudioError(f"objective.vector={raw!r} is not a list of numbers (or a list of such lists)") from None
    if v.ndim not in (1, 2) or v.numel() == 0:
        raise StudioError("objective.vector must be a list of C numbers or T lists of C numbers; "
                          f"got shape {tuple(v.shape)}")
    return v[None] if v.ndim == 1 else v


def _direction_targets(cfg: dict, shapes: dict) -> list[int]:
    vectors, layer = _vectors(cfg), _layer(cfg)
    if layer in shapes and vectors.shape[1] != shapes[layer][0]:
        raise StudioError(f"objective.vector has {vectors.shape[1]} values but layer {layer!r} has "
                          f"{shapes[layer][0]} channels")
    return list(range(vectors.shape[0]))


def _diversity(cfg: dict, targets: list) -> Objective:
    main = channel(_layer(cfg), targets)
    return main + float(cfg.get("weight", 0.5)) * diversity(str(cfg.get("diversity_layer") or _layer(cfg)),
                                                             groups=len(targets), relative_to=main)


@dataclass(frozen=True)
class ObjectiveKind:
    """An objective config kind (conf/objective/<name>.yaml's `name`) and what the command needs of it."""

    build: Callable[[dict, list], Objective]  # (config, targets) -> the objective for those targets
    targets: Callable[[dict, dict], list]  # (config, layer shapes incl. "logits") -> checked target indices
    reads_layer: bool = True  # objective.layer names a layer of the model's net
    min_seeds: int = 1  # seeds per target it needs (diversity compares them)
    label: Callable[[dict], str] = lambda cfg: str(cfg.get("layer") or "")  # what a run renders, for its summary
    alone: Callable[[dict, list], Objective] | None = None  # of one image on its own (exemplars); None: build
    units: bool = False  # its targets are channels of objective.layer: units Network Dissection can label


OBJECTIVES: dict[str, ObjectiveKind] = {
    "channel": ObjectiveKind(lambda c, t: channel(_layer(c), t), _channels, units=True),
    "neuron": ObjectiveKind(lambda c, t: neuron(_layer(c), t, c.get("x"), c.get("y")), _channels, units=True),
    "class": ObjectiveKind(lambda c, t: class_(t, bool(c.get("log_softmax", False))),
                           lambda c, s: resolve_indices(c.get("classes", "all"), s[LOGITS][0], "class", LOGITS),
                           reads_layer=False, label=lambda c: "classes"),
    "layer": ObjectiveKind(lambda c, t: deepdream(_layer(c)), lambda c, s: [None]),
    "direction": ObjectiveKind(lambda c, t: direction(_layer(c), _vectors(c)[t], float(c.get("cossim_pow", 0.0))),
                               _direction_targets),
    "diversity": ObjectiveKind(_diversity, _channels, min_seeds=2,
                               alone=lambda c, t: channel(_layer(c), t), units=True),  # seeds compared: no meaning for one image
}


def objective_kind(cfg) -> ObjectiveKind:
    """The registered kind of an objective config; an unknown name lists the known ones."""
    return lookup(OBJECTIVES, "objective", plain(cfg)["name"])


def objective_targets(cfg, shapes: dict[str, tuple[int, ...]]) -> list[int | None]:
    """The target indices an objective config names, checked against the model's layer shapes."""
    cfg = plain(cfg)
    return objective_kind(cfg).targets(cfg, shapes)


def build_objective(cfg, targets: list) -> Objective:
    """The objective `cfg` (conf/objective/*.yaml) describes, for these targets (from objective_targets)."""
    cfg = plain(cfg)
    return objective_kind(cfg).build(cfg, targets)


def per_target_objectives(cfg, targets: list) -> list[Objective]:
    """One objective per target, each scoring an image on its own: what natural exemplars are ranked by."""
    cfg = plain(cfg)
    kind = objective_kind(cfg)
    objectives = [(kind.alone or kind.build)(cfg, [t]) for t in targets]
    for objective, label in zip(objectives, kind.build(cfg, targets).targets):
        objective.targets = (label,)  # the render's own labels ("direction:conv2:1", not one vector's)
    return objectives


def objective_layer(cfg) -> str | None:
    """The layer an objective config reads (None: the model's output, e.g. a class)."""
    cfg = plain(cfg)
    return _layer(cfg) if objective_kind(cfg).reads_layer else None


def check_seeds(cfg, seeds: int) -> None:
    kind, name = objective_kind(cfg), plain(cfg)["name"]
    if seeds < kind.min_seeds:
        raise StudioError(f"objective {name} compares the seeds of each target: set seeds={kind.min_seeds} or more")


def describe(cfg) -> str:
    """"channel conv2", "class classes": what a run of this objective config renders."""
    cfg = plain(cfg)
    return f"{cfg['name']} {objective_kind(cfg).label(cfg)}".strip()


# --- parameterizations -----------------------------------------------------------------------------
def param_options(cfg) -> tuple[Callable[..., params.ParamSpec], dict]:
    """(builder, options) of conf/param/<name>.yaml; an unknown name or option names the valid ones."""
    options = dict(plain(cfg))
    name = options.pop("name")
    options.pop("render", None)  # the recipe `studio visualize` runs it with: regularizer_config, render_options
    builder = lookup(params.BUILDERS, "param", name)
    known = [p for p in inspect.signature(builder).parameters if p != "generator"]
    for key in options:
        if key not in known:
            raise StudioError(f"param {name!r} has no option {key!r}; its options: {', '.join(known)}")
    if name in params.CHECKS:  # checked now: the generator may take minutes to train
        params.CHECKS[name](**options)
    return builder, options


def needs_generator(cfg) -> bool:
    """Does this param config optimize a generator's latent space (so the command must build one)?"""
    builder, _ = param_options(cfg)
    return "generator" in inspect.signature(builder).parameters


def build_param(cfg, generator=None) -> params.ParamSpec:
    """conf/param/<name>.yaml -> ParamSpec; `generator` feeds param=latent."""
    builder, options = param_options(cfg)
    if "generator" in inspect.signature(builder).parameters:
        options["generator"] = generator
    return builder(**options)


# --- regularizers ----------------------------------------------------------------------------------
def is_auto(regularizer) -> bool:
    """Is this regularizer config conf/regularizer/auto.yaml (the parameterization's recipe)?"""
    return regularizer is not None and bool(plain(regularizer).get("auto"))


def regularizer_config(cfg):
    """A visualize config's regularizer; regularizer=auto (the default) is the parameterization's recipe's,
    conf/regularizer/<param.render.regularizer>.yaml (param=latent: the generator's render.regularizer),
    with any terms added on the command line on top."""
    node = cfg.get("regularizer")
    if not is_auto(node):
        return node
    from omegaconf import OmegaConf

    from studio import config

    name = str((plain(cfg.param).get("render") or {}).get("regularizer", ""))
    choices = [c for c in config.config_choices("regularizer") if c != "auto"]
    if name not in choices:
        raise StudioError(f"regularizer=auto takes param.render.regularizer, which is {name!r}: not a regularizer; "
                          f"choose from: {', '.join(choices)} (or set regularizer=<name>)")
    recipe = config.load("regularizer", name)
    extra = {k: v for k, v in plain(node).items() if k != "auto"}  # `+regularizer.tv.weight=0.5`: on top of it
    return OmegaConf.merge(recipe, extra) if extra else recipe


def build_regularization(cfg) -> regularizers.Regularization:
    """conf/regularizer/<name>.yaml (term id -> {name, weight, every, options}) or a list of terms."""
    return regularizers.regularization(plain(cfg))


# --- the loop --------------------------------------------------------------------------------------
def render_options(cfg) -> tuple[RenderOptions, int]:
    """(RenderOptions, batch_size) from a visualize config's loop settings; bad values fail in one line."""
    seeds, first = int(cfg.get("seeds", 1)), int(cfg.get("seed", 0))
    if seeds < 1:
        raise StudioError(f"seeds={seeds} must be at least 1 (images per target)")
    batch_size = int(cfg.get("batch_size", 256))
    if batch_size < 1:
        raise StudioError(f"batch_size={batch_size} must be at least 1")
    lr = float(cfg.lr)
    if not 0 < lr < torch.finfo(torch.float32).max:  # nan fails this too; torch would fail only after training
        raise StudioError(f"lr={lr} must be a positive finite number (the default is 0.1)")
    options = RenderOptions(steps=int(cfg.steps), lr=lr, optimizer=str(cfg.get("optimizer", "adam")),
                            seeds=tuple(range(first, first + seeds)),
                            thresholds=tuple(int(t) for t in cfg.get("thresholds") or ()),
                            device=resolve_device(str(cfg.get("device", "auto"))),
                            precision=str(cfg.get("precision", "auto")), progress=bool(cfg.get("progress", True)),
                            retry_below=cfg.get("retry_below"), natural_edge=cfg.get("natural_edge"))
    options.check()  # retry_below, natural_edge, thresholds: in one line before any training
    return options, batch_size


def with_real_images(options: RenderOptions, dm) -> RenderOptions:
    """The options with the data's training images for the natural choice, where the recipe asks for one."""
    if options.natural_edge is None:
        return options
    return options.with_overrides(natural_images=dm.split("train")[0])


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; a device that is not there fails in one line."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StudioError(f"unknown device {name!r}; choose from: auto, cpu, cuda, cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StudioError(f"device={name!r} but no CUDA GPU is available; use device=auto or cpu")
    return device
