"""Training: both classifiers reach the accuracy the issue asks for, and the cache is reused."""

import torch

from studio.fit import random_shift
from studio.train import cache_key, trained_classifier
from tests.conftest import QUIET_TRAINER, compose_config


def test_small_cnn_reaches_97_percent(small_cnn):
    assert small_cnn.test_acc >= 0.97


def test_judge_reaches_97_percent(judge):
    assert judge.test_acc >= 0.97


def test_cache_is_reused_with_identical_weights(small_cnn, datamodule):
    cfg = compose_config("train", QUIET_TRAINER)
    again = trained_classifier(cfg.model, cfg.data, cfg.trainer, datamodule, cfg.paths.models)
    assert again.cached and again.path == small_cnn.path
    for a, b in zip(small_cnn.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_cache_key_follows_what_changes_the_weights():
    base = compose_config("train")
    key = cache_key(base.model, base.data, base.trainer)
    progress = compose_config("train", ["trainer.enable_progress_bar=false"])
    assert cache_key(progress.model, progress.data, progress.trainer) == key  # display only
    for override in ("model.seed=5", "data.split_seed=3", "trainer.max_epochs=2", "model.optim.lr=0.1"):
        changed = compose_config("train", [override])
        assert cache_key(changed.model, changed.data, changed.trainer) != key, override


def test_short_training_beats_chance_by_far(tmp_path, datamodule):
    cfg = compose_config("train", [*QUIET_TRAINER, "trainer.max_epochs=1", "model=judge_cnn"])
    trained = trained_classifier(cfg.model, cfg.data, cfg.trainer, datamodule, tmp_path)
    assert not trained.cached and trained.test_acc > 0.8  # chance is 0.1


def test_random_shift_moves_each_image_by_whole_pixels():
    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1
    shifted = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), torch.ones(64))  # nothing blurred or lost
    rows, cols = shifted[:, 0].nonzero()[:, 1], shifted[:, 0].nonzero()[:, 2]
    assert (rows - 4).abs().max() <= 2 and (cols - 4).abs().max() <= 2
    assert len({(int(r), int(c)) for r, c in zip(rows, cols)}) > 10  # shifts differ per image


def test_max_shift_0_turns_the_augmentation_off():
    x = torch.rand(8, 1, 9, 9)
    state = torch.get_rng_state()
    assert random_shift(x, 0) is x  # the batch itself: no resampling, no copy
    assert torch.equal(torch.get_rng_state(), state)  # and no random draw that would shift later batches
