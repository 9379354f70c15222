"""What is optimized: a parameterization turns a few tensors into images B×C×H×W in [0, 1].

`pixel(28, channels=1)` and `fft(128, channels=3)` are specs; `render` builds them for its batch
(`spec.build(seeds, device)`), one starting image per seed (element b starts from its own seed's
noise, so the same seed gives the same start whatever else is in the batch). A built `Param`
unpacks Lucent-style into `(params, image_fn)`.

Any channel count works; colour decorrelation (Lucid's ImageNet colour matrix) applies to 3-channel
images only. `Param.load(images)` sets the tensors so that the parameterization shows `images`: the
projection regularizers (blur, clipping, decay) use it to edit images under any parameterization.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch

from studio.errors import StudioError, is_number, lookup

# Lucid's square root of the ImageNet colour correlation (SVD), columns normalized to max norm 1.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()
_SIGMOID_MARGIN = 1e-2  # load() keeps sigmoid inputs where gradients still flow


class Param:
    """Built parameterization: leaf tensors (batch first) and the images they make."""

    params: list[torch.Tensor]
    can_load = True  # False where images cannot be turned back into the tensors (a generator's z)

    def __call__(self) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self) -> torch.Tensor | None:
        """(B,) terms of the parameterization itself to subtract from the objective (default: none)."""
        return None

    def load(self, images: torch.Tensor) -> None:
        """Set the tensors so that self() shows `images` (B×C×H×W in [0, 1])."""
        raise NotImplementedError

    def constrain(self) -> None:
        """Project the tensors back into the valid range after an optimizer step (default: nothing)."""

    def prepare(self, score: Callable[[torch.Tensor], torch.Tensor]) -> bool:
        """Before the first step: the objective as `score` (images B×C×H×W -> (B,) values, no gradient), for a
        parameterization that picks its start by it. Returns whether the start changed (default: it does not)."""
        return False

    def observe(self, target_prob: torch.Tensor | None) -> None:
        """Each step, before the optimizer's: the model's (B,) probability of each element's target class on the
        images self() just made (after the transforms; None unless the objective is a class objective), for a
        parameterization whose next move depends on it (default: none does)."""

    def __iter__(self):
        return iter((self.params, self))


def _noise_draws(seeds: Sequence[int], shape: tuple[int, ...], n: int) -> list[torch.Tensor]:
    """The first n N(0, 1) draws of `shape` from each seed's generator, each stacked over the seeds, drawn on
    the CPU (same numbers on every device)."""
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    return [torch.stack([torch.randn(shape, generator=g) for g in gens]) for _ in range(n)]


def _best_of(candidates: list[torch.Tensor], values: torch.Tensor, rank: int = 0) -> torch.Tensor:
    """Each element's highest-valued candidate: candidates N tensors B×..., values N×B (any device) -> B×...
    on the candidates' device (a start picked by the objective, param=latent and param=guided alike).
    rank r > 0: each element's (r+1)-th highest instead (a retried render's next start; ties keep draw order)."""
    order = torch.sort(values, dim=0, descending=True, stable=True).indices
    best = order[min(rank, len(candidates) - 1)].to(candidates[0].device)
    return torch.stack(candidates)[best, torch.arange(len(best), device=best.device)]


def _noise(seeds: Sequence[int], shape: tuple[int, ...], sd: float) -> torch.Tensor:
    """One N(0, sd²) tensor of `shape` per seed: each seed's first draw."""
    return _noise_draws(seeds, shape, 1)[0] * sd


def decorrelate(x: torch.Tensor) -> torch.Tensor:
    """Map decorrelated colour coordinates to RGB (3-channel only)."""
    return torch.einsum("bchw,dc->bdhw", x, COLOR.to(x.device, x.dtype))


def correlate(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `decorrelate`."""
    return torch.einsum("bchw,dc->bdhw", x, torch.linalg.inv(COLOR).to(x.device, x.dtype))


def _logit(images: torch.Tensor) -> torch.Tensor:
    return torch.logit(images.clamp(_SIGMOID_MARGIN, 1 - _SIGMOID_MARGIN))


class PixelParam(Param):
    """Raw pixels. Plain: projected onto [0, 1] after every step (the source's gradient ascent on X).
    With `decorrelate` (RGB): sigmoid of decorrelated colour coordinates, as Lucent does."""

    def __init__(self, seeds, channels, height, width, device, init_mean=0.5, init_sd=0.1, decorrelate=False):
        self.decorrelated = decorrelate and channels == 3
        noise = _noise(seeds, (channels, height, width), init_sd)
        if self.decorrelated:
            start = correlate(_logit(torch.full_like(noise, init_mean))) + noise
        else:
            start = (noise + init_mean).clamp(0, 1)
        self.tensor = start.to(device).requires_grad_(True)
        self.params = [self.tensor]

    def __call__(self):
        return torch.sigmoid(decorrelate(self.tensor)) if self.decorrelated else self.tensor

    @torch.no_grad()
    def load(self, images):
        self.tensor.copy_(correlate(_logit(images)) if self.decorrelated else images.clamp(0, 1))

    @torch.no_grad()
    def constrain(self):
        if not self.decorrelated:
            self.tensor.clamp_(0, 1)


def _frequencies(height: int, width: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return (fx * fx + fy * fy).sqrt()


class FFTParam(Param):
    """Lucid's Fourier parameterization: a spectrum scaled by 1/f^decay (so low frequencies move
    first, which favours smooth images), inverse real FFT, /4, optional colour decorrelation, sigmoid."""

    MAGIC = 4.0  # Lucid's constant; larger values desaturate

    def __init__(self, seeds, channels, height, width, device, sd=0.01, decay_power=1.0, decorrelate=True):
        self.size = (height, width)
        self.decorrelated = decorrelate and channels == 3
        freqs = _frequencies(height, width)
        scale = 1.0 / freqs.clamp_min(1.0 / max(height, width)) ** decay_power
        self.scale = scale[None, None, :, :, None].to(device)
        self.spectrum = _noise(seeds, (channels, height, width // 2 + 1, 2), sd).to(device).requires_grad_(True)
        self.params = [self.spectrum]

    def __call__(self):
        spectrum = torch.view_as_complex(self.spectrum * self.scale)
        x = torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / self.MAGIC
        return torch.sigmoid(decorrelate(x) if self.decorrelated else x)

    @torch.no_grad()
    def load(self, images):
        x = _logit(images.float())
        x = (correlate(x) if self.decorrelated else x) * self.MAGIC
        spectrum = torch.view_as_real(torch.fft.rfft2(x, norm="ortho")) / self.scale
        self.spectrum.copy_(spectrum)


class LatentParam(Param):
    """z in a generator's latent space; the images are G(z), so they stay on the generator's manifold
    (the source's "constraint from a generator": z* = argmax_z y_i(G(z)), shown as G(z*)).

    z starts from the prior N(0, I), one draw per seed. Optional terms, all per image:
    prior_weight * ||z||^2 (a Gaussian prior), anchor_weight * ||z - z_start||^2 (keeps each seed near its
    own start, so seeds of one class do not collapse to one prototype), realism_weight * realism(G(z))
    (added: the GAN discriminator's logit or the VAE's ELBO per pixel, a learned realism prior in the
    spirit of PPGN). After each step z is projected: components clamped to [-truncation, truncation]
    and the norm to at most max_norm (when set). The generator runs frozen in eval mode.

    With start_candidates > 1, each element starts from the best of that many prior draws (candidate j is the
    j-th draw of the element's seed, projected like z; candidate 0 is the plain start) by the objective's score
    of its image: a class-conditional GAN's render then starts in its target's region of z instead of having to
    leave another class's. start_rank r > 0 takes each element's (r+1)-th best candidate instead (render's
    retry_below renders a class that ended below it again from there).
    """

    can_load = False

    def __init__(self, seeds, channels, height, width, device, generator, prior_weight=0.0, anchor_weight=0.0,
                 realism_weight=0.0, truncation=None, max_norm=None, start_candidates=1, start_rank=0):
        self.generator = generator.to(device).eval().requires_grad_(False)
        self.net = generator.generator
        self.latent_dim = int(generator.latent_dim)
        self.weights = (float(prior_weight), float(anchor_weight), float(realism_weight))
        self.truncation = None if truncation is None else float(truncation)
        self.max_norm = None if max_norm is None else float(max_norm)
        self.candidates = [self.projected(z.to(device))
                           for z in _noise_draws(seeds, (self.latent_dim,), int(start_candidates))]
        self.start, self.rank = self.candidates[0], int(start_rank)
        self.z = self.start.clone().requires_grad_(True)
        self.params = [self.z]
        self._shape = (channels, height, width)

    def __call__(self):
        return self.net(self.z)

    def penalty(self):
        prior, anchor, realism = self.weights
        terms = prior * self.z.pow(2).sum(1) + anchor * (self.z - self.start).pow(2).sum(1)
        if realism:
            terms = terms - realism * self.generator.realism(self())
        return terms if (prior or anchor or realism) else None

    def load(self, images):
        raise StudioError("param=latent cannot edit G(z) in pixel space; use penalty regularizers "
                          "(none, l2, l1, tv, hf, l2_tv, jitter, standard) with it, not blur/clip/decay")

    @torch.no_grad()
    def prepare(self, score):
        """Start each element from its best-scored candidate."""
        if len(self.candidates) == 1:
            return False
        values = torch.stack([score(self.net(z)) for z in self.candidates])
        self.start = _best_of(self.candidates, values, self.rank)
        self.z.copy_(self.start)
        return True

    def projected(self, z: torch.Tensor) -> torch.Tensor:
        """z with its components clamped to ±truncation and its norm to at most max_norm (those set)."""
        if self.truncation is not None:
            z = z.clamp(-self.truncation, self.truncation)
        if self.max_norm is not None:
            z = z * (self.max_norm / z.norm(dim=1, keepdim=True)).clamp(max=1.0)
        return z

    @torch.no_grad()
    def constrain(self):
        self.z.copy_(self.projected(self.z))


class GuidedParam(Param):
    """Classifier guidance of a diffusion model's deterministic (DDIM) sampler, through the denoiser: render
    step k is sampler step k. The classifier is not noise-aware, so it never sees the noisy image x_t, only
    the denoiser's estimate x̂0(x_t) of the clean image, which is what this parameterization shows; the
    objective's gradient flows back through the denoiser to x_t, which keeps the guidance to directions the
    denoiser maps to digits (the gradient on x̂0 alone is an adversarial texture).

    The start: of start_candidates starting noises per element (candidate j is the j-th draw of the element's
    seed, so candidate 0 is the plain start and the seeds of one target keep different candidates), the one
    whose unguided preview (preview_steps DDIM steps) the objective scores highest, so guidance starts from
    noise the plain sampler already turns into something close to the target.

    Each render step, the optimizer's move of x_t (with optimizer=sgd: that gradient) is rescaled per image
    to a root-mean-square step of guidance_scale · √(1 - ᾱ_t), in proportion to the noise still in x_t (none
    at the clean end); the denoiser's estimate of the guided x_t then takes it to the next noise level
    (DDIM, η = 0). Under a class objective, an image whose x̂0 the model already gives its target class a
    probability of guidance_stop or more is not moved at that step (only as much guidance as it needs; null, or
    another objective: every step moves every image). guidance_until > 0 stops the guidance once t falls
    below guidance_until · T (the schedule's T timesteps), so the last steps only denoise (guidance in a
    limited interval, Kynkäänniemi et al. 2024). The start and the stop made renders more natural at the same
    recognition (README); with both, a guidance interval (0.5) read the same on mnist5k and left classes
    unreached on Fashion-MNIST, so the default guides every step. After the last sampler step the image is the sample
    itself, and further render steps leave it as it is. Deterministic: each seed gives its own candidates.
    The diffusion model runs frozen."""

    can_load = False

    def __init__(self, seeds, channels, height, width, device, generator, sampler_steps=50, guidance_scale=0.02,
                 guidance_until=0.0, start_candidates=24, preview_steps=10, guidance_stop=0.99, start_rank=0):
        self.generator = generator.to(device).eval().requires_grad_(False)
        self.levels = generator.path_levels(int(sampler_steps))
        self.preview_levels = generator.path_levels(int(preview_steps))
        self.scale, self.stop = float(guidance_scale), None if guidance_stop is None else float(guidance_stop)
        self.last_guided_t = float(guidance_until) * (len(generator.alphas_bar) - 1)
        self.done = 0  # sampler steps taken
        self.target_prob = None  # of the images last shown (observe; class objectives only)
        self.candidates = _noise_draws(seeds, (channels, height, width), int(start_candidates))
        self.rank = int(start_rank)  # as LatentParam's: a retried render starts from its next-best candidate
        self.x = self.candidates[0].to(device, copy=True).requires_grad_(True)  # prepare() writes x, not candidate 0
        self.before = self.x.detach().clone()  # x_t before the optimizer's move
        self.params = [self.x]

    @torch.no_grad()
    def preview(self, noise: torch.Tensor) -> torch.Tensor:
        """The unguided sample of starting noise x_T in preview_steps DDIM steps, in [0, 1] (a coarse look at the
        digit the plain sampler draws from it)."""
        x = x0 = noise
        for t, a, a_next in self.preview_levels:
            x0 = self.generator.clean_estimate(x, t, a)
            x = self.generator.ddim_step(x, x0, a, a_next)
        return (x0 + 1) / 2

    @torch.no_grad()
    def prepare(self, score):
        """Start each element from its best-previewed candidate."""
        if len(self.candidates) == 1:
            return False
        values = torch.stack([score(self.preview(noise.to(self.x.device))) for noise in self.candidates])
        self.x.copy_(_best_of(self.candidates, values, self.rank).to(self.x.device))
        self.before = self.x.detach().clone()
        return True

    def __call__(self):
        if self.done == len(self.levels):  # the sample (x_0 itself); the optimizer's moves are undone
            return (self.x.clamp(-1, 1) + 1) / 2
        t, a, _ = self.levels[self.done]
        return (self.generator.clean_estimate(self.x, t, a) + 1) / 2

    def observe(self, target_prob):
        self.target_prob = target_prob

    def load(self, images):
        raise StudioError("param=guided cannot edit its images in pixel space; use penalty regularizers "
                          "(none, l2, l1, tv, hf, l2_tv, jitter, standard) with it, not blur/clip/decay")

    @torch.no_grad()
    def constrain(self):
        if self.done < len(self.levels):
            t, a, a_next = self.levels[self.done]
            move = self.x - self.before
            shape = (-1, *[1] * (move.dim() - 1))
            rms = move.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12).view(shape)
            scale = torch.full((len(move),), self.scale if t >= self.last_guided_t else 0.0, device=move.device)
            if self.stop is not None and self.target_prob is not None:  # recognized already: not moved
                scale = torch.where(self.target_prob.to(move.device) >= self.stop, 0.0, scale)
            guided = self.before + scale.view(shape) * (1 - a).sqrt() * move / rms
            self.before = self.generator.ddim_step(guided, self.generator.clean_estimate(guided, t, a), a, a_next)
            self.done += 1
        self.x.copy_(self.before)


@dataclass(frozen=True)
class ParamSpec:
    """A parameterization before it knows its batch: `build(seeds, device)` makes the Param."""

    name: str
    size: tuple[int, int]
    channels: int
    options: dict = field(default_factory=dict)

    def build(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> Param:
        cls = lookup(PARAMS, "param", self.name)
        return cls(list(seeds), self.channels, *self.size, torch.device(device), **self.options)

    @property
    def starts(self) -> int:
        """How many ranked starts each element has (param=latent and param=guided: start_candidates; else 1)."""
        return int(self.options.get("start_candidates", 1))

    def ranked(self, rank: int) -> "ParamSpec":
        """This parameterization starting each element from its (rank+1)-th best candidate."""
        return replace(self, options={**self.options, "start_rank": rank})


def _spec(name: str, size, channels: int, options: dict) -> ParamSpec:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if min(h, w) < 1 or channels < 1:
        raise StudioError(f"param size {size!r} with {channels} channel(s) is not an image; give positive numbers")
    return ParamSpec(name, (int(h), int(w)), int(channels), options)


def pixel(size, channels: int = 1, init_mean: float = 0.5, init_sd: float = 0.1,
          decorrelate: bool = False) -> ParamSpec:
    """Pixels in [0, 1], starting at init_mean + N(0, init_sd²) noise. size: int or (H, W)."""
    return _spec("pixel", size, channels, dict(init_mean=init_mean, init_sd=init_sd, decorrelate=decorrelate))


def fft(size, channels: int = 3, sd: float = 0.01, decay_power: float = 1.0, decorrelate: bool = True) -> ParamSpec:
    """Fourier-space image with 1/f^decay_power spectrum scaling (Lucid's default parameterization)."""
    return _spec("fft", size, channels, dict(sd=sd, decay_power=decay_power, decorrelate=decorrelate))


def _check_count(key: str, value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StudioError(f"param.{key}={value} must be a whole number >= 1 ({what})")


def check_latent(truncation=None, max_norm=None, start_candidates=1, **_) -> None:
    """The latent options that can be checked before a generator exists."""
    for key, value in (("truncation", truncation), ("max_norm", max_norm)):
        if value is not None and not value > 0:
            raise StudioError(f"param.{key}={value} must be positive (or null to turn it off)")
    _check_count("start_candidates", start_candidates, "prior draws tried per render; 1: the seed's own")


def latent(generator, prior_weight: float = 0.0, anchor_weight: float = 0.0, realism_weight: float = 0.0,
           truncation: float | None = None, max_norm: float | None = None, start_candidates: int = 1, size=None,
           channels: int | None = None) -> ParamSpec:
    """Images G(z) of a generator module (generators/: `sample`, `latent_dim`, `realism`); see LatentParam.

    size and channels default to what the generator makes (one sample decides)."""
    check_latent(truncation=truncation, max_norm=max_norm, start_candidates=start_candidates)
    if generator is None:
        raise StudioError("param=latent needs a generator: generator=vae, generator=dcgan, generator=diffusion or "
                          "generator=checkpoint")
    size, channels = _generator_shape(generator, size, channels)
    return _spec("latent", size, channels, dict(generator=generator, prior_weight=prior_weight,
                                                anchor_weight=anchor_weight, realism_weight=realism_weight,
                                                truncation=truncation, max_norm=max_norm,
                                                start_candidates=start_candidates))


def _generator_shape(generator, size, channels) -> tuple[tuple[int, int], int]:
    """(size, channels) of the generator's images (one sample decides), checked against those given."""
    shape = tuple(generator.sample(1).shape[1:])
    made = (shape[0], (shape[1], shape[2]))
    size = made[1] if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    channels = made[0] if channels is None else channels
    if (int(channels), tuple(int(v) for v in size)) != made:
        raise StudioError(f"the generator makes {shape[0]}x{shape[1]}x{shape[2]} images, but the classifier "
                          f"takes {channels}x{size[0]}x{size[1]} (data.channels, data.size)")
    return size, channels


def check_guided(guidance_scale=0.02, guidance_until=0.0, start_candidates=24, preview_steps=10, guidance_stop=0.99,
                 **_) -> None:  # guided()'s defaults
    """The guided options that can be checked before the diffusion model exists."""
    if not guidance_scale > 0:
        raise StudioError(f"param.guidance_scale={guidance_scale} must be positive (0.02 is the measured default)")
    if not 0 <= guidance_until < 1:
        raise StudioError(f"param.guidance_until={guidance_until} must be in [0, 1): the fraction of the schedule "
                          "below which guidance stops (0: guide every step)")
    _check_count("start_candidates", start_candidates, "starting noises tried per render; 1: the seed's own")
    _check_count("preview_steps", preview_steps, "DDIM steps of their preview")
    if guidance_stop is not None and not (is_number(guidance_stop) and 0 < guidance_stop <= 1):
        raise StudioError(f"param.guidance_stop={guidance_stop} must be a probability in (0, 1] (the target "
                          "probability at which a class render is no longer guided; 0.99 is the measured default) "
                          "or null (always guide)")


def guided(generator, sampler_steps: int = 50, guidance_scale: float = 0.02, guidance_until: float = 0.0,
           start_candidates: int = 24, preview_steps: int = 10, guidance_stop: float | None = 0.99, size=None,
           channels: int | None = None) -> ParamSpec:
    """A diffusion model's samples, guided by the objective through its clean-image estimate; see GuidedParam.
    Render with steps=sampler_steps (more render steps change nothing; fewer stop at a blurry estimate) and
    optimizer="sgd" (Adam's per-pixel steps would move the background as much as the strokes)."""
    check_guided(guidance_scale, guidance_until, start_candidates, preview_steps, guidance_stop)
    if generator is None or not hasattr(generator, "path_levels"):
        what = "none" if generator is None else type(generator).__name__
        raise StudioError(f"param=guided needs a diffusion model: generator=diffusion (got {what})")
    generator.path_levels(int(sampler_steps))  # a path longer than the schedule: the error now
    if preview_steps > len(generator.alphas_bar):
        raise StudioError(f"param.preview_steps={preview_steps} is not a number of steps of a "
                          f"{len(generator.alphas_bar)}-step schedule; give 1..{len(generator.alphas_bar)}")
    size, channels = _generator_shape(generator, size, channels)
    return _spec("guided", size, channels, dict(
        generator=generator, sampler_steps=int(sampler_steps), guidance_scale=float(guidance_scale),
        guidance_until=float(guidance_until), start_candidates=start_candidates, preview_steps=preview_steps,
        guidance_stop=None if guidance_stop is None else float(guidance_stop)))


PARAMS: dict[str, Callable[..., Param]] = {"pixel": PixelParam, "fft": FFTParam, "latent": LatentParam,
                                           "guided": GuidedParam}
BUILDERS = {"pixel": pixel, "fft": fft, "latent": latent, "guided": guided}
CHECKS = {"latent": check_latent, "guided": check_guided}  # before a generator is trained: its options' own checks
