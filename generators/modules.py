"""Lightning modules that train the generators. Each exposes the same face to the studio:
`generator` (z -> images in [0, 1]), `latent_dim`, `sample(n, seed)` and `realism(x)` (higher = more
like the training data: the GAN's discriminator logit, or the VAE's ELBO)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import pytorch_lightning as pl

from generators.dcgan import Discriminator, Generator
from generators.vae import Decoder, Encoder, negative_elbo
from studio.fit import diverged
from studio.modes import eval_mode


class GeneratorModule(pl.LightningModule):
    generator: torch.nn.Module
    latent_dim: int

    def prior(self, n: int, seed: int) -> torch.Tensor:
        """n latent codes from N(0, I), drawn on the CPU from `seed` (the same on every device)."""
        return torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 500) -> torch.Tensor:
        """n images G(z), z ~ N(0, I); eval mode."""
        with eval_mode(self):
            z = self.prior(n, seed)
            return torch.cat([self.generator(z[i:i + batch_size]) for i in range(0, n, batch_size)])

    def realism(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class GANModule(GeneratorModule):
    """DCGAN with the non-saturating loss and one-sided label smoothing."""

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 64, lr: float = 2e-4):
        super().__init__()
        self.latent_dim, self.lr = latent_dim, lr
        self.generator = Generator(latent_dim, channels, size, width)
        self.discriminator = Discriminator(channels, size, width)
        self.automatic_optimization = False

    def training_step(self, batch, _):
        real, _ = batch
        opt_g, opt_d = self.optimizers()
        fake = self.generator(torch.randn(len(real), self.latent_dim, device=self.device))
        real_logits, fake_logits = self.discriminator(real), self.discriminator(fake.detach())
        d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, 0.9))
                  + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_logits = self.discriminator(fake)
        g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss}, prog_bar=True, on_step=False, on_epoch=True)

    def configure_optimizers(self):
        betas = (0.5, 0.999)
        return (torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=betas),
                torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=betas))

    def realism(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator's logit: a learned realism prior (in the spirit of PPGN)."""
        return self.discriminator(x)


class VAEModule(GeneratorModule):
    """Convolutional VAE trained on the negative ELBO; the decoder is the generator."""

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 32, lr: float = 1e-3):
        super().__init__()
        self.latent_dim, self.lr = latent_dim, lr
        self.encoder = Encoder(latent_dim, channels, size, width)
        self.generator = Decoder(latent_dim, channels, size, width)

    def training_step(self, batch, batch_idx):
        x, _ = batch
        mu, logvar = self.encoder(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = self.generator(z)
        if not torch.isfinite(recon).all():  # the loss would stop with "all elements of input should be between 0 and 1"
            raise diverged("the decoder's images became nan or inf", self.current_epoch + 1, batch_idx + 1,
                           f"generator.lr={self.lr:g}")
        loss = negative_elbo(x, recon, mu, logvar).mean()
        self.log("neg_elbo", loss, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def realism(self, x: torch.Tensor) -> torch.Tensor:
        """The ELBO of x (at the encoder's mean) per pixel, in nats: high for images the VAE can explain.
        Per pixel so one realism_weight means about the same at any image size."""
        mu, logvar = self.encoder(x)
        return -negative_elbo(x, self.generator(mu), mu, logvar) / x[0].numel()
