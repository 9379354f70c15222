"""A faster twin of a model for gradient-free evaluation (LIME's perturbations, deletion curves).

Batch norm folded into the preceding convolution (torch.fx), in-place ReLUs and channels-last
weights: the same function in fp32, measured 3× faster than eager small_cnn on CPU (1 thread, batch
64). The twin is checked against the model on the caller's images and the model itself is used
whenever tracing fails or the outputs differ.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from studio.modes import eval_mode


def fold_batch_norm(net: nn.Module) -> nn.Module:
    """An eval-mode copy of `net` with every batch norm that follows a convolution folded into it
    (torch.fx; raises if the net cannot be traced)."""
    from torch.fx.experimental.optimization import fuse

    return fuse(copy.deepcopy(net).eval())


def _fold(model: nn.Module) -> nn.Module:
    twin = copy.deepcopy(model).eval()
    net = getattr(twin, "net", None)
    if isinstance(net, nn.Module):  # a studio Classifier: fold inside the net, keep the normalization
        twin.net = fold_batch_norm(net)
    else:
        twin = fold_batch_norm(twin)
    for module in twin.modules():
        # In place: a fresh multi-MB activation per batch costs page faults on every call (measured: 40% of
        # the folded small_cnn's CPU time). A ReLU whose input is read again would change the output,
        # which the check in inference_twin catches (the model itself is used then).
        if isinstance(module, nn.ReLU):
            module.inplace = True
    return twin.to(memory_format=torch.channels_last)


@torch.no_grad()
def inference_twin(model: nn.Module, example: torch.Tensor, tolerance: float = 1e-4) -> nn.Module:
    """The folded, channels-last twin of `model` if it matches the model on `example` (N×C×H×W)
    within `tolerance` × (1 + max |output|); otherwise `model` itself."""
    try:
        with eval_mode(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            twin = _fold(model)
            reference = model(example).float()
            got = twin(example.contiguous(memory_format=torch.channels_last)).float()
    except Exception:  # noqa: BLE001 - untraceable (data-dependent control flow, ...): stay eager
        return model
    # `not <=`: a nan anywhere is a disagreement too
    if not (got - reference).abs().max() <= tolerance * (1 + reference.abs().max()):
        return model
    return twin
