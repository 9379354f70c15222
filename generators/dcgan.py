"""DCGAN (Radford et al. 2016) for small images: size 28 (MNIST) or 32 (CIFAR), any channel count; its
discriminator spectrally normalized for the hinge loss (generators/modules.py, GANModule)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from studio.errors import StudioError


def _base(size: int) -> int:
    if size % 4:
        raise StudioError(f"generator=dcgan and generator=vae need an image size divisible by 4; got data.size={size} "
                          "(use 28 or 32)")
    return size // 4


class Generator(nn.Module):
    """z (N×latent_dim) -> images N×C×size×size in [0, 1]."""

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 64):
        super().__init__()
        self.latent_dim, self.base, self.width = latent_dim, _base(size), width
        self.project = nn.Sequential(nn.Linear(latent_dim, 2 * width * self.base ** 2, bias=False),
                                     nn.BatchNorm1d(2 * width * self.base ** 2), nn.ReLU())
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(z).view(-1, 2 * self.width, self.base, self.base))


class MinibatchStd(nn.Module):
    """Appends the batch's mean feature standard deviation as one more channel (Karras et al. 2018):
    a discriminator that sees how varied a batch is punishes a generator that keeps making the same
    few digits, so every class keeps its share of the samples."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = x.std(0, unbiased=False).mean() if len(x) > 1 else x.new_zeros(())
        return torch.cat([x, std.expand(len(x), 1, *x.shape[2:])], 1)


class Discriminator(nn.Module):
    """images in [0, 1] -> one realism logit per image. Spectral norm on every layer (Miyato et al. 2018)
    instead of batch norm: each layer is 1-Lipschitz, which keeps the hinge loss's logits in check, and
    a logit depends on its own image only (apart from the minibatch-std channel)."""

    def __init__(self, channels: int, size: int, width: int = 64):
        super().__init__()
        base = _base(size)
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, width, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
            MinibatchStd(), nn.Flatten(), spectral_norm(nn.Linear((2 * width + 1) * base ** 2, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1).squeeze(1)
