"""A convolutional VAE (Kingma & Welling 2014): its decoder is the generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from generators.dcgan import _base


class Encoder(nn.Module):
    """images in [0, 1] -> (mu, logvar), each N×latent_dim."""

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 32):
        super().__init__()
        base = _base(size)
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * width * base ** 2, 256), nn.ReLU(), nn.Linear(256, 2 * latent_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x).chunk(2, dim=1)


class Decoder(nn.Module):
    """z (N×latent_dim) -> images N×C×size×size in [0, 1] (Bernoulli means)."""

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 32):
        super().__init__()
        self.latent_dim, self.base, self.width = latent_dim, _base(size), width
        self.project = nn.Sequential(nn.Linear(latent_dim, 256), nn.ReLU(),
                                     nn.Linear(256, 2 * width * self.base ** 2), nn.ReLU())
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z).view(-1, 2 * self.width, self.base, self.base))


def negative_elbo(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-image −ELBO in nats: Bernoulli reconstruction + KL(q(z|x) ‖ N(0, I))."""
    recon_nll = F.binary_cross_entropy(recon, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return recon_nll + kl
