"""Layer activations as feature matrices: what probes and embeddings are fitted on."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from studio.errors import StudioError
from studio.modes import eval_mode
from studio.models import Classifier, get_layer

PIXELS = "pixels"  # the input itself, as a baseline "layer"


def default_layers(model: Classifier) -> list[str]:
    """The net's top-level children, in order: every layer of a Sequential, the stages of a ResNet."""
    return [name for name, _ in model.net.named_children()]


def _flatten(activation: torch.Tensor, pool: int | None) -> torch.Tensor:
    """N×C×H×W maps average-pooled to at most pool×pool (None: not pooled), then flattened; N×D features stay
    as they are."""
    if activation.ndim == 4 and pool is not None:
        h, w = activation.shape[-2:]
        activation = F.adaptive_avg_pool2d(activation, (min(pool, h), min(pool, w)))
    return activation.flatten(1)


@torch.no_grad()
def collect(model: Classifier, images: torch.Tensor, layers: list[str], pool: int | None = 4,
            batch_size: int = 500, max_features: int | None = None) -> dict[str, torch.Tensor]:
    """{layer: N×D float32 features} for `images` (N×C×H×W in [0, 1]); 'pixels' is the input itself."""
    modules = {name: get_layer(model, name) for name in layers if name != PIXELS}
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    hooks = [module.register_forward_hook(lambda _m, _i, o, name=name: out[name].append(_flatten(o, pool).float()))
             for name, module in modules.items()]
    try:
        with eval_mode(model):
            for start in range(0, len(images), batch_size):
                batch = images[start:start + batch_size]
                if PIXELS in out:
                    out[PIXELS].append(batch.flatten(1))
                model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    features = {name: torch.cat(chunks) for name, chunks in out.items()}
    if max_features is not None:
        for name, matrix in features.items():
            if matrix.shape[1] > max_features:
                raise StudioError(f"layer {name!r} gives {matrix.shape[1]} features per image, more than "
                                  f"max_features={max_features}; pool its maps harder (e.g. pool=1) or "
                                  "raise max_features")
    return features
