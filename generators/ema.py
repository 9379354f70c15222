"""An exponential moving average of a network's weights, the copy that samples (GAN and diffusion alike)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def blend(average: nn.Module, current: nn.Module, decay: float) -> None:
    """average <- decay·average + (1 - decay)·current for the weights and the batch-norm statistics alike (the
    batch-norm counters copied)."""
    for avg, cur in zip(average.state_dict().values(), current.state_dict().values()):
        if avg.is_floating_point():
            avg.lerp_(cur, 1 - decay)
        else:  # batch norm's num_batches_tracked
            avg.copy_(cur)


@torch.no_grad()
def update_ema(average: nn.Module, current: nn.Module, updates: torch.Tensor, decay: float) -> None:
    """blend(average, current, d) with d = min(decay, (1 + t) / (10 + t)) after t = `updates` earlier updates
    (so a short training is not averaged with the random start); counts the update in `updates`."""
    t = float(updates)
    blend(average, current, min(decay, (1 + t) / (10 + t)))
    updates += 1
