"""Lightning's side of training a classifier: the LightningModule, the epoch checkpoints a stopped run
resumes from (with its random state, so the result is the same as an uninterrupted run's), and `fit`.

Imported only when a model is trained: Lightning takes seconds to import, and a cached model needs none of it.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from studio.data import ImageDataModule
from studio.distributed import check_launcher, per_process_batch, worker_errors
from studio.errors import StudioError
from studio.models import Classifier
from studio.modes import eval_mode
from studio.progress import interactive


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift each image by its own integer (dx, dy) in [-max_shift, max_shift], zero fill; batched."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator, device=x.device)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = shifts[:, 0] * 2 / w
    theta[:, 1, 2] = shifts[:, 1] * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def training_layout(model: Classifier, images: torch.Tensor) -> torch.memory_format:
    """Channels-last where `model` runs so, else contiguous; leaves `model`'s weights in that layout (in
    place: the same Parameters, restrided). oneDNN's convolutions are faster in channels-last: a training
    step in fp32 on a 2-core AVX2 CPU took 0.67x (small_cnn), 0.82x (judge_cnn) and 0.86x (strided_cnn) the
    contiguous time on one thread, at the same test accuracy (bench/bench_memory_format.py). A network
    that reshapes its maps with .view() fails in channels-last: it trains contiguous."""
    model.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad(), eval_mode(model):  # eval: batch norm's running statistics stay untouched
            model(images.contiguous(memory_format=torch.channels_last))
        return torch.channels_last
    except RuntimeError:
        model.to(memory_format=torch.contiguous_format)
        return torch.contiguous_format


class ClassifierModule(pl.LightningModule):
    """Cross-entropy training with shift augmentation, AdamW and a one-cycle schedule; batches in `layout`
    (training_layout's)."""

    def __init__(self, model: Classifier, lr: float, weight_decay: float, max_shift: int,
                 layout: torch.memory_format = torch.contiguous_format):
        super().__init__()
        self.model, self.lr, self.weight_decay, self.max_shift = model, lr, weight_decay, max_shift
        self.layout = layout

    def _step(self, batch, split: str):
        x, y = batch
        if split == "train":
            x = random_shift(x, self.max_shift)
        logits = self.model(x.contiguous(memory_format=self.layout))
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        # sync_dist: under data-parallel training, early stopping and the best checkpoint go by the mean over
        # every process's share of the validation set, not rank 0's half (one process: no effect)
        self.log_dict({f"{split}_loss": loss, f"{split}_acc": acc}, prog_bar=split != "train",
                      on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def training_step(self, batch, _):
        return self._step(batch, "train")

    def validation_step(self, batch, _):
        self._step(batch, "val")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr,
                                                    total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class RngState(pl.Callback):
    """Keeps the random state in every checkpoint and puts it back when training resumes from one, so a run
    killed after epoch k and resumed trains the same weights as a run never interrupted: the global torch
    RNG (shift augmentation, VAE noise) and the train loader's shuffling generator (CPU; CUDA RNG is not kept)."""

    KEY = "studio_rng"

    def __init__(self):
        self._pending = None

    @staticmethod
    def _loader_generator(trainer) -> torch.Generator | None:
        return getattr(trainer.train_dataloader, "generator", None)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        generator = self._loader_generator(trainer)
        checkpoint[self.KEY] = {"torch": torch.get_rng_state(),
                                "loader": generator.get_state() if generator is not None else None}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self._pending = checkpoint.get(self.KEY)

    def on_train_start(self, trainer, pl_module):
        # here, not on load: the loader exists now, and Lightning's sanity check (which runs in between) is over
        if self._pending is not None:
            torch.set_rng_state(self._pending["torch"])
            generator = self._loader_generator(trainer)
            if generator is not None and self._pending["loader"] is not None:
                generator.set_state(self._pending["loader"])
                # Lightning made the first epoch's iterator already (drawing from the loader's generator
                # before its state was back); a new one draws as an uninterrupted run's next epoch does
                fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
                if fetcher is not None:
                    iter(fetcher)
            self._pending = None


class StopIfDiverged(pl.Callback):
    """Ends a training whose loss or weights became nan or inf (lr=1e9 gets there in a step) with one line
    naming the setting to lower, instead of a traceback from the next step or a garbage model in the cache.
    Checked after every optimizer step, so no checkpoint holds the diverged weights: a rerun resumes from
    the last finite epoch."""

    def __init__(self, setting: str):
        self.setting = setting

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if torch.is_tensor(loss) and not torch.isfinite(loss).all():
            what = f"the loss became {float(loss)}"
        elif not torch.stack([torch.isfinite(p).all() for p in pl_module.parameters()]).all():  # one sync
            what = "the weights became nan or inf"
        else:
            return
        raise diverged(what, trainer.current_epoch + 1, batch_idx + 1, self.setting)


class EpochLines(pl.Callback):
    """One line per epoch instead of Lightning's bar when stdout is not a terminal (a log file would hold
    every redraw of the bar)."""

    def __init__(self, name: str):
        self.name = name

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:  # data-parallel workers: one line per epoch, not one per process
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        values = ", ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items()))
        print(f"{self.name}: epoch {trainer.current_epoch + 1}/{trainer.max_epochs}" + (f": {values}" if values else ""),
              flush=True)


def progress(enabled: bool, name: str) -> dict:
    """Trainer keywords for training progress: Lightning's bar on a terminal, EpochLines in a log file."""
    live = enabled and interactive(sys.stdout)  # Lightning's bar writes to stdout
    return {"enable_progress_bar": live, "callbacks": [EpochLines(name)] if enabled and not live else []}


def diverged(what: str, epoch: int, step: int, setting: str) -> StudioError:
    return StudioError(f"training diverged: {what} in epoch {epoch}, step {step}; lower {setting}")


def every_epoch_checkpoint(workdir: Path) -> ModelCheckpoint:
    """Saves the whole training state (weights, optimizer, schedule, callbacks, RNG) as workdir/last.ckpt at
    the end of every epoch, for a stopped run to resume from. Not `save_last=True`: Lightning writes that
    file only in epochs where a top-k checkpoint was saved too (never with save_top_k=0, only on improvement
    with a monitor)."""
    return ModelCheckpoint(dirpath=workdir, filename="last", save_top_k=1, enable_version_counter=False)


def last_checkpoint(workdir: Path) -> tuple[Path | None, int]:
    """`workdir/last.ckpt` of a run that was stopped and how many epochs it had finished, or (None, 0).
    Lightning writes it atomically, so one that does not load was not written by a studio run: refused."""
    last = Path(workdir) / "last.ckpt"
    if not last.is_file():
        return None, 0
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing: not the user's line
            warnings.simplefilter("ignore")
            return last, int(torch.load(last, map_location="cpu", weights_only=True)["epoch"]) + 1
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise StudioError(f"cannot resume training from {str(last)!r} ({type(e).__name__}); delete it to "
                          "train from scratch") from None


def fit(model: Classifier, model_cfg, trainer_cfg, dm: ImageDataModule, workdir: Path, logger=False) -> int:
    """Train `model` in place with Lightning (early stopping on val_loss), leaving it with the best weights.
    Resumes from workdir/last.ckpt when an earlier run was stopped; returns the epochs it resumed after (0: none)."""
    pl.seed_everything(model_cfg.seed, workers=True, verbose=False)
    layout = training_layout(model, dm.split("val")[0][:2])
    module = ClassifierModule(model, model_cfg.optim.lr, model_cfg.optim.weight_decay, model_cfg.augment.max_shift,
                              layout)
    # a model config's own `trainer` block (vit_tiny: its epochs) replaces those keys of the trainer group
    trainer_kwargs = {**OmegaConf.to_container(trainer_cfg, resolve=True), **dict(model_cfg.get("trainer") or {})}
    patience = trainer_kwargs.pop("early_stopping_patience")
    last, resumed_after = last_checkpoint(workdir)  # before the Trainer: its banner would precede the error line
    # val_loss, not val_acc: on a few hundred validation images accuracy moves in coarse, noisy steps
    checkpoint = ModelCheckpoint(dirpath=workdir, monitor="val_loss", mode="min", save_weights_only=True)
    # A killed run resumes from the epoch checkpoint (the work dir survives until the weights are safely in
    # the cache). It comes after `checkpoint` so that it holds that callback's state of the same epoch.
    shown = progress(trainer_kwargs.pop("enable_progress_bar", True), f"{model_cfg.name} training")
    trainer = pl.Trainer(**trainer_kwargs, logger=logger, default_root_dir=workdir, enable_model_summary=False,
                         enable_progress_bar=shown["enable_progress_bar"],
                         callbacks=[StopIfDiverged(f"model.optim.lr={model_cfg.optim.lr:g}"),
                                    EarlyStopping("val_loss", mode="min", patience=patience), checkpoint,
                                    every_epoch_checkpoint(workdir), RngState(), *shown["callbacks"]])
    # data-parallel: each process takes its share of data.batch_size (studio/distributed.py)
    check_launcher(trainer, trainer_kwargs.get("strategy", "auto"))
    train_loader = dm.train_dataloader(per_process_batch(dm.batch_size, trainer.world_size, "data.batch_size"))
    with worker_errors():
        trainer.fit(module, train_loader, dm.val_dataloader(), ckpt_path=last, weights_only=True)
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(best)
    model.to(memory_format=torch.contiguous_format)  # back from training_layout: what renders and saves expect
    model.eval()
    return resumed_after
