"""Natural exemplars: the images of a data set that maximize (top) and minimize (bottom) an objective, the
same objective a render maximizes, found in one batched pass over the images.

    found = find_exemplars(model, [channel("conv2", c) for c in range(12)], train_images, k=9)
    found.top[t]            # (k,) row indices into train_images, highest objective first
    found.bottom[t]         # (k,) lowest first
    found.values            # N×T: every image's objective for every target

Each objective has one target and is evaluated on every image alone (a batch of natural images is not
a batch of seeds). Ties are broken by the lower index, as a stable sort does, so the result is the
same as sorting each column by hand.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from studio.errors import StudioError
from studio.modes import eval_mode
from studio.optvis.objectives import IMAGE, INPUT, LOGITS, Objective
from studio.optvis.render import _Capture, _model_device, _modules


@dataclass
class Exemplars:
    """Top-k and bottom-k rows of the images for each of T targets."""

    targets: list[str]  # one label per objective, e.g. "conv2:7"
    values: torch.Tensor  # N×T objective values, fp32 on the CPU
    top: torch.Tensor  # T×k row indices, highest value first
    bottom: torch.Tensor  # T×k row indices, lowest value first
    seconds: float = 0.0

    def top_values(self) -> torch.Tensor:
        """T×k: the top exemplars' objective values."""
        return self.values.T.gather(1, self.top)

    def bottom_values(self) -> torch.Tensor:
        return self.values.T.gather(1, self.bottom)


def _single_target(objectives: Sequence[Objective]) -> None:
    for objective in objectives:
        if objective.size != 1:
            raise StudioError(f"exemplars rank images by one target at a time; {objective.name} has "
                              f"{objective.size} targets: give one objective per target")


@torch.no_grad()
def objective_values(model: nn.Module, objectives: Sequence[Objective], images: torch.Tensor,
                     batch_size: int = 128) -> torch.Tensor:
    """N×T: objective t of image n, each image on its own, in fp32 on the model's device, returned on the
    CPU. One forward pass per batch serves every objective; it stops after the deepest layer they read."""
    _single_target(objectives)
    layers = frozenset().union(*(o.model_layers for o in objectives))
    modules = _modules(model, layers - {LOGITS})
    capture = _Capture(modules)
    device = _model_device(model)
    out = []
    try:
        with eval_mode(model):
            for start in range(0, len(images), batch_size):
                x = images[start:start + batch_size].to(device)
                acts = capture.run(model, x) if layers else {}
                if start == 0 and LOGITS not in layers and modules:  # later batches stop after the last layer read
                    capture.limits = {n: max(c, 1) for n, c in capture.calls.items()}
                acts[IMAGE] = acts[INPUT] = x
                out.append(torch.stack([o(acts).float().reshape(len(x)) for o in objectives], 1).cpu())
    finally:
        capture.close()
    return torch.cat(out)


def rank(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(top, bottom) T×k row indices of the N×T values: highest first and lowest first, ties by lower row."""
    if not 1 <= k <= values.shape[0]:
        raise StudioError(f"cannot take the top {k} of {values.shape[0]} images: k must be 1..{values.shape[0]}")
    top = torch.sort(values, dim=0, descending=True, stable=True).indices[:k].T
    bottom = torch.sort(values, dim=0, stable=True).indices[:k].T
    return top.contiguous(), bottom.contiguous()


def find_exemplars(model: nn.Module, objectives: Sequence[Objective], images: torch.Tensor, k: int = 9,
                   batch_size: int = 128) -> Exemplars:
    """The k images that maximize and the k that minimize each objective (one target each)."""
    if not 1 <= k <= len(images):
        raise StudioError(f"cannot take the top {k} of {len(images)} images: k must be 1..{len(images)}")
    began = time.perf_counter()
    values = objective_values(model, objectives, images, batch_size)
    top, bottom = rank(values, k)
    return Exemplars([o.targets[0] if o.targets else o.name for o in objectives], values, top, bottom,
                     time.perf_counter() - began)
