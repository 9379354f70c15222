"""Generators (DCGAN, VAE): training, caching, loading, quality in the judge's eyes, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from generators import build_generator, trained_generator
from generators.registry import cache_stem, load_generator_weights
from studio.errors import StudioError
from studio.judge import generator_quality as quality
from tests.conftest import FAST_GENERATOR, QUIET_TRAINER, assert_one_line_error, compose_config, run_studio_forked


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
    cfg = compose_config("train-generator", ["generator=checkpoint", f"generator.path={path}", "generator.classes=10",
                                             "generator.class_norm=true"])
    loaded = trained_generator(cfg.generator, cfg.data, cfg.trainer, datamodule, cfg.paths.models)
    assert torch.equal(loaded.module.sample(16, seed=5), dcgan.module.sample(16, seed=5))


def test_realism_ratio_is_about_one_for_real_images(judged, datamodule):
    images, labels = datamodule.split("test")
    ratio = judged.realism(images[:200], labels[:200].tolist())["realism_ratio"]
    assert 0.5 < ratio < 2.0


def test_mismatched_generator_checkpoint_names_expected_and_found(dcgan, tmp_path):
    path = tmp_path / "g.pt"
    torch.save(dcgan.module.generator.state_dict(), path)
    cfg = compose_config("train-generator", ["generator=checkpoint", f"generator.path={path}",
                                             "generator.latent_dim=16"])
    module = build_generator(cfg.generator, 1, 28)
    # the class-conditional generator's first layer takes z and its 10 class weights: 32 + 10 inputs
    with pytest.raises(StudioError, match=r"latent_dim=16.*shape \(6272, 42\), expected \(6272, 16\) \(a class-"
                                          r"conditional GAN also needs generator.classes"):
        load_generator_weights(module, str(path))


def test_a_class_count_the_data_or_the_latent_code_cannot_hold_is_refused_in_one_line(outputs, tmp_path):
    few = run_studio_forked("train-generator", "generator=dcgan", "generator.classes=5", "logger=none",
                            f"hydra.run.dir={tmp_path / 'few'}", outputs=outputs)
    assert_one_line_error(few, "generator.classes=5 cannot condition on data=mnist5k's 10 classes", "use 10",
                          "null for unconditional")
    short = run_studio_forked("train-generator", "generator=dcgan", "generator.latent_dim=8", "logger=none",
                              f"hydra.run.dir={tmp_path / 'short'}", outputs=outputs)
    assert_one_line_error(short, "first generator.classes=10 latent entries; generator.latent_dim=8 has too few")
    assert not any((tmp_path / run / "manifest.json").exists() for run in ("few", "short"))


def test_cli_trains_scores_and_rejects_bad_generators(dcgan, judge, outputs, tmp_path):
    # samples=200, not train-generator's 1,000: the class shares, judge confidence and realism are still
    # computed and reported the same way (and 200 of 10 classes still sum to 1); logger=none and a fork:
    # nothing here reads W&B, and a fork skips importing torch again
    done = run_studio_forked("train-generator", "generator=dcgan", *FAST_GENERATOR["dcgan"], *QUIET_TRAINER,
                             "samples=200", "logger=none", f"hydra.run.dir={tmp_path / 'run'}", outputs=outputs)
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
    assert "lacks ema.project.0.weight" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad" / "manifest.json").exists()


def test_the_gan_conditions_on_the_class_its_latent_code_draws(dcgan, datamodule):
    """generator=dcgan is class-conditional: the argmax of z's first 10 entries is the sample's class, so prior draws
    pick every class about equally often, and its discriminator judges each image as a class: after the short
    training it already scores real test digits highest as their own class far more often than chance (1 in 10).
    (The full training's samples show the judge the drawn class 79% of the time; README, Measured.)"""
    module = dcgan.module
    z = module.prior(1000, seed=11)
    drawn = module.generator.classes_of(z)
    assert torch.equal(drawn, z[:, :10].argmax(1))
    assert (torch.bincount(drawn, minlength=10) / 1000).min() > 0.07
    images, labels = datamodule.split("test")
    with torch.no_grad():
        per_class = torch.stack([module.discriminator(images, torch.full_like(labels, c)) for c in range(10)], 1)
    own = (per_class.argmax(1) == labels).float().mean()
    assert own > 0.25, f"the discriminator scores {own:.0%} of the test digits highest as their own class"


def test_the_conditional_discriminator_judges_an_image_as_a_class_or_as_its_best_fit():
    from generators.dcgan import Discriminator

    d = Discriminator(1, 28, 16, classes=10).eval()  # eval: spectral norm's power iteration holds still
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        per_class = torch.stack([d(x, torch.full((4,), c)) for c in range(10)], 1)  # 4 x 10
        assert not torch.allclose(per_class[:, 0], per_class[:, 1])
        assert torch.allclose(d(x), per_class.logsumexp(1), atol=1e-5)  # unlabelled: a soft max over the classes
        plain = Discriminator(1, 28, 16).eval()  # unconditional: the labels the training step passes change nothing
        assert torch.equal(plain(x, torch.arange(4)), plain(x))


def test_generator_output_must_fit_the_classifier(dcgan):
    from studio.optvis.params import latent

    with pytest.raises(StudioError, match=r"makes 1x28x28 images, but the classifier takes 3x32x32"):
        latent(dcgan.module, size=32, channels=3)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_diff_augment_transforms_real_and_fake_alike_and_passes_gradients():
    from generators.augment import cutout, diff_augment, translate

    real, fake = torch.rand(16, 1, 28, 28), torch.rand(16, 1, 28, 28)
    # the same draws move and cut two batches the same way: the ops are linear in the images for one draw
    together = diff_augment(real + fake, generator=_seeded(3))
    assert torch.allclose(diff_augment(real, generator=_seeded(3)) + diff_augment(fake, generator=_seeded(3)), together)
    assert not torch.equal(diff_augment(real, generator=_seeded(3)), diff_augment(real, generator=_seeded(4)))
    dot = torch.zeros(1, 1, 28, 28)
    dot[0, 0, 14, 14] = 1
    for seed in range(8):  # a shift of at most 1/8 of 28 px (4) in each direction, nothing else changes
        [[_, _, row, col]] = translate(dot, 0.125, _seeded(seed)).nonzero().tolist()
        assert abs(row - 14) <= 4 and abs(col - 14) <= 4
    holes = (cutout(torch.ones(64, 1, 28, 28), 0.5, _seeded(0)) == 0).flatten(1).sum(1)
    assert holes.max() == 14 * 14 and holes.min() > 0  # a 14x14 square, sometimes partly outside
    # differentiable: each kept output pixel passes the gradient to the one input pixel it came from
    x = torch.rand(8, 1, 28, 28, requires_grad=True)
    out = diff_augment(x, generator=_seeded(5))
    out.sum().backward()
    assert x.grad.sum() == diff_augment(torch.ones(8, 1, 28, 28), generator=_seeded(5)).sum() > 0


def test_hinge_losses():
    from generators.modules import hinge_d_loss, hinge_g_loss

    assert hinge_d_loss(torch.tensor([2.0, 1.0]), torch.tensor([-1.0, -3.0])).item() == 0.0  # beyond the margins
    assert hinge_d_loss(torch.zeros(4), torch.zeros(4)).item() == 2.0
    assert hinge_d_loss(torch.tensor([0.0, 3.0]), torch.tensor([1.0, -2.0])).item() == 0.5 + 1.0
    assert hinge_g_loss(torch.tensor([1.0, 3.0])).item() == -2.0


def test_lecam_anchors_follow_the_mean_logits_and_penalize_only_what_crosses_them():
    from generators.modules import lecam_penalty

    anchors = torch.full((2,), float("nan"))
    real, fake = torch.tensor([2.0, 3.0]), torch.tensor([-1.0, -2.0])
    # the first call sets the anchors (real 2.5, fake -1.5): (3.5² + 4.5²) / 2 on each side
    assert lecam_penalty(real, fake, anchors).item() == pytest.approx(32.5)
    assert anchors.tolist() == [2.5, -1.5]
    lecam_penalty(torch.full((2,), 4.5), torch.full((2,), -3.5), anchors)  # later calls move them by 1 - 0.9
    assert anchors.tolist() == pytest.approx([2.7, -1.7])
    # real logits below the fake anchor and fake ones above the real anchor cost nothing
    assert lecam_penalty(torch.tensor([-2.0]), torch.tensor([3.0]), anchors).item() == 0.0


def _overfit_gap(lecam_weight: float, seed: int) -> float:
    """The discriminator's mean real minus fake logit after 200 steps on 64 fixed images."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from generators.modules import GANModule

    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(seed)).round()
    labels = torch.arange(64) % 10
    torch.manual_seed(seed)
    module = GANModule(32, 1, 28, width=16, lr=5e-4, classes=10, lecam_weight=lecam_weight)
    pl.Trainer(max_steps=200, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False).fit(module, DataLoader(TensorDataset(images, labels), batch_size=32))
    with torch.no_grad():
        z = torch.randn(64, 32)
        fake = module.discriminator(module.online(z), module.online.classes_of(z))
        return float(module.discriminator(images, labels).mean() - fake.mean())


def test_lecam_keeps_a_discriminator_that_overfits_a_few_images_from_running_away():
    # a few images, many steps: the plain hinge discriminator drives real and fake logits apart; LeCam holds it
    gaps = [(_overfit_gap(0.0, seed), _overfit_gap(0.3, seed)) for seed in (0, 1)]
    assert all(lecam < 0.8 * plain for plain, lecam in gaps), gaps


def test_lecam_changes_training_not_what_a_checkpoint_holds():
    plain = build_generator(_cfg("dcgan").generator, 1, 28)
    on = _cfg("dcgan", ["generator.lecam_weight=0.3"])
    lecam = build_generator(on.generator, 1, 28)
    assert lecam.lecam_weight == 0.3 and plain.lecam_weight == 0.0
    assert lecam.state_dict().keys() == plain.state_dict().keys()
    lecam.load_state_dict(plain.state_dict())  # and GANs trained either way load into both
    # the shipped null is "as before the key existed": GANs cached before it keep their entries; a weight retrains
    shipped = _cfg("dcgan").generator
    without = OmegaConf.create({k: v for k, v in shipped.items() if k != "lecam_weight"})
    assert shipped.lecam_weight is None
    assert cache_stem(shipped, on.data) == cache_stem(without, on.data) != cache_stem(on.generator, on.data)


def test_a_negative_lecam_weight_is_refused_in_one_line(outputs, tmp_path):
    result = run_studio_forked("train-generator", "generator=dcgan", "generator.lecam_weight=-0.3", "logger=none",
                               f"hydra.run.dir={tmp_path}", outputs=outputs)
    assert_one_line_error(result, "generator.lecam_weight=-0.3 must be a number >= 0 or null", "null or 0: off")
    assert not (tmp_path / "manifest.json").exists()
    word = run_studio_forked("train-generator", "generator=dcgan", "generator.lecam_weight=strong", "logger=none",
                             f"hydra.run.dir={tmp_path / 'word'}", outputs=outputs)
    assert_one_line_error(word, "generator.lecam_weight=strong must be a number >= 0 or null")


def test_top_k_trains_the_generator_on_the_fakes_the_discriminator_rates_most_real():
    from generators.modules import hinge_g_loss, top_k

    logits = torch.tensor([0.5, -2.0, 3.0, 1.0, -1.0, 2.0, 0.0, -3.0], requires_grad=True)
    assert top_k(logits, 0, 0.5).tolist() == sorted(logits.tolist(), reverse=True)  # the first epoch: every fake
    # 0.99^42 = 0.66 of 8: the best 5; long after, the floor: the best 4
    assert top_k(logits, 42, 0.5).tolist() == [3.0, 2.0, 1.0, 0.5, 0.0]
    assert top_k(logits, 1000, 0.5).tolist() == [3.0, 2.0, 1.0, 0.5]
    assert top_k(logits, 1000, 0.01).tolist() == [3.0]  # never none
    hinge_g_loss(top_k(logits, 1000, 0.5)).backward()
    learns = logits.grad != 0  # the generator's gradient reaches the best-rated half alone
    assert learns.tolist() == [True, False, True, True, False, True, False, False]


def test_top_k_changes_training_not_what_a_checkpoint_holds():
    shipped = _cfg("dcgan").generator
    assert shipped.topk_floor == 0.5 and build_generator(shipped, 1, 28).topk_floor == 0.5
    off = _cfg("dcgan", ["generator.topk_floor=null"])
    plain = build_generator(off.generator, 1, 28)
    assert plain.topk_floor is None
    assert build_generator(shipped, 1, 28).state_dict().keys() == plain.state_dict().keys()
    # null is "as before the key existed": the GANs cached then are what topk_floor=null reuses
    without = OmegaConf.create({k: v for k, v in off.generator.items() if k != "topk_floor"})
    assert cache_stem(off.generator, off.data) == cache_stem(without, off.data) != cache_stem(shipped, off.data)


@pytest.mark.parametrize("bad, says", [("0", "generator.topk_floor=0 must be a share in (0, 1] or null"),
                                       ("1.5", "generator.topk_floor=1.5 must be a share in (0, 1] or null"),
                                       ("all", "generator.topk_floor: 'all' is not a number")])
def test_a_top_k_floor_outside_zero_to_one_is_refused_in_one_line(bad, says, outputs, tmp_path):
    result = run_studio_forked("train-generator", "generator=dcgan", f"generator.topk_floor={bad}", "logger=none",
                               f"hydra.run.dir={tmp_path}", outputs=outputs)
    assert_one_line_error(result, says, "0.5")
    assert not (tmp_path / "manifest.json").exists()


def test_class_norm_starts_as_plain_batch_norm_and_learns_a_gain_and_bias_per_class(dcgan):
    from generators.dcgan import Generator

    z = torch.randn(16, 32)
    torch.manual_seed(0)
    plain = Generator(32, 1, 28, classes=10)
    torch.manual_seed(0)
    modulated = Generator(32, 1, 28, classes=10, class_norm=True)
    # untrained, the class gains are 1 and the biases 0: the same images as input conditioning alone
    assert torch.equal(plain(z), modulated(z))
    # the shipped GAN (class_norm: true) learned them: each class its own gain and bias for every channel
    trained = dcgan.module.generator.class_norm
    assert trained is not None and _cfg("dcgan").generator.class_norm is True
    for modulation in trained:
        per_class = modulation.weight.T  # classes x (gains and biases)
        assert torch.cdist(per_class, per_class).add(torch.eye(10)).min() > 0
    assert Generator(32, 1, 28, classes=None, class_norm=True).class_norm is None  # unconditional: nothing to modulate


def test_class_norm_is_part_of_the_cache_key_and_false_keeps_the_entries_cached_before_it():
    shipped = _cfg("dcgan")
    off = _cfg("dcgan", ["generator.class_norm=false"])
    without = OmegaConf.create({k: v for k, v in off.generator.items() if k != "class_norm"})
    assert cache_stem(off.generator, off.data) == cache_stem(without, off.data) != cache_stem(shipped.generator,
                                                                                              shipped.data)
    # unconditional, class norm has no class to modulate by: the same training, the same cache entry either way
    unconditional = [_cfg("dcgan", ["generator.classes=null", f"generator.class_norm={on}"]) for on in (True, False)]
    assert len({cache_stem(cfg.generator, cfg.data) for cfg in unconditional}) == 1
    with pytest.raises(StudioError, match=r"generator.class_norm=yes must be true or false"):
        build_generator(_cfg("dcgan", ["generator.class_norm=yes"]).generator, 1, 28)


def test_a_class_norm_checkpoint_loaded_without_it_names_the_setting(dcgan, tmp_path):
    path = tmp_path / "g.pt"
    torch.save(dcgan.module.generator.state_dict(), path)
    cfg = compose_config("train-generator", ["generator=checkpoint", f"generator.path={path}", "generator.classes=10"])
    with pytest.raises(StudioError, match=r"g.pt' lacks ema.project.1.weight.*generator.class_norm as it was trained"):
        load_generator_weights(build_generator(cfg.generator, 1, 28), str(path))


def test_ema_update_ramps_its_decay_up():
    module = build_generator(_cfg("dcgan").generator, 1, 28)
    before = module.ema.project[0].weight.clone()
    online = module.online.project[0].weight
    with torch.no_grad():
        online.add_(1.0)
    module.update_ema()  # the first update: decay min(0.999, 1/10)
    assert torch.allclose(module.ema.project[0].weight, 0.1 * before + 0.9 * online)
    module.ema_updates.fill_(10 ** 6)
    now = module.ema.project[0].weight.clone()
    module.update_ema()  # long after: decay 0.999
    assert torch.allclose(module.ema.project[0].weight, 0.999 * now + 0.001 * online)


def test_the_gan_samples_from_its_ema_which_its_cache_entry_holds(dcgan):
    from studio.modes import eval_mode

    module = dcgan.module
    assert module.generator is module.ema and not module.ema.training
    differ = [not torch.equal(a, b) for a, b in zip(module.ema.parameters(), module.online.parameters())]
    assert all(differ)  # trained: the average trails the online weights everywhere
    z = module.prior(8, seed=1)
    with eval_mode(module):
        assert torch.equal(module.sample(8, seed=1), module.ema(z))
        assert not torch.allclose(module.sample(8, seed=1), module.online(z), atol=1e-3)
    module.train()
    assert not module.ema.training  # never trained: it stays in eval mode
    module.eval()
    stored = torch.load(dcgan.path, weights_only=True)
    assert torch.equal(stored["ema.project.0.weight"], module.ema.project[0].weight)


def test_a_gan_checkpoint_without_ema_weights_is_refused_in_one_line(dcgan, outputs, tmp_path):
    # what the cache held before the EMA recipe: generator.* (the trained weights) and discriminator.*
    old = {f"generator.{k}": v for k, v in dcgan.module.online.state_dict().items()}
    old["discriminator.net.0.weight"] = torch.zeros(64, 1, 4, 4)
    torch.save(old, tmp_path / "old.pt")
    bad = run_studio_forked("train-generator", "generator=checkpoint", f"generator.path={tmp_path / 'old.pt'}",
                            f"hydra.run.dir={tmp_path / 'run'}", "logger=none", outputs=outputs)
    assert_one_line_error(bad, "old.pt' has no ema.* weights", "found only discriminator.*, generator.*",
                          "save the generator's weights alone")
    assert not (tmp_path / "run" / "manifest.json").exists()
