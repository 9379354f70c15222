"""The small Vision Transformer: training, attention maps and rollout, Grad-CAM and feature visualization
on its patch grid."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from studio.errors import StudioError
from studio.explain import build_method, method_names
from studio.explain.attention import pooled_relevance, rollout
from studio.models import Classifier, build_net, layer_shapes
from studio.vit import attention_layers, attention_readout, check_map_layer
from tests.conftest import FAST_VIT, QUIET_LOCAL, read_manifest, run_studio_forked


def tiny_vit(patch: int = 7, depth: int = 2, pool: str = "attention") -> Classifier:
    torch.manual_seed(0)
    return Classifier(build_net("vit", 1, 10, image_size=28, patch=patch, depth=depth, pool=pool),
                      [0.5], [0.25]).eval()


@contextmanager
def forced_attention(model: Classifier, readout_onto: int | None = None):
    """Every block's attention replaced by the identity (each token reads only itself) and, given a patch k,
    the readout's by one-hot attention on k (in every head)."""
    def onto_k(_module, _inputs, out):
        forced = torch.zeros_like(out)
        forced[..., readout_onto] = 1
        return forced

    hooks = [layer.softmax.register_forward_hook(lambda _m, _i, out: torch.eye(out.shape[-1]).expand_as(out))
             for layer in attention_layers(model.net).values()]
    if readout_onto is not None:
        hooks.append(attention_readout(model.net).softmax.register_forward_hook(onto_k))
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def test_rollout_of_identity_attention_is_the_identity_so_every_patch_counts_alike():
    """Ã = ½I + ½I = I in every block, so R = I: nothing is mixed, and the mean of the output tokens (what the
    head reads) draws 1/T from every patch. (With a class token, its row of I would be one-hot on itself.)"""
    tokens, blocks = 16, 3
    identity = torch.eye(tokens).expand(2, 4, tokens, tokens)
    flow = rollout([identity] * blocks)
    assert torch.allclose(flow, torch.eye(tokens).expand(2, tokens, tokens))
    assert torch.allclose(pooled_relevance(flow), torch.full((2, tokens), 1 / tokens))


def test_rollout_of_attention_on_one_patch_follows_the_closed_form():
    """Every query reading only patch k: Ā = 1·e_kᵀ =: P with P² = P, so Ã = ½I + ½P and Ã^L = 2^-L·I + (1 − 2^-L)·P;
    the pooled output then reads 2^-L/T from every patch plus 1 − 2^-L from patch k."""
    tokens, k = 16, 5
    onto_k = torch.zeros(1, 2, tokens, tokens)
    onto_k[..., k] = 1
    for blocks in (1, 2, 4):
        expected = torch.full((1, tokens), 2.0 ** -blocks / tokens)
        expected[0, k] += 1 - 2.0 ** -blocks
        assert torch.allclose(pooled_relevance(rollout([onto_k] * blocks)), expected, atol=1e-6)


def test_attention_maps_of_a_mean_pooled_vit_whose_attention_is_the_identity_are_uniform():
    model = tiny_vit(pool="mean")
    x = torch.rand(3, 1, 28, 28)
    with forced_attention(model):
        for name in ("attention", "attention_rollout"):
            maps = build_method(name, model).attribute(x)
            assert maps.shape == (3, 1, 28, 28) and torch.allclose(maps, torch.full_like(maps, 1 / 16)), name


def test_rollout_of_a_vit_whose_readout_attends_only_to_patch_k_puts_k_first():
    """Identity block attention gives R = I, so the map is the readout's row: one-hot on patch k (row 1,
    column 2 of the 4×4 grid: pixels 7-13 × 14-20), and the raw attention of any block is the same."""
    model, k = tiny_vit(), 6
    x = torch.rand(3, 1, 28, 28)
    with forced_attention(model, readout_onto=k):
        for name in ("attention_rollout", "attention"):
            patches = build_method(name, model).attribute(x)[:, 0, ::7, ::7].flatten(1)
            assert (patches.argmax(1) == k).all(), name
            assert torch.allclose(patches, torch.eye(16)[k].expand(3, 16)), name


def test_the_readout_is_chosen_by_name_and_a_bad_one_is_one_line():
    assert isinstance(tiny_vit(pool="mean").net.pool, torch.nn.AdaptiveAvgPool2d)
    assert attention_readout(tiny_vit(pool="mean").net) is None and attention_readout(tiny_vit().net) is not None
    with pytest.raises(StudioError, match="unknown model.options.pool 'cls'; choose from: attention, mean"):
        build_net("vit", 1, 10, pool="cls")
    # inside the readout, as inside a block, the layers see tokens: not a map for Grad-CAM or an objective
    with pytest.raises(StudioError, match="objective.layer 'pool.kv' is inside the ViT's attention readout"):
        check_map_layer(tiny_vit().net, "pool.kv", "objective.layer")
    check_map_layer(tiny_vit().net, "pool", "objective.layer")


def test_attention_methods_read_a_chosen_block_and_head():
    model, x = tiny_vit(), torch.rand(2, 1, 28, 28)
    mean = build_method("attention", model, block=0).attribute(x)
    heads = torch.stack([build_method("attention", model, block=0, head=h).attribute(x) for h in range(4)])
    assert torch.allclose(heads.mean(0), mean, atol=1e-6)
    assert not torch.allclose(mean, build_method("attention", model, block=1).attribute(x))
    # every patch's 7×7 pixels share its value; the pooled output's attention sums to 1 over the 16 patches
    assert torch.allclose(mean[:, :, ::7, ::7].sum((1, 2, 3)), torch.ones(2))
    with pytest.raises(StudioError, match=r"explain.attention.block=2 is out of range: the model has 2 blocks"):
        build_method("attention", model, block=2)
    with pytest.raises(StudioError, match=r"explain.attention.head=4 is not valid: choose a head 0..3 or mean"):
        build_method("attention", model, head=4)


def test_every_block_is_a_map_on_the_patch_grid_and_method_all_skips_attention_on_a_cnn():
    shapes = layer_shapes(tiny_vit(patch=4), (1, 28, 28))
    assert [shapes[f"blocks.{i}"] for i in range(2)] == [(64, 7, 7)] * 2 and shapes["blocks.0.mlp"] == (49, 64)
    cnn = Classifier(build_net("small_cnn", 1, 10), [0.5], [0.25])
    assert "attention_rollout" in method_names("all", tiny_vit())
    assert not {"attention", "attention_rollout"} & set(method_names("all", cnn))
    with pytest.raises(StudioError, match="method=attention_rollout needs a model with self-attention: use model=vit_tiny"):
        build_method("attention_rollout", cnn)


def test_vit_tiny_trains_far_above_chance_and_gradcam_reads_its_last_block(vit_tiny, datamodule):
    assert vit_tiny.test_acc > 0.6  # chance is 0.1; 5 epochs (the shipped 50 reach 97%: README)
    x, _ = datamodule.split("test")
    gradcam = build_method("gradcam", vit_tiny.model)
    assert gradcam.layer_name == "blocks.3"
    maps = gradcam.attribute(x[:4])
    assert maps.shape == (4, 1, 28, 28) and (maps.flatten(1).amax(1) > 0).all()
    rolled = build_method("attention_rollout", vit_tiny.model).attribute(x[:4])
    assert torch.allclose(rolled[:, :, ::7, ::7].sum((1, 2, 3)), torch.ones(4), atol=1e-5)


def test_visualize_a_vit_block_raises_its_channels(vit_tiny, outputs, tmp_path):
    result = run_studio_forked("visualize", *FAST_VIT, "objective=channel", "objective.layer=blocks.3",
                        "objective.channels=[0,1,2,3]", "steps=32", "judge_metrics=false", "progress=false",
                        f"hydra.run.dir={tmp_path}", *QUIET_LOCAL, outputs=outputs)
    assert result.returncode == 0, result.stderr
    items = read_manifest(tmp_path)["items"]
    assert [i["target"] for i in items] == [f"blocks.3:{c}" for c in range(4)]
    assert all(i["metrics"]["activation_gain"] > 0 for i in items)


def test_explain_a_vit_with_attention_rollout(vit_tiny, outputs, tmp_path):
    result = run_studio_forked("explain", *FAST_VIT, "method=attention_rollout", "explain.images=2",
                        "explain.metrics.stability_seeds=0", f"hydra.run.dir={tmp_path}", *QUIET_LOCAL,
                        outputs=outputs)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(tmp_path)
    assert [i["method"] for i in manifest["items"]] == ["attention_rollout"] * 2
    assert "attention_rollout/deletion_auc" in manifest["metrics"]
    assert "attention_rollout/sanity" in manifest["metrics"]
