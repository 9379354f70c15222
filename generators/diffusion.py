"""A denoising diffusion model as a generator (Ho et al. 2020, the cosine schedule of Nichol & Dhariwal
2021) whose latent is its starting noise: `generator(z)` runs a deterministic DDIM sampler (Song et al.
2021) for a few steps from z, so latent visualization (param=latent generator=diffusion) optimizes the
noise by backpropagating through the sampler, and the images stay what the denoiser would make."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from generators.ema import update_ema
from generators.modules import GeneratorModule
from generators.unet import UNet
from studio.errors import StudioError
from studio.modes import eval_mode


def cosine_alphas_bar(timesteps: int, offset: float = 0.008) -> torch.Tensor:
    """ᾱ_t for t = 0..timesteps-1: the share of signal left after t+1 noising steps (Nichol & Dhariwal's
    cosine schedule, each step's β capped at 0.999)."""
    f = lambda t: math.cos((t / timesteps + offset) / (1 + offset) * math.pi / 2) ** 2  # noqa: E731
    betas = torch.tensor([min(1 - f(t + 1) / f(t), 0.999) for t in range(timesteps)], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0).float()


def ddim_timesteps(timesteps: int, steps: int, key: str = "sampler_steps") -> list[int]:
    """`steps` timesteps from timesteps-1 down to 0, evenly spaced (the sampler's path); `key` names the
    setting in the error."""
    if not 1 <= steps <= timesteps:
        raise StudioError(f"generator.{key}={steps} is not a number of steps of a {timesteps}-step "
                          f"schedule; give 1..{timesteps} (generator.timesteps)")
    return torch.linspace(timesteps - 1, 0, steps).round().long().tolist()


def clean_estimate(denoiser: nn.Module, x: torch.Tensor, t: int, a: torch.Tensor) -> torch.Tensor:
    """The denoiser's estimate of the clean image x̂0 behind x_t (ᾱ_t = a), clipped to the data range [-1, 1]."""
    eps = denoiser(x, torch.full((len(x),), t, device=x.device))
    return ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)


def ddim_step(x: torch.Tensor, x0: torch.Tensor, a: torch.Tensor, a_next: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step (η = 0) from x_t (ᾱ_t = a) to the next level (ᾱ = a_next), given a clean
    image x0: the noise x_t holds beside x0, rescaled to the next level."""
    eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
    return a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps


def levels(alphas_bar: torch.Tensor, path: list[int]) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(t, ᾱ_t, ᾱ of the next step) along a sampler's path; after the last step, ᾱ = 1 (the clean image)."""
    nexts = [alphas_bar[t] for t in path[1:]] + [alphas_bar.new_ones(())]
    return [(t, alphas_bar[t], a_next) for t, a_next in zip(path, nexts)]


class DDIMSampler(nn.Module):
    """z (N×C·H·W, the noise x_T) -> images N×C×H×W in [0, 1] by deterministic DDIM: at each step the
    denoiser's clean-image estimate x̂0 and the noise it implies are recombined at the next, lower noise
    level. Differentiable in z."""

    def __init__(self, denoiser: nn.Module, alphas_bar: torch.Tensor, steps: int, shape: tuple[int, int, int]):
        super().__init__()
        self.denoiser, self.shape = denoiser, shape
        self.path = ddim_timesteps(len(alphas_bar), steps)
        self.register_buffer("alphas_bar", alphas_bar, persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = x0 = z.view(len(z), *self.shape)
        for t, a, a_next in levels(self.alphas_bar, self.path):
            x0 = clean_estimate(self.denoiser, x, t, a)
            x = ddim_step(x, x0, a, a_next)
        return (x0 + 1) / 2


class DiffusionModule(GeneratorModule):
    """Trains a U-Net to predict the noise of x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε (x0 the image scaled to [-1, 1],
    t uniform): the ε-prediction loss, weighted per timestep by min(SNR_t, γ) / SNR_t (min-SNR-γ, Hang et al.
    2023: the nearly clean timesteps, whose noise is hardest to see and least useful to learn, stop dominating
    the gradient; measured cleaner samples at the same cost, README). min_snr_gamma=None: the plain loss.
    `online` is what the optimizer trains, `ema` its moving average (decay ramped like the GAN's), which is
    what `generator` (the DDIM sampler) runs.

    The latent is the noise: latent_dim = C·H·W (the config's latent_dim must be null or that number)."""

    options = ("timesteps", "sampler_steps", "sample_steps", "ema_decay", "min_snr_gamma")
    sampled = "ema"
    sampled_what = "the moving average (EMA) of the denoiser's weights"
    sampled_missing = "save the denoiser's weights alone (they load as the EMA weights) or retrain it"

    def __init__(self, latent_dim: int | None, channels: int, size: int, width: int = 32, lr: float = 1e-3,
                 timesteps: int = 1000, sampler_steps: int = 4, sample_steps: int = 50, ema_decay: float = 0.999,
                 min_snr_gamma: float | None = 5.0):
        super().__init__()
        if size % 4:
            raise StudioError(f"generator=diffusion needs an image size divisible by 4; got data.size={size} "
                              "(use 28 or 32)")
        noise_dim = channels * size * size
        if latent_dim not in (None, noise_dim):
            raise StudioError(f"generator.latent_dim={latent_dim} does not fit generator=diffusion: its latent is "
                              f"the starting noise, {channels}x{size}x{size} = {noise_dim} numbers; leave it null")
        ddim_timesteps(timesteps, sampler_steps)  # a bad number of steps: the error now, not at the first render
        ddim_timesteps(timesteps, sample_steps, "sample_steps")
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise StudioError(f"generator.min_snr_gamma={min_snr_gamma} must be > 0 (5 is the paper's and the "
                              "studio's; null for the unweighted loss)")
        self.latent_dim, self.lr, self.ema_decay, self.min_snr_gamma = noise_dim, lr, ema_decay, min_snr_gamma
        self.sampler_steps, self.sample_steps, self.image_size = sampler_steps, sample_steps, (channels, size, size)
        self.online = UNet(channels, width)
        self.ema = copy.deepcopy(self.online).requires_grad_(False).eval()
        self.register_buffer("alphas_bar", cosine_alphas_bar(timesteps), persistent=False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        # What the weights were trained on: a fully convolutional U-Net would load at any size, and make noise.
        self.register_buffer("image_shape", torch.tensor([channels, size, size]))

    @property
    def generator(self) -> DDIMSampler:
        """z -> images in sampler_steps steps: what param=latent backpropagates through."""
        return DDIMSampler(self.ema, self.alphas_bar, self.sampler_steps, self.image_size)

    @property
    def sampler(self) -> DDIMSampler:
        """What sample() runs: sample_steps DDIM steps (more than the latent map's: nothing backpropagates)."""
        return DDIMSampler(self.ema, self.alphas_bar, self.sample_steps, self.image_size)

    # The per-epoch grid's DDIM steps: sample()'s 50 cost a third of each training epoch (64 images x 50
    # fp32 U-Net passes vs 56 bf16 training steps); 10 steps from the same noise show the same digits, coarser.
    PREVIEW_STEPS = 10

    @torch.no_grad()
    def preview(self, n: int, seed: int = 0) -> torch.Tensor:
        steps = min(self.PREVIEW_STEPS, self.sample_steps)
        with eval_mode(self):
            return DDIMSampler(self.ema, self.alphas_bar, steps, self.image_size)(self.prior(n, seed))

    # What guided sampling (param=guided, studio/optvis/params.py) runs step by step.
    def path_levels(self, steps: int) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """(t, ᾱ_t, next ᾱ) along a `steps`-step DDIM path of this model's schedule."""
        return levels(self.alphas_bar, ddim_timesteps(len(self.alphas_bar), steps))

    def clean_estimate(self, x: torch.Tensor, t: int, a: torch.Tensor) -> torch.Tensor:
        return clean_estimate(self.ema, x, t, a)

    ddim_step = staticmethod(ddim_step)

    def train(self, mode: bool = True):
        super().train(mode)
        self.ema.eval()
        return self

    def noised(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        a = self.alphas_bar[t][:, None, None, None]
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def noise_error(self, denoiser: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per image (N,): the mean squared error of denoiser's noise prediction on x0 noised to t with `noise`
        (a bf16 prediction under autocast is promoted to the noise's fp32 by the subtraction)."""
        return (denoiser(self.noised(x0, t, noise), t) - noise).pow(2).flatten(1).mean(1)

    def training_step(self, batch, _):
        x0 = batch[0] * 2 - 1
        t = torch.randint(0, len(self.alphas_bar), (len(x0),), device=self.device)
        noise = torch.randn_like(x0)
        loss = (self.loss_weight(t) * self.noise_error(self.online, x0, t, noise)).mean()
        self.log("denoise_loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """min(SNR_t, γ) / SNR_t per timestep, SNR_t = ᾱ_t / (1 - ᾱ_t); ones without γ."""
        if self.min_snr_gamma is None:
            return torch.ones(len(t), device=t.device)
        a = self.alphas_bar[t]
        snr = a / (1 - a)
        return snr.clamp(max=self.min_snr_gamma) / snr

    def on_train_batch_end(self, *_):
        update_ema(self.ema, self.online, self.ema_updates, self.ema_decay)

    def configure_optimizers(self):
        return torch.optim.Adam(self.online.parameters(), lr=self.lr)

    REALISM_LEVELS = (0.1, 0.25, 0.5)  # of the schedule: where the denoising error is measured

    def realism(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the EMA denoiser's mean squared noise error on x at a few noise levels (fixed noise): low for
        images the model would make. Per pixel, like the VAE's ELBO."""
        x0, total = x * 2 - 1, 0.0
        for level in self.REALISM_LEVELS:
            t = torch.full((len(x),), int(level * (len(self.alphas_bar) - 1)), device=x.device)
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).to(x.device, x.dtype)
            total = total + self.noise_error(self.ema, x0, t, noise)
        return -total / len(self.REALISM_LEVELS)
