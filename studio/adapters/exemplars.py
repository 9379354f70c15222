"""Config -> the exemplar search and the render sanity checks (conf/exemplars): settings checked in one
line each, before any training wherever they can be."""

from __future__ import annotations

from dataclasses import dataclass

from studio.adapters import plain
from studio.data import SPLITS
from studio.errors import StudioError, unknown

CASCADES = ("target", "all")  # or a layer name


@dataclass(frozen=True)
class ExemplarSettings:
    k: int
    split: str
    heldout: str
    batch_size: int = 128
    in_grid: int = 3
    checks: bool = True
    randomized: bool = True
    randomize_to: str = "target"


def exemplar_settings(cfg) -> ExemplarSettings | None:
    """cfg.exemplars as settings; None when it is off (exemplars.k=0) or the config has no such block."""
    node = cfg.get("exemplars")
    if node is None:
        return None
    raw = plain(node)
    k = int(raw.get("k", 9))
    if k < 0:
        raise StudioError(f"exemplars.k={k} must be at least 0 (0 turns the exemplars off)")
    if k == 0:
        return None
    settings = ExemplarSettings(k, str(raw.get("split", "train")), str(raw.get("heldout", "val")),
                                int(raw.get("batch_size", 128)), int(raw.get("in_grid", 3)),
                                bool(raw.get("checks", True)), bool(raw.get("randomized", True)),
                                str(raw.get("randomize_to", "target")))
    for key in ("split", "heldout"):
        if getattr(settings, key) not in SPLITS:
            raise unknown(f"exemplars.{key}", getattr(settings, key), SPLITS)
    if settings.checks and settings.heldout == settings.split:
        raise StudioError(f"exemplars.heldout={settings.heldout} must differ from exemplars.split={settings.split}: "
                          "the natural reference has to be images the search did not see")
    if settings.batch_size < 1 or settings.in_grid < 0:
        raise StudioError(f"exemplars.batch_size={settings.batch_size} must be at least 1 and "
                          f"exemplars.in_grid={settings.in_grid} at least 0")
    return settings


def check_split_size(settings: ExemplarSettings | None, dm) -> None:
    """exemplars.k must fit the split searched (checked once the data is loaded, before any training)."""
    if settings is None:
        return
    count = len(dm.split(settings.split)[1])
    if settings.k > count:
        raise StudioError(f"exemplars.k={settings.k} is larger than the {settings.split} split ({count} images); "
                          f"set exemplars.k={count} or less")


def cascade_layer(settings: ExemplarSettings, objective_layer: str | None, layers: list[str],
                  weight_layers: list[str]) -> str | None:
    """Where the randomization cascade stops: exemplars.randomize_to resolved against the model's layers
    (None: the top weight layer only, what a class objective reads)."""
    name = settings.randomize_to
    if name == "target":
        return objective_layer
    if name == "all":
        return weight_layers[0] if weight_layers else None
    if name not in layers:
        raise StudioError(f"exemplars.randomize_to={name!r} is not {' or '.join(CASCADES)} or a layer of the model; "
                          f"layers: {', '.join(layers)}")
    return name
