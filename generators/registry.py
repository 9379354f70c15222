"""Generators by name, trained with Lightning and cached like the classifiers, or loaded from a file."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torchvision.utils import make_grid, save_image

from generators.diffusion import DiffusionModule
from generators.modules import GANModule, GeneratorModule, VAEModule
from studio.cache import config_hash, load_or_train
from studio.data import ImageDataModule
from studio.distributed import check_launcher, per_process_batch, worker_errors
from studio.errors import StudioError, lookup
from studio.files import atomic_path
from studio.models import load_state_dict_file
from studio.fit import RngState, StopIfDiverged, every_epoch_checkpoint, last_checkpoint, progress

GENERATORS = {"dcgan": GANModule, "vae": VAEModule, "diffusion": DiffusionModule}
RUNTIME_KEYS = ("accelerator", "devices", "strategy", "num_nodes")


def build_generator(gen_cfg, channels: int, size: int) -> GeneratorModule:
    """An untrained generator module of `gen_cfg.arch` for channels×size×size images."""
    cls = lookup(GENERATORS, "generator architecture", gen_cfg.arch)
    options = {k: gen_cfg[k] for k in cls.options if k in gen_cfg}  # absent (generator=checkpoint): the defaults
    return cls(gen_cfg.latent_dim, channels, size, gen_cfg.width, gen_cfg.lr, **options)


@dataclass
class TrainedGenerator:
    module: GeneratorModule
    path: Path
    cached: bool
    train_seconds: float
    resumed_after_epoch: int = 0  # trained now, from the checkpoint of a stopped run that had finished this many


class SampleGrid(pl.Callback):
    """After each epoch: a grid of G(z) for fixed z, saved as PNG and logged to W&B (when on)."""

    def __init__(self, out_dir: Path | None, n: int = 64):
        self.out_dir, self.n = out_dir, n

    def on_train_epoch_end(self, trainer, module: GeneratorModule):
        if not trainer.is_global_zero:  # data-parallel workers hold the same weights: one writer
            return
        grid = make_grid(module.preview(self.n, seed=0).float().cpu(), nrow=8, pad_value=1)
        if self.out_dir is not None:
            with atomic_path(self.out_dir / f"samples_epoch{trainer.current_epoch:03d}.png") as tmp:
                save_image(grid, tmp, format="png")
        logger = trainer.logger
        if logger and hasattr(logger, "log_image"):
            logger.log_image(key="generator/samples", images=[grid.permute(1, 2, 0).numpy()],
                             step=trainer.global_step)


# Generator keys whose null (class_norm: false) means "as before the key existed" (see cache_stem).
UNSET_KEYS = ("epoch_images", "classes", "lecam_weight", "topk_floor", "class_norm")


def epoch_batches(gen_cfg) -> int | None:
    """Training batches per epoch: generator.epoch_images // batch_size, a fresh random draw of the training
    split each epoch, so one budget (epochs x images) trains alike on 3,600 or 54,000 images; None (every
    image, every epoch) when epoch_images is null or absent."""
    images = gen_cfg.get("epoch_images")
    if images is None:
        return None
    if images < gen_cfg.batch_size:
        raise StudioError(f"generator.epoch_images={images} is less than one batch (generator.batch_size="
                          f"{gen_cfg.batch_size}); use at least that, or null for every training image")
    return images // gen_cfg.batch_size


def cache_stem(gen_cfg, data_cfg) -> str:
    """`<generator>-<data>-<hash>`: the cache entry's name, keyed by what changes the trained weights (not the
    render recipe, not the data loader's workers or split)."""
    data_key = {k: v for k, v in data_cfg.items() if k not in ("num_workers", "split")}
    # a key at its "off" value (UNSET_KEYS) trains what the configs did before it existed: left out, so the
    # entries cached then stay valid
    trained_by = {k: v for k, v in gen_cfg.items()
                  if k != "render" and not (k in UNSET_KEYS and (v is None or v is False))}
    if not gen_cfg.get("classes"):  # class norm modulates by the class: an unconditional GAN trains the same without
        trained_by.pop("class_norm", None)
    return f"{gen_cfg.name}-{data_cfg.name}-{config_hash(generator=trained_by, data=data_key)}"


def trained_generator(gen_cfg, data_cfg, trainer_cfg, dm: ImageDataModule, models_dir: str | Path,
                      logger=False, samples_dir: Path | None = None) -> TrainedGenerator:
    """The generator `gen_cfg` describes: loaded from gen_cfg.path, from the cache, or trained on dm."""
    channels, size, _ = dm.image_shape
    pl.seed_everything(gen_cfg.seed, workers=True, verbose=False)
    module = build_generator(gen_cfg, channels, size)
    if "path" in gen_cfg.keys():  # a user's generator: load, never train
        load_generator_weights(module, gen_cfg.path, dm.image_shape)
        return TrainedGenerator(module.eval(), Path(gen_cfg.path), cached=True, train_seconds=0.0)

    classes = gen_cfg.get("classes")
    if classes is not None and classes < dm.num_classes:
        raise StudioError(f"generator.classes={classes} cannot condition on data={data_cfg.name}'s {dm.num_classes} "
                          f"classes; use {dm.num_classes} (the default: data.num_classes) or null for unconditional")
    runtime = {k: trainer_cfg[k] for k in RUNTIME_KEYS if k in trainer_cfg}
    stem = cache_stem(gen_cfg, data_cfg)

    def train(workdir: Path) -> dict:
        # A checkpoint after every epoch: a run killed mid-way resumes from it (the work dir survives
        # until the weights are safely in the cache).
        last, resumed_after = last_checkpoint(workdir)  # before the Trainer: its banner would precede the error line
        checkpoint = every_epoch_checkpoint(workdir)
        # RngState: the resumed epochs draw the noise and the shuffles an uninterrupted run would
        shown = progress(trainer_cfg.get("enable_progress_bar", True), f"{gen_cfg.name} training")
        trainer = pl.Trainer(**runtime, max_epochs=gen_cfg.max_epochs, limit_train_batches=epoch_batches(gen_cfg),
                             precision=gen_cfg.precision,
                             logger=logger, default_root_dir=workdir, enable_model_summary=False,
                             log_every_n_steps=10, enable_progress_bar=shown["enable_progress_bar"],
                             callbacks=[StopIfDiverged(f"generator.lr={gen_cfg.lr:g}"), SampleGrid(samples_dir),
                                        checkpoint, RngState(), *shown["callbacks"]])
        # data-parallel: each process takes its share of the batch (studio/distributed.py)
        check_launcher(trainer, runtime.get("strategy", "auto"))
        if trainer.world_size > 1 and not module.data_parallel:
            raise StudioError(f"generator={gen_cfg.name} ({gen_cfg.arch}) cannot train in several processes yet; "
                              "train it with trainer=cpu or trainer=gpu (the cached model then serves any trainer)")
        batch_size = per_process_batch(gen_cfg.batch_size, trainer.world_size, "generator.batch_size")
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*dm.split("train")),
                                             batch_size=batch_size, shuffle=True, drop_last=True,
                                             generator=torch.Generator().manual_seed(gen_cfg.seed))
        with warnings.catch_warnings(), worker_errors():  # the GAN's EMA generator stays in eval mode on purpose
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
            trainer.fit(module, loader, ckpt_path=last, weights_only=True)
        return {"generator": dict(gen_cfg), "data": data_cfg.name, "resumed": last is not None,
                "resumed_after_epoch": resumed_after}

    path, cached, facts = load_or_train(module, models_dir, stem, train, load=load_generator_state)
    return TrainedGenerator(module.eval(), path, cached, facts["train_seconds"],
                            resumed_after_epoch=0 if cached else facts.get("resumed_after_epoch", 0))


# The parts of a studio generator module's state dict, old and new: a file with keys under any of them is a
# whole module's state dict; one without is just a generator's weights.
MODULE_PARTS = ("generator", "discriminator", "encoder", "online", "ema")


def load_generator_weights(module: GeneratorModule, path: str, image_shape: tuple[int, int, int] | None = None
                           ) -> None:
    """A whole module's state dict, or just the generator's (keys without a part prefix), which fills the
    weights sample() runs (module.sampled: the VAE's decoder, the GAN's EMA generator).
    image_shape (C, H, W): the images the generator must make, named when the weights do not fit."""
    load_generator_state(module, load_state_dict_file(path), path, image_shape)


def load_generator_state(module: GeneratorModule, state: dict, path: str,
                         image_shape: tuple[int, int, int] | None = None) -> None:
    """load_generator_weights for a state dict already read from `path`; a one-line StudioError when it
    does not fit (nothing of it loaded then)."""
    arch = next((name for name, cls in GENERATORS.items() if type(module) is cls), type(module).__name__)
    prefix = f"{module.sampled}."
    parts = sorted({k.split(".")[0] for k in state})
    if not set(parts) & set(MODULE_PARTS):
        state = {prefix + k: v for k, v in state.items()}
    elif not any(k.startswith(prefix) for k in state):
        found = ", ".join(f"{p}.*" for p in parts)
        raise StudioError(f"generator checkpoint {str(path)!r} has no {prefix}* weights ({module.sampled_what}, "
                          f"which generator.arch={arch} samples from); found only {found}: {module.sampled_missing}")
    expected = module.state_dict()
    if "image_shape" in state and not torch.equal(state["image_shape"].cpu(), expected["image_shape"].cpu()):
        found, wanted = ("x".join(str(int(v)) for v in s) for s in (state["image_shape"], expected["image_shape"]))
        raise StudioError(f"generator checkpoint {str(path)!r} was trained on {found} images; generator.arch={arch} "
                          f"here makes {wanted} images (data.channels, data.size)")
    mismatched = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if mismatched:
        k = mismatched[0]
        images = (f" for {image_shape[0]}x{image_shape[1]}x{image_shape[2]} images (data.channels, data.size)"
                  if image_shape else "")
        raise StudioError(f"generator checkpoint {str(path)!r} does not fit generator.arch={arch} with "
                          f"generator.latent_dim={module.latent_dim}{images}: {k} has shape "
                          f"{tuple(state[k].shape)}, expected {tuple(expected[k].shape)}{module.misfit_hint}")
    missing = [k for k in expected if k.startswith(prefix) and k not in state]
    unknown = [k for k in state if k not in expected]
    if missing or unknown:
        what = f"lacks {missing[0]}" if missing else f"has {unknown[0]}, which generator.arch={arch} does not"
        raise StudioError(f"generator checkpoint {str(path)!r} {what}; is generator.arch right?{module.misfit_hint}")
    module.load_state_dict({**expected, **state})
