"""Regularizers: what makes a visualization look like an image rather than adversarial noise.

Two kinds, one registry (`REGULARIZERS`), each entry with a default weight:
- penalties, f(images) -> (B,), subtracted from the objective times their weight:
  l2 and tv are the source's R(X) (sum of squared pixels, squared image gradients), plus l1 and a
  high-frequency penalty. As objectives they compose: `channel("conv2", 7) - 1e-3 * l2()`.
- projections, applied to the images every `every` steps with strength `weight` (Yosinski et al.
  2015): gaussian blur (weight = sigma), pixel clipping by small norm or small contribution
  (weight = share of pixels reset), weight decay (weight = shrink per application).

Penalties are means over pixels (the source's sums divided by C·H·W), so one weight works at any
image size. Adding a regularizer is one registered function here plus one YAML in conf/regularizer/.

A regularizer config (conf/regularizer/<name>.yaml) maps term ids to {name, weight, every, options};
`name` defaults to the id. Terms may also be robustness transforms (transforms.TRANSFORMS: pad,
jitter, scale, rotate), applied in the order listed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch

from studio.blur import gaussian_blur
from studio.errors import StudioError, unknown
from studio.optvis.objectives import IMAGE, Objective
from studio.optvis.transforms import TRANSFORMS, Transform


@dataclass(frozen=True)
class Regularizer:
    kind: str  # "penalty" | "projection"
    fn: Callable
    default_weight: float
    needs_grad: bool = False  # projections that read d objective / d image


REGULARIZERS: dict[str, Regularizer] = {}


def register(name: str, kind: str, default_weight: float, needs_grad: bool = False):
    """Decorator: add a penalty fn(images, **options) -> (B,) or a projection
    fn(images, grad, weight, **options) -> images to the registry under `name`."""
    def add(fn):
        REGULARIZERS[name] = Regularizer(kind, fn, default_weight, needs_grad)
        return fn
    return add


# --- penalties: (B, C, H, W) in [0, 1] -> (B,) -------------------------------------------------
@register("l2", "penalty", 1.0)
def l2_penalty(images: torch.Tensor, center: float = 0.0) -> torch.Tensor:
    """Mean squared pixel (distance from `center`; 0 = black, the MNIST background)."""
    return (images - center).pow(2).flatten(1).mean(1)


@register("l1", "penalty", 1.0)
def l1_penalty(images: torch.Tensor, center: float = 0.0) -> torch.Tensor:
    """Mean absolute pixel (from `center`): favours sparse images."""
    return (images - center).abs().flatten(1).mean(1)


def gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along x and y, cropped to a common (H-1)×(W-1) grid."""
    dx = images[..., :-1, 1:] - images[..., :-1, :-1]
    dy = images[..., 1:, :-1] - images[..., :-1, :-1]
    return dx, dy


@register("tv", "penalty", 1.0)
def total_variation(images: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """Mean of (dx² + dy²)^(β/2): β=2 is the source's squared image gradient; β<2 keeps edges sharper."""
    dx, dy = gradients(images)
    squared = dx.pow(2) + dy.pow(2)
    if beta != 2.0:
        squared = (squared + 1e-8).pow(beta / 2)
    return squared.flatten(1).mean(1)


def _radii(height: int, width: int, device) -> torch.Tensor:
    fy = torch.fft.fftfreq(height, device=device)[:, None]
    fx = torch.fft.rfftfreq(width, device=device)[None, :]
    return (fx * fx + fy * fy).sqrt()


@register("hf", "penalty", 1.0)
def high_frequency(images: torch.Tensor, power: float = 2.0) -> torch.Tensor:
    """Spectral energy weighted by (f / f_max)^power: penalizes fine detail more than coarse shapes."""
    h, w = images.shape[-2:]
    radii = _radii(h, w, images.device)
    weights = (radii / radii.max()).pow(power)
    energy = torch.fft.rfft2(images.float(), norm="ortho").abs().pow(2)
    return (energy * weights).flatten(1).mean(1)


# --- projections: (images, grad, weight) -> images, applied every `every` steps ------------------
@register("blur", "projection", 0.5)
def blur_projection(images: torch.Tensor, grad, weight: float) -> torch.Tensor:
    """Gaussian blur with sigma = weight (pixels)."""
    return gaussian_blur(images, weight) if weight > 0 else images


@register("weight_decay", "projection", 0.01)
def decay_towards(images: torch.Tensor, grad, weight: float, center: float = 0.0) -> torch.Tensor:
    """x <- center + (1 - weight)(x - center): Yosinski's L2 decay as a step, not a penalty."""
    return center + (1 - weight) * (images - center)


def _reset_smallest(images: torch.Tensor, score: torch.Tensor, share: float, center: float) -> torch.Tensor:
    """Set the `share` of pixels (per image) with the smallest score (B, H, W) to `center`."""
    if share <= 0:
        return images
    threshold = torch.quantile(score.flatten(1).float(), min(share, 1.0), dim=1).view(-1, 1, 1)
    keep = (score > threshold).unsqueeze(1)
    return torch.where(keep, images, torch.full_like(images, center))


@register("clip_norm", "projection", 0.3)
def clip_by_norm(images: torch.Tensor, grad, weight: float, center: float = 0.0) -> torch.Tensor:
    """Reset the `weight` share of pixels whose norm (over channels, from `center`) is smallest."""
    return _reset_smallest(images, (images - center).norm(dim=1), weight, center)


@register("clip_contrib", "projection", 0.3, needs_grad=True)
def clip_by_contribution(images: torch.Tensor, grad, weight: float, center: float = 0.0) -> torch.Tensor:
    """Reset the `weight` share of pixels contributing least to the objective, |Σ_c (x - center)·∂obj/∂x|."""
    return _reset_smallest(images, ((images - center) * grad).sum(1).abs(), weight, center)


# --- building blocks for render ---------------------------------------------------------------
@dataclass
class Projection:
    """A projection with its strength and period: call it on images (and d objective / d images)."""

    name: str
    weight: float
    every: int = 1
    options: dict = field(default_factory=dict)

    @property
    def needs_grad(self) -> bool:
        return REGULARIZERS[self.name].needs_grad

    def __call__(self, images: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        return REGULARIZERS[self.name].fn(images, grad, self.weight, **self.options)


def penalty(name: str, **options) -> Objective:
    """A registered penalty as an objective over the untransformed images (unweighted)."""
    reg = REGULARIZERS.get(name)
    if reg is None or reg.kind != "penalty":
        raise unknown("penalty", name, sorted(n for n, r in REGULARIZERS.items() if r.kind == "penalty"))
    _check_options(name, reg.fn, options, skip=1)
    fn = reg.fn
    shown = ", ".join(f"{k}={v}" for k, v in options.items())
    return Objective(lambda acts: fn(acts[IMAGE], **options), {IMAGE}, name=f"{name}({shown})")


def l2(center: float = 0.0) -> Objective:
    return penalty("l2", center=center)


def l1(center: float = 0.0) -> Objective:
    return penalty("l1", center=center)


def tv(beta: float = 2.0) -> Objective:
    return penalty("tv", beta=beta)


def hf(power: float = 2.0) -> Objective:
    return penalty("hf", power=power)


def blur(sigma: float = 0.5, every: int = 4) -> Projection:
    return Projection("blur", sigma, every)


def clip_norm(share: float = 0.3, every: int = 8, center: float = 0.0) -> Projection:
    return Projection("clip_norm", share, every, {"center": center})


def clip_contrib(share: float = 0.3, every: int = 8, center: float = 0.0) -> Projection:
    return Projection("clip_contrib", share, every, {"center": center})


def weight_decay(rate: float = 0.01, every: int = 1, center: float = 0.0) -> Projection:
    return Projection("weight_decay", rate, every, {"center": center})


def _check_options(name: str, fn: Callable, options: Mapping, skip: int) -> None:
    known = list(inspect.signature(fn).parameters)[skip:]
    for key in options:
        if key not in known:
            listed = ", ".join(known) if known else "none"
            raise StudioError(f"regularizer {name!r} has no option {key!r}; its options: {listed}")


@dataclass
class Regularization:
    """A regularizer config, built: the weighted penalty, the projections and the transforms."""

    penalty: Objective | None = None
    projections: list[Projection] = field(default_factory=list)
    transforms: list[Transform] = field(default_factory=list)

    def as_list(self) -> list:
        """For `render(regularizers=...)`."""
        return ([self.penalty] if self.penalty is not None else []) + list(self.projections)


def known_names() -> list[str]:
    return sorted({*REGULARIZERS, *TRANSFORMS})


def _terms(spec) -> list[tuple[str, dict]]:
    if spec is None:
        return []
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if value is not None and not isinstance(value, Mapping):
                raise StudioError(f"regularizer term {key!r}: {value!r} is not a mapping of its settings "
                                  "(weight, every, options)")
        return [(str(key), dict(value or {})) for key, value in spec.items()]
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        out = []
        for term in spec:
            if not isinstance(term, Mapping) or "name" not in term:
                raise StudioError(f"regularizer term {term!r} needs a name; choose from: {', '.join(known_names())}")
            out.append((str(term["name"]), dict(term)))
        return out
    raise StudioError(f"regularizer config {spec!r} is neither a mapping of terms (id -> settings) nor a list of "
                      "terms; see conf/regularizer/")


def regularization(spec: Mapping | Sequence | None) -> Regularization:
    """Terms as a mapping (term id -> {name, weight, every, options}: conf/regularizer/<name>.yaml's shape)
    or a list of terms ({name, ...}), built: `render(transforms=r.transforms, regularizers=r.as_list())`."""
    result = Regularization()
    penalties: list[Objective] = []
    for key, term in _terms(spec):
        name = str(term.pop("name", key))
        if name in TRANSFORMS:
            if "weight" in term or "every" in term:
                raise StudioError(f"transform {name!r} takes no weight or every; its options: "
                                  f"{', '.join(inspect.signature(TRANSFORMS[name]).parameters)}")
            _check_options(name, TRANSFORMS[name], term, skip=0)
            try:
                result.transforms.append(TRANSFORMS[name](**term))
            except (TypeError, ValueError) as e:
                raise StudioError(f"transform {name!r} with {term}: {e}") from None
            continue
        if name not in REGULARIZERS:
            raise unknown("regularizer", name, known_names())
        reg = REGULARIZERS[name]
        weight = float(term.pop("weight", reg.default_weight))
        if reg.kind == "penalty":
            if "every" in term:
                raise StudioError(f"penalty {name!r} applies every step; remove its 'every'")
            if weight:
                penalties.append(weight * penalty(name, **term))
            continue
        every = int(term.pop("every", 1))
        if every < 1:
            raise StudioError(f"regularizer {name!r}: every={every} must be at least 1")
        _check_options(name, reg.fn, term, skip=3)
        if weight:
            result.projections.append(Projection(name, weight, every, term))
    if penalties:
        total = penalties[0]
        for p in penalties[1:]:
            total = total + p
        result.penalty = total
    return result
