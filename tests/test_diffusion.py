"""The diffusion prior (generators/diffusion.py): training, the DDIM sampler as a generator of its noise,
latent renders through it, and its bad inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from generators import build_generator
from generators.registry import load_generator_weights
from studio.errors import StudioError
from studio.judge import generator_quality as quality
from tests.conftest import FAST_GENERATOR, QUIET_TRAINER, assert_one_line_error, compose_config, run_studio_forked


def _module(extra=(), size=28, channels=1):
    cfg = compose_config("train-generator", ["generator=diffusion", *extra])
    return build_generator(cfg.generator, channels, size)


def _denoising_error(module, images: torch.Tensor) -> float:
    """The EMA denoiser's noise-prediction error on fixed noise at fixed noise levels."""
    g = torch.Generator().manual_seed(0)
    x0 = images * 2 - 1
    t = torch.randint(0, len(module.alphas_bar), (len(x0),), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        return float(F.mse_loss(module.ema(module.noised(x0, t, noise), t), noise))


def test_short_training_lowers_the_denoising_loss_and_its_samples_are_scored(diffusion, datamodule, judged):
    test_images = datamodule.split("test")[0][:256]
    untrained = _denoising_error(_module(), test_images)
    trained = _denoising_error(diffusion.module, test_images)
    assert trained < 0.5 * untrained, (untrained, trained)
    samples = diffusion.module.sample(120, seed=3)  # 50 DDIM steps each: 0.15 s of this CPU per sample
    assert samples.shape == (120, 1, 28, 28) and 0 <= samples.min() and samples.max() <= 1
    scored = quality(judged, samples, 10)
    assert sum(scored[f"class_share/{c}"] for c in range(10)) == pytest.approx(1.0)
    noise = torch.rand(120, 1, 28, 28)
    assert scored["realism_ratio"] < quality(judged, noise, 10)["realism_ratio"]  # closer to digits than noise


def test_the_sampler_is_deterministic_differentiable_and_runs_the_ema_weights(diffusion):
    module = diffusion.module
    assert torch.equal(module.sample(6, seed=1), module.sample(6, seed=1))
    assert not torch.equal(module.sample(6, seed=1), module.sample(6, seed=2))
    assert module.generator.denoiser is module.ema and not module.ema.training
    assert all(not torch.equal(a, b) for a, b in zip(module.ema.parameters(), module.online.parameters()))
    z = module.prior(4, seed=0).requires_grad_(True)
    module.generator(z).mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert module.latent_dim == 28 * 28
    assert float(module.realism(module.sample(4, seed=0)).mean()) > float(module.realism(torch.rand(4, 1, 28, 28)).mean())


def test_the_training_grid_previews_the_samples_of_the_same_noise_in_fewer_steps(diffusion):
    """The per-epoch grid runs 10 DDIM steps, not sample()'s 50 (a third of each epoch's time): from the same
    noise it must show the same digits, only coarser."""
    module = diffusion.module
    preview, full = module.preview(8, seed=0), module.sample(8, seed=0)
    other = module.sample(8, seed=1)
    same = torch.corrcoef(torch.stack([preview.flatten(), full.flatten()]))[0, 1]
    unrelated = torch.corrcoef(torch.stack([preview.flatten(), other.flatten()]))[0, 1]
    assert same > 0.8 and same > unrelated + 0.3, (float(same), float(unrelated))


def test_noise_optimized_through_the_sampler_raises_the_objective(small_cnn, diffusion):
    from studio.optvis import class_, latent, render

    rendering = render(small_cnn.model, class_([0, 7]), param=latent(diffusion.module, size=28, channels=1),
                       steps=16, lr=0.1, seeds=[0], progress=False)
    assert (rendering.activation_gain > 1.0).all(), rendering.activation_gain  # log p(class) rose by e-fold


def test_a_sampler_with_more_steps_than_the_schedule_is_refused(outputs, tmp_path):
    with pytest.raises(StudioError, match=r"sampler_steps=20 .* 10-step schedule; give 1\.\.10"):
        _module(["generator.timesteps=10", "generator.sampler_steps=20"])
    bad = run_studio_forked("train-generator", "generator=diffusion", "generator.sampler_steps=0",
                            f"hydra.run.dir={tmp_path / 'run'}", "logger=none", outputs=outputs)
    assert_one_line_error(bad, "generator.sampler_steps=0", "give 1..1000")
    assert not (tmp_path / "run").exists() or not (tmp_path / "run" / "manifest.json").exists()


def test_a_latent_dim_that_is_not_the_noise_is_refused():
    with pytest.raises(StudioError, match=r"latent_dim=16 does not fit generator=diffusion: .* 1x28x28 = 784"):
        _module(["generator.latent_dim=16"])


def test_a_checkpoint_for_another_image_size_or_channel_count_names_expected_and_found(diffusion, tmp_path):
    path = tmp_path / "d.pt"
    torch.save(diffusion.module.state_dict(), path)
    with pytest.raises(StudioError, match=r"trained on 1x28x28 images; generator.arch=diffusion here makes "
                                          r"1x32x32 images"):
        load_generator_weights(_module(size=32), str(path))
    with pytest.raises(StudioError, match=r"trained on 1x28x28 images; .* makes 3x28x28 images"):
        load_generator_weights(_module(channels=3), str(path))
    again = _module()
    load_generator_weights(again, str(path))
    assert torch.equal(again.sample(2, seed=0), diffusion.module.sample(2, seed=0))


def test_the_cli_trains_it_like_the_other_generators(diffusion, outputs, tmp_path):
    # 100 scored samples, not 1,000: each is 50 DDIM steps (1,000 took 150 s of this CPU), and samples.png shows 100
    done = run_studio_forked("train-generator", "generator=diffusion", *FAST_GENERATOR["diffusion"], *QUIET_TRAINER,
                             "samples=100", f"hydra.run.dir={tmp_path / 'run'}", "logger=none", outputs=outputs)
    assert done.returncode == 0, done.stderr
    assert "cached" in done.stdout or "reused" in done.stdout
    assert (tmp_path / "run" / "samples.png").stat().st_size > 0


def _guided_render(model, module, classes, seeds, sampler_steps=20, steps=None):
    """Guided class renders with the shipped settings (conf/param/guided.yaml, conf/objective/class.yaml), but
    fewer steps."""
    from studio.optvis import class_, render
    from studio.optvis.params import guided

    return render(model, class_(classes, log_softmax=True), param=guided(module, sampler_steps),
                  steps=steps or sampler_steps, lr=1.0, optimizer="sgd", seeds=seeds, progress=False)


def test_guided_sampling_raises_the_target_probability_over_the_unguided_sample(small_cnn, diffusion):
    model, module = small_cnn.model, diffusion.module
    classes, seeds = [0, 3, 7], [0, 1]
    rendering = _guided_render(model, module, classes, seeds, sampler_steps=50)  # the shipped recipe
    unguided = torch.cat([torch.stack([_ddim(module, s, 50) for s in seeds]) for _ in classes])
    with torch.no_grad():
        before = F.softmax(model(unguided), 1)[range(6), [c for c in classes for _ in seeds]]
    assert rendering.target_prob.mean() > before.mean() + 0.3, (before, rendering.target_prob)


def _ddim(module, seed: int, steps: int) -> torch.Tensor:
    """The unguided deterministic sample from seed's noise (what guidance starts from)."""
    from generators.diffusion import DDIMSampler

    noise = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return DDIMSampler(module.ema, module.alphas_bar, steps, (1, 28, 28))(noise.flatten(1))[0]


def test_guided_sampling_is_deterministic_and_stops_at_the_sample(small_cnn, diffusion):
    model, module = small_cnn.model, diffusion.module
    once = _guided_render(model, module, [2], [4], sampler_steps=6)
    assert torch.equal(_guided_render(model, module, [2], [4], sampler_steps=6).images, once.images)
    again = _guided_render(model, module, [5, 2], [4], sampler_steps=6)  # another batch around the same element
    # equal up to float rounding: another batch size may run other convolution kernels
    torch.testing.assert_close(again.images[1], once.images[0], atol=1e-3, rtol=0)
    longer = _guided_render(model, module, [2], [4], sampler_steps=6, steps=9)  # 3 render steps past the path
    assert torch.equal(longer.images, once.images)


def test_guidance_stops_below_guidance_until(small_cnn, diffusion):
    from studio.optvis import class_, render
    from studio.optvis.params import guided

    model, module = small_cnn.model, diffusion.module
    unguided = torch.stack([_ddim(module, s, 12) for s in (0, 1)])

    def distance_to_unguided(until):
        spec = guided(module, 12, 0.05, until, start_candidates=1, guidance_stop=None)  # the plain start, always guided
        rendering = render(model, class_([7], log_softmax=True), param=spec,
                           steps=12, lr=1.0, optimizer="sgd", seeds=[0, 1], progress=False)
        return float((rendering.images - unguided).abs().mean())

    # guided only at the first (noisiest) step: the render stays near the unguided sample of the same noise
    assert distance_to_unguided(0.95) < 0.5 * distance_to_unguided(0.0)


def _preview_prob(model, built, classes, noise=None) -> torch.Tensor:
    """Target probability of the classifier on the unguided previews of a built guided param's starting noise
    (or of `noise`, e.g. one of its candidates)."""
    with torch.no_grad():
        probs = F.softmax(model(built.preview(built.x.detach() if noise is None else noise)), 1)
    return probs[range(len(classes)), classes]


def test_best_of_n_start_raises_the_preview_target_probability_per_seed(small_cnn, diffusion):
    from studio.optvis import class_
    from studio.optvis.params import guided

    model, module = small_cnn.model, diffusion.module
    classes, seeds = [c for c in (1, 4, 8) for _ in range(2)], [5, 6] * 3
    log_p = class_([1, 4, 8], log_softmax=True)

    def start(n):
        built = guided(module, 10, start_candidates=n).build(seeds)
        built.prepare(lambda x: log_p({"logits": model(x)}))
        return built

    plain, best = start(1), start(8)
    own = torch.stack([torch.randn(1, 28, 28, generator=torch.Generator().manual_seed(s)) for s in (5, 6)])
    assert torch.equal(plain.x[:2], own)  # one candidate: the seed's own noise
    assert torch.equal(best.candidates[0][:2], own)  # the start is a copy: candidate 0 stays the seed's own noise
    p_plain, p_best = _preview_prob(model, plain, classes), _preview_prob(model, best, classes)
    p_all = torch.stack([_preview_prob(model, best, classes, n) for n in best.candidates])  # scored alike
    torch.testing.assert_close(p_best, p_all.max(0).values)  # each seed starts from its best candidate
    assert p_best.mean() > p_plain.mean(), (p_plain, p_best)
    assert not torch.equal(best.x[0], best.x[1])  # the seeds of one class keep different starts
    assert torch.equal(start(8).x, best.x)  # deterministic


def test_an_image_at_guidance_stop_is_not_guided(small_cnn, diffusion):
    """guidance_stop: an image the model already gives its target class that probability is left to the plain
    sampler."""
    from studio.optvis import class_, render
    from studio.optvis.params import guided

    model, module = small_cnn.model, diffusion.module
    unguided = torch.stack([_ddim(module, s, 12) for s in (0, 1)])

    def rendered(stop):
        spec = guided(module, 12, 0.05, 0.0, start_candidates=1, guidance_stop=stop)
        return render(model, class_([7], log_softmax=True), param=spec, steps=12, lr=1.0, optimizer="sgd",
                      seeds=[0, 1], progress=False).images

    # every target probability is >= 1e-30, so the stop is met at every step: no guidance at all
    torch.testing.assert_close(rendered(1e-30), unguided, atol=1e-4, rtol=0)
    assert float((rendered(None) - unguided).abs().mean()) > 0.02  # guided every step: another image


def test_min_snr_weighting_downweights_the_nearly_clean_timesteps():
    module = _module()
    t = torch.tensor([0, 300, 999])
    a = module.alphas_bar[t]
    snr = a / (1 - a)
    expected = torch.where(snr > 5, 5 / snr, torch.ones(3))
    torch.testing.assert_close(module.loss_weight(t), expected)
    assert module.loss_weight(t)[0] < 0.01 and module.loss_weight(t)[2] == 1.0  # clean end vs pure noise
    assert torch.equal(_module(["generator.min_snr_gamma=null"]).loss_weight(t), torch.ones(3))
    with pytest.raises(StudioError, match=r"generator.min_snr_gamma=0 must be > 0 .* null for the unweighted"):
        _module(["generator.min_snr_gamma=0"])


def test_guided_bad_inputs_are_one_line(vae, diffusion, outputs, tmp_path):
    from studio.optvis.params import guided

    with pytest.raises(StudioError, match=r"param.guidance_scale=0.0 must be positive"):
        guided(diffusion.module, 10, guidance_scale=0.0)
    with pytest.raises(StudioError, match=r"0.02 is the measured default"):
        guided(diffusion.module, 10, guidance_scale=-1)
    with pytest.raises(StudioError, match=r"param=guided needs a diffusion model: generator=diffusion \(got VAEModule\)"):
        guided(vae.module, 10)
    with pytest.raises(StudioError, match=r"param.guidance_until=1.0 must be in \[0, 1\)"):
        guided(diffusion.module, 10, guidance_until=1.0)
    with pytest.raises(StudioError, match=r"sampler_steps=2000 .* 1000-step schedule"):
        guided(diffusion.module, 2000)
    with pytest.raises(StudioError, match=r"param.start_candidates=0 must be a whole number >= 1 \(starting noises"):
        guided(diffusion.module, 10, start_candidates=0)
    with pytest.raises(StudioError, match=r"param.preview_steps=2000 is not a number of steps of a 1000-step schedule"):
        guided(diffusion.module, 10, preview_steps=2000)
    for stop in ("high", 1.5, 0):
        with pytest.raises(StudioError, match=rf"param.guidance_stop={stop} must be a probability in \(0, 1\] .* null"):
            guided(diffusion.module, 10, guidance_stop=stop)
    bad = run_studio_forked("visualize", "param=guided", "generator=diffusion", "param.guidance_scale=-1",
                            f"hydra.run.dir={tmp_path / 'run'}", "logger=none", outputs=outputs)
    assert_one_line_error(bad, "param.guidance_scale=-1", "must be positive")
    assert not (tmp_path / "run" / "manifest.json").exists()
    bad = run_studio_forked("visualize", "param=guided", "generator=diffusion", "param.start_candidates=0",
                            f"hydra.run.dir={tmp_path / 'run2'}", "logger=none", outputs=outputs)
    assert_one_line_error(bad, "param.start_candidates=0", "must be a whole number >= 1")


def test_cli_guided_class_renders_are_judged(diffusion, judge, outputs, tmp_path):
    run = tmp_path / "run"
    done = run_studio_forked("visualize", "param=guided", "generator=diffusion", *FAST_GENERATOR["diffusion"],
                             "objective=class", "objective.classes=[3,7]", "seeds=2", "steps=12", *QUIET_TRAINER,
                             f"hydra.run.dir={run}", "logger=none", outputs=outputs)
    assert done.returncode == 0, done.stderr
    assert "recipe of param guided: regularizer none, 12 steps, lr 1, best of 24 starts" in done.stdout
    import json

    manifest = json.loads((run / "manifest.json").read_text())
    assert [(i["target"], i["seed"]) for i in manifest["items"]] == [("class:3", 0), ("class:3", 1), ("class:7", 0),
                                                                     ("class:7", 1)]
    assert {"judge_recognition", "realism_ratio", "realism_ratio/judge", "realism_ratio/eye"} <= set(manifest["metrics"])


def test_an_image_size_not_divisible_by_4_names_it():
    with pytest.raises(StudioError, match=r"generator=diffusion needs an image size divisible by 4; got data.size=30"):
        _module(size=30)
