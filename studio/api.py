"""The studio from Python: the cached trained models in one line, as a notebook user expects.

    import studio
    model = studio.load_classifier()                      # small_cnn on mnist5k: trained once, then cached
    judge = studio.load_classifier(model="judge_cnn")
    gan = studio.load_generator()                         # the default generator (dcgan) on mnist5k
    images = gan.sample(16, seed=0)                       # 16×1×28×28 in [0, 1]
    search = studio.load_tuning("outputs/multiruns/tune_regularizer/<time>")  # an Optuna search's trials
    search.best[0].params, search.best[0].values, search.recipes
    labels = studio.dissect_labels("conv2")               # {"conv2:0": {"label": "loop_interior", ...}, ...}

The same config groups and overrides as the CLI (`overrides=["trainer.max_epochs=2"]`), checked the
same way, and the same cache (paths.models; $STUDIO_OUTPUTS moves it): a model `studio train` made is
loaded, not trained again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch import nn

from studio import config


def _compose(command: str, choices: dict[str, str], overrides: Sequence[str], progress: bool):
    given = [f"{group}={name}" for group, name in choices.items()] + list(overrides)
    if not progress:
        given.append("trainer.enable_progress_bar=false")
    return config.compose(command, config.checked_overrides(command, given))


def load_classifier(model: str = "small_cnn", data: str = "mnist5k", overrides: Sequence[str] = (),
                    progress: bool = False) -> nn.Module:
    """The classifier `model` trained on `data` (conf/model, conf/data), in eval mode on the CPU; trained
    first (and cached) if the cache has none. Input N×C×H×W in [0, 1], output N×classes logits."""
    from studio.data import build_datamodule
    from studio.train import trained_classifier

    cfg = _compose("train", {"model": model, "data": data}, overrides, progress)
    return trained_classifier(cfg.model, cfg.data, cfg.trainer, build_datamodule(cfg.data), cfg.paths.models).model


def load_generator(generator: str = "dcgan", data: str = "mnist5k", overrides: Sequence[str] = (),
                   progress: bool = False) -> nn.Module:
    """The generator (conf/generator: dcgan, vae, diffusion, checkpoint) trained on `data`, in eval mode; trained first
    (and cached) if the cache has none. `.sample(n, seed=...)` gives n images in [0, 1]; `.generator(z)`
    maps latents (N×latent_dim) to images."""
    from generators import trained_generator
    from studio.data import build_datamodule

    cfg = _compose("train-generator", {"generator": generator, "data": data}, overrides, progress)
    return trained_generator(cfg.generator, cfg.data, cfg.trainer, build_datamodule(cfg.data), cfg.paths.models).module


def load_tuning(sweep_dir):
    """An Optuna search's sweep dir (`studio visualize experiment=tune_regularizer`) as the report reads it:
    `.trials` (number, params, values; values None for a failed trial), `.best` (the best trial; with several
    objectives the Pareto front), `.directions`, `.objectives` and `.recipes` ({recipe name: trial number})."""
    from pathlib import Path

    from studio.errors import StudioError
    from studio.report.jobs import find_jobs
    from studio.report.trials import find_tuning

    if not Path(sweep_dir).is_dir():
        raise StudioError(f"sweep dir not found: {sweep_dir}")
    tuning = find_tuning(Path(sweep_dir), find_jobs(sweep_dir)[0])
    if tuning is None:
        raise StudioError(f"{sweep_dir} is not an Optuna search: no multirun.yaml with tune.objectives "
                          "(run one with `studio visualize experiment=tune_regularizer`)")
    return tuning


def run_sweep(command: str, overrides: Sequence[str], sweep_dir: str | Path) -> Path:
    """Run `studio <command> -m <overrides> hydra.sweep.dir=<sweep_dir>` (any `hydra/launcher=...`,
    an `experiment=...`) and return the sweep dir, whose report the sweep wrote if its config asks for one
    (`studio.report.report(sweep_dir)` makes or reads it otherwise).

    It runs in a child process, as the CLI: the launcher starts its own processes, Ray connections or
    Slurm jobs, and Hydra's global state stays out of the caller's. Its output goes to the caller's
    console. A mistake the CLI names (exit 2, e.g. an unreachable Ray) is raised as the same one-line
    StudioError; failed or killed jobs as a RuntimeError (rerunning the same call finishes the sweep)."""
    import subprocess
    import sys

    from studio.errors import StudioError

    sweep_dir = Path(sweep_dir).absolute()
    argv = [sys.executable, "-m", "studio.cli", command, "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    result = subprocess.run(argv, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(result.stderr)  # the user sees what the CLI would have shown
    if result.returncode == 2:
        line = (result.stderr.strip().splitlines() or [""])[-1]
        raise StudioError(line.split(": error: ", 1)[-1])
    if result.returncode != 0:
        raise RuntimeError(f"studio {command}: the sweep in {sweep_dir} ended with exit code {result.returncode} "
                           "(a job failed or was killed: see its table.md, or rerun to finish it)")
    return sweep_dir


def dissect_labels(layer: str = "conv2", model: str = "small_cnn", data: str = "mnist5k",
                   overrides: Sequence[str] = (), progress: bool = False) -> dict[str, dict]:
    """Each unit of `layer` of the cached classifier `model` (trained on `data`) labelled by Network Dissection
    with `studio dissect`'s settings (conf/dissect.yaml; `overrides` as on its command line, e.g.
    "dissect.images=500"): {"conv2:7": {"label": concept or None, "concept": best concept, "iou": its IoU}},
    the same as `studio visualize` puts beside each rendered channel."""
    from studio.commands.channel_labels import unit_labels
    from studio.commands.dissect import builtin_images_and_masks
    from studio.concepts.dissect import dissect, layer_maps
    from studio.data import build_datamodule
    from studio.train import trained_classifier

    cfg = _compose("dissect", {"model": model, "data": data}, [f"dissect.layer={layer}", *overrides], progress)
    dm = build_datamodule(cfg.data)
    net = trained_classifier(cfg.model, cfg.data, cfg.trainer, dm, cfg.paths.models).model
    images, masks = builtin_images_and_masks(dm, cfg.data, [str(c) for c in cfg.dissect.concepts], cfg.dissect.images)
    units = dissect(layer_maps(net, images, layer), masks, float(cfg.dissect.quantile), top=1)
    labels = unit_labels({u.index: u for u in units}, layer, float(cfg.dissect.min_iou))
    return {unit: {"label": label, "concept": concept, "iou": iou} for unit, (label, concept, iou) in labels.items()}
