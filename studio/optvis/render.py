"""The optimization loop: one batch holds every (target, seed) pair of an objective.

    rendering = render(model, channel("conv2", range(12)) - 1e-3 * l2(), param=fft(28, channels=1),
                       steps=256, seeds=[0, 1])
    rendering.images        # 24×1×28×28 in [0, 1]; element b = (target b // 2, seed b % 2)
    rendering.history       # {"objective": steps×24, "total": steps×24}

The forward pass stops right after the deepest layer the objective reads (a forward hook raises once
every needed layer has produced its output as often as in a full pass), so later layers cost nothing.
Weights are frozen (eval mode, no weight gradients) and restored afterwards. On CUDA the forward runs
under bf16 autocast. A target whose objective turns NaN/inf stops there (its gradient is zeroed) and
is reported in `rendering.failed`; the others go on.
"""

from __future__ import annotations

import itertools
import time
import zlib
from contextlib import nullcontext
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Sequence

import torch
from torch import nn

from studio.errors import StudioError, is_number, lookup
from studio.modes import autocast, eval_mode
from studio.optvis.natural import RealManifold, check_edge, check_images, natural_choice
from studio.optvis.objectives import IMAGE, INPUT, LOGITS, Objective
from studio.optvis.params import ParamSpec, pixel
from studio.optvis.regularizers import Projection
from studio.optvis.transforms import compose
from studio.progress import bar

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop,
}


@dataclass
class Rendering:
    """What `render` returns; element b of every tensor is (targets[b], seeds[b])."""

    images: torch.Tensor  # B×C×H×W in [0, 1], final, on the CPU
    start_images: torch.Tensor  # B×C×H×W, the starting images
    targets: list[str]
    seeds: list[int]
    objective: torch.Tensor  # (B,) objective of the final images (untransformed)
    start: torch.Tensor  # (B,) objective of the starting images
    target_prob: torch.Tensor | None  # (B,) softmax of the target class, for class objectives
    history: dict[str, torch.Tensor]  # "objective", "total" (objective minus penalties): steps × B
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)  # step -> B×C×H×W
    failed: dict[int, str] = field(default_factory=dict)  # element -> why it stopped
    seconds: float = 0.0  # the start (probe, a param's choice of start) and the optimization

    @property
    def activation_gain(self) -> torch.Tensor:
        """Final minus starting objective, per element."""
        return self.objective - self.start

    def metrics(self, b: int) -> dict:
        """The manifest's per-image metrics of element b."""
        out = {"objective": float(self.objective[b]), "activation_gain": float(self.activation_gain[b])}
        if self.target_prob is not None:
            out["target_prob"] = float(self.target_prob[b])
        return out

    @property
    def succeeded(self) -> list[int]:
        return [b for b in range(len(self.targets)) if b not in self.failed]


def concat(renderings: Sequence[Rendering]) -> Rendering:
    """Renderings of consecutive target chunks as one (histories joined along the batch)."""
    if len(renderings) == 1:
        return renderings[0]
    offsets = [0]
    for r in renderings:
        offsets.append(offsets[-1] + len(r.targets))
    cat = lambda get: torch.cat([get(r) for r in renderings])  # noqa: E731
    probs = None if renderings[0].target_prob is None else cat(lambda r: r.target_prob)
    steps = sorted(set.intersection(*(set(r.snapshots) for r in renderings)))
    return Rendering(
        cat(lambda r: r.images), cat(lambda r: r.start_images), sum((r.targets for r in renderings), []),
        sum((r.seeds for r in renderings), []), cat(lambda r: r.objective), cat(lambda r: r.start), probs,
        {k: torch.cat([r.history[k] for r in renderings], dim=1) for k in renderings[0].history},
        {s: torch.cat([r.snapshots[s] for r in renderings]) for s in steps},
        {offsets[i] + b: why for i, r in enumerate(renderings) for b, why in r.failed.items()},
        sum(r.seconds for r in renderings),
    )


class _Stop(Exception):
    """Raised by the hook of the last needed layer: the rest of the forward pass is not needed."""


def _net(model: nn.Module) -> nn.Module:
    return getattr(model, "net", model)  # a studio Classifier names layers inside .net


def _modules(model: nn.Module, names) -> dict[str, nn.Module]:
    modules = dict(_net(model).named_modules())
    modules.pop("", None)
    return {name: lookup(modules, "layer", name) for name in sorted(names)}


class _Capture:
    """Forward hooks recording the named layers' outputs; with `limits`, stop after the last of them."""

    def __init__(self, modules: dict[str, nn.Module], limits: dict[str, int] | None = None):
        self.limits = limits
        self.acts: dict[str, torch.Tensor] = {}
        self.calls = dict.fromkeys(modules, 0)
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(_module, _inputs, output):
            self.acts[name] = output
            self.calls[name] += 1
            if self.limits is not None and all(self.calls[n] >= self.limits[n] for n in self.limits):
                raise _Stop
        return hook

    def run(self, model: nn.Module, x: torch.Tensor) -> dict:
        self.acts, self.calls = {}, dict.fromkeys(self.calls, 0)
        try:
            self.acts[LOGITS] = model(x)
        except _Stop:
            pass
        return self.acts

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _channels_last(model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """Lay 4-D weights out channels-last (NHWC convolutions, pooling and norms run 2-3x faster with
    oneDNN on CPU and with cuDNN); returns (parameter, original data) pairs for `_restore`."""
    changed = []
    for p in model.parameters():
        if p.ndim == 4:
            relaid = p.data.to(memory_format=torch.channels_last)  # restrides 1-channel weights too
            if relaid.stride() != p.data.stride():
                changed.append((p, p.data))
                p.data = relaid
    return changed


def _restore(changed: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    for p, original in changed:  # frozen weights: the original tensors are still exact
        p.data = original


def _model_device(model: nn.Module) -> torch.device:
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _model_channels(model: nn.Module) -> int:
    mean = getattr(model, "mean", None)
    return int(mean.numel()) if torch.is_tensor(mean) else 3


def _split(regularizers) -> tuple[Objective | None, list[Projection]]:
    penalty, projections = None, []
    for reg in regularizers:
        if isinstance(reg, Projection):
            projections.append(reg)
        elif isinstance(reg, Objective):
            penalty = reg if penalty is None else penalty + reg
        else:
            raise StudioError(f"regularizer {reg!r} is neither a penalty objective nor a projection; give penalties "
                              "such as 1e-3 * l2() and projections such as blur()")
    return penalty, projections


def _optimizer(optimizer, params, lr: float, options: dict | None) -> torch.optim.Optimizer:
    if callable(optimizer) and not isinstance(optimizer, str):
        return optimizer(params, lr)
    return lookup(OPTIMIZERS, "optimizer", str(optimizer))(params, lr=lr, **(options or {}))


@torch.no_grad()
def _probe(model, modules: dict[str, nn.Module], images: torch.Tensor, amp) -> tuple[dict, dict, dict]:
    """One full pass: (activations, per-layer output shapes without batch, calls per layer)."""
    capture = _Capture(modules)
    try:
        with amp:
            acts = capture.run(model, images)
    except (RuntimeError, ValueError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StudioError(f"the model cannot take images of shape {tuple(images.shape[1:])}: {message}") from None
    finally:
        capture.close()
    shapes = {k: tuple(v.shape[1:]) for k, v in acts.items() if torch.is_tensor(v)}
    return acts, shapes, dict(capture.calls)


def _probe_layout(model, modules, images: torch.Tensor, amp, memory_format: str):
    """_probe in channels-last when asked ("channels_last") or when it works ("auto"), else contiguous.

    Returns (acts, shapes, calls, layout, relaid weights). A model that reshapes with .view() fails
    channels-last; "auto" then quietly runs it contiguous."""
    if memory_format not in ("auto", "channels_last", "contiguous"):
        raise StudioError(f"unknown memory_format {memory_format!r}; choose from: auto, channels_last, contiguous")
    if memory_format != "contiguous" and images.ndim == 4:
        relaid = _channels_last(model)
        try:
            return (*_probe(model, modules, images.contiguous(memory_format=torch.channels_last), amp),
                    torch.channels_last, relaid)
        except StudioError as e:
            _restore(relaid)
            if memory_format == "channels_last":
                raise StudioError(f"memory_format=channels_last: {e}; memory_format=auto runs such a model "
                                  "contiguous") from None
    return (*_probe(model, modules, images, amp), torch.contiguous_format, [])


def _evaluate(objective: Objective, model, modules, images: torch.Tensor, amp,
              layout) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective values, logits) of untransformed images, in one full pass."""
    acts, _, _ = _probe(model, modules, images.contiguous(memory_format=layout), amp)
    acts[IMAGE] = acts[INPUT] = images
    return objective(acts).float(), acts[LOGITS]


@dataclass
class RenderOptions:
    """The loop settings of `render` (everything but what is optimized).

    optimizer: a name in OPTIMIZERS or a callable (params, lr) -> torch.optim.Optimizer.
    thresholds: steps at which to keep a snapshot of the images.
    device: where to render (the model is moved there); None: the model's device.
    precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32", "bf16" or "fp16" (studio.modes).
    stop_early: end each forward pass after the deepest layer the objective reads.
    memory_format: "auto" (channels-last when the model allows it), "channels_last" or "contiguous".
    retry_below: class objectives with a parameterization of ranked starts (param=latent or param=guided with
    start_candidates > 1): an element whose target probability ends below this renders again from its
    next-best start, up to start_candidates - 1 times, keeping the render the model gives the higher
    probability (a render stuck in another class's region of z is restarted, not the others; None: off).
    natural_edge, natural_images: class objectives with ranked starts: every element renders from each start, and
    a render outside the k-NN manifold of `natural_images` (real images N×C×H×W) in the model's own convolution
    statistics, beyond this edge (1.0: the manifold's edge), shows another start's render that the model
    recognizes as well and that lies nearer the real images, where that brings the set nearer them
    (studio/optvis/natural.py; start_candidates times the render's cost; None: off).
    """

    steps: int = 256
    lr: float = 0.1
    optimizer: str | Callable = "adam"
    optimizer_options: dict | None = None
    seeds: Sequence[int] = (0,)
    thresholds: Sequence[int] = ()
    device: str | torch.device | None = None
    precision: str = "auto"
    progress: bool = False
    stop_early: bool = True
    memory_format: str = "auto"
    desc: str | None = None
    retry_below: float | None = None
    natural_edge: float | None = None
    natural_images: torch.Tensor | None = None

    def with_overrides(self, **overrides) -> "RenderOptions":
        """A copy with some settings changed; an unknown setting names the valid ones."""
        known = [f.name for f in fields(self)]
        for key in overrides:
            if key not in known:
                raise StudioError(f"render has no option {key!r}; its options: {', '.join(known)}")
        return replace(self, **overrides)

    def check(self) -> None:
        if not list(self.seeds):
            raise StudioError("render needs at least one seed")
        if self.steps < 0:
            raise StudioError(f"steps={self.steps} must be at least 0")
        bad = [t for t in self.thresholds if not 1 <= int(t) <= self.steps]
        if bad:
            raise StudioError(f"threshold {bad[0]} is outside the {self.steps} optimization steps (1..{self.steps})")
        retry = self.retry_below  # a probability: not a word, not a bool (True would pass as 1)
        if retry is not None and not (is_number(retry) and 0 < retry <= 1):
            raise StudioError(f"retry_below={retry} must be a target probability in (0, 1], or null "
                              "for no retries")
        check_edge(self.natural_edge)


@dataclass
class _Problem:
    """What one render optimizes, laid out for its batch: element b is (targets[b], element_seeds[b])."""

    objective: Objective
    total: Objective  # the objective minus the penalties
    penalty: Objective | None
    projections: list[Projection]
    modules: dict[str, nn.Module]
    element_seeds: list[int]
    targets: list[str]

    @property
    def batch(self) -> int:
        return len(self.targets)

    @property
    def needs_model(self) -> bool:
        return bool(self.total.model_layers)


def _problem(model: nn.Module, objective: Objective, regularizers: Sequence, seeds: list[int]) -> _Problem:
    penalty, projections = _split(regularizers)
    total = objective if penalty is None else objective - penalty
    modules = _modules(model, total.model_layers - {LOGITS})
    n_seeds = len(seeds)
    batch = objective.size * n_seeds
    labels = list(objective.targets) or [objective.name]
    return _Problem(objective, total, penalty, projections, modules, [seeds[b % n_seeds] for b in range(batch)],
                    [labels[b // n_seeds] for b in range(batch)])


def _score(problem: _Problem, model, images: torch.Tensor, amp,
           layout=torch.contiguous_format) -> tuple[torch.Tensor, torch.Tensor | None]:
    """((B,) objective values, logits or None) of untransformed images, without the loop's hooks (candidate
    starts, the final images)."""
    if not problem.needs_model:
        return problem.objective({IMAGE: images, INPUT: images}).float(), None
    return _evaluate(problem.objective, model, problem.modules, images, amp, layout)


def _target_prob(problem: _Problem, logits: torch.Tensor | None) -> torch.Tensor | None:
    """(B,) softmax probability of each element's target class, for class objectives (else None)."""
    classes = problem.objective.classes
    if classes is None or logits is None:
        return None
    batch = problem.batch
    targets = torch.tensor(classes, device=logits.device).repeat_interleave(batch // len(classes))
    return logits.detach().float().softmax(1)[torch.arange(batch, device=logits.device), targets]


@dataclass
class _Loop:
    """One optimization's state: the image, how the model runs, and what has been recorded so far."""

    image: object  # a built Param (params.py)
    transform: Callable
    optimizer: torch.optim.Optimizer
    capture: _Capture
    amp: object
    layout: torch.memory_format
    history: dict[str, torch.Tensor]  # "objective", "total": steps × B
    alive: torch.Tensor  # (B,) bool: the element's objective is still finite
    died_at: torch.Tensor  # (B,) the step an element stopped at
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)


def _build_image(param: ParamSpec, problem: _Problem, device: torch.device):
    image = param.build(problem.element_seeds, device)
    if problem.projections and not image.can_load:
        names = ", ".join(sorted({p.name for p in problem.projections}))
        raise StudioError(f"regularizer term(s) {names} edit pixels directly, which param={param.name} cannot "
                          "take; use penalty terms (l2, l1, tv, hf) and transforms with it")
    return image


def _start(model: nn.Module, problem: _Problem, image, transforms: Sequence, options: RenderOptions,
           device: torch.device, relaid: list) -> tuple[_Loop, torch.Tensor, torch.Tensor]:
    """Probe the model on the starting images (checking every target), then set up the loop.
    Returns (loop, start images, their objective); `relaid` gets the weights laid out channels-last, for
    the caller to restore whatever happens next."""
    amp = autocast(device, options.precision)
    start_images = image().detach().clone()
    acts, shapes, calls, layout = {}, {}, {}, torch.contiguous_format
    if problem.needs_model:
        acts, shapes, calls, layout, changed = _probe_layout(model, problem.modules, start_images, amp,
                                                             options.memory_format)
        relaid.extend(changed)
    problem.total.check(shapes)
    acts[IMAGE] = acts[INPUT] = start_images
    start = problem.objective(acts).float()
    if image.prepare(lambda x: _score(problem, model, x, amp)[0]):  # e.g. param=guided picked its start by the objective
        start_images = image().detach().clone()
        start = _score(problem, model, start_images, amp)[0]
    optimizer = _optimizer(options.optimizer, image.params, options.lr, options.optimizer_options)
    stop = options.stop_early and LOGITS not in problem.total.model_layers
    capture = _Capture(problem.modules, {n: max(c, 1) for n, c in calls.items()} if stop and problem.modules else None)
    batch = problem.batch
    history = {k: torch.empty(options.steps, batch, device=device) for k in ("objective", "total")}
    loop = _Loop(image, compose(list(transforms)), optimizer, capture, amp, layout, history,
                 torch.ones(batch, dtype=torch.bool, device=device), torch.zeros(batch, dtype=torch.long, device=device))
    return loop, start_images, start


def _step(loop: _Loop, problem: _Problem, model: nn.Module, step: int, needs_grad: bool) -> torch.Tensor:
    """One step for every element: forward, backward (stopped elements masked out), projections.
    Returns the objective values (B,) before the step."""
    loop.optimizer.zero_grad(set_to_none=True)
    images = loop.image()
    if needs_grad:
        images.retain_grad()
    x = loop.transform(images)
    acts = {}
    if problem.needs_model:
        with loop.amp:
            acts = loop.capture.run(model, x.contiguous(memory_format=loop.layout))
    acts[IMAGE], acts[INPUT] = images, x
    values = problem.objective(acts).float()
    loop.image.observe(_target_prob(problem, acts.get(LOGITS)))  # e.g. param=guided stops guiding a recognized image
    totals = values if problem.penalty is None else values - problem.penalty(acts).float()
    own = loop.image.penalty()  # e.g. a latent prior: a term of the parameterization itself
    if own is not None:
        totals = totals - own.float()
    finite = torch.isfinite(totals)
    loop.died_at = torch.where(loop.alive & ~finite, step, loop.died_at)
    loop.alive = loop.alive & finite
    (-torch.where(loop.alive, totals, 0.0).sum()).backward()
    for p in loop.image.params:  # a stopped element keeps its image; NaN must not leak into Adam
        if p.grad is not None:
            p.grad = torch.where(loop.alive.view(-1, *([1] * (p.ndim - 1))), p.grad, 0.0)
    loop.optimizer.step()
    loop.image.constrain()
    _project(loop, problem, images, step)
    loop.history["objective"][step - 1] = values.detach()
    loop.history["total"][step - 1] = totals.detach()
    return values


def _project(loop: _Loop, problem: _Problem, images: torch.Tensor, step: int) -> None:
    """The projections due at this step, applied to the images of the elements still alive."""
    due = [p for p in problem.projections if step % p.every == 0]
    if not due:
        return
    with torch.no_grad():
        edited = loop.image()
        for proj in due:
            edited = proj(edited, images.grad if proj.needs_grad else None)
        loop.image.load(torch.where(loop.alive.view(problem.batch, 1, 1, 1), edited, loop.image()))


def _optimize(loop: _Loop, problem: _Problem, model: nn.Module, options: RenderOptions,
              device: torch.device) -> float:
    """Every step, with the random transforms drawn from the elements' seeds; returns the seconds taken."""
    needs_grad = any(p.needs_grad for p in problem.projections)
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    steps = bar(range(1, options.steps + 1), enabled=options.progress, desc=options.desc, leave=False)
    began = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(zlib.crc32(",".join(map(str, problem.element_seeds)).encode()))
            for step in steps:
                values = _step(loop, problem, model, step, needs_grad)
                if step in options.thresholds:
                    loop.snapshots[step] = loop.image().detach().float().cpu()
                if options.progress and (step % 16 == 0 or step == options.steps):
                    steps.set_postfix(objective=f"{values.mean().item():.3g}")
        return time.perf_counter() - began
    finally:
        loop.capture.close()
        steps.close()


def _finish(problem: _Problem, model: nn.Module, loop: _Loop, start_images: torch.Tensor, start: torch.Tensor,
            seconds: float) -> Rendering:
    """The Rendering: final images and their metrics on the model itself, in full precision (whatever ran
    the optimization), and which elements stopped where."""
    final = loop.image().detach()
    values, logits = _score(problem, model, final, nullcontext(), loop.layout)
    target_prob = _target_prob(problem, logits)
    target_prob = None if target_prob is None else target_prob.cpu()
    history = {k: v.cpu() for k, v in loop.history.items()}
    failed = {}
    for b in torch.nonzero(~loop.alive).flatten().tolist():
        step = int(loop.died_at[b])
        failed[b] = f"objective became {float(history['total'][step - 1, b])} at step {step}"
    return Rendering(final.float().cpu(), start_images.float().cpu(), problem.targets, problem.element_seeds,
                     values.cpu(), start.cpu(), target_prob, history, loop.snapshots, failed, seconds)


def render(model: nn.Module, objective: Objective, param: ParamSpec | None = None, transforms: Sequence = (),
           regularizers: Sequence = (), options: RenderOptions | None = None, **overrides) -> Rendering:
    """Maximize `objective` over images made by `param`, for every target × seed in one batch.

    transforms: callables applied to the images before each forward pass (transforms.py).
    regularizers: penalty objectives (subtracted; e.g. `1e-2 * tv()`) and projections (`blur(0.5)`).
    options: the loop settings (RenderOptions); keyword arguments override single ones
    (`render(model, obj, steps=64, seeds=[0, 1])`).
    """
    options = (options or RenderOptions()).with_overrides(**overrides)
    options.check()
    device = torch.device(options.device) if options.device is not None else _model_device(model)
    model.to(device)
    problem = _problem(model, objective, regularizers, [int(s) for s in options.seeds])
    if param is None:
        param = pixel(28, channels=_model_channels(model))
    natural = options.natural_edge is not None and objective.classes is not None and param.starts > 1
    if natural:
        check_images(options.natural_edge, options.natural_images)
    first = _render(model, problem, param, transforms, options, device)
    tries, rendering, kept = [first], first, torch.zeros(problem.batch, dtype=torch.long)
    for rank in range(1, param.starts):  # retry_below: the elements that ended below it, from their next start
        low = _below(rendering, options.retry_below)
        if not natural and (low is None or not low.any()):
            break
        tries.append(_render(model, problem, param.ranked(rank), transforms, options, device))
        if low is not None:
            take = low & (tries[rank].target_prob > rendering.target_prob)
            rendering = _take(rendering, tries[rank], take)
            kept[take] = rank
    began = time.perf_counter()
    if natural:
        rendering = _natural(model, rendering, tries, kept, options)
    return replace(rendering, seconds=sum(t.seconds for t in tries) + time.perf_counter() - began)


def _natural(model: nn.Module, rendering: Rendering, tries: list[Rendering], kept: torch.Tensor,
             options: RenderOptions) -> Rendering:
    """`rendering` (each element's render from start `kept`) with the natural choice made (natural.py): a render
    may be swapped only for one the model recognizes as well as the retry asks (retry_below, else as well as
    the kept render)."""
    with eval_mode(model, freeze=True):
        manifold = RealManifold(model, options.natural_images.float())
    floor = rendering.target_prob if options.retry_below is None else \
        rendering.target_prob.clamp(max=options.retry_below)
    choice = natural_choice(manifold, [t.images for t in tries], [t.target_prob for t in tries], kept,
                            float(options.natural_edge), floor)
    for rank, again in enumerate(tries):
        rendering = _take(rendering, again, (choice == rank) & (choice != kept))
    return rendering


def _render(model: nn.Module, problem: _Problem, param: ParamSpec, transforms: Sequence, options: RenderOptions,
            device: torch.device) -> Rendering:
    """One optimization of every element from the starts `param` builds."""
    image = _build_image(param, problem, device)
    relaid: list = []
    try:
        with eval_mode(model, freeze=True):
            began = time.perf_counter()  # the start counts: param=guided previews its candidate starts there
            loop, start_images, start = _start(model, problem, image, transforms, options, device, relaid)
            seconds = time.perf_counter() - began + _optimize(loop, problem, model, options, device)
            return _finish(problem, model, loop, start_images, start, seconds)
    finally:
        _restore(relaid)  # the caller's weights keep their layout


def _below(rendering: Rendering, threshold: float | None) -> torch.Tensor | None:
    """(B,) bool: the elements whose target probability ended below `threshold` (None: no class objective or
    no threshold)."""
    if threshold is None or rendering.target_prob is None:
        return None
    return rendering.target_prob < threshold


def _take(first: Rendering, again: Rendering, take: torch.Tensor) -> Rendering:
    """`first` with each `take` element taken from `again` (its images, metrics, history and snapshots alike)."""
    pick = lambda a, b, dim=0: torch.where(take.view(*(-1 if d == dim else 1 for d in range(a.ndim))), b, a)  # noqa: E731
    taken = set(torch.nonzero(take).flatten().tolist())
    return replace(
        first, images=pick(first.images, again.images), start_images=pick(first.start_images, again.start_images),
        objective=pick(first.objective, again.objective), start=pick(first.start, again.start),
        target_prob=pick(first.target_prob, again.target_prob),
        history={k: pick(v, again.history[k], dim=1) for k, v in first.history.items()},
        snapshots={s: pick(v, again.snapshots[s]) for s, v in first.snapshots.items()},
        failed={b: why for b, why in first.failed.items() if b not in taken}
        | {b: why for b, why in again.failed.items() if b in taken})
