"""The registry of `studio <command>`s: name -> what runs it and one line of help.

A command's module is imported only when it runs, so `studio --help` and a command line that fails the
start-up checks answer without importing torch (a second or more on this CPU).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Command:
    target: str  # "module:function"; the function takes (cfg, tracker, run_dir) and returns a runs.Result
    help: str

    @property
    def run(self) -> Callable:
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)


COMMANDS = {
    "demo": Command("studio.basics:demo", "the main job: train the classifier and the judge on the bundled digits"),
    "train": Command("studio.basics:train", "train (or reuse from the cache) a classifier and report its test "
                     "accuracy"),
    "layers": Command("studio.basics:layers", "list a model's layer names and output shapes (what you can visualize)"),
    "train-generator": Command("studio.generation:train_generator", "train (or reuse) a GAN or VAE generator and "
                               "score its samples with the judge"),
    "visualize": Command("studio.visualize:visualize", "render what a layer's filters or the classes respond to "
                         "(gradient ascent on pixels, batched)"),
    "probe": Command("studio.hidden:probe", "linear probe accuracy of every layer, with pixel and majority baselines"),
    "embed": Command("studio.hidden:embed", "PCA / t-SNE maps of chosen layers, coloured by class, with separation"),
    "explain": Command("studio.explain_command:explain", "explain single images (LIME, saliency, SmoothGrad, IG, "
                       "occlusion, Grad-CAM) and score the maps"),
    "report": Command("studio.report:command", "a sweep's jobs side by side: table, plots, comparison grid, HTML "
                      "gallery (studio report <sweep dir>)"),
}
