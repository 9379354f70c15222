"""TCAV (studio tcav): CAVs recover planted directions, a concept the logit ignores is not significant, the
Clever Hans model is caught using its mark and the clean model is not, and every bad input is one line."""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from studio.concepts.intervention import concept_effects
from studio.concepts.sets import background_light, builtin_concept, thick, thin
from studio.concepts.tcav import class_logit_gradients, fit_cav, tcav
from studio.errors import StudioError
from studio.mark import Mark
from studio.models import Classifier
from studio.tracking import read_offline_run
from tests.conftest import QUIET_LOCAL, assert_one_line_error, read_manifest, run_studio, run_studio_forked


def test_a_cav_recovers_a_planted_concept_direction():
    generator = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(30, generator=generator), dim=0)
    random = torch.randn(100, 30, generator=generator)
    concept = torch.randn(100, 30, generator=generator) + 3 * direction
    cav = fit_cav(concept, random)
    assert cav.accuracy > 0.95
    assert cav.direction @ direction > 0.8  # points to the concept; chance is about ±0.2 in 30 dimensions
    assert fit_cav(random, concept).direction @ direction < -0.8


class _ReadsChannelZero(nn.Module):
    """A head whose logits depend on channel 0 of its input only."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x):
        return self.body(x[:, 0].flatten(1))


def _blind_model() -> Classifier:
    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(features=nn.Conv2d(2, 2, 1), head=_ReadsChannelZero()))
    with torch.no_grad():
        net.features.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        net.features.bias.zero_()
    return Classifier(net, [0.0, 0.0], [1.0, 1.0])


def test_a_concept_drawn_where_no_logit_reads_has_no_effect_and_one_drawn_where_it_reads_does():
    model = _blind_model()  # logits read channel 0 only
    generator = torch.Generator().manual_seed(2)
    x, y = torch.rand(60, 2, 4, 4, generator=generator), torch.arange(60) % 3

    def in_channel(c):
        return lambda images: images.index_fill(1, torch.tensor([c]), 1.0)

    effects = {(e.concept, e.klass): e for e in concept_effects(model, {"unseen": in_channel(1),
                                                                          "seen": in_channel(0)}, x, y, [0, 1, 2])}
    assert all(effects["unseen", k].logit_change == 0 and effects["unseen", k].rises == 0 for k in range(3))
    assert [effects["seen", k].images for k in range(3)] == [20, 20, 20]
    assert all(abs(effects["seen", k].logit_change) > 1e-3 for k in range(3))
    changes = model(in_channel(0)(x)) - model(x)  # the effect is the own-class logit's mean change
    for k in range(3):
        assert effects["seen", k].logit_change == pytest.approx(changes[y == k, k].mean().item(), abs=1e-5)
        assert effects["seen", k].rises == pytest.approx((changes[y == k, k] > 0).float().mean().item())
    x[:30, 0] = 1.0  # images the concept leaves as they are do not count: nothing was done to them
    again = {(e.concept, e.klass): e for e in concept_effects(model, {"seen": in_channel(0)}, x, y, [0, 1, 2])}
    assert [again["seen", k].images for k in range(3)] == [10, 10, 10]


def test_a_concept_the_logit_cannot_see_is_encoded_but_not_significant():
    model = _blind_model()
    generator = torch.Generator().manual_seed(1)

    def images(n):
        return torch.rand(n, 2, 4, 4, generator=generator)

    def bright_channel_one(x):  # the concept lives in channel 1, which no logit reads
        return torch.cat([x[:, :1], (x[:, 1:] + 0.5).clamp(max=1)], 1)

    runs = 10
    concept = [bright_channel_one(images(40)) for _ in range(runs)]
    x, y = images(300), torch.arange(300) % 3
    grads = class_logit_gradients(model, x, y, ["features"])["features"].view(300, 2, 4, 4)
    assert grads[:, 1].abs().max() == 0 and grads[:, 0].abs().max() > 0
    results = tcav(model, {"bright": concept}, [images(40) for _ in range(runs)], [images(40) for _ in range(runs)],
                   x, y, ["features"], [0, 1, 2])
    assert all(r.cav_accuracy > 0.9 for r in results)  # the layer encodes the concept ...
    assert all(r.p_value > 0.01 for r in results)  # ... but no class depends on it


def test_builtin_concepts_change_what_they_say():
    digits = torch.zeros(2, 1, 28, 28)
    digits[:, :, 8:20, 12:15] = 1.0  # a 3 px wide stroke
    ink = digits.sum().item()
    assert thick(digits).sum() > 1.5 * ink and 0 < thin(digits).sum() < 0.8 * ink
    assert background_light(digits).min() == 0.5 and background_light(digits).max() == 1.0
    assert Mark(corner="upper_right").present(builtin_concept("mark", digits, Mark(corner="upper_right"))).all()
    with pytest.raises(StudioError, match="unknown built-in concept 'stars'; choose from: mark, thick"):
        builtin_concept("stars", digits)


@pytest.fixture(scope="module")
def clever_hans_tcav(outputs, tmp_path_factory):
    """`studio tcav experiment=clever_hans` with every built-in concept, layer and class (and W&B): the
    issue's full size, 4 concepts x 3 layers x 10 classes x 10 runs. Its model is test_clever_hans's."""
    run_dir = tmp_path_factory.mktemp("tcav-clever-hans")
    result = run_studio("tcav", "experiment=clever_hans", f"hydra.run.dir={run_dir}",
                        "trainer.enable_progress_bar=false", outputs=outputs)
    assert result.returncode == 0, result.stderr
    return run_dir, read_manifest(run_dir)


def test_the_clever_hans_model_is_caught_using_the_mark(clever_hans_tcav):
    run_dir, manifest = clever_hans_tcav
    m = manifest["metrics"]
    layers = ["conv3", "pool3", "fc1"]
    caught = [layer for layer in layers if m[f"tcav/mark/{layer}/0"] >= 0.9 and m[f"tcav_p/mark/{layer}/0"] < 0.01]
    assert caught, {layer: (m[f"tcav/mark/{layer}/0"], m[f"tcav_p/mark/{layer}/0"]) for layer in layers}
    # drawing the mark on test 0s is what the shortcut reacts to: their 0 logit rises, nearly every time
    assert m["tcav_effect/mark/0"] > 2 and m["tcav_rises/mark/0"] > 0.9, m["tcav_effect/mark/0"]
    keys = {f"{kind}/{c}/{layer}/{k}" for kind in ("tcav", "tcav_p") for c in ("mark", "thick", "thin",
            "background_light") for layer in layers for k in range(10)}
    assert keys <= set(m)
    assert len(manifest["items"]) == 120
    assert {"concept", "layer", "class", "score", "low", "high", "p_value", "significant"} <= set(manifest["items"][0])
    for name in ("tcav.csv", "tcav.md", "tcav.png"):
        assert (run_dir / name).stat().st_size > 0
    logged = read_offline_run(manifest["artifacts"]["wandb_run"])
    assert logged["summary"]["tcav/mark/conv3/0"] == pytest.approx(m["tcav/mark/conv3/0"])


def test_the_clean_model_does_not_depend_on_the_mark(small_cnn, outputs, tmp_path):
    result = run_studio_forked("tcav", "~concepts.thick", "~concepts.thin", "~concepts.background_light",
                               "tcav.classes=[0]", "tcav.layers=[conv3]", f"hydra.run.dir={tmp_path}", *QUIET_LOCAL,
                               outputs=outputs)
    assert result.returncode == 0, result.stderr
    m = read_manifest(tmp_path)["metrics"]
    # measured on two clean models x three seeds of the random sets: p from 0.26 to 0.91 here
    assert m["tcav_p/mark/conv3/0"] > 0.05 and m["tcav/mark/conv3/0"] < 0.9
    assert set(k for k in m if k.startswith("tcav/")) == {"tcav/mark/conv3/0"}
    # and the mark drawn on its 0s barely moves their 0 logit (measured -0.2; the Clever Hans model's: +10)
    assert abs(m["tcav_effect/mark/0"]) < 2, m["tcav_effect/mark/0"]


def _pngs(folder, count):
    from PIL import Image

    folder.mkdir()
    for i in range(count):
        Image.fromarray(np.full((28, 28), 20 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("case", ["empty", "few", "missing", "unknown builtin", "layer", "class", "runs"])
def test_each_bad_input_is_one_line(case, outputs, tmp_path):
    args, fragments = {
        "empty": ([f"+concepts.stripes={_pngs(tmp_path / 'empty', 0)}"],
                  ["concept 'stripes': folder", "holds no images (.png"]),
        "few": ([f"+concepts.stripes={_pngs(tmp_path / 'few', 3)}"],
                ["concept 'stripes' has 3 image(s)", "a CAV needs at least 10 (tcav.min_images)"]),
        "missing": ([f"concepts.mark={tmp_path / 'nowhere'}"], ["concept 'mark': folder not found", "nowhere"]),
        "unknown builtin": (["+concepts.stars=builtin"],
                            ["unknown built-in concept 'stars'; choose from: mark, thick, thin, background_light"]),
        "layer": (["tcav.layers=[conv9]"], ["unknown layer 'conv9'; choose from: ", "conv3"]),
        "class": (["tcav.classes=[0,12]"], ["tcav.classes: class 12 is out of range", "0..9"]),
        "runs": (["tcav.random_runs=1"], ["tcav.random_runs=1", "at least 2"]),
    }[case]
    result = run_studio_forked("tcav", *args, f"hydra.run.dir={tmp_path / 'run'}", *QUIET_LOCAL, outputs=outputs)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run" / "tcav.csv").exists()


def test_the_demo_step_catches_the_mark_in_conv3(outputs, tmp_path, capsys):
    from studio.commands.tcav import demo_step
    from studio.tracking import Tracker
    from tests.conftest import compose_config

    cfg = compose_config("demo", ["logger=none", "trainer.enable_progress_bar=false"])
    with Tracker(cfg, "demo", tmp_path, str(tmp_path)) as tracker:
        result = demo_step(cfg, tracker, tmp_path / "tcav")
    assert result.metrics["tcav/mark/conv3/0"] >= 0.9 and result.metrics["tcav_p/mark/conv3/0"] < 0.01
    assert {k for k in result.metrics if k.startswith("tcav/")} == {
        f"tcav/{c}/conv3/0" for c in ("mark", "thick", "thin", "background_light")}
    assert (tmp_path / result.artifacts["tcav/plot"]).stat().st_size > 0
    cfg = compose_config("demo", ["model=resnet18", "logger=none"])
    with Tracker(cfg, "demo", tmp_path / "resnet", str(tmp_path)) as tracker:
        assert demo_step(cfg, tracker, tmp_path / "resnet" / "tcav").metrics == {}
    assert "demo: resnet18 has no layer 'conv3'; skipping TCAV" in capsys.readouterr().out
