"""How far to trust an explanation: deletion / insertion AUC, surrogate R², stability, sanity.

- deletion / insertion AUC (Petsiuk et al. 2018, RISE): remove (or insert) pixels in the order a map
  ranks them and follow the target probability; a good map makes deletion fall fast (low AUC) and
  insertion rise fast (high AUC). A random order is the baseline every map must beat.
- weighted R²: how well LIME's linear surrogate mimics the model on (held-out) perturbations.
- stability: mean pairwise Jaccard of the top-k segments across seeds (1 = the same every time).
- sanity (Adebayo et al. 2018): rank correlation of a map before and after re-initializing every
  weight; a map that hardly changes does not depend on what the model learned.

Everything is batched over images; maps are N×1×H×W (or N×H×W), images N×C×H×W in [0, 1].
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from studio.explain.checks import check_finite
from studio.modes import eval_mode
from studio.blur import gaussian_blur
from studio.explain.segments import segment_means


def weighted_r2(y: torch.Tensor, y_hat: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted R² along dim 1 (as scikit-learn's r2_score with sample_weight); y, y_hat N×M×L, w N×M → N×L."""
    w = w.unsqueeze(-1)
    mean = (w * y).sum(1, keepdim=True) / w.sum(1, keepdim=True)
    residual = (w * (y - y_hat) ** 2).sum(1)
    total = (w * (y - mean) ** 2).sum(1)
    # A constant response: perfect if the fit is exact, else 0 (scikit-learn's force_finite convention).
    return torch.where(total > 1e-12, 1 - residual / total.clamp_min(1e-12),
                       (residual <= 1e-12).to(y.dtype))


def pixel_order(heatmaps: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rank of every pixel (0 = most important) by descending map value; ties broken at random. N×HW."""
    flat = heatmaps.reshape(len(heatmaps), -1).float()
    n, hw = flat.shape
    perm = torch.argsort(torch.rand(n, hw, generator=generator), dim=1)
    order = perm.gather(1, torch.argsort(-flat.gather(1, perm), dim=1, stable=True))
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(hw).expand(n, hw).contiguous())
    return rank


def random_order(n: int, hw: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random rank for every pixel: the baseline order. N×HW."""
    return torch.argsort(torch.rand(n, hw, generator=generator), dim=1)


@torch.no_grad()
def _curve(model: nn.Module, start: torch.Tensor, end: torch.Tensor, rank: torch.Tensor, target: torch.Tensor,
           steps: int, batch_size: int) -> torch.Tensor:
    """Target probability while pixels move from `start` to `end` in rank order: N×(steps+1)."""
    n, c, h, w = start.shape
    hw = h * w
    counts = torch.round(torch.linspace(0, hw, steps + 1, device=start.device)).long()
    rank, target = rank.to(start.device), target.to(start.device)
    probs = torch.empty(n, steps + 1)
    per_image = steps + 1
    images_per_batch = max(1, batch_size // per_image)
    with eval_mode(model):
        for i in range(0, n, images_per_batch):
            j = min(i + images_per_batch, n)
            moved = (rank[i:j, None, :] < counts[None, :, None]).to(start.dtype)  # b×T×HW
            moved = moved.view(j - i, per_image, 1, h, w)
            batch = start[i:j, None] + moved * (end[i:j, None] - start[i:j, None])
            batch = batch.view(-1, c, h, w).contiguous(memory_format=torch.channels_last)
            out = check_finite(model(batch).float())
            p = out.softmax(1).view(j - i, per_image, -1)
            probs[i:j] = p.gather(2, target[i:j].view(-1, 1, 1).expand(-1, per_image, 1)).squeeze(2)
    return probs


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under N×(T+1) curves sampled evenly on [0, 1] (trapezoid rule). N."""
    return torch.trapezoid(curve, dx=1.0 / (curve.shape[1] - 1), dim=1)


def deletion_insertion(model: nn.Module, x: torch.Tensor, rank: torch.Tensor, target: torch.Tensor,
                       steps: int = 50, deletion_value: float = 0.0, blur_sigma: float = 0.1,
                       batch_size: int = 512) -> dict[str, torch.Tensor]:
    """Deletion AUC (pixels → `deletion_value`, lower is better) and insertion AUC (blurred image ←
    pixels, higher is better) for pixel ranks N×HW. `blur_sigma` is a fraction of the image side."""
    blurred = gaussian_blur(x, blur_sigma * max(x.shape[-2:]))
    deleted = torch.full_like(x, deletion_value)
    return {"deletion_auc": auc(_curve(model, x, deleted, rank, target, steps, batch_size)),
            "insertion_auc": auc(_curve(model, blurred, x, rank, target, steps, batch_size))}


def random_baseline(model: nn.Module, x: torch.Tensor, target: torch.Tensor, orders: int = 3, seed: int = 0,
                    **kwargs) -> dict[str, torch.Tensor]:
    """Deletion / insertion AUC of random pixel orders, averaged over `orders` draws: the bar to beat."""
    generator = torch.Generator().manual_seed(seed)
    hw = x.shape[-1] * x.shape[-2]
    runs = [deletion_insertion(model, x, random_order(len(x), hw, generator), target, **kwargs)
            for _ in range(orders)]
    return {k: torch.stack([r[k] for r in runs]).mean(0) for k in runs[0]}


def top_segments(heatmaps: torch.Tensor, segments: torch.Tensor, k: int) -> torch.Tensor:
    """The k segments with the highest mean map value per image: N×k indices."""
    means = segment_means(heatmaps, segments)
    present = torch.zeros_like(means, dtype=torch.bool).scatter_(1, segments.reshape(len(segments), -1), True)
    means = means.masked_fill(~present, -torch.inf)
    return means.topk(min(k, means.shape[1]), dim=1).indices


def jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Jaccard index of two N×k index sets, per row. N."""
    inter = (a.unsqueeze(2) == b.unsqueeze(1)).any(2).sum(1).float()
    return inter / (a.shape[1] + b.shape[1] - inter)


def stability(top_sets: list[torch.Tensor]) -> torch.Tensor:
    """Mean pairwise Jaccard of the top-k sets from several seeds (each N×k). N."""
    pairs = list(itertools.combinations(top_sets, 2))
    return torch.stack([jaccard(a, b) for a, b in pairs]).mean(0)


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy with every layer re-initialized (weights, biases, batch-norm statistics); buffers such
    as a Classifier's normalization stay. The model-randomization test's 'untrained' twin."""
    twin = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in twin.modules():
            if module is not twin and hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return twin.eval()


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks along dim 1 (ties get arbitrary distinct ranks; maps are continuous)."""
    order = values.argsort(1)
    ranks = torch.empty_like(values)
    ranks.scatter_(1, order, torch.arange(values.shape[1], dtype=values.dtype).expand_as(values).contiguous())
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per image between two N×... maps. N."""
    ra, rb = (_ranks(m.reshape(len(m), -1).double()) for m in (a, b))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)
    return ((ra * rb).sum(1) / denom).float()


def sanity_similarity(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Adebayo et al.'s comparison: Spearman correlation of |map| before and after randomization. N.
    Near 0: the map depends on the learned weights (passes); near 1: it does not (fails)."""
    return spearman(before.abs(), after.abs())
