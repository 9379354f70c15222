"""Input checks and guarded model calls shared by every explanation method.

A user's mistake (wrong shape, wrong channel count, target out of range, a model that returns NaN)
ends in one StudioError line that names the bad value, before anything is written.
"""

from __future__ import annotations


import torch
from torch import nn

from studio.errors import StudioError
from studio.modes import eval_mode


def expected_channels(model: nn.Module) -> int | None:
    """Channels a studio Classifier takes (its normalization buffers say it); None for other modules."""
    mean = getattr(model, "mean", None)
    return int(mean.shape[1]) if torch.is_tensor(mean) and mean.ndim == 4 else None


def check_images(model: nn.Module, x) -> torch.Tensor:
    """x must be a finite float N×C×H×W tensor with the model's channel count."""
    if not torch.is_tensor(x) or x.ndim != 4:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise StudioError(f"images must be a tensor N×C×H×W, got shape {shape}")
    if not x.is_floating_point():
        raise StudioError(f"images must be floats in [0, 1], got dtype {x.dtype}")
    channels = expected_channels(model)
    if channels is not None and x.shape[1] != channels:
        raise StudioError(f"images have {x.shape[1]} channel(s) (shape {tuple(x.shape)}), "
                          f"but the model expects {channels}")
    bad = ~torch.isfinite(x.reshape(len(x), -1)).all(1)
    if bad.any():
        raise StudioError(f"images contain non-finite values (nan/inf), first in image {int(bad.nonzero()[0, 0])}; "
                          "give finite floats in [0, 1]")
    return x


def check_finite(outputs: torch.Tensor, image_index: torch.Tensor | None = None) -> torch.Tensor:
    """Model outputs must be finite; otherwise name the first image that produced nan/inf."""
    bad = ~torch.isfinite(outputs.reshape(len(outputs), -1)).all(1)
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        which = int(image_index[first]) if image_index is not None else first
        raise StudioError(f"the model returned non-finite outputs (nan/inf) for image {which}; "
                          "check the model's weights (checkpoint) and the input range [0, 1]")
    return outputs


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The model's outputs N×K for images x (eval mode, batched); shape mismatches become one line."""
    check_images(model, x)
    with eval_mode(model):
        try:
            out = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        except RuntimeError as e:  # e.g. mat1 and mat2 shapes cannot be multiplied
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StudioError(f"images of shape {tuple(x.shape[1:])} (C, H, W) do not fit the model: "
                              f"{reason}") from None
    if out.ndim != 2:
        raise StudioError(f"the model must return N×classes scores, got shape {tuple(out.shape)}")
    return check_finite(out.float())


def resolve_target(target, outputs: torch.Tensor) -> torch.Tensor:
    """Target classes as an N int64 tensor: None = the model's prediction; an int = the same for all."""
    n, classes = outputs.shape
    if target is None:
        return outputs.argmax(1)
    t = torch.as_tensor(target).long().flatten().to(outputs.device)
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise StudioError(f"got {t.numel()} targets for {n} images; give one target or one per image")
    bad = (t < 0) | (t >= classes)
    if bad.any():
        raise StudioError(f"target {int(t[bad][0])} is out of range; the model has {classes} classes "
                          f"(0..{classes - 1})")
    return t
