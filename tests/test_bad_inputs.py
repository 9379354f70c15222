"""Bad inputs through the real CLI, one row per mistake a user can make (issue 8).

Each run is `studio.cli.main` in a process of its own, forked from the test (run_studio_forked): the
same entry point, exit code and stderr as `studio <command>`, without importing torch again per row.

Every row must end in exit code 2 and ONE stderr line that names the bad value and what would be
valid, with no traceback and nothing left in the run dir that looks like a result: no manifest.json,
no PNG, no half-written *.tmp. Misspelt config keys and wrong value types are studio/validate.py's
(tested in tests/test_configs.py). Bad inputs other tests already cover are not repeated here
(visualize: test_visualize_cli.py; explain channels/NaN model: test_explain_cli.py; report dirs:
test_report.py; missing and pickled checkpoints for `layers`: test_cli.py).
"""

from __future__ import annotations

import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import (FAST_GENERATOR, QUIET_LOCAL, assert_one_line_error, compose_config, run_studio,
                            run_studio_forked)



def quick(command: str) -> list[str]:
    """No W&B, no progress bar (layers and report have no trainer to quiet)."""
    return ["logger=none"] if command in ("layers", "report") else QUIET_LOCAL


# --- files a user might hand the studio -------------------------------------------------------------
def _png_header_only(path: Path, width: int, height: int) -> None:
    """A grey PNG whose header declares width x height but holds (almost) no pixel data: the shape of a
    decompression bomb, without spending the memory to write a real one."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
                     + chunk(b"IEND", b""))


def _folder(root: Path, per_class: dict[str, int], mode: str = "L") -> Path:
    """root/<class>/<k>.png with `per_class[class]` small images each (class k a different brightness)."""
    for k, (name, count) in enumerate(per_class.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new(mode, (8, 8), (40 + 60 * k + i) % 256 if mode == "L" else (40 * k, 80, 20 * i)).save(
                root / name / f"{i}.png")
    return root


class _MakesAFile:
    """A pickle payload that would create a file if it were ever executed."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil(path: Path, marker: Path, wrap=lambda payload: {"conv1.weight": payload}) -> Path:
    with open(path, "wb") as f:
        pickle.dump(wrap(_MakesAFile(str(marker))), f)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Every bad file and folder of the table, made once."""
    from generators import build_generator
    from studio.models import build_net

    root = tmp_path_factory.mktemp("bad_inputs")
    _folder(root / "one_class", {"cats": 3})
    for name in ("cats", "dogs"):
        (root / "empty" / name).mkdir(parents=True)
        (root / "empty" / name / "notes.txt").write_text("not an image")
    _folder(root / "tiny", {"cats": 1, "dogs": 1})
    _folder(root / "rgb", {"cats": 12, "dogs": 12}, mode="RGB")
    corrupt = _folder(root / "corrupt", {"cats": 12, "dogs": 12})
    (corrupt / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG body")
    truncated = _folder(root / "truncated", {"cats": 12, "dogs": 12})
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(root / "whole.png")
    (truncated / "cats" / "cut.png").write_bytes((root / "whole.png").read_bytes()[:600])
    bomb = _folder(root / "bomb", {"cats": 12, "dogs": 12})
    _png_header_only(bomb / "cats" / "bomb.png", 30000, 30000)

    torch.save(build_net("small_cnn", 1, 2).state_dict(), root / "grey_small_cnn.pt")
    torch.save(build_net("small_cnn", 1, 5).state_dict(), root / "five_classes.pt")
    torch.save(build_net("judge_cnn", 1, 10).state_dict(), root / "judge_cnn.pt")
    (root / "garbage.pt").write_bytes(b"\x00\x01 definitely not a torch file")
    gen_cfg = compose_config("visualize", ["generator=checkpoint", "generator.path=x"]).generator
    torch.save(build_generator(gen_cfg, 3, 32).state_dict(), root / "generator_rgb32.pt")
    (root / "a_file").write_text("a regular file, so nothing can be created under it (not even by root)")
    return root


# --- the table ---------------------------------------------------------------------------------------
# id: (command, arguments ({inputs} is the fixture dir), fragments of the one stderr line)
NO_MODELS = "paths.models={tmp}/no-models"  # a row with it must fail before training anything
DATA = ["data=image_folder", "data.size=8", "data.channels=1", "data.num_classes=2"]
ROWS = {
    # data: the user's image folders
    "train-folder-missing": ("train", [*DATA, "data.options.root={inputs}/absent"],
                             ["image folder not found", "absent", "<root>/<class name>/<images>"]),
    "train-folder-one-class": ("train", [*DATA, "data.options.root={inputs}/one_class"],
                               ["one_class", "has 1 class folder(s); need at least 2"]),
    "train-folder-no-images": ("train", [*DATA, "data.options.root={inputs}/empty"],
                               ["empty", "holds no images", ".png"]),
    "train-folder-tiny": ("train", [*DATA, "data.options.root={inputs}/tiny"],
                          ["too few images: class 'cats' has 1 image(s)", "need at least 3 per class"]),
    "train-folder-corrupt-image": ("train", [*DATA, "data.options.root={inputs}/corrupt"],
                                   ["cannot read image", "broken.png"]),
    "train-folder-truncated-image": ("train", [*DATA, "data.options.root={inputs}/truncated"],
                                     ["cannot read image", "cut.png", "truncated"]),
    "train-folder-decompression-bomb": ("train", [*DATA, "data.options.root={inputs}/bomb"],
                                        ["cannot read image", "bomb.png", "900000000 pixels", "decompression bomb"]),
    "train-folder-channels": ("train", [*DATA, "data.options.root={inputs}/rgb", "data.channels=2"],
                              ["channels=2", "choose from: 1, 3"]),
    "train-folder-num-classes": ("train", [*DATA, "data.options.root={inputs}/rgb", "data.num_classes=3"],
                                 ["with 2 classes", "says (1, 8, 8) with 3", "data.num_classes"]),
    # model: names and checkpoints
    "train-unknown-arch": ("train", ["model=checkpoint", "model.path={inputs}/grey_small_cnn.pt",
                                     "model.arch=small_cnm"],
                           ["unknown architecture 'small_cnm'; choose from: judge_cnn, small_cnn, strided_cnn, "
                            "torchvision, vit"]),
    "train-unknown-torchvision-model": ("train", ["model=resnet18", "model.options.arch=resnet19"],
                                        ["unknown torchvision model 'resnet19'; choose from:", "resnet18"]),
    "demo-checkpoint-missing": ("demo", ["model=checkpoint", "model.path={inputs}/absent.pt"],
                                ["checkpoint not found", "absent.pt"]),
    "train-checkpoint-corrupt": ("train", ["model=checkpoint", "model.path={inputs}/garbage.pt"],
                                 ["refusing to load checkpoint", "garbage.pt", "not a plain weights file"]),
    "train-checkpoint-rgb-data-grey-weights": ("train", [*DATA, "data.options.root={inputs}/rgb", "data.channels=3",
                                                         "model=checkpoint",
                                                         "model.path={inputs}/grey_small_cnn.pt"],
                                               ["grey_small_cnn.pt", "net.conv1.weight has shape (32, 1, 3, 3)",
                                                "expected (32, 3, 3, 3)"]),
    "train-checkpoint-other-class-count": ("train", ["model=checkpoint", "model.path={inputs}/five_classes.pt"],
                                           ["five_classes.pt", "net.fc.weight has shape (5, 128)",
                                            "expected (10, 128)"]),
    "layers-checkpoint-other-arch": ("layers", ["model=checkpoint", "model.path={inputs}/judge_cnn.pt"],
                                     ["judge_cnn.pt", "does not fit this model", "model.arch"]),
    "layers-unresolvable-interpolation": ("layers", ["data.size=${{nope}}"],
                                          ["cannot resolve data.size", "Interpolation key 'nope' not found"]),
    "layers-image-too-small": ("layers", ["data.size=1"],
                               ["cannot take images of shape (1, 1, 1)", "data.size", "too small"]),
    "train-vit-patch-does-not-divide-the-image": ("train", ["model=vit_tiny", "model.options.patch=5", NO_MODELS],
                                                  ["patch size 5 px does not divide the 28 px image (data.size)",
                                                   "model.options.patch= one of 2, 4, 7, 14"]),
    # generators
    "train-generator-unknown-arch": ("train-generator", ["generator=checkpoint", "generator.path={inputs}/x.pt",
                                                         "generator.arch=gan"],
                                     ["unknown generator architecture 'gan'; choose from: dcgan, diffusion, vae"]),
    "train-generator-checkpoint-missing": ("train-generator", ["generator=checkpoint",
                                                               "generator.path={inputs}/absent.pt"],
                                           ["checkpoint not found", "absent.pt"]),
    "visualize-generator-for-other-images": ("visualize", ["param=latent", "generator=checkpoint",
                                                           "generator.path={inputs}/generator_rgb32.pt"],
                                             ["generator_rgb32.pt", "for 1x28x28 images (data.channels, data.size)",
                                              "expected (6272, 32)"]),
    # visualize: settings that would only fail (or produce garbage) after training
    "visualize-lr-nan": ("visualize", ["lr=nan"], ["lr=nan", "positive"]),
    "visualize-retry-below-not-a-probability": ("visualize", ["param=latent", "retry_below=1.5", NO_MODELS],
                                                ["retry_below=1.5 must be a target probability in (0, 1]"]),
    "visualize-retry-below-not-a-number": ("visualize", ["retry_below=often", NO_MODELS],
                                           ["retry_below=often must be a target probability in (0, 1]"]),
    "visualize-natural-edge-not-positive": ("visualize", ["param=latent", "natural_edge=0", NO_MODELS],
                                            ["natural_edge=0 must be a positive number"]),
    "visualize-unknown-optimizer": ("visualize", ["optimizer=adamm"],
                                    ["unknown optimizer 'adamm'; choose from: adam, adamw, rmsprop, sgd"]),
    "visualize-exemplars-k-larger-than-the-split": ("visualize", ["exemplars.k=5000", NO_MODELS],
                                                    ["exemplars.k=5000 is larger than the train split (3600 images)",
                                                     "set exemplars.k=3600 or less"]),
    "visualize-unknown-exemplar-split": ("visualize", ["exemplars.split=holdout", NO_MODELS],
                                         ["unknown exemplars.split 'holdout'; choose from: train, val, test"]),
    # probe / embed / explain: names checked before any training
    "probe-unknown-layer": ("probe", ["probe.layers=[conv2,conv9]", NO_MODELS],
                            ["unknown layer 'conv9'; choose from:", "fc1"]),
    "probe-unknown-split": ("probe", ["data.split=holdout"],
                            ["unknown data split 'holdout'; choose from: test, train, val"]),
    "embed-unknown-split": ("embed", ["data.split=tset"], ["unknown data split 'tset'; choose from: test, train, val"]),
    "explain-unknown-method": ("explain", ["method=shap"],
                               ["unknown method 'shap'; choose from:", "gradcam", "lime", "all"]),
    "explain-target-out-of-range": ("explain", ["explain.target=10", NO_MODELS],
                                    ["explain.target 10 is out of range", "10 classes (0..9)"]),
    "explain-unknown-gradcam-layer": ("explain", ["method=gradcam", "explain.gradcam_layer=conv7", NO_MODELS],
                                      ["unknown layer 'conv7'; choose from:", "conv3"]),
    "explain-attention-on-a-cnn": ("explain", ["method=attention_rollout", NO_MODELS],
                                   ["method=attention_rollout needs a model with self-attention: use model=vit_tiny"]),
    "explain-attention-block-out-of-range": ("explain", ["model=vit_tiny", "method=attention",
                                                         "explain.attention.block=4", NO_MODELS],
                                             ["explain.attention.block=4 is out of range", "4 blocks (0..3"]),
    "explain-gradcam-in-a-vit-block": ("explain", ["model=vit_tiny", "method=gradcam",
                                                   "explain.gradcam_layer=blocks.3.mlp", NO_MODELS],
                                       ["Grad-CAM layer 'blocks.3.mlp' is inside a ViT block and gives tokens",
                                        "choose a block or the patch embedding: patch_embed, pos, blocks.0,"]),
    "visualize-vit-layer-that-is-not-a-block": ("visualize", ["model=vit_tiny", "objective=channel",
                                                              "objective.layer=blocks.1.attn", NO_MODELS],
                                                ["objective.layer 'blocks.1.attn' is inside a ViT block",
                                                 "choose a block or the patch embedding:", "blocks.3"]),
    # the background-colour Clever Hans: its data and its experiment
    "explain-background-on-clean-data": ("explain", ["explain.background=true", NO_MODELS],
                                         ["explain.background=true needs background data (data=mnist5k_background",
                                          "got data=mnist5k"]),
    "explain-background-base-without-config": ("explain", ["experiment=clever_hans_background",
                                                           "data.options.base=torchvision", NO_MODELS],
                                               ["data=torchvision (data.options.base), which is not a data config",
                                                "choose from:", "mnist5k"]),
    "explain-background-on-the-clean-test-split": ("explain", ["experiment=clever_hans_background", "data.split=test",
                                                               NO_MODELS],
                                                   ["no images with their class's background in data.split=test",
                                                    "use data.split=val or set data.options.test_rate > 0"]),
    "train-background-levels-not-one-per-class": ("train", ["data=mnist5k_background", "data.options.levels=[0.1,0.2]",
                                                            NO_MODELS],
                                                  ["data.options.levels has 2 values; mnist5k has 10 classes",
                                                   "one background level per class"]),
    "train-background-level-out-of-range": ("train", ["data=mnist5k_background",
                                                      "data.options.levels=[0,0,0,0,0,1.5,1,1,1,1]", NO_MODELS],
                                            ["background levels must be in [0, 1], got 1.5"]),
    "train-background-rate-out-of-range": ("train", ["data=mnist5k_background", "data.options.test_rate=2",
                                                     NO_MODELS],
                                           ["test_rate must be in [0, 1], got 2"]),
    # the run dir itself
    "visualize-run-dir-under-a-file": ("visualize", ["hydra.run.dir={inputs}/a_file/run"],
                                       ["a_file/run", "cannot create the output dir"]),
    "layers-multirun-and-cfg": ("layers", ["-m", "model=small_cnn,judge_cnn", "--cfg", "job"],
                                ["-m/--multirun and --cfg cannot be combined", "give one of them"]),
    "layers-sweep-dir-under-a-file": ("layers", ["-m", "hydra.sweep.dir={inputs}/a_file/sweep"],
                                      ["a_file/sweep", "cannot create the output dir", "hydra.sweep.dir="]),
    "train-models-dir-under-a-file": ("train", ["paths.models={inputs}/a_file/models"],
                                      ["cannot create the model cache", "a_file/models", "Not a directory",
                                       "paths.models="]),
    "report-sweep-is-a-file": ("report", ["sweep={inputs}/a_file"], ["sweep dir not found", "a_file"]),
}


def _left_behind(run_dir: Path) -> list[str]:
    """Files in a failed run's dir that look like results (Hydra's .hydra/ and <command>.log are records)."""
    if not run_dir.is_dir():
        return []
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.name == "manifest.json" or p.suffix in (".png", ".tmp") or p.name.endswith(".tmp"))


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_input_is_one_line_and_leaves_nothing(row, inputs, outputs, small_cnn, tmp_path):
    command, args, fragments = ROWS[row]
    args = [a.format(inputs=inputs, tmp=tmp_path) for a in args]
    run_dir = tmp_path / "run"
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={run_dir}")
    result = run_studio_forked(command, *args, *quick(command), outputs=outputs)
    line = assert_one_line_error(result, *fragments)
    assert line.startswith(f"studio {command}: error: ") or line.startswith("studio: error: "), line
    assert "Traceback" not in result.stderr
    assert _left_behind(run_dir) == []
    assert not (tmp_path / "no-models").exists()  # nothing was trained to find the mistake


def test_debug_shows_the_whole_trace(inputs, outputs, tmp_path):
    """STUDIO_DEBUG=1: the same mistake, with the traceback a bug report needs."""
    result = run_studio_forked("train", "model=checkpoint", f"model.path={inputs}/garbage.pt",
                               f"hydra.run.dir={tmp_path}", *QUIET_LOCAL, outputs=outputs, env={"STUDIO_DEBUG": "1"})
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr and "garbage.pt" in result.stderr


def test_nan_render_fails_in_one_line_and_writes_nothing(outputs, small_cnn, tmp_path):
    """A regularizer weight that overflows float32: every target's objective turns -inf at once; the one
    line says so and names the settings to lower."""
    result = run_studio_forked("visualize", "regularizer=l2_tv", "regularizer.l2.weight=1e39", "steps=8", "progress=false",
                               f"hydra.run.dir={tmp_path}", *QUIET_LOCAL, outputs=outputs)
    assert_one_line_error(result, "every target failed", "objective became -inf at step 1", "(and 11 more)",
                          "lower lr=0.1 or regularizer.l2.weight=1e+39")
    assert _left_behind(tmp_path) == []


@pytest.mark.parametrize("command,args,setting", [
    ("train", ["model.optim.lr=1e9", "trainer.max_epochs=2"], "model.optim.lr=1e+09"),
    ("train-generator", ["generator=vae", "generator.lr=1e9", "generator.max_epochs=2"], "generator.lr=1e+09"),
    ("train", ["trainer=ddp_cpu", "model.optim.lr=1e9", "trainer.max_epochs=2"], "model.optim.lr=1e+09"),
], ids=["classifier", "generator", "classifier-2-processes"])
def test_a_training_that_diverges_is_one_line_and_caches_nothing(command, args, setting, outputs, tmp_path):
    """lr=1e9 turns the loss or the weights nan within a few steps: the run stops there, names the setting,
    and no model enters the cache (a rerun would not reuse garbage)."""
    models = tmp_path / "models"
    # 2 processes: a new interpreter, as a user starts it. ddp_fork's workers cannot inherit CUDA state, and a
    # fork of this pytest worker may hold some from earlier tests (torch then refuses: "Cannot re-initialize CUDA")
    run = run_studio if "trainer=ddp_cpu" in args else run_studio_forked
    result = run(command, *args, f"paths.models={models}", f"hydra.run.dir={tmp_path / 'run'}", *QUIET_LOCAL,
                 outputs=outputs)
    assert_one_line_error(result, "training diverged: ", "in epoch 1, step ", f"; lower {setting}")
    assert sorted(p.suffix for p in models.iterdir()) == [".lock"]  # no weights, no facts, no work dir
    assert _left_behind(tmp_path / "run") == []


@pytest.mark.parametrize("command,args,fragments", [
    ("train", ["data.batch_size=63"], ["data.batch_size=63 cannot be split between 2 training processes",
                                       "a multiple of 2 (e.g. 62 or 64)", "trainer.devices"]),
    ("train-generator", ["generator=vae", "generator.batch_size=9", "trainer.devices=4"],
     ["generator.batch_size=9 cannot be split between 4 training processes", "(e.g. 8 or 12)"]),
    ("train-generator", ["generator=dcgan"], ["generator=dcgan (dcgan) cannot train in several processes yet",
                                              "trainer=cpu"]),
], ids=["classifier", "generator", "gan"])
def test_a_batch_the_processes_cannot_share_is_one_line_and_trains_nothing(command, args, fragments, outputs,
                                                                           tmp_path):
    """trainer=ddp_cpu splits the batch between the processes (the recipe stays that of one process); an
    uneven split, or a generator that cannot train data-parallel, is refused before any process starts."""
    models = tmp_path / "models"
    result = run_studio_forked(command, "trainer=ddp_cpu", *args, f"paths.models={models}",
                               f"hydra.run.dir={tmp_path / 'run'}", *QUIET_LOCAL, outputs=outputs)
    assert_one_line_error(result, *fragments)
    assert "Starting with" not in result.stdout + result.stderr
    assert sorted(p.suffix for p in models.iterdir()) == [".lock"]
    assert _left_behind(tmp_path / "run") == []


def test_a_strategy_that_reruns_the_command_line_is_one_line_and_trains_nothing(outputs, tmp_path):
    """Lightning's `ddp` starts its other processes by running argv again: through `studio` that fails
    (and would repeat the whole command per process); the one line names the strategies that work."""
    models = tmp_path / "models"
    result = run_studio_forked("train", "trainer=ddp_cpu", "trainer.strategy=ddp", f"paths.models={models}",
                               f"hydra.run.dir={tmp_path / 'run'}", *QUIET_LOCAL, outputs=outputs)
    assert_one_line_error(result, "trainer.strategy=ddp re-runs the command line in every process",
                          "ddp_fork (CPU: trainer=ddp_cpu)", "ddp_spawn (GPU: trainer=ddp)")
    assert sorted(p.suffix for p in models.iterdir()) == [".lock"]
    assert _left_behind(tmp_path / "run") == []


def test_warning_sized_image_is_refused_too(tmp_path):
    """Pillow only warns between MAX_IMAGE_PIXELS and twice that; the studio refuses those as well."""
    from studio.data import load_image_folder
    from studio.errors import StudioError

    _folder(tmp_path, {"cats": 2, "dogs": 2})
    _png_header_only(tmp_path / "dogs" / "big.png", 10000, 10000)  # 1e8 pixels: a warning in Pillow
    with pytest.raises(StudioError, match=r"cannot read image .*big\.png.*decompression bomb"):
        load_image_folder(str(tmp_path), 8, 1)


# --- unsafe files: every loader a user can reach refuses a pickle that would run code ---------------------
def _poisoned_cache(small_cnn, tmp_path: Path, evil: Path) -> list[str]:
    """A copy of the model cache whose small_cnn entry was overwritten with `evil`."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(small_cnn.path.with_suffix(".json"), models)
    shutil.copy(evil, models / small_cnn.path.name)
    return ["train", f"paths.models={models}"], ["model cache entry", "refusing to load checkpoint",
                                                   small_cnn.path.name, "not a plain weights file", "delete it"]


def _poisoned_resume(small_cnn, tmp_path: Path, evil: Path):
    """A fresh cache holding only the generator's half-trained work dir, its last.ckpt poisoned."""
    from generators.registry import cache_stem

    overrides = ["generator=vae", *FAST_GENERATOR["vae"]]
    cfg = compose_config("train-generator", overrides)
    work = tmp_path / "models" / f"{cache_stem(cfg.generator, cfg.data)}.work"
    work.mkdir(parents=True)
    shutil.copy(evil, work / "last.ckpt")
    return (["train-generator", *overrides, f"paths.models={tmp_path / 'models'}"],
            ["cannot resume training from", "last.ckpt", "delete it to train from scratch"])


def _poisoned_model_resume(small_cnn, tmp_path: Path, evil: Path):
    """A fresh cache holding only the classifier's half-trained work dir, its last.ckpt poisoned."""
    from studio.train import cache_key

    cfg = compose_config("train")
    work = tmp_path / "models" / f"{cfg.model.name}-{cfg.data.name}-{cache_key(cfg.model, cfg.data, cfg.trainer)}.work"
    work.mkdir(parents=True)
    shutil.copy(evil, work / "last.ckpt")
    return (["train", f"paths.models={tmp_path / 'models'}"],
            ["cannot resume training from", "last.ckpt", "delete it to train from scratch"])


LOADERS = {
    "model-checkpoint": lambda small_cnn, tmp, evil: (["train", "model=checkpoint", f"model.path={evil}"],
                                                      ["refusing to load checkpoint", "evil.pt",
                                                       "not a plain weights file"]),
    "generator-checkpoint": lambda small_cnn, tmp, evil: (["visualize", "param=latent", "generator=checkpoint",
                                                           f"generator.path={evil}"],
                                                          ["refusing to load checkpoint", "evil.pt",
                                                           "not a plain weights file"]),
    "model-cache": _poisoned_cache,
    "generator-resume": _poisoned_resume,
    "model-resume": _poisoned_model_resume,
}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_pickle_that_runs_code_is_refused_by_every_loader(loader, outputs, small_cnn, tmp_path):
    marker = tmp_path / "pwned"
    # a Lightning-shaped dict for the resume file, a state dict for the rest: the payload sits inside
    wrap = (lambda p: {"state_dict": {"x": p}, "epoch": 1}) if loader.endswith("resume") else None
    evil = _evil(tmp_path / "evil.pt", marker, *([wrap] if wrap else []))
    args, fragments = LOADERS[loader](small_cnn, tmp_path, evil)
    result = run_studio_forked(*args, f"hydra.run.dir={tmp_path / 'run'}", *QUIET_LOCAL, outputs=outputs)
    assert_one_line_error(result, *fragments)
    assert not marker.exists()
    assert _left_behind(tmp_path / "run") == []
