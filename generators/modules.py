"""Lightning modules that train the generators. Each exposes the same face to the studio:
`generator` (z -> images in [0, 1]), `latent_dim`, `sample(n, seed)` and `realism(x)` (higher = more
like the training data: the GAN's discriminator logit, or the VAE's ELBO)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
import pytorch_lightning as pl

from generators.augment import diff_augment
from generators.dcgan import Discriminator, Generator
from generators.ema import update_ema
from generators.vae import Decoder, Encoder, negative_elbo
from studio.errors import StudioError, is_number
from studio.fit import diverged
from studio.modes import eval_mode


class GeneratorModule(pl.LightningModule):
    generator: torch.nn.Module
    latent_dim: int
    options: tuple[str, ...] = ()  # generator config keys the constructor takes beyond latent_dim, width, lr
    sampled = "generator"  # the state dict's part that sample() runs: a plain generator state dict loads there
    sampled_what = "the generator's weights"  # ... in words, and what to do when a module's state dict lacks it
    sampled_missing = "is generator.arch right?"
    misfit_hint = ""  # what else, beyond latent_dim and the image shape, sets the shapes of its weights
    data_parallel = True  # trains under trainer=ddp_cpu / ddp (several processes)

    def prior(self, n: int, seed: int) -> torch.Tensor:
        """n latent codes from N(0, I), drawn on the CPU from `seed` (the same on every device)."""
        return torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)

    @property
    def sampler(self) -> torch.nn.Module:
        """What sample() runs z through: the generator (the diffusion model: a sampler with more steps)."""
        return self.generator

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 500) -> torch.Tensor:
        """n images sampler(z), z ~ N(0, I); eval mode."""
        with eval_mode(self):
            z, sampler = self.prior(n, seed), self.sampler
            return torch.cat([sampler(z[i:i + batch_size]) for i in range(0, n, batch_size)])

    def preview(self, n: int, seed: int = 0) -> torch.Tensor:
        """What the per-epoch sample grid shows while training: sample() unless that is costly."""
        return self.sample(n, seed)

    def realism(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: mean relu(1 - D(real)) + mean relu(1 + D(fake)); 0 once real
    logits are >= 1 and fake ones <= -1."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's side of the hinge loss: -mean D(G(z))."""
    return -fake_logits.mean()


def lecam_penalty(real_logits: torch.Tensor, fake_logits: torch.Tensor, anchors: torch.Tensor,
                  decay: float = 0.9) -> torch.Tensor:
    """LeCam regularization (Tseng et al. 2021, for GANs on limited data): mean relu(D(real) - a_fake)² +
    mean relu(a_real - D(fake))², where a_real, a_fake (`anchors`, updated in place) are moving averages of the
    discriminator's mean logit on real and on fake images. It keeps the discriminator from pushing real and
    fake logits ever further apart, which is how it overfits a few thousand images. The first call sets the
    anchors (they start at nan)."""
    with torch.no_grad():
        means = torch.stack([real_logits.mean(), fake_logits.mean()])
        anchors.copy_(torch.where(anchors.isnan(), means, anchors.lerp(means, 1 - decay)))
    real_anchor, fake_anchor = anchors
    return F.relu(real_logits - fake_anchor).pow(2).mean() + F.relu(real_anchor - fake_logits).pow(2).mean()


def top_k(fake_logits: torch.Tensor, epoch: int, floor: float, decay: float = 0.99) -> torch.Tensor:
    """Top-k training (Sinha et al. 2020, "Top-k Training of GANs: Improving GAN Performance by Throwing Away
    Bad Samples"): the logits of the fakes the discriminator rates most real, a share max(floor, decay ** epoch)
    of the batch (at least one): all of it in the first epoch, 1% fewer each epoch after (the authors' decay),
    never fewer than `floor` (theirs: 0.5). The generator's step learns from these alone: the worst-rated fakes
    lie between the data's modes, and the authors show their gradients pull the generator in directions that
    make its good samples worse."""
    keep = max(floor, decay ** epoch)
    return fake_logits.topk(max(1, round(keep * len(fake_logits)))).values


class GANModule(GeneratorModule):
    """The data-efficient GAN recipe for a few thousand images: DCGAN's generator, a spectrally
    normalized discriminator, the hinge loss, DiffAugment (translation and cutout, either off at ratio 0,
    on every image the discriminator sees, real and fake, in both steps), an exponential moving
    average of the generator's weights, with `topk_floor` top-k training of the generator (top_k) and, with
    `class_norm`, class-conditional batch norm in a class-conditional generator (generators/dcgan.py).

    `online` is the generator the optimizer trains; `ema` (also `generator`, what sample() and latent
    visualization run z through) is its moving average, always in eval mode. Its decay ramps up
    as min(ema_decay, (1 + t) / (10 + t)) after t updates, so a short training is not averaged with
    the random start. The state dict holds both (ema.*, online.*) and the discriminator."""

    options = ("ema_decay", "augment_translation", "augment_cutout", "beta1", "d_lr_ratio", "d_width", "classes",
               "lecam_weight", "topk_floor", "class_norm")
    # Not data-parallel (yet): its two networks take separate backward passes in one training step, which
    # DDP refuses (unused parameters) and, with find_unused_parameters, runs without a check that both
    # networks' gradients were averaged across the processes.
    data_parallel = False
    misfit_hint = (" (a class-conditional GAN also needs generator.classes: a studio dcgan's is the data's class "
                   "count, null is unconditional; and generator.class_norm as it was trained: true for a studio dcgan "
                   "with class-conditional batch norm, the default since it came, false before)")
    sampled = "ema"
    sampled_what = "the moving average (EMA) of the generator's weights"
    sampled_missing = ("a checkpoint from before the EMA recipe? Retrain it (studio train-generator generator=dcgan; "
                       "a model cache entry: delete it) or save the generator's weights alone, which load as the EMA "
                       "weights")

    def __init__(self, latent_dim: int, channels: int, size: int, width: int = 64, lr: float = 2e-4,
                 ema_decay: float = 0.999, augment_translation: float = 0.125, augment_cutout: float = 0.5,
                 beta1: float = 0.5, d_lr_ratio: float = 1.0, d_width: int | None = None,
                 classes: int | None = None, lecam_weight: float | None = None, topk_floor: float | None = None,
                 class_norm: bool = False):
        super().__init__()
        self.latent_dim, self.lr, self.ema_decay = latent_dim, lr, ema_decay
        # never negative (that would reward the overfitting LeCam holds back)
        if lecam_weight is not None and not (is_number(lecam_weight) and lecam_weight >= 0):
            raise StudioError(f"generator.lecam_weight={lecam_weight} must be a number >= 0 or null (null or 0: off; "
                              "0.3: the weight LeCam's authors used with DiffAugment)")
        self.lecam_weight = float(lecam_weight or 0.0)
        if topk_floor is not None and not (is_number(topk_floor) and 0 < topk_floor <= 1):
            raise StudioError(f"generator.topk_floor={topk_floor} must be a share in (0, 1] or null (null: every fake "
                              "trains the generator; 0.5: the authors' floor, shipped)")
        self.topk_floor = topk_floor
        if not isinstance(class_norm, bool):  # a word would read as true
            raise StudioError(f"generator.class_norm={class_norm} must be true or false (true: class-conditional "
                              "batch norm, shipped; false: the class as input alone)")
        self.beta1, self.d_lr_ratio = beta1, d_lr_ratio
        self.augment_ratios = (augment_translation, augment_cutout)
        self.online = Generator(latent_dim, channels, size, width, classes, class_norm)
        self.ema = copy.deepcopy(self.online).requires_grad_(False).eval()
        self.discriminator = Discriminator(channels, size, d_width or width, classes)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        # training state only (not saved): checkpoints are the same with LeCam on or off; a resumed training
        # sets the anchors again from its first batch (they follow the last ten or so batches anyway)
        self.register_buffer("lecam_anchors", torch.full((2,), float("nan")), persistent=False)
        self.automatic_optimization = False

    @property
    def generator(self) -> torch.nn.Module:
        return self.ema

    def train(self, mode: bool = True):
        super().train(mode)
        self.ema.eval()  # the average is never trained: its batch norm runs on the averaged statistics
        return self

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, *self.augment_ratios)

    def training_step(self, batch, _):
        real, labels = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(len(real), self.latent_dim, device=self.device)
        fake, fake_labels = self.online(z), self.online.classes_of(z)  # class-conditional: z's class (else None)
        real_logits = self.discriminator(self.augment(real), labels)
        fake_logits = self.discriminator(self.augment(fake.detach()), fake_labels)
        d_loss = hinge_d_loss(real_logits, fake_logits)
        if self.lecam_weight:
            d_loss = d_loss + self.lecam_weight * lecam_penalty(real_logits, fake_logits, self.lecam_anchors)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_logits = self.discriminator(self.augment(fake), fake_labels)
        if self.topk_floor:
            g_logits = top_k(g_logits, self.current_epoch, self.topk_floor)
        g_loss = hinge_g_loss(g_logits)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.update_ema()
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss}, prog_bar=True, on_step=False, on_epoch=True,
                      sync_dist=True)  # data-parallel: the mean over every process, not rank 0's

    def update_ema(self) -> None:
        update_ema(self.ema, self.online, self.ema_updates, self.ema_decay)

    def configure_optimizers(self):
        betas = (self.beta1, 0.999)
        return (torch.optim.Adam(self.online.parameters(), lr=self.lr, betas=betas),
                torch.optim.Adam(self.discriminator.parameters(), lr=self.lr * self.d_lr_ratio, betas=betas))

    def realism(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator's logit on x as it is (not augmented): a learned realism prior (in the
        spirit of PPGN)."""
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
        self.log("neg_elbo", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def realism(self, x: torch.Tensor) -> torch.Tensor:
        """The ELBO of x (at the encoder's mean) per pixel, in nats: high for images the VAE can explain.
        Per pixel so one realism_weight means about the same at any image size."""
        mu, logvar = self.encoder(x)
        return -negative_elbo(x, self.generator(mu), mu, logvar) / x[0].numel()
