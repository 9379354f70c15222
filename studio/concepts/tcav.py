"""TCAV (Kim et al. 2018): does a class's logit rise along a human concept's direction in a layer?

- CAV: the unit normal of a logistic-regression boundary between a layer's activations of the concept's
  images and of random images (flattened, in the layer's own coordinates), pointing to the concept.
- TCAV score of (concept, layer, class): the share of the class's images whose class logit has a positive
  directional derivative along the CAV (gradient of the logit w.r.t. the activation · CAV).
- Significance: R runs, each with its own set of random negatives, give R scores of the concept; R random
  concepts (random sets of images, one per run, against the same negatives) give R scores of chance; a
  two-sided t-test compares them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from studio.activations import collect
from studio.models import Classifier, get_layer
from studio.modes import eval_mode


@dataclass
class Cav:
    direction: torch.Tensor  # D, unit length, from the random activations towards the concept's
    accuracy: float  # of the linear classifier on its own training activations


def fit_cav(concept: torch.Tensor, other: torch.Tensor, l2: float = 1e-2, max_iter: int = 100) -> Cav:
    """The CAV separating N×D `concept` activations from M×D `other` ones (logistic regression, L-BFGS)."""
    x = torch.cat([concept, other]).float()
    y = torch.cat([torch.ones(len(concept)), torch.zeros(len(other))])
    # one scale for every unit (not one per unit): the direction must stay in the layer's own coordinates,
    # where the logit's gradient lives, and a near-constant unit must not be blown up
    z = (x - x.mean(0)) / x.std().clamp_min(1e-6)
    weight = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=10,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ weight + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    w = weight.detach()
    accuracy = (((z @ w + bias.detach()) > 0).float() == y).float().mean().item()
    return Cav(w / w.norm().clamp_min(1e-12), accuracy)


def class_logit_gradients(model: Classifier, images: torch.Tensor, labels: torch.Tensor, layers: list[str],
                          batch_size: int = 250) -> dict[str, torch.Tensor]:
    """{layer: N×D} gradient of each image's own-class logit (labels: N int64) w.r.t. the layer's flattened
    activation (eval mode: the images do not interact, so one backward per batch serves all)."""
    modules = {name: get_layer(model, name) for name in layers}
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    seen: dict[str, torch.Tensor] = {}
    hooks = [module.register_forward_hook(lambda _m, _i, o, name=name: seen.__setitem__(name, o))
             for name, module in modules.items()]
    try:
        with eval_mode(model), torch.enable_grad():
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size].clone().requires_grad_()  # a graph even for frozen weights
                logits = model(batch)
                chosen = logits.gather(1, labels[start:start + batch_size, None]).sum()
                grads = torch.autograd.grad(chosen, [seen[n] for n in layers], allow_unused=True)
                for name, grad in zip(layers, grads):
                    grad = torch.zeros_like(seen[name]) if grad is None else grad
                    out[name].append(grad.detach().flatten(1).float())
    finally:
        for hook in hooks:
            hook.remove()
    return {name: torch.cat(chunks) for name, chunks in out.items()}


def tcav_scores(gradients: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """R scores: for each of R×D `directions`, the share of N×D `gradients` with a positive dot product."""
    return ((gradients @ directions.T) > 0).float().mean(0)


def significance(scores: torch.Tensor, random_scores: torch.Tensor) -> float:
    """Two-sided p-value of Student's t-test (scipy.stats.ttest_ind, as Kim et al.) of the
    concept's scores against the random concepts'; 1 where both are constant and equal."""
    from scipy.stats import ttest_ind

    a, b = scores.double().numpy(), random_scores.double().numpy()
    if a.std() == 0 and b.std() == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    with warnings.catch_warnings():  # "precision loss ... nearly identical": scores of 1.0 in every run
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(a, b).pvalue)
    return 1.0 if p != p else p  # NaN: nothing to tell apart


def interval(scores: torch.Tensor, level: float = 0.95) -> tuple[float, float]:
    """(low, high) t-interval of the mean score over the CAV runs."""
    from scipy.stats import t

    n, mean = len(scores), scores.double().mean().item()
    if n < 2:
        return mean, mean
    half = t.ppf(0.5 + level / 2, n - 1) * scores.double().std().item() / n ** 0.5
    return mean - half, mean + half


@dataclass
class TcavResult:
    concept: str
    layer: str
    klass: int
    scores: torch.Tensor  # R: one per CAV (concept vs random set r)
    random_scores: torch.Tensor  # R: one per random-concept CAV
    p_value: float
    cav_accuracy: float  # mean over the concept's R CAVs

    @property
    def score(self) -> float:
        return self.scores.mean().item()


def _directions(positives: list[torch.Tensor], negatives: list[torch.Tensor], l2: float, max_iter: int):
    """R×D CAV directions of positives[r] (or the one positive set for all) against negatives[r], and
    their mean accuracy."""
    positives = positives * len(negatives) if len(positives) == 1 else positives
    cavs = [fit_cav(p, n, l2, max_iter) for p, n in zip(positives, negatives)]
    return torch.stack([c.direction for c in cavs]), sum(c.accuracy for c in cavs) / len(cavs)


def tcav(model: Classifier, concepts: dict[str, list[torch.Tensor]], randoms: list[torch.Tensor],
         negatives: list[torch.Tensor], images: torch.Tensor, labels: torch.Tensor, layers: list[str],
         classes: list[int], l2: float = 1e-2, max_iter: int = 100) -> list[TcavResult]:
    """TCAV of every concept in every layer for every class in `classes`. A concept is a list of N×C×H×W
    image sets: one per run, or one for all runs.

    Run r fits the concept's CAV (its set r) against `negatives[r]` and a random concept's CAV (`randoms[r]`,
    another random set) against the same negatives; R = len(negatives) ≥ 2 runs give the t-test its samples.
    `images`/`labels`: the images whose own-class logits are differentiated."""
    gradients = class_logit_gradients(model, images, labels, layers)
    random_acts = [collect(model, r, layers, pool=None) for r in randoms]
    negative_acts = [collect(model, n, layers, pool=None) for n in negatives]
    concept_acts = {name: [collect(model, x, layers, pool=None) for x in sets] for name, sets in concepts.items()}
    results = []
    for layer in layers:
        negative = [acts[layer] for acts in negative_acts]
        random_dirs, _ = _directions([acts[layer] for acts in random_acts], negative, l2, max_iter)
        for name, acts in concept_acts.items():
            dirs, accuracy = _directions([a[layer] for a in acts], negative, l2, max_iter)
            for k in classes:
                g = gradients[layer][labels == k]
                scores, random_scores = tcav_scores(g, dirs), tcav_scores(g, random_dirs)
                results.append(TcavResult(name, layer, k, scores, random_scores,
                                          significance(scores, random_scores), accuracy))
    return results
