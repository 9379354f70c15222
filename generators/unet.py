"""A small U-Net noise predictor for images of 28 or 32 px (any channel count): three resolutions, one
residual block each, the timestep added to every block as a sinusoidal embedding (Ho et al. 2020, minus
attention: at 7×7 a 3×3 convolution already sees most of the image)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) timesteps -> N×dim sinusoids of geometric frequencies, as in the Transformer."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], 1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the timestep's embedding added in between, plus a skip."""

    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.time = nn.Linear(tdim, cout)
        self.norm2, self.conv2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time(temb)[:, :, None, None]
        return self.conv2(F.silu(self.norm2(h))) + self.skip(x)


class UNet(nn.Module):
    """(x_t, t) -> the noise in x_t, same shape as x_t (N×C×H×W, H and W divisible by 4)."""

    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        w, tdim = width, 4 * width
        self.width = w
        self.time = nn.Sequential(nn.Linear(w, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.stem = nn.Conv2d(channels, w, 3, padding=1)
        self.down = nn.ModuleList([ResBlock(w, w, tdim), ResBlock(w, 2 * w, tdim), ResBlock(2 * w, 2 * w, tdim)])
        self.middle = ResBlock(2 * w, 2 * w, tdim)
        self.up = nn.ModuleList([ResBlock(4 * w, 2 * w, tdim), ResBlock(4 * w, w, tdim), ResBlock(2 * w, w, tdim)])
        self.head = nn.Sequential(nn.GroupNorm(8, w), nn.SiLU(), nn.Conv2d(w, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        temb = self.time(timestep_embedding(t, self.width))
        skips, h = [], self.stem(x)
        for depth, block in enumerate(self.down):
            h = block(F.avg_pool2d(h, 2) if depth else h, temb)
            skips.append(h)
        h = self.middle(h, temb)
        for depth, block in enumerate(self.up):
            h = F.interpolate(h, scale_factor=2) if depth else h
            h = block(torch.cat([h, skips.pop()], 1), temb)
        return self.head(h)
