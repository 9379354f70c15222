"""Generators (DCGAN, VAE): training, caching, loading, quality in the judge's eyes, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from generators import build_generator, trained_generator
from generators.registry import load_generator_weights
from studio.errors import StudioError
from studio.judge import generator_quality as quality
from tests.conftest import FAST_GENERATOR, QUIET_TRAINER, compose_config, run_studio, run_studio_forked


def _cfg(arch: str, extra=()):
    return compose_config("train-generator", [f"generator={arch}", *FAST_GENERATOR[arch], *QUIET_TRAINER, *extra])


@pytest.mark.parametrize("arch", ["dcgan", "vae"])
def test_short_training_makes_digits_the_judge_spreads_over_classes(arch, request, judged):
    gen = request.getfixturevalue(arch)
    samples = gen.module.sample(500, seed=3)
    assert samples.shape == (500, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1
    q = quality(judged, samples, 10)
    shares = torch.tensor([q[f"class_share/{c}"] for c in range(10)])
    assert (shares >= 0.02).sum() >= 7, f"{arch} samples fall into too few classes: {shares.tolist()}"
    assert q["judge_confidence"] > 0.6
    noise = torch.rand(500, 1, 28, 28)
    assert q["realism_ratio"] < quality(judged, noise, 10)["realism_ratio"]  # closer to digits than noise is


def test_samples_are_deterministic_and_cached(dcgan, datamodule):
    assert torch.equal(dcgan.module.sample(8, seed=1), dcgan.module.sample(8, seed=1))
    assert not torch.equal(dcgan.module.sample(8, seed=1), dcgan.module.sample(8, seed=2))
    cfg = _cfg("dcgan")
    again = trained_generator(cfg.generator, cfg.data, cfg.trainer, datamodule, cfg.paths.models)
    assert again.cached and again.path == dcgan.path
    assert torch.equal(again.module.sample(8, seed=1), dcgan.module.sample(8, seed=1))


def test_saved_generator_loads_and_reproduces_its_samples(dcgan, datamodule, tmp_path):
    path = tmp_path / "g.pt"
    torch.save(dcgan.module.generator.state_dict(), path)  # just the generator's weights
    cfg = compose_config("train-generator", ["generator=checkpoint", f"generator.path={path}"])
    loaded = trained_generator(cfg.generator, cfg.data, cfg.trainer, datamodule, cfg.paths.models)
    assert torch.equal(loaded.module.sample(16, seed=5), dcgan.module.sample(16, seed=5))


def test_realism_ratio_is_about_one_for_real_images(judged, datamodule):
    images, labels = datamodule.split("test")
    ratio = judged.realism_ratio(images[:200], labels[:200].tolist())["realism_ratio"]
    assert 0.5 < ratio < 2.0


def test_mismatched_generator_checkpoint_names_expected_and_found(dcgan, tmp_path):
    path = tmp_path / "g.pt"
    torch.save(dcgan.module.generator.state_dict(), path)
    cfg = compose_config("train-generator", ["generator=checkpoint", f"generator.path={path}",
                                             "generator.latent_dim=16"])
    module = build_generator(cfg.generator, 1, 28)
    with pytest.raises(StudioError, match=r"latent_dim=16.*shape \(6272, 32\), expected \(6272, 16\)"):
        load_generator_weights(module, str(path))


def test_cli_trains_scores_and_rejects_bad_generators(dcgan, judge, outputs, tmp_path):
    done = run_studio("train-generator", "generator=dcgan", *FAST_GENERATOR["dcgan"], *QUIET_TRAINER,
                      f"hydra.run.dir={tmp_path / 'run'}", outputs=outputs)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["cached"] is True  # the fixture trained the same config
    assert sum(metrics[f"class_share/{c}"] for c in range(10)) == pytest.approx(1.0)
    assert {"judge_confidence", "realism_ratio", "class_share_min"} <= set(metrics)
    assert (tmp_path / "run" / "samples.png").stat().st_size > 0

    wrong = tmp_path / "wrong.pt"
    torch.save({"x": torch.zeros(3)}, wrong)
    bad = run_studio_forked("train-generator", "generator=checkpoint", f"generator.path={wrong}",
                            f"hydra.run.dir={tmp_path / 'bad'}", outputs=outputs)
    assert bad.returncode == 2
    assert "lacks generator.project.0.weight" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_generator_output_must_fit_the_classifier(dcgan):
    from studio.optvis.params import latent

    with pytest.raises(StudioError, match=r"makes 1x28x28 images, but the classifier takes 3x32x32"):
        latent(dcgan.module, size=32, channels=3)
