"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019) through zennit.

The target logit is the relevance at the output; every conv / linear layer hands its output relevance
down to its inputs by a rule: ε (z_ij / (z_j + ε·sign z_j)) or αβ (α·positive − β·negative
contributions, α − β = 1) on the layers, z^B on the first (bounded by the pixel range [0, 1], mapped
through the model's input normalization). ReLUs, max pooling (winner takes all), flatten and dropout
pass relevance on unchanged; average pooling spreads it in proportion to its inputs. Batch norm is
folded into the convolution before it first (so biases carry its shift). Layers of any other type have
no rule: LRP refuses the model in one line rather than fall back to a plain gradient silently.

Relevance is conserved layer by layer except for what biases (and ε) absorb, so per image
`conservation_error` = |Σ R(pixels) − f(x)| / |f(x)| and `bias_share` = the share of f(x) that the biases
take (or, with the opposite sign, add): |Σ R with biases left out of every rule − Σ R| / |f(x)|; with a
small ε the two agree, all of the loss is the biases'. Registered at the end of this file.
"""

from __future__ import annotations

import torch
from torch import nn

from studio.errors import StudioError, lookup
from studio.explain.checks import check_finite, logits, resolve_target
from studio.explain.fast import fold_batch_norm
from studio.explain.registry import Attribution, Column, MethodSpec, register
from studio.modes import eval_mode

# Layer types LRP propagates through (batch norm: once folded into the convolution before it).
RULED = (nn.Conv2d, nn.Linear)
PASSED = (nn.ReLU, nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten,
          nn.Dropout, nn.Identity, nn.BatchNorm2d)
CONTAINERS = (nn.Sequential,)
LAYER_RULES = ("epsilon", "alpha_beta")
FIRST_RULES = ("zbox", "same")


def check_rules(net: nn.Module) -> None:
    """Every layer of `net` has an LRP rule; else one line naming the first that has none and what has."""
    for name, module in net.named_modules():
        if not isinstance(module, (*RULED, *PASSED, *CONTAINERS)):
            known = ", ".join(t.__name__ for t in (*RULED, *PASSED))
            raise StudioError(f"LRP has no rule for layer {name or 'net'!r} ({type(module).__name__}); it propagates "
                              f"through {known} (in nn.Sequential): use method=ig, gradientshap or occlusion "
                              "for this model")


def _input_map(model: nn.Module):
    """(net, prepare, low, high): the layers LRP runs through, the map from images in [0, 1] to their input
    (a studio Classifier's normalization, per pixel, so relevance passes it unchanged), and that map's
    image of the pixel range (z^B's bounds)."""
    net = getattr(model, "net", None)
    mean, std = getattr(model, "mean", None), getattr(model, "std", None)
    if not isinstance(net, nn.Module) or not torch.is_tensor(mean):
        return model, (lambda x: x), torch.zeros(()), torch.ones(())

    def prepare(x):
        z = (x - mean) / std
        return z.expand(-1, 3, -1, -1) if z.shape[1] == 1 and getattr(model, "in_channels", 1) == 3 else z

    return net, prepare, (0 - mean) / std, (1 - mean) / std


class LRP:
    """LRP with `rule` ('epsilon': ε on every conv / linear layer; 'alpha_beta': αβ on convolutions, ε on
    dense layers) and `first_layer` ('zbox': z^B on the first layer; 'same': the layer rule). Maps N×C×H×W:
    relevance per pixel, summing to about the target logit."""

    name = "lrp"

    def __init__(self, model: nn.Module, rule: str = "epsilon", epsilon: float = 1e-6, alpha: float = 2.0,
                 beta: float = 1.0, first_layer: str = "zbox", batch_size: int = 256, seed: int = 0):
        self.model, self.batch_size, self.seed = model, batch_size, seed
        self.rule = lookup({r: r for r in LAYER_RULES}, "LRP rule", rule)
        self.first_layer = lookup({r: r for r in FIRST_RULES}, "LRP first_layer rule", first_layer)
        if epsilon < 0 or abs(alpha - beta - 1) > 1e-9 or beta < 0:
            raise StudioError(f"LRP needs epsilon ≥ 0, beta ≥ 0 and alpha − beta = 1 (relevance is conserved), "
                              f"got epsilon={epsilon}, alpha={alpha}, beta={beta}")
        self.epsilon, self.alpha, self.beta = epsilon, alpha, beta
        net, self._prepare, self._low, self._high = _input_map(model)
        check_rules(net)
        self.net = fold_batch_norm(net)
        if left := [n for n, m in self.net.named_modules() if isinstance(m, nn.BatchNorm2d)]:
            raise StudioError(f"LRP folds batch norm into the convolution before it; {left[0]!r} follows none "
                              "(use method=ig, gradientshap or occlusion for this model)")
        for module in self.net.modules():
            if isinstance(module, nn.ReLU):
                module.inplace = False  # zennit's hooks read the layer outputs again

    def _composite(self, zero_params):
        from zennit.composites import SpecialFirstLayerMapComposite
        from zennit.rules import AlphaBeta, Epsilon, Norm, ZBox
        from zennit.types import AvgPool, Convolution, Linear

        dense = Epsilon(self.epsilon, zero_params=zero_params)
        conv = AlphaBeta(self.alpha, self.beta, zero_params=zero_params) if self.rule == "alpha_beta" else dense
        first = ([(Linear, ZBox(self._low, self._high, zero_params=zero_params))]
                 if self.first_layer == "zbox" else [])
        return SpecialFirstLayerMapComposite([(Convolution, conv), (nn.Linear, dense), (AvgPool, Norm())], first)

    def _relevance(self, x: torch.Tensor, target: torch.Tensor, zero_params=None) -> torch.Tensor:
        """Pixel relevance N×C'×H×W (C': the net's input channels) starting from the target logit."""
        from zennit.attribution import Gradient

        def start(out):  # relevance at the output: the target's logit, nothing elsewhere
            return torch.zeros_like(out).scatter(1, target[:, None], out.gather(1, target[:, None]))

        with Gradient(model=self.net, composite=self._composite(zero_params)) as attributor:
            _, relevance = attributor(self._prepare(x).detach(), start)
        return relevance

    def _batched(self, x: torch.Tensor, target: torch.Tensor, zero_params=None) -> torch.Tensor:
        parts = [self._relevance(x[i:i + self.batch_size], target[i:i + self.batch_size], zero_params)
                 for i in range(0, len(x), self.batch_size)]
        return check_finite(torch.cat(parts).detach().float())

    def attribute(self, x: torch.Tensor, target=None, seed: int | None = None) -> torch.Tensor:
        """Relevance maps N×C×H×W for the target (deterministic: seed is ignored)."""
        target = resolve_target(target, logits(self.model, x, self.batch_size))
        with eval_mode(self.model):
            return self._batched(x, target)

    def attribution(self, x, target=None, segments=None, seed=None) -> Attribution:
        """Maps (channels summed) and per image conservation_error and bias_share."""
        outputs = logits(self.model, x, self.batch_size)
        target = resolve_target(target, outputs)
        with eval_mode(self.model):
            relevance = self._batched(x, target)
            unbiased = self._batched(x, target, zero_params=["bias"])
        f = outputs.gather(1, target[:, None]).squeeze(1).double()
        total, total_unbiased = (r.flatten(1).double().sum(1) for r in (relevance, unbiased))
        scale = f.abs().clamp_min(1e-12)
        metrics = {"conservation_error": ((total - f).abs() / scale).float(),
                   "bias_share": ((total_unbiased - total).abs() / scale).float()}
        return Attribution(relevance.sum(1, keepdim=True), metrics)


def caption_parts(scores: dict) -> list[str]:
    return [f"cons {scores['conservation_error']:.3f}", f"bias {scores['bias_share']:.2f}"]


def has_rules(model: nn.Module) -> bool:
    """Does every layer of the model have an LRP rule? (method=all skips LRP on a model that has not: a ViT.)"""
    try:
        check_rules(_input_map(model)[0])
    except StudioError:
        return False
    return True


register(MethodSpec("lrp", LRP, block="lrp", metrics=("conservation_error", "bias_share"),
                    columns=(Column("conservation_error", "conserv.", 8), Column("bias_share", "bias", 5)),
                    caption=caption_parts, applies=has_rules))
