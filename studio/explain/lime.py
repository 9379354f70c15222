"""Batched LIME for images (Ribeiro et al. 2016), torch-native, with a surrogate you can check.

For every image: superpixels; `samples` on/off vectors z ∈ {0,1}^S (the first is the original, all
on); each hidden segment filled with its mean colour, a constant or a blur; the model's output for
the target on every perturbation; lime's kernel sqrt(exp(-d²/width²)) on the cosine distance d of z
to all-ones; a weighted ridge (or lasso, or forward-selected) linear surrogate solved in torch; its
weighted R² in-sample and on a fresh held-out set of perturbations.

All perturbations of all images are built with tensor ops and evaluated in large batches (no
per-sample Python loop), without gradients, and the same seed gives the same numbers. LIME is registered
at the end of this file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from studio.errors import StudioError, lookup
from studio.explain.checks import check_finite, logits, resolve_target
from studio.explain.fast import inference_twin
from studio.modes import autocast, check_precision, eval_mode
from studio.progress import bar
from studio.blur import gaussian_blur
from studio.explain.metrics import weighted_r2
from studio.explain.registry import Attribution, Column, MethodSpec, register
from studio.explain.segments import check_segments, segment, segment_means

OUTPUTS = ("prob", "logit")


@dataclass
class LimeExplanation:
    """LIME's result for a batch, per image n and explained label l (l = 0 is the target).

    Modelled on lime's ImageExplanation (intercept, local_exp, score, local_pred, segments), batched.
    Weights of segments an image does not have (beyond its num_segments) are 0.
    """

    images: torch.Tensor         # N×C×H×W
    segments: torch.Tensor       # N×H×W int64, 0..S_n-1
    num_segments: torch.Tensor   # N
    labels: torch.Tensor         # N×L; labels[:, 0] is the target
    intercept: torch.Tensor      # N×L
    weights: torch.Tensor        # N×L×S_max (one per segment)
    score: torch.Tensor          # N×L weighted R² on the fitting perturbations (lime's `score`)
    score_heldout: torch.Tensor  # N×L weighted R² on held-out perturbations
    local_pred: torch.Tensor     # N×L surrogate at the original image (all segments on)
    model_output: torch.Tensor   # N×L model output at the original image (what local_pred mimics)

    @property
    def target(self) -> torch.Tensor:
        return self.labels[:, 0]

    @property
    def r2(self) -> torch.Tensor:
        """In-sample weighted R² of the target's surrogate. N."""
        return self.score[:, 0]

    @property
    def r2_heldout(self) -> torch.Tensor:
        """Held-out weighted R² of the target's surrogate. N."""
        return self.score_heldout[:, 0]

    def heatmap(self, label: int = 0) -> torch.Tensor:
        """Each pixel carries its segment's weight: N×1×H×W."""
        n = len(self.segments)
        flat = self.weights[:, label].gather(1, self.segments.reshape(n, -1))
        return flat.view(n, 1, *self.segments.shape[1:]).float()

    def top_segments(self, k: int = 5, label: int = 0, positive_only: bool = False) -> torch.Tensor:
        """Indices of the k segments with the largest weights, N×k (weight ≤ 0 → -1 if positive_only)."""
        w = self.weights[:, label].clone()
        present = torch.arange(w.shape[1]).expand_as(w) < self.num_segments[:, None]
        w[~present] = -torch.inf
        values, index = w.topk(min(k, w.shape[1]), dim=1)
        bad = ~torch.isfinite(values)  # fewer than k segments
        if positive_only:
            bad |= values <= 0
        return index.masked_fill(bad, -1)

    def mask(self, k: int = 5, label: int = 0, positive_only: bool = True) -> torch.Tensor:
        """Pixels of the top-k segments (lime's get_image_and_mask mask): N×H×W bool."""
        top = self.top_segments(k, label, positive_only)
        return (self.segments.unsqueeze(1) == top[:, :, None, None]).any(1)

    def render(self, kind: str = "heatmap", label: int = 0, k: int = 5, positive_only: bool = True) -> torch.Tensor:
        """RGB pictures N×3×H×W in [0, 1]: 'heatmap' (red = for the label, blue = against, over the
        greyed image) or 'mask' (the top-k segments kept, the rest dimmed)."""
        grey = self.images.mean(1, keepdim=True).expand(-1, 3, -1, -1)
        if kind == "mask":
            keep = self.mask(k, label, positive_only).unsqueeze(1).to(grey.dtype)
            image = self.images.expand(-1, 3, -1, -1) if self.images.shape[1] == 1 else self.images
            return image * (0.25 + 0.75 * keep)
        if kind != "heatmap":
            raise StudioError(f"unknown rendering {kind!r}; choose from: heatmap, mask")
        heat = self.heatmap(label)
        scale = heat.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        heat = heat / scale
        red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
        blue = torch.tensor([0.0, 0.3, 1.0]).view(1, 3, 1, 1)
        colour = torch.where(heat >= 0, red, blue)
        alpha = heat.abs()
        return (0.5 * grey * (1 - alpha) + colour * alpha).clamp(0, 1)


def mean_fill(x: torch.Tensor, segments: torch.Tensor, **_) -> torch.Tensor:
    """Every pixel gets its segment's mean colour (lime's hide_color=None)."""
    n, c = x.shape[:2]
    flat = segments.reshape(n, -1)
    means = torch.stack([segment_means(x[:, ch], segments) for ch in range(c)], 1)  # N×C×S
    return means.gather(2, flat.unsqueeze(1).expand(-1, c, -1)).view_as(x).to(x.dtype)


def constant_fill(x: torch.Tensor, segments: torch.Tensor, value: float = 0.0, **_) -> torch.Tensor:
    return torch.full_like(x, float(value))


def blur_fill(x: torch.Tensor, segments: torch.Tensor, blur_sigma: float = 0.1, **_) -> torch.Tensor:
    """A Gaussian blur with σ = blur_sigma × the image side: a hidden segment loses its detail but keeps
    the colours around it, so hiding does not paint a new shape of its own."""
    return gaussian_blur(x, blur_sigma * max(x.shape[-2:]))


FILLS = {"mean": mean_fill, "constant": constant_fill, "blur": blur_fill}


def fill_images(x: torch.Tensor, segments: torch.Tensor, fill: str = "mean", value: float = 0.0,
                blur_sigma: float = 0.1) -> torch.Tensor:
    """What hidden segments show (N×C×H×W): FILLS[fill] of the images."""
    return lookup(FILLS, "LIME fill", fill)(x, segments, value=value, blur_sigma=blur_sigma)


def sample_masks(num_segments: torch.Tensor, samples: int, generator: torch.Generator,
                 original_first: bool = True) -> torch.Tensor:
    """On/off vectors N×samples×S_max (bool), each segment on with probability 1/2 (lime's sampling);
    segments an image lacks are off. With `original_first`, sample 0 is the original (all on)."""
    n, s_max = len(num_segments), int(num_segments.max())
    present = torch.arange(s_max).expand(n, s_max) < num_segments[:, None]
    z = (torch.rand(n, samples, s_max, generator=generator) < 0.5) & present[:, None, :]
    if original_first:
        z[:, 0] = present
    return z


def kernel_weights(z: torch.Tensor, num_segments: torch.Tensor, width: float = 0.25) -> torch.Tensor:
    """lime's exponential kernel sqrt(exp(-d²/width²)) on the cosine distance of z to all-ones. N×M."""
    on = z.sum(2).double()
    distance = 1 - torch.sqrt(on / num_segments[:, None].double())  # cos(z, 1) = |z|₁ / sqrt(|z|₁ S)
    return torch.sqrt(torch.exp(-distance ** 2 / width ** 2))


def _center(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor):
    wsum = w.sum(1, keepdim=True)
    z_mean = (w.unsqueeze(2) * z).sum(1, keepdim=True) / wsum.unsqueeze(2)
    y_mean = (w.unsqueeze(2) * y).sum(1, keepdim=True) / wsum.unsqueeze(2)
    return z - z_mean, y - y_mean, z_mean.squeeze(1), y_mean.squeeze(1)


def _solve_masked(gram: torch.Tensor, rhs: torch.Tensor, active: torch.Tensor, alpha: float) -> torch.Tensor:
    """Ridge coefficients using only `active` features (others 0). gram ...×S×S, rhs ...×S, active ...×S."""
    a = active.to(gram.dtype)
    system = gram * a.unsqueeze(-1) * a.unsqueeze(-2)
    system = system + torch.diag_embed(alpha * a + (1 - a))  # inactive → identity row, zero rhs
    return torch.linalg.solve(system, (rhs * a).unsqueeze(-1)).squeeze(-1)


def _forward_selection(gram, rhs, yy, present, alpha: float, k: int) -> torch.Tensor:
    """Greedy: add the feature that most raises the weighted R², k times (lime's forward_selection).
    gram N×S×S, rhs N×L×S, yy N×L (weighted total sum of squares), present N×S → active N×L×S."""
    n, labels, s = rhs.shape
    active = torch.zeros(n, labels, s, dtype=torch.bool)
    eye = torch.eye(s, dtype=torch.bool)
    g = gram.unsqueeze(1).unsqueeze(2)  # N×1×1×S×S
    for _ in range(min(k, s)):
        candidates = active.unsqueeze(2) | eye  # N×L×S(candidate)×S
        beta = _solve_masked(g, rhs.unsqueeze(2), candidates, alpha)
        # weighted residual sum of squares of each candidate fit: yᵀWy − 2βᵀb + βᵀGβ
        quadratic = (beta.unsqueeze(-2) @ g @ beta.unsqueeze(-1)).squeeze(-1).squeeze(-1)
        rss = yy.unsqueeze(2) - 2 * (beta * rhs.unsqueeze(2)).sum(-1) + quadratic
        gain = -rss.masked_fill(active | ~present.unsqueeze(1), torch.inf)
        best = gain.argmax(2)
        can_add = torch.isfinite(gain.gather(2, best.unsqueeze(2))).squeeze(2)
        active.scatter_(2, best.unsqueeze(2), can_add.unsqueeze(2) | active.gather(2, best.unsqueeze(2)))
    return active


def _fista(gram, rhs, alpha: float, present, steps: int = 500) -> torch.Tensor:
    """Weighted lasso by FISTA: min ½ βᵀGβ − βᵀb + alpha·|β|₁ (G, b already divided by Σw, as in
    scikit-learn's Lasso with sample weights that average 1). gram N×S×S, rhs N×L×S → N×L×S."""
    lipschitz = torch.linalg.eigvalsh(gram)[:, -1].clamp_min(1e-12).view(-1, 1, 1)
    beta = torch.zeros_like(rhs)
    momentum, t = beta.clone(), 1.0
    for _ in range(steps):
        grad = momentum @ gram - rhs  # gram is symmetric
        step = momentum - grad / lipschitz
        new = torch.sign(step) * (step.abs() - alpha / lipschitz).clamp_min(0) * present.unsqueeze(1)
        t_next = (1 + (1 + 4 * t * t) ** 0.5) / 2
        momentum, beta, t = new + (t - 1) / t_next * (new - beta), new, t_next
    return beta


def ridge(gram, rhs, present, alpha: float, **_) -> torch.Tensor:
    """Every segment of the image, ridge penalty alpha: lime's default surrogate."""
    return _solve_masked(gram.unsqueeze(1), rhs, present.unsqueeze(1).expand_as(rhs), alpha)


def forward(gram, rhs, present, alpha: float, yy, num_features: int, **_) -> torch.Tensor:
    """lime's forward_selection: num_features segments chosen greedily, then ridge on them."""
    active = _forward_selection(gram, rhs, yy, present, alpha, num_features)
    return _solve_masked(gram.unsqueeze(1), rhs, active, alpha)


def lasso(gram, rhs, present, alpha: float, wsum, **_) -> torch.Tensor:
    """Weighted lasso, alpha on the mean-weighted loss (scikit-learn's Lasso with sample weights)."""
    return _fista(gram / wsum, rhs / wsum, alpha, present)


SOLVERS = {"ridge": ridge, "lasso": lasso, "forward": forward}


def fit_surrogate(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, present: torch.Tensor,
                  solver: str = "ridge", alpha: float = 1.0, num_features: int = 10):
    """Weighted linear surrogate y ≈ intercept + z·β per image and label, solved in float64.

    z N×M×S (0/1), y N×M×L, w N×M, present N×S (the image's real segments). solver: a SOLVERS name;
    'ridge' is scikit-learn's Ridge(alpha) with sample_weight (unpenalized intercept), as lime fits it.
    Returns (intercept N×L, weights N×L×S).
    """
    solve = lookup(SOLVERS, "LIME solver", solver)
    z, y, w = z.double(), y.double(), w.double()
    zc, yc, z_mean, y_mean = _center(z, y, w)
    wz = zc * w.unsqueeze(2)
    gram = wz.transpose(1, 2) @ zc                   # N×S×S
    rhs = (wz.transpose(1, 2) @ yc).transpose(1, 2)  # N×L×S
    yy = (w.unsqueeze(2) * yc ** 2).sum(1)           # N×L: weighted total sum of squares
    beta = solve(gram, rhs, present, alpha, yy=yy, wsum=w.sum(1).view(-1, 1, 1), num_features=num_features)
    intercept = y_mean - (beta * z_mean.unsqueeze(1)).sum(2)
    return intercept, beta


def surrogate(intercept: torch.Tensor, weights: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The linear surrogate's prediction for on/off vectors z (N×M×S): intercept N×L, weights N×L×S → N×M×L."""
    return intercept.unsqueeze(1) + z.to(weights.dtype) @ weights.transpose(1, 2)


class LimeImage:
    """LIME for image classifiers: `LimeImage(model, segmentation="slic").explain(x, target=...)`.

    model: N×C×H×W in [0, 1] → N×K scores. segmentation: 'slic', 'quickshift', 'felzenszwalb' or
    'grid' (+ `segmentation_options`). fill: 'blur' (σ = blur_sigma × image side), 'mean' (lime's
    default; but superpixels are uniform by construction, so a segment filled with its own mean
    colour hardly changes: a planted mark stays visible) or 'constant' (`fill_value`).
    output: 'logit' (what gradient methods attribute; a linear surrogate fits it far better than a
    saturating probability) or 'prob' (softmax, lime's). fast: evaluate perturbations on the model's
    folded, channels-last twin (same fp32 function, see fast.py). precision 'bf16'/'fp16' and
    channels_last speed up big models; check that the top segments agree with fp32 before relying
    on them (bench/bench_lime.py does).
    """

    name, title = "lime", "LIME"

    def __init__(self, model: nn.Module, segmentation: str = "slic", segmentation_options: dict | None = None,
                 samples: int = 1000, heldout: int = 250, fill: str = "blur", fill_value: float = 0.0,
                 blur_sigma: float = 0.1, kernel_width: float = 0.25, solver: str = "ridge", alpha: float = 1.0,
                 num_features: int = 10, output: str = "logit", batch_size: int = 64, seed: int = 0,
                 precision: str = "fp32", channels_last: bool = False, fast: bool = True, progress: bool = True):
        self.model = model
        self.segmentation, self.segmentation_options = segmentation, dict(segmentation_options or {})
        if samples < 2 or heldout < 0:
            raise StudioError(f"LIME needs samples ≥ 2 and heldout ≥ 0, got samples={samples}, heldout={heldout}")
        self.samples, self.heldout = int(samples), int(heldout)
        lookup(FILLS, "LIME fill", fill)  # an unknown name fails here, before any work
        self.fill = fill
        self.fill_value, self.blur_sigma = fill_value, blur_sigma
        self.kernel_width, self.solver, self.alpha, self.num_features = kernel_width, solver, alpha, num_features
        self.output = lookup({o: o for o in OUTPUTS}, "LIME output", output)
        self.precision = check_precision(precision)
        self.batch_size, self.seed, self.channels_last, self.progress = batch_size, seed, channels_last, progress
        self.fast, self._twin = fast, None
        lookup(SOLVERS, "LIME solver", solver)

    def segments(self, x: torch.Tensor) -> torch.Tensor:
        """The superpixels this explainer uses for x: N×H×W int64."""
        return segment(x, self.segmentation, seed=self.seed, **self.segmentation_options)

    # The weighting: how perturbations are drawn, weighted and fitted (Kernel SHAP overrides these three;
    # the perturbation engine around them, fills, batched scoring on the fast twin, is shared).
    def _masks(self, num_segments: torch.Tensor, samples: int, generator: torch.Generator,
               original_first: bool = True) -> torch.Tensor:
        """On/off vectors N×samples×S_max: each segment on with probability 1/2 (lime's sampling)."""
        return sample_masks(num_segments, samples, generator, original_first)

    def _weights(self, z: torch.Tensor, num_segments: torch.Tensor) -> torch.Tensor:
        """Sample weights N×M: lime's exponential kernel."""
        return kernel_weights(z, num_segments, self.kernel_width)

    def _fit(self, z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, present: torch.Tensor):
        """(intercept N×L, weights N×L×S): the weighted linear surrogate of `solver`."""
        return fit_surrogate(z, y, w, present, self.solver, self.alpha, self.num_features)

    def _evaluator(self, x: torch.Tensor) -> nn.Module:
        """The model that scores perturbations: its checked fast twin (built once) or itself."""
        if not self.fast:
            return self.model
        if self._twin is None:
            self._twin = inference_twin(self.model, x[:16])
        return self._twin

    def _responses(self, x: torch.Tensor, fill: torch.Tensor, segments: torch.Tensor, z: torch.Tensor,
                   labels: torch.Tensor, what: str) -> torch.Tensor:
        """Model output for `labels` on every perturbation z (N×M×S): N×M×L, in batches of batch_size."""
        n, m, s = z.shape
        c, h, w = x.shape[1:]
        flat_z = z.reshape(n * m, s).to(x.device)
        flat_segments = segments.reshape(n, h * w).to(x.device)
        diff = x - fill
        out = torch.empty(n * m, labels.shape[1], device=x.device)
        starts = range(0, n * m, self.batch_size)
        model = self._evaluator(x)
        channels_last = self.channels_last or model is not self.model
        for a in bar(starts, enabled=self.progress, desc=f"{self.title} {what}", unit="batch", leave=False):
            rows = torch.arange(a, min(a + self.batch_size, n * m), device=x.device)
            image = rows // m
            on = flat_z[rows].gather(1, flat_segments[image]).view(-1, 1, h, w).to(x.dtype)
            batch = fill[image] + on * diff[image]
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with autocast(x.device, self.precision):
                scores = model(batch)
            scores = check_finite(scores.float(), image)
            if self.output == "prob":
                scores = scores.softmax(1)
            out[rows] = scores.gather(1, labels[image])
        return out.view(n, m, -1).cpu()

    @torch.no_grad()
    def explain(self, x: torch.Tensor, target=None, top_labels: int | None = None,
                segments: torch.Tensor | None = None, seed: int | None = None) -> LimeExplanation:
        """Explain a batch x (N×C×H×W in [0, 1]). target: None (the model's prediction), an int or N
        ints; top_labels=k also fits surrogates for the k most likely classes (after the target).
        segments (N×H×W) overrides the segmentation; seed overrides the explainer's seed."""
        seed = self.seed if seed is None else seed
        generator = torch.Generator().manual_seed(seed)
        with eval_mode(self.model):
            base = logits(self.model, x, self.batch_size)
            target = resolve_target(target, base)
            labels = target.unsqueeze(1)
            if top_labels:
                ranked = base.argsort(1, descending=True)
                extra = [ranked[i][ranked[i] != target[i]][:top_labels - 1] for i in range(len(x))]
                labels = torch.cat([labels, torch.stack(extra)], 1)
            if segments is None:
                segments = self.segments(x)
            else:
                segments = segments.long()
                if segments.shape != (x.shape[0], *x.shape[2:]):
                    raise StudioError(f"segments must be N×H×W = {(x.shape[0], *x.shape[2:])}, "
                                      f"got {tuple(segments.shape)}")
                check_segments(segments)
            num_segments = segments.flatten(1).amax(1) + 1
            present = torch.arange(int(num_segments.max())).expand(len(x), -1) < num_segments[:, None]
            fill = fill_images(x, segments.to(x.device), self.fill, self.fill_value, self.blur_sigma)

            z = self._masks(num_segments, self.samples, generator)
            y = self._responses(x, fill, segments, z, labels, "samples")
            w = self._weights(z, num_segments)
            intercept, beta = self._fit(z, y, w, present)
            score = weighted_r2(y.double(), surrogate(intercept, beta, z), w)
            if self.heldout:
                zh = self._masks(num_segments, self.heldout, generator, original_first=False)
                yh = self._responses(x, fill, segments, zh, labels, "held-out")
                wh = self._weights(zh, num_segments)
                score_heldout = weighted_r2(yh.double(), surrogate(intercept, beta, zh), wh)
            else:
                score_heldout = torch.full_like(score, float("nan"))
        local_pred = intercept + beta.sum(2)  # all segments on (absent ones have weight 0)
        return LimeExplanation(x.detach().cpu(), segments.cpu(), num_segments, labels.cpu(), intercept.float(),
                               beta.float(), score.float(), score_heldout.float(), local_pred.float(),
                               y[:, 0].float())

    def attribute(self, x: torch.Tensor, target=None, seed: int | None = None) -> torch.Tensor:
        """The uniform verb: the target's segment weights painted on the pixels, N×1×H×W."""
        return self.explain(x, target, seed=seed).heatmap()

    def attribution(self, x: torch.Tensor, target=None, segments: torch.Tensor | None = None,
                    seed: int | None = None) -> Attribution:
        """The registry's verb: maps, the surrogate's R² (in-sample, held-out) and its top segments."""
        e = self.explain(x, target, segments=segments, seed=seed)
        return Attribution(e.heatmap(), {"r2": e.r2, "r2_heldout": e.r2_heldout},
                           lambda k: e.top_segments(k, positive_only=True))


def options_from_block(block: dict) -> dict:
    """conf/explain.yaml's lime block -> LimeImage's options: `segmentation_options` are the chosen
    segmentation's entry of `segmentations`."""
    options = dict(block)
    segmentations = options.pop("segmentations", None) or {}
    options["segmentation_options"] = segmentations.get(options.get("segmentation"), {})
    return options


def caption_parts(scores: dict) -> list[str]:
    """The surrogate's fit under LIME's map: in-sample / held-out R²."""
    return [f"R² {scores['r2']:.2f}/{scores['r2_heldout']:.2f}"]


register(MethodSpec("lime", LimeImage, block="lime", from_block=options_from_block, metrics=("r2", "r2_heldout"),
                    columns=(Column("r2", "R²", 5), Column("r2_heldout", "R² held", 7)), caption=caption_parts,
                    stochastic=True, segmenter=True))
