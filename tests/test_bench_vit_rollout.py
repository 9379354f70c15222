"""The rollout variants bench/vit_clever_hans.py measures (head fusion, discard_ratio, gradient rollout):
checked on hand-made attention, without training a model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from studio.explain.attention import rollout
from tests.test_vit import tiny_vit

_spec = importlib.util.spec_from_file_location(
    "vit_clever_hans", Path(__file__).resolve().parent.parent / "bench" / "vit_clever_hans.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_identity_attention_gives_the_identity_for_every_fusion():
    tokens = 16
    identity = torch.eye(tokens).expand(2, 4, tokens, tokens)
    for fusion in ("mean", "max", "min"):
        flow = bench.fused_rollout([identity] * 3, fusion)
        assert torch.allclose(flow, torch.eye(tokens).expand(2, tokens, tokens)), fusion


def test_mean_fusion_without_discard_is_the_studios_rollout():
    torch.manual_seed(0)
    attentions = [torch.rand(3, 4, 16, 16).softmax(-1) for _ in range(4)]
    assert torch.allclose(bench.fused_rollout(attentions, "mean", 0.0), rollout(attentions), atol=1e-6)


def test_max_fusion_of_two_heads_equals_the_hand_computation():
    """Two heads on 2 tokens, one block: F = the elementwise max [[1, .5], [.5, 1]] -> ½(F + I) = [[1, .25],
    [.25, 1]], rows renormalized: [[.8, .2], [.2, .8]]; min fuses to [[.5, 0], [0, .5]] -> ½(F + I) diagonal."""
    heads = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.5, 0.5], [0.0, 1.0]]])[None]
    assert torch.allclose(bench.fused_rollout([heads], "max"), torch.tensor([[[0.8, 0.2], [0.2, 0.8]]]))
    assert torch.allclose(bench.fused_rollout([heads], "min"), torch.eye(2)[None])


def test_discard_ratio_zeroes_the_lowest_entries_before_the_skip_connection():
    """Entries .7, .3 / .4, .6 with discard 0.5: .3 and .4 go, so F = diag(.7, .6) and the rollout is I."""
    one = torch.tensor([[[[0.7, 0.3], [0.4, 0.6]]]])
    assert torch.allclose(bench.fused_rollout([one], "mean", 0.5), torch.eye(2)[None])
    assert torch.allclose(bench.fused_rollout([one], "mean", 0.0), rollout([one]))


def test_gradient_rollout_without_gradient_reads_every_patch_alike():
    tokens = 16
    attentions = [torch.rand(2, 4, tokens, tokens).softmax(-1)] * 2
    relevance = bench.gradient_rollout(attentions, [torch.zeros_like(a) for a in attentions], readout=False)
    assert torch.allclose(relevance, torch.full((2, tokens), 1 / tokens))


def test_gradient_rollout_of_one_block_follows_the_formula():
    """One block: R = I + Ā, Ā = mean over heads of (g ⊙ A)⁺; the mean pooling reads the mean of R's rows."""
    torch.manual_seed(0)
    a, g = torch.rand(1, 2, 3, 3).softmax(-1), torch.randn(1, 2, 3, 3)
    expected = (torch.eye(3) + (g * a).clamp(min=0).mean(1)[0]).mean(0)
    assert torch.allclose(bench.gradient_rollout([a], [g], readout=False)[0], expected)


def test_attention_gradients_come_per_image_for_every_softmax_and_pred_is_the_argmax():
    """One pair per softmax (the blocks', then the readout's); an image's gradients do not depend on the
    batch it comes in; target pred gives what its predicted class does."""
    model = tiny_vit(pool="attention")
    x = torch.rand(2, 1, 28, 28)
    attentions, gradients = bench.attention_gradients(model, x, 3)
    assert len(attentions) == len(gradients) == 3  # two blocks and the readout
    assert [a.shape for a in attentions] == [g.shape for g in gradients]
    assert attentions[-1].shape == (2, 4, 1, 16)
    _, alone = bench.attention_gradients(model, x[1:], 3)
    assert all(torch.allclose(g[1:], a, atol=1e-6) for g, a in zip(gradients, alone))
    _, by_pred = bench.attention_gradients(model, x[:1], "pred")
    _, by_class = bench.attention_gradients(model, x[:1], int(model(x[:1]).argmax()))
    assert all(torch.equal(p, c) for p, c in zip(by_pred, by_class))
