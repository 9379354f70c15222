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

A second table measures rollout variants on the same images, each on the marked and the clean ViT (a
variant that "finds the mark" as often on the clean ViT, which never learned it, does not find the
shortcut): the mark patch ranked first (the target's measure) and within the top 3.
- head fusion mean (the studio's attention_rollout) / max / min, and discard_ratio p (the lowest p of the
  fused T×T matrix's entries per image set to 0 before ½(A + I), rows renormalized), as in
  jacobgil/vit-explain's vit_rollout.py (there rows are divided by a broadcast row-sum vector, which
  normalizes columns; here rows, as Abnar & Zuidema);
- gradient-weighted rollout (Chefer, Gur & Wolf 2021, ICCV): per block Ā = mean over heads of
  (∂y_c/∂A ⊙ A)⁺, R ← R + Ā·R from R = I, read by the readout (the mean of R's rows; with pool=attention
  the readout's own Ā row); y_c the logit of class 0 (the mark's class) or of the predicted class;
- jacobgil's grad_rollout: mean over heads of A ⊙ ∂y_c/∂A, clamped at 0, discard 0.9, then ½(A + I) as
  above (its per-block pairing of attentions and gradients fixed: backward hooks collect them in reverse);
- the best single raw-attention head on the marked ViT (chosen on these images, so an upper reference).
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


def top_k_patches_hold_mark(maps, region, patch: int, k: int) -> list[bool]:
    """N bools: does one of the k highest-valued patches of the N×1×H×W maps overlap the mark?"""
    grid = maps[:, 0, ::patch, ::patch]
    tops = grid.flatten(1).topk(k, 1).indices
    return [any(bool(region[r * patch:(r + 1) * patch, c * patch:(c + 1) * patch].any())
                for r, c in zip(top // grid.shape[2], top % grid.shape[2])) for top in tops]


def load(model_name: str, data: str, overrides: list[str]):
    """(trained model, the marked test images, the mark's H×W region, the marked data's options, the model
    config) for vit `model_name` trained on `data`."""
    from studio import config
    from studio.data import build_datamodule
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
    x, _ = build_datamodule(marked_cfg.data).split("test")
    x = x[mark.present(x)]
    return trained, x, mark.region(*x.shape[-2:]), o, cfg


def measure(model_name: str, data: str, overrides: list[str]) -> dict:
    import torch

    from studio.explain import build_method

    trained, x, region, o, cfg = load(model_name, data, overrides)
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


def attention_gradients(model, x, target, batch_size: int = 250):
    """(attentions, gradients): every softmax's (the blocks' B×heads×T×T, then the attention readout's
    B×heads×1×T if any) probabilities and the gradient of the target's logit with respect to them; target
    is a class index or "pred" (each image's predicted class)."""
    import torch

    from studio.vit import attention_layers, attention_readout

    net = getattr(model, "net", model)
    softmaxes = [layer.softmax for layer in attention_layers(net).values()]
    readout = attention_readout(net)
    softmaxes += [readout.softmax] if readout is not None else []
    kept: list = []
    handles = [s.register_forward_hook(lambda _m, _i, out: kept.append(out)) for s in softmaxes]
    attentions, gradients = [[] for _ in softmaxes], [[] for _ in softmaxes]
    model.eval()
    try:
        for start in range(0, len(x), batch_size):
            kept.clear()
            out = model(x[start:start + batch_size])
            chosen = out.argmax(1) if target == "pred" else torch.full((len(out),), int(target))
            grads = torch.autograd.grad(out.gather(1, chosen[:, None]).sum(), kept)
            for k, (a, g) in enumerate(zip(kept, grads)):
                attentions[k].append(a.detach())
                gradients[k].append(g)
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(a) for a in attentions], [torch.cat(g) for g in gradients]


def fused_rollout(attentions, fusion: str = "mean", discard: float = 0.0, weights=None):
    """B×T×T: the product of ½(F_l + I) (rows renormalized) over blocks, F_l the heads of A_l (times
    `weights`[l], clamped at 0, if given: jacobgil's grad_rollout) fused by mean / max / min, with the lowest
    `discard` share of F_l's entries per image set to 0 (jacobgil/vit-explain's discard_ratio)."""
    import torch

    flow = None
    for k, attention in enumerate(attentions):
        if weights is not None:
            attention = attention * weights[k]
        fused = {"mean": attention.mean(1), "max": attention.amax(1), "min": attention.amin(1)}[fusion]
        fused = fused.clamp(min=0) if weights is not None else fused
        if discard:
            flat = fused.flatten(1).clone()
            flat.scatter_(1, flat.topk(int(flat.shape[1] * discard), 1, largest=False).indices, 0)
            fused = flat.view_as(fused)
        mixed = 0.5 * fused + 0.5 * torch.eye(fused.shape[-1])
        mixed = mixed / mixed.sum(-1, keepdim=True)
        flow = mixed if flow is None else mixed @ flow
    return flow


def gradient_rollout(attentions, gradients, readout: bool):
    """B×T relevance (Chefer, Gur & Wolf 2021): R ← R + Ā_l·R from R = I, Ā_l = mean over heads of
    (∂y/∂A_l ⊙ A_l)⁺, read by the mean of R's rows, or by the readout's own Ā row when it attends."""
    import torch

    blocks = len(attentions) - readout
    tokens = attentions[0].shape[-1]
    flow = torch.eye(tokens).expand(len(attentions[0]), tokens, tokens)
    for attention, gradient in zip(attentions[:blocks], gradients[:blocks]):
        flow = flow + (gradient * attention).clamp(min=0).mean(1) @ flow
    if readout:
        row = (gradients[-1] * attentions[-1]).clamp(min=0).mean(1)[:, 0]
    else:
        row = torch.full((len(flow), tokens), 1 / tokens)
    return (row.unsqueeze(1) @ flow)[:, 0]


def variant_relevances(model, x) -> dict:
    """variant name -> N×T patch relevance of the marked images x (the table's rows)."""
    from studio.explain.attention import attention_probabilities, pooled_relevance

    attentions, readout = attention_probabilities(model, x)
    rows = {"rollout (mean fusion: the studio's attention_rollout)": pooled_relevance(fused_rollout(attentions),
                                                                                     readout)}
    for fusion, discard in [("max", 0.0), ("min", 0.0), ("mean", 0.5), ("mean", 0.9), ("max", 0.5),
                            ("max", 0.9), ("min", 0.9)]:
        rows[f"rollout {fusion} fusion, discard_ratio {discard}"] = pooled_relevance(
            fused_rollout(attentions, fusion, discard), readout)
    for target in (0, "pred"):
        grads_of = attention_gradients(model, x, target)
        rows[f"gradient rollout (Chefer 2021), class {target}"] = gradient_rollout(*grads_of, readout is not None)
        blocks = len(attentions)
        rows[f"jacobgil grad_rollout, discard 0.9, class {target}"] = pooled_relevance(
            fused_rollout(grads_of[0][:blocks], "mean", 0.9, grads_of[1][:blocks]), readout)
    for b, attention in enumerate(attentions):
        for h in range(attention.shape[1]):
            rows[f"raw attention block {b} head {h}"] = pooled_relevance(attention[:, h], readout)
    return rows


def measure_variants(model_name: str, overrides: list[str]) -> list[dict]:
    """Rows variant, marked and clean ViT: share of marked images whose top 1 / top 3 patches hold the mark;
    of the raw single heads only the best on the marked ViT is kept."""
    import torch

    from studio.explain.attention import to_pixels

    found: dict = {}
    for data in ("mnist5k_marked", "mnist5k"):
        trained, x, region, _, cfg = load(model_name, data, overrides)
        patch = int(cfg.model.options.patch)
        for name, relevance in variant_relevances(trained.model, x).items():
            maps = to_pixels(relevance, x.shape[-2:])
            for k in (1, 3):
                hits = top_patch_holds_mark(maps, region, patch) if k == 1 else \
                    top_k_patches_hold_mark(maps, region, patch, k)
                found.setdefault(name, {})[f"{data} top {k}"] = float(torch.tensor(hits).float().mean())
    heads = [name for name in found if name.startswith("raw attention")]
    best = max(heads, key=lambda name: found[name]["mnist5k_marked top 1"])
    return [{"variant": name + (" (best head on the marked ViT)" if name == best else ""), **scores}
            for name, scores in found.items() if name not in heads or name == best]


def markdown(rows: list[dict]) -> None:
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + " --- |" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="explain config overrides, e.g. model.options.patch=4")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    markdown([measure("vit_tiny", data, args.overrides) for data in ("mnist5k_marked", "mnist5k")])
    print()
    markdown(measure_variants("vit_tiny", args.overrides))


if __name__ == "__main__":
    main()
