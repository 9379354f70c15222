"""The registry of `studio <command>`s: one module per command under studio/commands/, each with
`run(cfg, tracker) -> Result` (studio/commands/shared.py), and what the CLI needs to know about it.

A command's module is imported only when it runs, so `studio --help` and a command line that fails the
start-up checks answer without importing torch (a second or more on this CPU).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Command:
    module: str  # studio.commands.<module> holds `run(cfg, tracker) -> Result`
    help: str
    positional: str | None = None  # `studio <command> <dir>` means `<positional>=<absolute dir>`
    group: str | None = None  # "function" of the module: cfg -> the W&B group to join (default: the run's own)
    flags: tuple[tuple[str, str], ...] = ()  # (`--flag`, key): `--flag <file>` means `<key>=<absolute file>`

    def _module(self):
        return importlib.import_module(f"studio.commands.{self.module}")

    @property
    def run(self) -> Callable:
        return self._module().run

    def wandb_group(self, cfg) -> str | None:
        return getattr(self._module(), self.group)(cfg) if self.group else None


COMMANDS = {
    "demo": Command("demo", "the main job: train the classifier and the judge on the bundled digits"),
    "train": Command("train", "train (or reuse from the cache) a classifier and report its test accuracy"),
    "layers": Command("layers", "list a model's layer names and output shapes (what you can visualize)"),
    "train-generator": Command("train_generator", "train (or reuse) a GAN or VAE generator and score its samples "
                               "with the judge"),
    "visualize": Command("visualize", "render what a layer's filters or the classes respond to (gradient ascent "
                         "on pixels, batched)"),
    "probe": Command("probe", "linear probe accuracy of every layer, with pixel and majority baselines"),
    "embed": Command("embed", "PCA / t-SNE maps of chosen layers, coloured by class, with separation"),
    "explain": Command("explain", "explain single images (LIME, saliency, SmoothGrad, IG, occlusion, Grad-CAM) "
                       "and score the maps"),
    "tcav": Command("tcav", "TCAV: does a class depend on a concept (mark, thick, thin, a folder)? Scores per layer "
                    "and class, t-tested against random concepts"),
    "dissect": Command("dissect", "Network Dissection: label each unit of a layer with the concept (ink, loop, "
                       "stroke end, mark, a mask folder) its top activations overlap (IoU)"),
    "report": Command("report", "a sweep's jobs side by side: table, plots, comparison grid, HTML gallery "
                      "(studio report <sweep dir> [--quiz answers.csv])", positional="sweep", group="sweep_group",
                      flags=(("--quiz", "report.quiz"),)),
}
