"""Shapley values (Lundberg & Lee 2017): Kernel SHAP on LIME's superpixels, and GradientShap.

Kernel SHAP is LIME's perturbation engine with another weighting: the same superpixels, fills and
batched scoring on the model's fast twin (lime.py), but coalitions drawn from the Shapley kernel
(size k of S with probability ∝ (S − 1) / (k (S − k)), then k segments at random; each draw paired
with its complement) and a least-squares fit under the efficiency constraint Σφ = f(x) − f(baseline),
solved exactly (the KKT system), with φ₀ = f(baseline). The baseline is what hidden segments show
(LIME's fill: a blur by default). `completeness_error` = |Σφ − (f(x) − f(baseline))| / |f(x) − f(baseline)|,
from fresh model calls on x and the baseline image.

GradientShap (expected gradients, Erion et al. 2021) is captum's: gradients at random points between
x and baselines drawn from a reference set, times (x − baseline); Σφ = f(x) − E f(baseline) holds in
expectation only, so its completeness error measures the sampling error. Both are registered at the end.
"""

from __future__ import annotations

import torch

from studio.errors import StudioError, lookup
from studio.explain.checks import logits, resolve_target
from studio.explain.gradients import GradientMethod
from studio.explain.lime import LimeImage, fill_images, options_from_block
from studio.explain.registry import Attribution, Column, MethodSpec, heatmap, register


def shapley_size_probs(num_segments: torch.Tensor) -> torch.Tensor:
    """P(k on) ∝ (S − 1) / (k (S − k)) for k = 1..S − 1 per image (0 elsewhere): N×S_max."""
    s = num_segments.double()[:, None]
    k = torch.arange(int(num_segments.max()), dtype=torch.float64).expand(len(num_segments), -1)
    valid = (k >= 1) & (k <= s - 1)
    probs = torch.where(valid, (s - 1) / (k * (s - k)).clamp_min(1), torch.zeros(()))
    return probs / probs.sum(1, keepdim=True)


def shapley_masks(num_segments: torch.Tensor, samples: int, generator: torch.Generator,
                  original_first: bool = True) -> torch.Tensor:
    """Coalitions N×samples×S_max (bool) drawn from the Shapley kernel, each paired with its complement
    (half the variance of independent draws). With `original_first`, sample 0 is all on and sample 1 all
    off: the two ends the efficiency constraint pins."""
    n, s_max = len(num_segments), int(num_segments.max())
    present = torch.arange(s_max).expand(n, s_max) < num_segments[:, None]
    ends = 2 if original_first else 0
    half = (samples - ends + 1) // 2
    sizes = torch.multinomial(shapley_size_probs(num_segments).float(), half, replacement=True,
                              generator=generator)  # N×half
    keys = torch.rand(n, half, s_max, generator=generator).masked_fill(~present[:, None], 2.0)
    rank = keys.argsort(2).argsort(2)  # a random order of the image's segments (absent ones last)
    z = rank < sizes.unsqueeze(2)
    z = torch.cat([z, ~z & present[:, None]], 1)[:, :samples - ends]
    if original_first:
        z = torch.cat([present[:, None], torch.zeros_like(present)[:, None], z], 1)
    return z


def efficient_shapley_fit(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, present: torch.Tensor):
    """Kernel SHAP's regression: min Σ_m w_m (y_m − φ₀ − z_m·φ)² subject to Σφ = y_all − y_none, with
    φ₀ = y_none, solved exactly in float64 (KKT). z N×M×S (rows 0 and 1 all on / all off), y N×M×L,
    w N×M, present N×S. Returns (φ₀ N×L, φ N×L×S); absent segments get 0."""
    z, y, w = z.double(), y.double(), w.double()
    a = present.double()
    base, gap = y[:, 1], y[:, 0] - y[:, 1]                        # N×L
    wz = z * w.unsqueeze(2)
    gram = wz.transpose(1, 2) @ z                                 # N×S×S
    rhs = wz.transpose(1, 2) @ (y - base.unsqueeze(1))            # N×S×L
    jitter = 1e-10 * gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1.0)
    gram = gram + torch.diag_embed(1 - a + jitter[:, None] * a)  # absent: identity rows, zero rhs
    n, s = a.shape
    kkt = torch.zeros(n, s + 1, s + 1, dtype=torch.float64)
    kkt[:, :s, :s], kkt[:, :s, s], kkt[:, s, :s] = gram, a, a
    solution = torch.linalg.solve(kkt, torch.cat([rhs, gap.unsqueeze(1)], 1))  # N×(S+1)×L
    return base, (solution[:, :s] * a.unsqueeze(2)).transpose(1, 2)


class KernelShap(LimeImage):
    """Kernel SHAP on superpixels: `KernelShap(model).explain(x, target)` returns a LimeExplanation whose
    intercept is f(baseline) and whose weights are the Shapley values φ (Σφ = f(x) − f(baseline)).
    Options as LimeImage's (segmentation, samples, heldout, fill, output, batch_size, seed, ...); the
    kernel and solver are Shapley's. samples counts the two ends (all on, all off)."""

    name, title = "kernelshap", "Kernel SHAP"

    def __init__(self, model, samples: int = 1000, **options):
        if samples < 4:
            raise StudioError(f"Kernel SHAP needs samples ≥ 4 (all on, all off and a pair), got samples={samples}")
        super().__init__(model, samples=samples, **options)

    def _masks(self, num_segments, samples, generator, original_first=True):
        return shapley_masks(num_segments, samples, generator, original_first)

    def _weights(self, z, num_segments):
        """Drawn from the kernel, so every coalition weighs 1 (the ends are constraints, not samples)."""
        return torch.ones(z.shape[:2], dtype=torch.float64)

    def _fit(self, z, y, w, present):
        return efficient_shapley_fit(z, y, w, present)

    def baseline(self, x: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        """What the all-off coalition shows: the fill (N×C×H×W)."""
        return fill_images(x, segments.to(x.device), self.fill, self.fill_value, self.blur_sigma)

    def attribution(self, x, target=None, segments=None, seed=None) -> Attribution:
        """Maps (φ painted on the segments), completeness_error and the top segments."""
        e = self.explain(x, target, segments=segments, seed=seed)
        outputs = torch.stack([logits(self.model, images) for images in (x, self.baseline(x, e.segments))])
        if self.output == "prob":
            outputs = outputs.softmax(2)
        f_x, f_base = outputs.gather(2, e.target.view(1, -1, 1).expand(2, -1, 1)).squeeze(2).double()
        error = completeness_error(e.weights[:, 0].double().sum(1), f_x - f_base)
        return Attribution(e.heatmap(), {"completeness_error": error},
                           lambda k: e.top_segments(k, positive_only=True))


def completeness_error(total: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """|Σφ − gap| / |gap| per image (N), gap = f(x) − f(baseline)."""
    return ((total - gap).abs() / gap.abs().clamp_min(1e-12)).float()


def batch_baselines(x: torch.Tensor) -> torch.Tensor:
    """The explained images and a black one: a small reference set drawn from the data (expected gradients
    uses the training set; shap's GradientExplainer a background sample)."""
    return torch.cat([torch.zeros_like(x[:1]), x])


def zero_baselines(x: torch.Tensor) -> torch.Tensor:
    """Black only: GradientShap is then IG with random points on the path."""
    return torch.zeros_like(x[:1])


GRADIENT_SHAP_BASELINES = {"batch": batch_baselines, "zero": zero_baselines}


class GradientShap(GradientMethod):
    """Expected gradients (captum's GradientShap): `samples` draws per image of a baseline b from the
    reference set `baseline` ('batch': the explained images and black; 'zero': black) and α ~ U(0, 1);
    φ = mean of ∂f(b + α(x − b) + noise)/∂x · (x − b), noise σ = `noise`."""

    name = "gradientshap"

    def __init__(self, model, samples: int = 50, baseline: str = "batch", noise: float = 0.0,
                 batch_size: int = 256, seed: int = 0):
        super().__init__(model, batch_size, seed)
        if samples < 1 or noise < 0:
            raise StudioError(f"GradientShap needs samples ≥ 1 and noise ≥ 0, got samples={samples}, noise={noise}")
        self.samples, self.noise = samples, noise
        self.baselines = lookup(GRADIENT_SHAP_BASELINES, "GradientShap baseline", baseline)

    def _attribute(self, x, target):
        from captum.attr import GradientShap as CaptumGradientShap

        return CaptumGradientShap(self.model).attribute(x, baselines=self.baselines(x.detach()), target=target,
                                                        n_samples=self.samples, stdevs=self.noise)

    def attribution(self, x, target=None, segments=None, seed=None) -> Attribution:
        """Maps and completeness_error against f(x) − mean f(reference set) (sampling error of Σφ)."""
        maps = self.attribute(x, target, seed)
        out_x, out_b = logits(self.model, x, self.batch_size), logits(self.model, self.baselines(x), self.batch_size)
        target = resolve_target(target, out_x)
        gap = (out_x - out_b.mean(0)).gather(1, target[:, None]).squeeze(1).double()
        error = completeness_error(maps.flatten(1).double().sum(1), gap)
        return Attribution(heatmap(maps), {"completeness_error": error})


def completeness_caption(scores: dict) -> list[str]:
    return [f"compl {scores['completeness_error']:.3f}"]


COMPLETENESS = dict(metrics=("completeness_error",), columns=(Column("completeness_error", "compl.", 6),),
                    caption=completeness_caption, stochastic=True)
register(MethodSpec("kernelshap", KernelShap, block="kernelshap", from_block=options_from_block, **COMPLETENESS))
register(MethodSpec("gradientshap", GradientShap, block="gradientshap", **COMPLETENESS))
