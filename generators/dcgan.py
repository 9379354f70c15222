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


# How sharply the class entries of z pick their class in what the conditional generator sees: softmax(z_c / 0.25)
# is near one-hot for most draws, yet a latent render's gradient still reaches z_c to move between classes.
CLASS_TEMPERATURE = 0.25


class Generator(nn.Module):
    """z (N×latent_dim) -> images N×C×size×size in [0, 1].

    With `classes` (class-conditional): the first `classes` entries of z choose the class, their argmax
    (classes_of), so z ~ N(0, I) draws every class equally often; the generator sees them once more as
    softmax(z_c / CLASS_TEMPERATURE), and the discriminator judges its images as that class. z stays the
    whole latent code: sampling and latent renders need nothing else. With `class_norm` the generator also takes
    those class weights as each batch norm's gain and bias (ClassModulation)."""

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 64, classes: int | None = None,
                 class_norm: bool = False):
        super().__init__()
        if classes and classes > latent_dim:
            raise StudioError(f"a class-conditional generator chooses its class with the first generator.classes="
                              f"{classes} latent entries; generator.latent_dim={latent_dim} has too few")
        self.latent_dim, self.base, self.width, self.classes = latent_dim, _base(size), width, classes or 0
        modulated = bool(class_norm and self.classes)  # an unconditional generator has no class to modulate by
        features = 2 * width * self.base ** 2
        self.project = nn.Sequential(nn.Linear(latent_dim + self.classes, features, bias=False),
                                     nn.BatchNorm1d(features, affine=not modulated), nn.ReLU())
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width, affine=not modulated),
            nn.ReLU(), nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Sigmoid())
        # one per batch norm above, in order (made last, so the layers above start from the same weights either way)
        self.class_norm = nn.ModuleList([ClassModulation(self.classes, n) for n in (features, width)]
                                        ) if modulated else None

    def classes_of(self, z: torch.Tensor) -> torch.Tensor | None:
        """The class each latent code draws (argmax of its class entries); None when unconditional."""
        return z[:, :self.classes].argmax(1) if self.classes else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(z[:, :self.classes] / CLASS_TEMPERATURE, 1) if self.classes else None
        h = self.conditioned(self.project, z if weights is None else torch.cat([z, weights], 1), weights, norm=0)
        return self.conditioned(self.upsample, h.view(-1, 2 * self.width, self.base, self.base), weights, norm=1)

    def conditioned(self, sequence: nn.Sequential, h: torch.Tensor, weights: torch.Tensor | None,
                    norm: int) -> torch.Tensor:
        """h through `sequence`; with class_norm, its batch norm's output modulated by the class weights
        (class_norm[norm]: each sequence has one batch norm)."""
        if self.class_norm is None:
            return sequence(h)
        for layer in sequence:
            h = layer(h)
            if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
                h = self.class_norm[norm](h, weights)
        return h


class ClassModulation(nn.Linear):
    """The class part of a conditional batch norm (de Vries et al. 2017; BigGAN's class-conditional batch norm,
    Brock et al. 2019): a gain and a bias per channel, linear in the class weights c = softmax(z_c / T), on the
    output of a batch norm without its own affine part: h·(1 + g(c)) + b(c). Zero at the start (plain batch
    norm); each class learns which features to amplify or silence, where input conditioning leaves every class
    the same normalization. c stays soft, so a latent render's gradient still moves between classes."""

    def __init__(self, classes: int, channels: int):
        super().__init__(classes, 2 * channels)
        nn.init.zeros_(self.weight), nn.init.zeros_(self.bias)

    def forward(self, h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        gain, bias = super().forward(weights).view(len(h), 2, -1, *(1,) * (h.dim() - 2)).unbind(1)
        return h * (1 + gain) + bias


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
    a logit depends on its own image only (apart from the minibatch-std channel).

    With `classes`, a projection discriminator (Miyato & Koyama 2018): the logit of an image as class y adds
    the inner product of its features with y's embedding. Without labels it judges the image as its most
    fitting class (log-sum-exp over the classes), which is what a realism term wants."""

    def __init__(self, channels: int, size: int, width: int = 64, classes: int | None = None):
        super().__init__()
        base = _base(size)
        features = (2 * width + 1) * base ** 2
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(channels, width, 4, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
            MinibatchStd(), nn.Flatten(), spectral_norm(nn.Linear(features, 1)))
        self.embed = spectral_norm(nn.Embedding(classes, features)) if classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """labels: each image's class (ignored when unconditional; None: its most fitting class)."""
        if self.embed is None:
            return self.net(x * 2 - 1).squeeze(1)
        h = self.net[:-1](x * 2 - 1)
        projection = h @ self.embed.weight.T  # N×classes
        fit = projection.logsumexp(1) if labels is None else projection.gather(1, labels[:, None]).squeeze(1)
        return self.net[-1](h).squeeze(1) + fit
