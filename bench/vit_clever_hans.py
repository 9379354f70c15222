"""Does attention find the Clever Hans mark? vit_tiny trained on mnist5k_marked (a white square in the
lower-left corner of every training 0: the clever_hans experiment's data), then on every marked test
image: is the mark inside the patch that raw attention (the last block, mean over heads) and attention
rollout rank first (read by the ViT's readout: the mean of the tokens, or the attention readout's row)?
The same on the ViT trained on clean mnist5k (the same marked test images) tells what the corner patch
gets from a model that never learned the mark. Models are trained on first use and
cached in $STUDIO_OUTPUTS/models/ like every command's.

    .venv/bin/python bench/vit_clever_hans.py                  # prints a markdown table
    .venv/bin/python bench/vit_clever_hans.py model.options.patch=4
    .venv/bin/python bench/vit_clever_hans.py model.options.pool=attention   # rollout from a readout's row
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def top_patch_holds_mark(maps, region, patch: int) -> list[bool]:
    """N bools: does the highest-valued patch of the N×1×H×W maps (constant on each patch) overlap the mark?
    (At 28 px with 7 px patches the mark, rows 22-25 and columns 2-5, lies inside one patch.)"""
    grid = maps[:, 0, ::patch, ::patch]  # one value per patch
    top = grid.flatten(1).argmax(1)
    rows, cols = top // grid.shape[2], top % grid.shape[2]
    return [bool(region[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch].any()) for r, c in zip(rows, cols)]


def measure(model_name: str, data: str, overrides: list[str]) -> dict:
    import torch

    from studio import config
    from studio.data import build_datamodule
    from studio.explain import build_method
    from studio.mark import Mark
    from studio.train import trained_classifier

    # the clever_hans experiment's config for the marked data: the same cache entry as `studio explain
    # experiment=clever_hans model=vit_tiny`
    chosen = ["experiment=clever_hans"] if data == "mnist5k_marked" else [f"data={data}"]
    cfg = config.compose("explain", [*chosen, f"model={model_name}", "trainer.enable_progress_bar=false", *overrides])
    marked_cfg = config.compose("explain", ["data=mnist5k_marked", f"model={model_name}", *overrides])
    o = marked_cfg.data.options
    mark = Mark(int(o.size), str(o.corner), int(o.margin), float(o.value))
    trained = trained_classifier(cfg.model, cfg.data, cfg.trainer, build_datamodule(cfg.data), cfg.paths.models)
    x, y = build_datamodule(marked_cfg.data).split("test")
    marked = mark.present(x)
    x, y = x[marked], y[marked]
    region = mark.region(*x.shape[-2:])
    with torch.no_grad():
        pred = trained.model(x).argmax(1)
    row = {"model": f"{model_name} on {data}", "clean test acc": trained.test_acc, "marked images": len(x),
           "called 0": float((pred == int(o.mark_class)).float().mean())}
    for method in ("attention_rollout", "attention"):
        maps = build_method(method, trained.model).attribute(x)
        found = torch.tensor(top_patch_holds_mark(maps, region, int(cfg.model.options.patch)))
        row[f"{method}: top patch = mark"] = float(found.float().mean())
        row[f"{method} (images called 0)"] = float(found[pred == int(o.mark_class)].float().mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="explain config overrides, e.g. model.options.patch=4")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = [measure("vit_tiny", data, args.overrides) for data in ("mnist5k_marked", "mnist5k")]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + " --- |" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


if __name__ == "__main__":
    main()
