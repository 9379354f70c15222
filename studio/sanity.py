"""Can a render be trusted? Three checks beside every render (definitions in DESIGN.md and the README):

- render_vs_exemplars: the render's objective on the scale its natural exemplars set, 0 at the mean of
  the bottom exemplars and 1 at the mean of the top ones (> 1: it drives the unit harder than any natural
  image does). A plain ratio to the top mean would flip meaning for objectives ≤ 0 (log p of a class).
- path_similarity: how alike the render's path through the network is to its top exemplars' (Geirhos et
  al. 2024): for each convolution and linear layer, its output average-pooled to at most 4×4 per channel
  (where in the image, not only how much: as the probes read a layer), centred on the mean over a
  held-out split; the cosine similarity to each top exemplar, averaged over exemplars, then over layers.
  The same number for held-out natural images is the reference.
- randomized_similarity: the Pearson correlation of the pixels of a render and of the same render (same
  target, seed and recipe) on a copy of the model whose weights were re-initialized from the top layer
  down to the target's layer (cascading randomization, Adebayo et al. 2018). Near 1: the picture does
  not depend on what those weights learned.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from studio.activations import collect
from studio.errors import StudioError, lookup

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _net(model: nn.Module) -> nn.Module:
    return getattr(model, "net", model)  # a studio Classifier names layers inside .net


def weight_layers(model: nn.Module) -> list[str]:
    """The net's convolution and linear layers, in definition order: the path and the cascade's steps."""
    return [name for name, m in _net(model).named_modules() if name and isinstance(m, WEIGHT_LAYERS)]


# --- render vs exemplars ---------------------------------------------------------------------------
def exemplar_scale(values: torch.Tensor, top_mean: torch.Tensor, bottom_mean: torch.Tensor) -> torch.Tensor:
    """(values − bottom mean) / (top mean − bottom mean), elementwise: 1 = as strong as the top exemplars."""
    return (values - bottom_mean) / (top_mean - bottom_mean).clamp_min(1e-12)


# --- path similarity -------------------------------------------------------------------------------
def path_features(model: nn.Module, images: torch.Tensor, layers: list[str] | None = None,
                  batch_size: int = 128, pool: int = 4) -> dict[str, torch.Tensor]:
    """{layer: N×D} each weight layer's output average-pooled to at most pool×pool, flattened; fp32 on the CPU."""
    device = next(model.parameters()).device
    features = collect(model, images.to(device), layers or weight_layers(model), pool=pool, batch_size=batch_size)
    return {name: f.cpu() for name, f in features.items()}


def path_similarity(features: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                    center: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N,): for each of N images, over layers, the mean cosine similarity of its centred features to
    those of every reference image (features and reference from path_features; center: {layer: (C,)})."""
    if not features:
        raise StudioError("path similarity needs at least one convolution or linear layer")
    per_layer = []
    for layer, x in features.items():
        a = F.normalize(x - center[layer], dim=1)
        b = F.normalize(reference[layer] - center[layer], dim=1)
        per_layer.append((a @ b.T).mean(1))
    return torch.stack(per_layer).mean(0)


# --- cascading randomization -----------------------------------------------------------------------
def _reinitialize(module: nn.Module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    for p in module.parameters(recurse=False):  # no init of its own: random with its weights' scale
        nn.init.normal_(p, 0.0, float(p.detach().float().std()) if p.numel() > 1 else 0.01)


@torch.no_grad()
def cascade_randomized(model: nn.Module, down_to: str | None = None, seed: int = 0) -> tuple[nn.Module, list[str]]:
    """A copy of `model` with every module from the top down to the weight layer `down_to` re-initialized
    (its own init, e.g. Kaiming-uniform convolutions and batch norm at 1, 0 with fresh statistics), and the
    names of the modules it changed, top first. down_to: a layer name (a layer without weights of its own,
    e.g. a ReLU, goes down to the weight layer that feeds it); None: the top weight layer only.
    The original model is not touched; the same seed gives the same weights."""
    net = _net(model)
    names = [name for name, _ in net.named_modules() if name]
    layers = weight_layers(model)
    if not layers:
        raise StudioError(f"{type(net).__name__} has no convolution or linear layer to randomize")
    if down_to is None:
        start = layers[-1]
    else:
        lookup(dict.fromkeys(names), "layer", down_to)
        before = [n for n in layers if names.index(n) <= names.index(down_to)]
        start = before[-1] if before else layers[0]
    copied = copy.deepcopy(model)
    modules = dict(_net(copied).named_modules())
    changed = [n for n in names[names.index(start):] if list(modules[n].parameters(recurse=False))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in reversed(changed):  # from the top down
            _reinitialize(modules[name])
    return copied, list(reversed(changed))


def image_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,): Pearson correlation of the pixels of a[i] and b[i] (B×C×H×W); 0 where an image is flat."""
    x = a.flatten(1).double()
    y = b.flatten(1).double()
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    denominator = x.norm(dim=1) * y.norm(dim=1)
    return torch.where(denominator > 0, (x * y).sum(1) / denominator.clamp_min(1e-300), 0.0).float()
