"""A small Vision Transformer whose blocks keep the patch grid: every block takes and returns B×D×h×w.

Patches of `patch` px are embedded by a strided convolution (`patch_embed`), a learned position map is
added (`pos`), `depth` pre-norm transformer blocks (`blocks.0`, `blocks.1`, ...) mix the h·w tokens, and
the head reads them through `pool` (model.options.pool: `mean`, their mean, the default; `attention`, one
learned query per head attending over them; no class token either way, so every block keeps the grid).
Inside a block the tokens are B×T×D; between blocks they are reshaped to the patch grid, so a block's
output is a map like a conv layer's: channel and neuron objectives, Grad-CAM and `studio layers` treat it
as one (D channels on an h×w grid).

Each block's attention probabilities B×heads×T×T are the output of its `attn.softmax` module: a forward
hook reads them (attention maps and rollout, studio/explain/attention.py) without the model keeping state;
the attention readout's B×heads×1×T come out of `pool.softmax` the same way.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from studio.errors import StudioError, lookup


class SelfAttention(nn.Module):
    """Multi-head self-attention on tokens B×T×D; the probabilities pass through `self.softmax` (hook it)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, d = tokens.shape
        q, k, v = self.qkv(tokens).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = self.softmax((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5)  # B×heads×T×T
        return self.proj((weights @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """A pre-norm transformer block on the patch grid: B×D×h×w in, B×D×h×w out."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict(fc1=nn.Linear(dim, hidden), act=nn.GELU(), fc2=nn.Linear(hidden, dim)))

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        b, d, h, w = grid.shape
        tokens = grid.flatten(2).transpose(1, 2)  # B×T×D, T = h·w in row-major order
        tokens = tokens + self.attn(self.norm1(tokens))
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.transpose(1, 2).reshape(b, d, h, w)


class AttentionPool(nn.Module):
    """The attention readout: one learned query per head attends over the (layer-normed) tokens of the last
    block and returns their weighted sum, B×D×h×w in, B×D out. Unlike the mean, the head sees a token only as
    much as the query picks it, so the readout's attention, B×heads×1×T, the output of `self.softmax` (hook
    it, as the blocks' `attn.softmax`), is the row attention rollout starts from, as a class token's would be.
    (It does not make rollout find the Clever Hans mark: the trained query reads the tokens almost evenly,
    the blocks having already spread the mark into all of them; README.)"""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Parameter(torch.zeros(1, heads, 1, dim // heads))
        self.kv = nn.Linear(dim, 2 * dim)
        self.softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        b, d, _, _ = grid.shape
        tokens = self.norm(grid.flatten(2).transpose(1, 2))  # B×T×D
        k, v = self.kv(tokens).view(b, -1, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = self.softmax((self.query @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5)  # B×heads×1×T
        return self.proj((weights @ v).reshape(b, d))


def mean_pool(dim: int, heads: int) -> nn.Module:  # (dim, heads): the signature every POOLS entry has
    """The mean of the tokens: every token reaches the head through its own residual path, so attention
    need not pick the tokens the model uses (rollout then reads all of them alike, 1/T each)."""
    return nn.AdaptiveAvgPool2d(1)


# model.options.pool: how the head reads the last block's tokens
POOLS = {"attention": AttentionPool, "mean": mean_pool}


class PositionMap(nn.Module):
    """Adds a learned D×h×w position embedding to the patch grid."""

    def __init__(self, dim: int, side: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, dim, side, side))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return grid + self.weight


class VisionTransformer(nn.Sequential):
    """patch_embed, pos, blocks (blocks.0 ...), pool, flatten, norm, head: a Sequential like the CNNs."""

    @property
    def gradcam_layer(self) -> str:
        """The last block: Grad-CAM's default layer (its output is the last map on the patch grid)."""
        return f"blocks.{len(self.blocks) - 1}"

    def grid_layers(self) -> list[str]:
        """The layers whose output is a map on the patch grid (B×D×h×w): the patch embedding and the blocks.
        Inside a block, tokens are B×T×D."""
        return ["patch_embed", "pos", *(f"blocks.{i}" for i in range(len(self.blocks)))]


def check_patch(patch: int, image_size: int) -> None:
    """A patch size must tile the image exactly; otherwise one line naming the sizes that do."""
    if patch < 1 or image_size % patch:
        divisors = [p for p in range(2, image_size) if image_size % p == 0]
        raise StudioError(f"patch size {patch} px does not divide the {image_size} px image (data.size); "
                          f"use model.options.patch= one of {', '.join(map(str, divisors))}")


def vit(channels: int, num_classes: int, image_size: int = 28, patch: int = 4, dim: int = 64, depth: int = 4,
        heads: int = 4, mlp_ratio: float = 2.0, pool: str = "mean") -> nn.Module:
    """A Vision Transformer for image_size² images in patches of `patch` px (which must divide it), its head
    reading the last tokens through `pool` (POOLS)."""
    check_patch(patch, image_size)
    if dim % heads:
        raise StudioError(f"model.options.dim={dim} is not a multiple of model.options.heads={heads}")
    readout = lookup(POOLS, "model.options.pool", pool)(dim, heads)
    side = image_size // patch
    return VisionTransformer(OrderedDict(
        patch_embed=nn.Conv2d(channels, dim, patch, stride=patch),
        pos=PositionMap(dim, side),
        blocks=nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth))),
        pool=readout, flatten=nn.Flatten(),
        norm=nn.LayerNorm(dim),
        head=nn.Linear(dim, num_classes),
    ))


def token_part(name: str) -> str | None:
    """The part of a ViT whose inside `name` is, where tokens B×T×D flow (a block, the attention readout:
    `pool.kv`, `pool.softmax`, ...), or None (a block itself, `pool`, or a layer outside them)."""
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) >= 3:
        return "a ViT block"
    return "the ViT's attention readout" if parts[0] == "pool" and len(parts) >= 2 else None


def check_map_layer(net: nn.Module, name: str, what: str = "layer") -> None:
    """A layer inside a ViT block or readout gives tokens, not a map: one line naming the layers that do."""
    part = token_part(name) if isinstance(net, VisionTransformer) else None
    if part:
        raise StudioError(f"{what} {name!r} is inside {part} and gives tokens, not a map on the patch grid; "
                          f"choose a block or the patch embedding: {', '.join(net.grid_layers())}")


def attention_layers(net: nn.Module) -> dict[str, SelfAttention]:
    """name -> SelfAttention module of every block of `net`, in forward order (empty: no attention)."""
    return {name: m for name, m in net.named_modules() if isinstance(m, SelfAttention)}


def attention_readout(net: nn.Module) -> AttentionPool | None:
    """`net`'s attention readout (model.options.pool=attention), or None (the mean, or no ViT)."""
    return next((m for m in net.modules() if isinstance(m, AttentionPool)), None)
