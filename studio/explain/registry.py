"""The method registry: every explanation method registered once, with all that the layers above need.

Adding a method takes:
1. a class in an engine file of studio/explain/ built as `cls(model, **options)` (options include
   `batch_size` and `seed`, kept as `.seed`: stability asks for seed + 1, seed + 2, ... per call) that
   answers `attribute(x, target, seed=None)` (maps) and `attribution(x, target, segments=None, seed=None)`
   (an `Attribution`: N×1×H×W maps + the metrics named in its `MethodSpec.metrics`);
2. one `register(MethodSpec(...))` call next to it (a new engine file also gets one import line in
   studio/explain/__init__.py: registering happens on import, and the import order is the registry's);
3. its settings block in conf/explain.yaml, named by `MethodSpec.block`.
Nothing else: the config adapter, the comparison, the W&B table, the captions and the printed summary
read the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from studio.errors import lookup


@dataclass
class Attribution:
    """What one method says about a batch: its maps and the metrics only it can report."""

    maps: torch.Tensor                                              # N×1×H×W (positive = for the target)
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # its extra metrics, N values each
    # k -> N×k indices of its top positive segments (-1: none), for methods that explain in segments;
    # they are judged on segments (the mark found), the others on their top pixels
    top_segments: Callable[[int], torch.Tensor] | None = None


@dataclass(frozen=True)
class Column:
    """One column of the printed summary: the mean of `metric`, headed `header`, `width` characters."""

    metric: str
    header: str
    width: int


def no_caption(scores: dict) -> list[str]:
    return []


def same_options(options: dict) -> dict:
    return options


def any_model(model) -> bool:
    return True


@dataclass(frozen=True)
class MethodSpec:
    """One explanation method and everything the layers above need to know about it."""

    name: str
    cls: type                        # cls(model, **options): the method
    block: str | None = None         # its block of the `explain` config (None: it has no settings of its own)
    config_keys: dict[str, str] = field(default_factory=dict)  # constructor option <- key of `explain` itself
    layer_options: tuple[str, ...] = ()  # its options that name a layer of model.net (checked before training)
    from_block: Callable[[dict], dict] = same_options  # its block (plain values) -> constructor options
    metrics: tuple[str, ...] = ()    # per-image metrics it reports beyond the common ones
    columns: tuple[Column, ...] = ()  # printed summary columns for those metrics
    caption: Callable[[dict], list[str]] = no_caption  # caption parts drawn from its rounded scores
    stochastic: bool = False         # its maps change with the seed: stability across seeds is measured
    segmenter: bool = False          # its `segments(x)` (N×H×W) are what every map is compared on
    applies: Callable[[object], bool] = any_model  # can it explain this model? (method=all skips it if not)

    def build(self, model, **options):
        """The method for `model`; options: its constructor's keyword arguments."""
        return self.cls(model, **options)


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add `spec` to METHODS (a name registers once: a second one is a programming error)."""
    if spec.name in METHODS:
        raise ValueError(f"explanation method {spec.name!r} is registered twice")
    METHODS[spec.name] = spec
    return spec


def method_spec(name: str) -> MethodSpec:
    """METHODS[name]; an unknown name is one line naming the known ones."""
    return lookup(METHODS, "method", name)


def segmenter() -> MethodSpec:
    """The method whose superpixels every map is compared on (stability, the mark found)."""
    return next(spec for spec in METHODS.values() if spec.segmenter)


def heatmap(maps: torch.Tensor) -> torch.Tensor:
    """N×1×H×W: the channel sum of a map (signed: positive = evidence for the target)."""
    return maps.sum(1, keepdim=True) if maps.shape[1] != 1 else maps
