"""Latent visualization: z* = argmax_z y_i(G(z)), shown as G(z*), scored by the judge."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from studio.errors import StudioError
from studio.optvis import blur, channel, class_, latent, render, tv
from tests.conftest import FAST_GENERATOR, QUIET_TRAINER, compose_config, run_studio, run_studio_forked


def test_latent_class_renders_raise_the_target_probability(small_cnn, dcgan):
    rendering = render(small_cnn.model, class_([0, 3, 7], log_softmax=True),
                       param=latent(dcgan.module, prior_weight=1e-3, start_candidates=4), steps=96, lr=0.05,
                       seeds=[0, 1])  # the GAN's recipe starts from the best of 4 draws
    assert rendering.images.shape == (6, 1, 28, 28)
    start = small_cnn.model.eval()(rendering.start_images).softmax(1)[torch.arange(6), torch.tensor([0, 0, 3, 3, 7, 7])]
    assert (rendering.target_prob > start).all()
    assert rendering.target_prob.min() > 0.8


def test_latent_channel_objective_works_through_the_generator(small_cnn, dcgan):
    rendering = render(small_cnn.model, channel("conv2", [1, 5]), param=latent(dcgan.module), steps=32, lr=0.05)
    assert (rendering.activation_gain > 0).all()


def test_latent_renders_are_deterministic(small_cnn, vae):
    spec = latent(vae.module, anchor_weight=1e-2)
    a = render(small_cnn.model, class_([2]) - 1e-2 * tv(), param=spec, steps=16, seeds=[4, 5])
    b = render(small_cnn.model, class_([2]) - 1e-2 * tv(), param=spec, steps=16, seeds=[4, 5])
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images[0], a.images[1])  # two seeds, two different digits


def test_norm_projection_and_anchor_keep_z_near_the_prior(small_cnn, dcgan):
    free = latent(dcgan.module).build([0], "cpu")
    clamped = latent(dcgan.module, max_norm=3.0, truncation=1.0).build([0], "cpu")
    assert free.z.norm() > 3.0 and clamped.z.norm() <= 3.0 + 1e-5 and clamped.z.abs().max() <= 1.0
    anchored = latent(dcgan.module, anchor_weight=1.0).build([0], "cpu")
    assert anchored.penalty().item() == 0.0  # at its start
    with torch.no_grad():
        anchored.z.add_(1.0)
    assert anchored.penalty().item() == pytest.approx(anchored.latent_dim, rel=1e-5)


def test_the_gans_render_recipe_bounds_z_and_param_max_norm_overrides_it(dcgan):
    """param=latent takes max_norm from the generator's render recipe (conf/generator/dcgan.yaml sets one, scaled
    to its latent size; the VAE's does not), and param.max_norm on the command line wins, null turning it off."""
    from studio.adapters.optvis import build_param

    def norms(*overrides):
        param = compose_config("visualize", ["param=latent", *overrides]).param
        return build_param(param, dcgan.module).build(list(range(8)), "cpu").z.norm(dim=1)

    bound = compose_config("visualize", ["generator=dcgan"]).generator.render.max_norm
    free = norms("generator=vae")  # the prior's own draws: a typical one has norm ~sqrt(latent_dim)
    assert free.max() > bound and norms("generator=dcgan").max() <= bound + 1e-5
    assert torch.equal(norms("generator=dcgan", "param.max_norm=null"), free)
    assert norms("generator=dcgan", "param.max_norm=2").max() <= 2 + 1e-5
    # the bound is a fraction of a typical draw's norm, sqrt(latent_dim): twice as large at 4x the dimensions
    wider = compose_config("visualize", ["param=latent", "generator=dcgan", "generator.latent_dim=128"]).param
    assert wider.max_norm == pytest.approx(2 * bound)


def test_start_candidates_start_each_render_from_its_best_scored_prior_draw(small_cnn, dcgan):
    plain = latent(dcgan.module, max_norm=4.0).build([0, 1], "cpu")
    picked = latent(dcgan.module, max_norm=4.0, start_candidates=8).build([0, 1], "cpu")
    assert torch.equal(picked.z, plain.z)  # before the objective is known: each seed's own draw, candidate 0

    def score(images):  # the class-3 objective
        return small_cnn.model.eval()(images).log_softmax(1)[:, 3]

    assert picked.prepare(score) and not plain.prepare(score)
    with torch.no_grad():
        candidates = torch.stack([score(dcgan.module.generator(z)) for z in picked.candidates])  # 8 x 2
        assert torch.allclose(score(picked()), candidates.max(0).values)  # candidate 0 (the plain start) among them
    assert torch.equal(picked.start, picked.z) and (picked.z.norm(dim=1) <= 4.0 + 1e-5).all()  # candidates projected
    # through render(): the start images are the picked candidates', and the seeds keep different starts
    rendering = render(small_cnn.model, class_([3], log_softmax=True), steps=1,
                       param=latent(dcgan.module, max_norm=4.0, start_candidates=8), seeds=[0, 1])
    assert torch.allclose(rendering.start_images, picked().detach())
    assert not torch.equal(rendering.start_images[0], rendering.start_images[1])
    with pytest.raises(StudioError, match=r"param.start_candidates=0 must be a whole number >= 1"):
        latent(dcgan.module, start_candidates=0)


def test_the_gans_render_recipe_starts_from_the_best_of_four_draws():
    assert compose_config("visualize", ["param=latent", "generator=dcgan"]).param.start_candidates == 4
    assert compose_config("visualize", ["param=latent", "generator=vae"]).param.start_candidates == 1
    assert compose_config("visualize", ["param=latent", "generator=dcgan",
                                        "param.start_candidates=1"]).param.start_candidates == 1


def test_retry_below_renders_the_renders_stuck_below_it_again_from_their_next_start(small_cnn, dcgan):
    """render(retry_below=p): a class render whose target probability ends below p renders again from its
    next-best start (ParamSpec.ranked(1)); the likelier of the two is kept, images, metrics and history alike, and
    a render that ended at or above p is not touched."""
    spec = latent(dcgan.module, start_candidates=2)
    run = lambda param, **retry: render(small_cnn.model, class_([1, 4, 8], log_softmax=True), param=param,  # noqa: E731
                                        steps=12, lr=0.05, seeds=[0, 1, 2, 3], **retry)
    plain, second = run(spec), run(spec.ranked(1))
    assert not torch.equal(plain.start_images, second.start_images)  # the next start is another draw
    better = second.target_prob > plain.target_prob
    assert better.any()  # of 12 renders, one ends likelier from its next start
    # just above the least likely of those: it and all below it are retried, the likelier renders are not
    threshold = float(torch.nextafter(plain.target_prob[better].min(), torch.tensor(2.0)))
    retried = run(spec, retry_below=threshold)
    take = (plain.target_prob < threshold) & better
    assert take.any() and not take.all()
    for got, first, again in ((retried.images, plain.images, second.images),
                              (retried.history["objective"].T, plain.history["objective"].T,
                               second.history["objective"].T)):
        assert torch.equal(got[take], again[take]) and torch.equal(got[~take], first[~take])
    assert torch.equal(retried.target_prob, torch.where(take, second.target_prob, plain.target_prob))
    assert (retried.target_prob >= plain.target_prob).all() and retried.seconds > plain.seconds
    assert torch.equal(run(spec, retry_below=1e-9).images, plain.images)  # nothing below: one render
    for bad in (1.5, True, "often"):
        with pytest.raises(StudioError, match=rf"retry_below={bad} must be a target probability in \(0, 1\]"):
            run(spec, retry_below=bad)


def test_the_gans_render_recipe_retries_below_095_and_pixels_do_not():
    assert compose_config("visualize", ["param=latent", "generator=dcgan"]).retry_below == 0.95
    assert compose_config("visualize", ["param=latent", "generator=vae"]).retry_below is None
    assert compose_config("visualize", []).retry_below is None
    assert compose_config("visualize", ["param=latent", "retry_below=null"]).retry_below is None


def test_realism_terms_raise_realism(small_cnn, dcgan, vae):
    # the VAE's realism is its ELBO per pixel (about -0.15 nats), hence the larger weight
    for gen, weight in ((dcgan, 1.0), (vae, 100.0)):
        plain = render(small_cnn.model, class_([1, 4]), param=latent(gen.module), steps=48, lr=0.05)
        real = render(small_cnn.model, class_([1, 4]), param=latent(gen.module, realism_weight=weight), steps=48,
                      lr=0.05)
        with torch.no_grad():
            assert gen.module.realism(real.images).mean() > gen.module.realism(plain.images).mean()


def test_pixel_projections_are_refused_with_latent(small_cnn, dcgan):
    with pytest.raises(StudioError, match=r"blur edit pixels directly.*param=latent"):
        render(small_cnn.model, class_([1]), param=latent(dcgan.module), regularizers=[blur()], steps=4)


def test_cli_latent_run_writes_judge_metrics(dcgan, judge, outputs, tmp_path):
    run = tmp_path / "run"
    done = run_studio("visualize", "param=latent", "generator=dcgan", *FAST_GENERATOR["dcgan"], "objective=class",
                      "objective.classes=[3,7]", "seeds=2", "steps=48", "lr=0.05",
                      *QUIET_TRAINER, f"hydra.run.dir={run}", outputs=outputs)
    assert done.returncode == 0, done.stderr
    bound = compose_config("visualize", ["param=latent", "generator=dcgan"]).param.max_norm
    assert (f"recipe of generator dcgan: regularizer none, 48 steps, lr 0.05, ||z|| <= {bound:.2f}, best of 4 starts, "
            "retried below p 0.95, natural choice at edge 1 (regularizer=, steps=, lr=, param.max_norm=, "
            "param.start_candidates=, retry_below=, natural_edge= change it)") in done.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    items = manifest["items"]
    assert [(i["target"], i["seed"]) for i in items] == [("class:3", 0), ("class:3", 1), ("class:7", 0), ("class:7", 1)]
    for item in items:
        assert {"objective", "activation_gain", "target_prob", "judge_correct", "judge_prob"} <= set(item["metrics"])
        assert (run / item["image"]).exists()
    metrics = manifest["metrics"]
    assert metrics["judge_recognition"] == pytest.approx(sum(i["metrics"]["judge_correct"] for i in items) / 4)
    assert metrics["realism_ratio"] > 0 and metrics["diversity"] > 0 and metrics["diversity_real"] > 0


def test_cli_refuses_projection_with_latent_in_one_line(outputs, tmp_path):
    done = run_studio_forked("visualize", "param=latent", "regularizer=blur", f"hydra.run.dir={tmp_path}",
                             "param.max_norm=-1", "logger=none", outputs=outputs)
    assert done.returncode == 2
    assert "max_norm=-1" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def _untrained(arch: str, size: int = 28):
    from generators import build_generator

    return build_generator(compose_config("train-generator", [f"generator={arch}"]).generator, 1, size)


@pytest.mark.parametrize("arch", ["dcgan", "vae"])
def test_an_image_size_not_divisible_by_4_names_it(arch):
    with pytest.raises(StudioError, match=r"need an image size divisible by 4; got data.size=30 \(use 28 or 32\)"):
        _untrained(arch, size=30)


def test_sample_grid_logs_each_epochs_samples_to_a_logger_that_takes_images(tmp_path):
    from generators.registry import SampleGrid

    class ImageLogger:  # the one method of Lightning's WandbLogger that SampleGrid uses
        def __init__(self):
            self.calls = []

        def log_image(self, **kwargs):
            self.calls.append(kwargs)

    logger = ImageLogger()
    trainer = SimpleNamespace(logger=logger, current_epoch=2, global_step=30, is_global_zero=True)  # one process
    SampleGrid(tmp_path, n=16).on_train_epoch_end(trainer, _untrained("dcgan"))
    [call] = logger.calls
    assert call["key"] == "generator/samples" and call["step"] == 30
    [grid] = call["images"]
    assert grid.shape == (2 + 2 * 30, 2 + 8 * 30, 3)  # 2 rows of 8 digits of 28 px, 2 px apart: height x width x RGB
    assert (tmp_path / "samples_epoch002.png").is_file()


def test_a_latent_param_cannot_load_pixels():
    image = latent(_untrained("dcgan")).build([0], "cpu")
    assert not image.can_load
    with pytest.raises(StudioError, match=r"param=latent cannot edit G\(z\) in pixel space; use penalty regularizers"):
        image.load(torch.rand(1, 1, 28, 28))
