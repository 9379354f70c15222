"""What to maximize: functions of a model's activations that compose with `+ - *` like maths.

An objective maps the captured activations `acts` to one value per batch element, shape (B,).
`acts` holds the layers the objective names (the net's own module names, e.g. "conv2", "layer2.1"),
plus "image" (the untransformed images B×C×H×W in [0, 1]), "input" (what the model saw, after
the robustness transforms) and "logits" (the model's output).

Targeted objectives are batch-aware: `channel("conv2", [0, 1, 2])` has 3 targets, and in a batch of
B = 3·S images element b aims at target b // S (S seeds per target, target-major), so a whole layer
is one optimization. An objective with one target applies it to every element.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from studio.errors import StudioError

IMAGE, INPUT, LOGITS = "image", "input", "logits"
NOT_LAYERS = frozenset({IMAGE, INPUT})  # captured by render itself, not by a forward hook


class Objective:
    """fn(acts) -> (B,) values, with the layers it reads, its target labels and its input checks."""

    def __init__(self, fn: Callable[[dict], torch.Tensor], layers: Iterable[str] = (),
                 targets: Sequence[str] = (), classes: Sequence[int] | None = None,
                 checks: Sequence[Callable[[dict], None]] = (), name: str = "objective"):
        self.fn = fn
        self.layers = frozenset(layers)
        self.targets = tuple(targets)  # one label per target, e.g. "conv2:7"; () when untargeted
        self.classes = tuple(classes) if classes is not None else None  # class per target (class objectives)
        self.checks = tuple(checks)
        self.name = name

    def __call__(self, acts: dict) -> torch.Tensor:
        return self.fn(acts)

    @property
    def size(self) -> int:
        """How many distinct targets one batch holds (1 for untargeted objectives)."""
        return max(len(self.targets), 1)

    @property
    def model_layers(self) -> frozenset[str]:
        """Names the model's forward pass must produce (layers and maybe "logits")."""
        return self.layers - NOT_LAYERS

    def check(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Raise a one-line StudioError if a target does not exist in these per-layer shapes (no batch)."""
        for check in self.checks:
            check(shapes)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    # --- algebra -----------------------------------------------------------------------------
    def _combine(self, other, op, symbol: str, reverse: bool = False) -> "Objective":
        if isinstance(other, (int, float)):
            name = f"{other} {symbol} {self.name}" if reverse else f"{self.name} {symbol} {other}"
            fn = (lambda acts: op(other, self(acts))) if reverse else (lambda acts: op(self(acts), other))
            return Objective(fn, self.layers, self.targets, self.classes, self.checks, name)
        if not isinstance(other, Objective):
            return NotImplemented
        if self.targets and other.targets and len(self.targets) != len(other.targets) \
                and 1 not in (len(self.targets), len(other.targets)):
            raise StudioError(f"cannot combine objectives with {len(self.targets)} and {len(other.targets)} "
                              "targets; use the same number of targets (or one)")
        targets = self.targets if len(self.targets) >= len(other.targets) else other.targets
        classes = self.classes if self.classes is not None else other.classes
        return Objective(lambda acts: op(self(acts), other(acts)), self.layers | other.layers, targets,
                         classes, self.checks + other.checks, f"{self.name} {symbol} {other.name}")

    def __add__(self, other):
        return self._combine(other, lambda a, b: a + b, "+")

    def __radd__(self, other):
        return self._combine(other, lambda a, b: a + b, "+", reverse=True)

    def __sub__(self, other):
        return self._combine(other, lambda a, b: a - b, "-")

    def __rsub__(self, other):
        return self._combine(other, lambda a, b: a - b, "-", reverse=True)

    def __mul__(self, other):
        return self._combine(other, lambda a, b: a * b, "*")

    def __rmul__(self, other):
        return self._combine(other, lambda a, b: a * b, "*", reverse=True)

    def __truediv__(self, other):
        return self._combine(other, lambda a, b: a / b, "/")

    def __neg__(self):
        return -1 * self


# --- helpers -----------------------------------------------------------------------------------
def _indices(n) -> list[int]:
    if isinstance(n, torch.Tensor):
        n = n.tolist()
    return [int(n)] if isinstance(n, (int,)) or not isinstance(n, Sequence) else [int(i) for i in n]


def per_element(index: torch.Tensor, batch: int) -> torch.Tensor:
    """Target index (T,) -> per-element index (B,) for B = T·S, target-major."""
    targets = index.shape[0]
    if batch % targets:
        raise StudioError(f"a batch of {batch} images cannot be split evenly among {targets} targets")
    return index.repeat_interleave(batch // targets) if targets > 1 else index.expand(batch)


class _Index:
    """A list of target indices, moved to each device once (not every step)."""

    def __init__(self, values: list[int]):
        self.values = values
        self._on: dict[torch.device, torch.Tensor] = {}

    def __call__(self, batch: int, device: torch.device) -> torch.Tensor:
        if device not in self._on:
            self._on[device] = torch.tensor(self.values, dtype=torch.long, device=device)
        return per_element(self._on[device], batch)


def _select(a: torch.Tensor, index: _Index) -> torch.Tensor:
    """a[b, index_b] for every element b: (B, C, ...) -> (B, ...)."""
    b = a.shape[0]
    rows = torch.arange(b, device=a.device)
    return a[rows, index(b, a.device)].float()


def _spatial_mean(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1) if x.ndim > 1 else x


def _check_layer(layer: str):
    def check(shapes):
        if layer not in shapes:
            raise StudioError(f"layer {layer!r} produced no tensor output; choose another layer")
    return check


def _check_range(layer: str, indices: list[int], what: str):
    def check(shapes):
        _check_layer(layer)(shapes)
        count = shapes[layer][0] if shapes[layer] else 0
        bad = [i for i in indices if not 0 <= i < count]
        if bad:
            where = "the model" if layer == LOGITS else f"layer {layer!r}"
            noun = "classes" if layer == LOGITS else f"{what}s"
            raise StudioError(f"{what} {bad[0]} is out of range: {where} has {count} {noun} (0..{count - 1})")
    return check


# --- objectives --------------------------------------------------------------------------------
def channel(layer: str, n) -> Objective:
    """Mean activation of channel n of `layer` over space (the source's Σ_ij a_ij, divided by H·W).

    `n` is an int or a list of ints (one target each). Works on conv maps (B,C,H,W) and on
    fully-connected outputs (B,C)."""
    index = _Index(_indices(n))
    return Objective(lambda acts: _spatial_mean(_select(acts[layer], index)), {layer},
                     [f"{layer}:{i}" for i in index.values], None,
                     [_check_range(layer, index.values, "channel")], f"channel({layer}, {n})")


def neuron(layer: str, n, x: int | None = None, y: int | None = None) -> Objective:
    """Activation of channel n at one position (x, y) of `layer`; the centre by default."""
    index = _Index(_indices(n))

    def fn(acts):
        a = _select(acts[layer], index)  # (B, H, W)
        if a.ndim < 3:
            raise StudioError(f"neuron needs a layer with a spatial map; {layer!r} has shape "
                              f"{tuple(acts[layer].shape[1:])}")
        h, w = a.shape[-2:]
        yy = h // 2 if y is None else y
        xx = w // 2 if x is None else x
        if not (0 <= yy < h and 0 <= xx < w):
            raise StudioError(f"neuron position (x={xx}, y={yy}) is outside {layer!r}'s {h}x{w} map")
        return a[:, yy, xx]

    return Objective(fn, {layer}, [f"{layer}:{i}" for i in index.values], None,
                     [_check_range(layer, index.values, "channel")], f"neuron({layer}, {n})")


def class_(n, log_softmax: bool = False) -> Objective:
    """The model's logit y_n (the source's argmax_X y_i), or its log-softmax (pushes other classes down)."""
    index = _Index(_indices(n))

    def fn(acts):
        logits = acts[LOGITS].float()
        if log_softmax:
            logits = logits.log_softmax(1)
        return _select(logits, index)

    return Objective(fn, {LOGITS}, [f"class:{i}" for i in index.values], index.values,
                     [_check_range(LOGITS, index.values, "class")], f"class({n})")


def deepdream(layer: str) -> Objective:
    """DeepDream: mean squared activation of the whole layer (amplify whatever it sees)."""
    return Objective(lambda acts: acts[layer].float().pow(2).flatten(1).mean(1), {layer}, [f"layer:{layer}"],
                     None, [_check_layer(layer)], f"deepdream({layer})")


def direction(layer: str, vector, cossim_pow: float = 0.0) -> Objective:
    """Mean over space of <a_ij, v>, a_ij the layer's channel vector at (i, j); v of length C.

    A (T, C) matrix gives T targets (one direction each). cossim_pow > 0 multiplies by
    cos(a_ij, v)^pow, rewarding alignment over magnitude (as Lucid does)."""
    v = torch.as_tensor(vector, dtype=torch.float32)
    v = v[None] if v.ndim == 1 else v
    count = v.shape[1]
    index = _Index(list(range(v.shape[0])))
    cache: dict[torch.device, torch.Tensor] = {}

    def fn(acts):
        a = acts[layer].float()
        if a.shape[1] != count:
            raise StudioError(f"direction has {count} values but layer {layer!r} has {a.shape[1]} channels")
        vec = cache.setdefault(a.device, v.to(a.device))[index(a.shape[0], a.device)]  # (B, C)
        vec = vec.view(*vec.shape, *([1] * (a.ndim - 2)))
        dot = (a * vec).sum(1)
        if cossim_pow:
            cos = dot / (a.norm(dim=1) * vec.norm(dim=1) + 1e-8)
            dot = dot * cos.clamp_min(1e-2) ** cossim_pow
        return _spatial_mean(dot)

    def check(shapes):
        _check_layer(layer)(shapes)
        if shapes[layer][0] != count:
            raise StudioError(f"direction has {count} values but layer {layer!r} has {shapes[layer][0]} channels")

    labels = [f"direction:{layer}"] if v.shape[0] == 1 else [f"direction:{layer}:{i}" for i in range(v.shape[0])]
    return Objective(fn, {layer}, labels, None, [check], f"direction({layer})")


def diversity(layer: str, groups: int = 1, relative_to: Objective | None = None) -> Objective:
    """Minus the mean cosine similarity of an element's Gram matrix to those of its group's others.

    Higher is more diverse, so add it: `obj + 0.5 * diversity("conv2", relative_to=obj)` (Lucid
    subtracts its similarity; same thing). The batch is cut into `groups` consecutive groups (one
    per target when several targets share a batch), so seeds compete only with their own target.

    relative_to: the objective it is added to. Then each element's term is scaled so that its gradient
    (at the compared layer, or at the model's input when the objective does not read that layer) has
    about the norm of that objective's, and a weight means about the same on any model: with a fixed
    scale, weight 2 made conv2's renders of one trained small_cnn diverse and left another's (with 2.4x
    stronger activations) alike. The value stays the plain similarity either way."""

    def similarity(acts):
        a = acts[layer].float()
        b, c = a.shape[:2]
        if b % groups:
            raise StudioError(f"diversity: a batch of {b} cannot be cut into {groups} groups")
        flat = a.reshape(b, c, -1)
        gram = F.normalize((flat @ flat.transpose(1, 2)).reshape(b, -1), dim=1)
        gram = gram.view(groups, b // groups, -1)
        sims = gram @ gram.transpose(1, 2)  # (groups, S, S) cosine similarities
        size = b // groups
        if size == 1:
            return a.new_zeros(b)
        others = (sims.sum(2) - sims.diagonal(dim1=1, dim2=2)) / (size - 1)
        return -others.reshape(b)

    def gradient_norms(value, acts, at: str):
        """Per element: the norm of the gradient of `value` and of relative_to at acts[at] (None: unused)."""
        grads = [torch.autograd.grad(v.sum(), acts[at], retain_graph=True, allow_unused=True)[0]
                 for v in (value, relative_to(acts).float())]
        return [None if g is None else g.flatten(1).norm(dim=1) for g in grads]

    def balanced(acts):
        value = similarity(acts)
        if not (torch.is_grad_enabled() and value.requires_grad):
            return value  # final metrics, under no_grad: nothing to balance
        # where both gradients exist: the compared layer when the objective reads it too, else the input
        own, main = gradient_norms(value, acts, layer)
        if main is None and acts.get(INPUT) is not None and acts[INPUT].requires_grad:
            own, main = gradient_norms(value, acts, INPUT)
        if main is None:
            return value
        scale = (main / own.clamp_min(1e-12)).detach()
        return value * scale + (value * (1 - scale)).detach()  # the value of `value`, `scale` times its gradient

    if relative_to is None:
        return Objective(similarity, {layer}, (), None, [_check_layer(layer)], f"diversity({layer})")
    return Objective(balanced, {layer} | relative_to.layers, (), None, [_check_layer(layer), *relative_to.checks],
                     f"diversity({layer}, relative to {relative_to.name})")


# --- targets -----------------------------------------------------------------------------------
def resolve_indices(spec, count: int, what: str, layer: str) -> list[int]:
    """`all` | int | list of ints -> validated indices (a one-line error names the valid range)."""
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return list(range(count))
        try:
            values = [int(s) for s in spec.replace(" ", "").split(",") if s]
        except ValueError:
            raise StudioError(f"{what}s={spec!r} is not 'all', an int or a list of ints") from None
    else:
        try:
            values = _indices(spec)
        except (TypeError, ValueError):
            raise StudioError(f"{what}s={spec!r} is not 'all', an int or a list of ints") from None
    if not values:
        raise StudioError(f"{what}s is empty; give 'all', an int or a list of ints")
    _check_range(layer, values, what)({layer: (count,)})
    return values
