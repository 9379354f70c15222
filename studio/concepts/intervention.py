"""A built-in concept as an intervention: draw it on a class's own images and watch the class's logit.

TCAV's score is a sign count of one layer's directional derivatives: it says *which way* a logit is
sensitive to a concept, not *how much* the concept moves it, and a tiny but consistent sensitivity is as
significant as a shortcut. A built-in concept is a transform of the images (studio/concepts/sets.py), so
the studio can also apply it and measure the effect on the output directly: on the demo's models,
planting the Clever Hans mark on test 0s raises the Clever Hans model's 0 logit by about 10 and moves the
clean model's by a fraction of one (README, Concepts: TCAV). A user folder is a set of images, not a
transform, and gets no effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import nan
from typing import Callable

import torch

from studio.modes import eval_mode


@dataclass
class ConceptEffect:
    concept: str
    klass: int
    logit_change: float  # mean over the class's images of (logit with the concept − logit without)
    rises: float  # share of the class's images whose logit rises when the concept is drawn on
    images: int  # how many of the class's images the concept changed (those it leaves as they are don't count)


@torch.no_grad()
def _logits(model: torch.nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(images[i:i + batch_size]).float() for i in range(0, len(images), batch_size)])


def concept_effects(model: torch.nn.Module, transforms: dict[str, Callable[[torch.Tensor], torch.Tensor]],
                    images: torch.Tensor, labels: torch.Tensor, classes: list[int],
                    batch_size: int = 250) -> list[ConceptEffect]:
    """For each concept (a transform of N×C×H×W images in [0, 1]) and class k: how the logit of k changes on
    the class-k images (labels: N int64) when the concept is drawn on them. Images the transform leaves
    unchanged (on marked data, the digits that already carry the mark) are left out: nothing was done to them."""
    with eval_mode(model):
        before = _logits(model, images, batch_size)
        effects = []
        for name, transform in transforms.items():
            after = transform(images)
            changed = (after != images).flatten(1).any(1)
            change = _logits(model, after, batch_size) - before
            for k in classes:
                own = change[(labels == k) & changed, k]
                mean, rises = (own.mean().item(), (own > 0).float().mean().item()) if len(own) else (nan, nan)
                effects.append(ConceptEffect(name, k, mean, rises, len(own)))
    return effects
