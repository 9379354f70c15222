"""Attention maps of a Vision Transformer (studio/vit.py): raw attention and attention rollout.

Both read the attention probabilities A_l (B×heads×T×T, rows sum to 1) that every block's
`attn.softmax` produces, and the readout's (B×heads×1×T, `pool.softmax`), through forward hooks, and say
which patches the model reads, not why a class: the target is ignored. A token matrix M (B×T×T, row i =
where token i reads) becomes one relevance per patch through the row of what the head reads of the last
tokens, row·M: with the mean pooling (model.options.pool=mean, vit_tiny's) it is 1/T for every token,
(1/T)·1ᵀM; with the attention readout (pool=attention) it is the readout's attention averaged over heads,
the analogue of the class token's row that Abnar & Zuidema read. The T values go back to the patch grid
and every pixel gets its patch's value.

Attention rollout (Abnar & Zuidema 2020): with Ã_l = r·Ā_l + (1 − r)·I (Ā_l the mean over heads, r = 0.5
in the paper, the identity standing for the residual connection; rows renormalized), the flow from input
patches to the last layer's tokens is R = Ã_L ⋯ Ã_1. Identity attention (every token reads only itself)
gives R = I and so the readout's row itself: 1/T everywhere under the mean pooling (every patch reaches the
output alike), one-hot on patch k when the readout attends only to k. The readout has no skip connection
(the head sees only what it attends to), so its row enters as it is, without the ½I.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from studio.errors import StudioError
from studio.explain.checks import check_finite, logits
from studio.explain.registry import Attribution, MethodSpec, register
from studio.modes import forward_batches
from studio.vit import attention_layers, attention_readout


def attention_probabilities(model: nn.Module, x: torch.Tensor,
                            batch_size: int = 256) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Every block's attention B×heads×T×T for images x (N×C×H×W), in forward order, and the readout's
    B×heads×1×T (None when the model pools the mean), in eval mode, batched."""
    net = getattr(model, "net", model)
    readout = attention_readout(net)
    softmaxes = [layer.softmax for layer in attention_layers(net).values()]
    softmaxes += [readout.softmax] if readout is not None else []
    captured: list[list[torch.Tensor]] = [[] for _ in softmaxes]

    def keep(k: int):
        return lambda _module, _inputs, output: captured[k].append(output.detach().float().cpu())

    forward_batches(model, x, [(softmax, keep(k)) for k, softmax in enumerate(softmaxes)], batch_size)
    tensors = [torch.cat(c) for c in captured]
    return (tensors[:-1], tensors[-1]) if readout is not None else (tensors, None)


def rollout(attentions: list[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """R = Ã_L ⋯ Ã_1 (B×T×T) from per-block attentions B×heads×T×T, Ã_l = residual·Ā_l + (1 − residual)·I
    with rows renormalized (Abnar & Zuidema 2020, who use residual = 0.5)."""
    flow = None
    for attention in attentions:
        mixed = attention.mean(1)
        eye = torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
        mixed = residual * mixed + (1 - residual) * eye
        mixed = mixed / mixed.sum(-1, keepdim=True)
        flow = mixed if flow is None else mixed @ flow
    return flow


def readout_row(readout: torch.Tensor | None, tokens: int, batch: int) -> torch.Tensor:
    """B×T: how much the head's input draws from each last-block token. The attention readout's row,
    averaged over heads; the mean pooling's is 1/T for every token."""
    if readout is None:
        return torch.full((batch, tokens), 1 / tokens)
    return readout.mean(1)[:, 0]


def pooled_relevance(tokens: torch.Tensor, readout: torch.Tensor | None = None) -> torch.Tensor:
    """B×T×T token matrix M -> B×T: what the readout reads of each patch through M, row·M (the readout's
    attention row, or the mean of M's rows for the mean pooling)."""
    row = readout_row(readout, tokens.shape[-1], len(tokens)).to(tokens)
    return (row.unsqueeze(1) @ tokens)[:, 0]


def to_pixels(relevance: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×T patch values (T = h·w, row-major) -> B×1×H×W maps, each pixel its patch's value."""
    h, w = size
    side = round((relevance.shape[1] * h / w) ** 0.5)
    grid = relevance.reshape(len(relevance), 1, side, relevance.shape[1] // side)
    return F.interpolate(grid, size=size, mode="nearest")


class AttentionMethod:
    """Shared plumbing: the model's attention layers (none: one line naming a model that has them)."""

    name = ""

    def __init__(self, model: nn.Module, batch_size: int = 256, seed: int = 0):
        self.model, self.batch_size, self.seed = model, batch_size, seed
        self.blocks = len(attention_layers(getattr(model, "net", model)))
        if not self.blocks:
            raise StudioError(f"method={self.name} needs a model with self-attention: use model=vit_tiny (this "
                              "model has no attention layers; for a CNN use gradcam, ig, lime, ...)")

    def attribute(self, x: torch.Tensor, target=None, seed: int | None = None) -> torch.Tensor:
        """N×1×H×W maps of x (the target is checked, then ignored: attention does not depend on it)."""
        logits(self.model, x, self.batch_size)  # the input checks every method makes
        relevance = self._relevance(*attention_probabilities(self.model, x, self.batch_size))
        return check_finite(to_pixels(relevance, x.shape[-2:]))

    def attribution(self, x, target=None, segments=None, seed=None) -> Attribution:
        return Attribution(self.attribute(x, target, seed))

    def _relevance(self, attentions: list[torch.Tensor], readout: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class RawAttention(AttentionMethod):
    """The attention of one block (`block`: 0..depth-1, -1 = the last) and one head (`head`: an index, or
    "mean" over heads), read by the readout: row·A (the mean over queries of A[query, patch] under the mean
    pooling)."""

    name = "attention"

    def __init__(self, model, block: int = -1, head: int | str = "mean", batch_size: int = 256, seed: int = 0):
        super().__init__(model, batch_size, seed)
        if not -self.blocks <= int(block) < self.blocks:
            raise StudioError(f"explain.attention.block={block} is out of range: the model has {self.blocks} "
                              f"blocks (0..{self.blocks - 1}, or -1 for the last)")
        heads = next(iter(attention_layers(getattr(model, "net", model)).values())).heads
        if head != "mean" and not (isinstance(head, int) and 0 <= head < heads):
            raise StudioError(f"explain.attention.head={head!r} is not valid: choose a head 0..{heads - 1} or mean")
        self.block, self.head = int(block), head

    def _relevance(self, attentions, readout):
        chosen = attentions[self.block]
        chosen = chosen.mean(1) if self.head == "mean" else chosen[:, self.head]
        return pooled_relevance(chosen, readout)


class AttentionRollout(AttentionMethod):
    """Attention rollout (Abnar & Zuidema 2020) through every block, read by the readout: row·R."""

    name = "attention_rollout"

    def __init__(self, model, residual: float = 0.5, batch_size: int = 256, seed: int = 0):
        super().__init__(model, batch_size, seed)
        if not 0 <= residual <= 1:
            raise StudioError(f"explain.attention_rollout.residual={residual} must be in [0, 1] (the paper's: 0.5)")
        self.residual = residual

    def _relevance(self, attentions, readout):
        return pooled_relevance(rollout(attentions, self.residual), readout)


register(MethodSpec("attention", RawAttention, block="attention", applies=lambda m: bool(attention_layers(m))))
register(MethodSpec("attention_rollout", AttentionRollout, block="attention_rollout",
                    applies=lambda m: bool(attention_layers(m))))
