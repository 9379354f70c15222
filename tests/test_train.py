"""Training: both classifiers reach the accuracy the issue asks for, and the cache is reused."""

import torch

from studio.fit import random_shift, training_layout
from studio.models import Classifier, build_net
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
    # it trained in channels-last layout (studio.fit) and comes back contiguous, as renders and saves expect
    assert all(p.is_contiguous() for p in trained.model.parameters())


class ViewFlatten(torch.nn.Module):
    """A user's network that flattens its conv maps with .view(), which channels-last maps refuse."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Linear(4 * 28 * 28, 10)

    def forward(self, x):
        return self.fc(self.conv(x).view(len(x), -1))


def test_training_layout_is_channels_last_where_the_network_runs_so():
    images = torch.rand(2, 1, 28, 28)
    cnn = Classifier(build_net("small_cnn", 1, 10), [0.5], [0.5])
    assert training_layout(cnn, images) == torch.channels_last
    assert cnn.net.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    viewing = Classifier(ViewFlatten(), [0.5], [0.5])
    assert training_layout(viewing, images) == torch.contiguous_format
    assert viewing.training and all(p.is_contiguous() for p in viewing.parameters())
    assert viewing(images).shape == (2, 10)  # and it still runs


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


def test_weights_that_turn_nan_stop_a_training_that_logs_no_loss(tmp_path):
    """A manually optimized module (the GAN's kind) returns no loss: its weights are checked instead."""
    import pytest
    import pytorch_lightning as pl

    from studio.errors import StudioError
    from studio.fit import StopIfDiverged

    class Exploding(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            if batch_idx == 1:
                self.layer.weight.data.fill_(float("inf"))  # what a huge step does

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(8, 2)), batch_size=2)
    trainer = pl.Trainer(max_epochs=1, callbacks=[StopIfDiverged("generator.lr=1e+09")], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    with pytest.raises(StudioError, match=r"^training diverged: the weights became nan or inf in epoch 1, step 2; "
                                          r"lower generator.lr=1e\+09$"):
        trainer.fit(Exploding(), loader)
