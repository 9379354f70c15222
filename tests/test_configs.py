"""Every config composes (each command with each choice of each of its groups), and a misspelt key or a
wrong type is refused before any work starts."""

import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from studio.config import CONF_DIR, checked_overrides, config_choices
from studio.commands import COMMANDS
from studio.errors import StudioError
from studio.validate import check_overrides
from tests.conftest import assert_one_line_error, compose_config, run_studio

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "experiment"))


def _cases():
    for command in COMMANDS:
        defaults = OmegaConf.load(CONF_DIR / f"{command}.yaml").defaults
        slots = {next(iter(d)) for d in defaults if isinstance(d, dict) or OmegaConf.is_dict(d)}  # model, model@judge
        for slot in sorted(slots):
            if slot.split("@")[0] in GROUPS:
                for choice in config_choices(slot.split("@")[0]):
                    yield command, f"{slot}={choice}"


@pytest.mark.parametrize("command,override", list(_cases()))
def test_config_composes(command, override):
    cfg = compose_config(command, [override])
    assert cfg.command == command
    # every value resolves except the ??? ones a user must fill in (e.g. image_folder's root)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def test_every_command_has_a_config():
    assert sorted(COMMANDS) == sorted(p.stem for p in Path(CONF_DIR).glob("*.yaml"))


# --- The start-up check of key=value overrides (studio/validate.py) --------------------------------

def _readme_command_lines():
    """Every `.venv/bin/studio <command> ...` line of the README's examples (placeholders left out)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for line in readme.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith(".venv/bin/studio ") and "<" not in line and not line.endswith("\\"):
            args = shlex.split(line)[1:]
            if args and not args[0].startswith("-") and "--help" not in args:
                yield args


@pytest.mark.parametrize("args", list(_readme_command_lines()), ids=" ".join)
def test_every_readme_command_line_passes_the_check(args):
    checked_overrides(args[0], args[1:])


@pytest.mark.parametrize("command,overrides,fragments", [
    ("visualize", ["objective.chanels=all"],
     ["unknown config key 'objective.chanels'", "did you mean objective.channels?", "objective has: channels, "]),
    ("visualize", ["stpes=10"], ["unknown config key 'stpes'", "did you mean steps?", "the config has: "]),
    ("train", ["modle.seed=1"], ["unknown config key 'modle.seed'", "did you mean model?"]),
    ("visualize", ["-m", "regularizer=none,l2", "regularizer.l2.wieght=1"],
     ["unknown config key 'regularizer.l2.wieght'", "did you mean regularizer.l2.weight?"]),
    ("visualize", ["regularizer.tv.weight=0.5"],
     ["unknown config key 'regularizer.tv.weight': regularizer=auto (the default)",
      "(regularizer=l2_tv regularizer.tv.weight=...)", "(+regularizer.tv.weight=...)"]),
    ("visualize", ["steps=abc"], ["bad value for steps: 'abc' is not an int (the default is steps=256)"]),
    ("visualize", ["-m", "lr=0.1,fast"], ["bad value for lr: 'fast' is not a number"]),
    ("visualize", ["progress=maybe"], ["bad value for progress: 'maybe' is not true or false"]),
    ("train", ["trainer.max_epochs=1.5"], ["bad value for trainer.max_epochs: 1.5 is not an int"]),
    ("embed", ["layers=conv1"], ["bad value for layers: 'conv1' is not a list like [a,b]"]),
    ("train", ["data.options.colour=1"], ["unknown config key 'data.options.colour'", "+data.options.colour="]),
    ("layers", ["hydra.run.dir=/tmp/a=b"], ["cannot parse 'hydra.run.dir=/tmp/a=b'", "quote a value", "key='a=b'"]),
    ("visualize", ["objective.channels=[1,"], ["cannot parse 'objective.channels=[1,'"]),
    ("visualize", ["objective.channels=1,2"], ["'objective.channels=1,2' gives several values, a sweep: add -m",
                                               "objective.channels=[1,2]", "objective.channels='1,2'"]),
    ("train", ["data.options=5"], ["bad value for data.options: 5 is not a mapping like {k:v}"]),
    ("embed", ["layers.7=conv1"], ["unknown config key 'layers.7'"]),
    ("train", ["model=small_cnn,judge_cnn"], ["'model=small_cnn,judge_cnn' gives several values", "add -m",
                                              "model=[small_cnn,judge_cnn] to combine these configs"]),
])
def test_a_misspelt_key_or_a_wrong_type_is_named(command, overrides, fragments):
    with pytest.raises(StudioError) as caught:
        checked_overrides(command, overrides)
    for fragment in fragments:
        assert fragment in str(caught.value)


@pytest.mark.parametrize("command,overrides", [
    ("visualize", ["objective.channels=3", "seeds=2", "lr=1", "thresholds=[32,128]", "precision=fp32"]),
    ("visualize", ["-m", "regularizer=none,l2", "regularizer.l2.weight=0.5"]),  # the key exists in one choice
    ("visualize", ["+recipe=fft", "param.decorrelate=false", "steps=${seed}"]),
    ("train", ["trainer.devices=auto", "model.seed=3", "logger.entity=null", "+data.options.extra=1"]),
    ("explain", ["explain.target=3", "explain.gradcam_layer=conv2"]),
    ("layers", ["--cfg", "job", "hydra.run.dir='/tmp/a=b'"]),  # a flag's value is no override; quoting works
    ("visualize", ["--multirun", "objective.channels=1,2", "lr=interval(0.01,0.1)"]),  # interval: Optuna & co
    ("embed", ["layers.0=conv1", "~embed.images"]),  # a list element by index; a deletion is Hydra's
    ("visualize", ["experiment=compare_regularizers", "+recipe=none,l2"]),  # the experiment is a multirun
])
def test_valid_values_of_every_kind_pass(command, overrides):
    checked_overrides(command, overrides)


def test_a_launcher_without_its_plugin_names_the_extra(monkeypatch):
    """`make test` installs the launcher plugins; a user's venv may lack them. The check looks the plugin's
    module up, so a module that is not installed stands for a missing plugin."""
    import studio.config

    monkeypatch.setitem(studio.config.LAUNCHER_PLUGINS, "submitit_slurm",
                        ("hydra_plugins.not_an_installed_launcher", "slurm"))
    with pytest.raises(StudioError) as caught:
        checked_overrides("visualize", ["-m", "hydra/launcher=submitit_slurm"])
    assert str(caught.value) == ("hydra/launcher=submitit_slurm needs its Hydra plugin: "
                                 "pip install 'feature-viz-studio[slurm]'")
    for installed in ("submitit_local", "ray"):
        checked_overrides("visualize", ["-m", f"hydra/launcher={installed}"])


def test_an_unknown_group_choice_is_left_to_the_choice_check():
    """check_overrides composes the chosen configs; one that does not exist is reported by
    check_config_choices (`unknown model 'nope'; choose from: ...`), so here it passes silently."""
    check_overrides("train", ["model=nope", "trainer.max_epochs=2"], CONF_DIR)
    with pytest.raises(StudioError, match="unknown model 'nope'; choose from: checkpoint, judge_cnn"):
        checked_overrides("train", ["model=nope", "trainer.max_epochs=2"])


def test_a_misspelt_key_stops_the_cli_before_any_work(outputs, tmp_path):
    run_dir = tmp_path / "run"
    result = run_studio("visualize", "objective.chanels=all", f"hydra.run.dir={run_dir}", outputs=outputs)
    assert_one_line_error(result, "unknown config key 'objective.chanels'", "did you mean objective.channels?")
    assert not run_dir.exists()  # nothing started: no run dir, no manifest


@pytest.mark.parametrize("native_bf16", [True, False])
def test_cpu_training_uses_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, native_bf16):
    """bf16 autocast trains 1.5x faster than fp32 on an AVX-512 CPU but 2.8-8x slower on an AVX2 CPU that
    emulates it (bench/bench_precision.py): the CPU trainers and the diffusion model ask ${cpu_precision:}."""
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    expected = "bf16-mixed" if native_bf16 else "32-true"
    assert compose_config("train").trainer.precision == expected
    assert compose_config("train", ["trainer=ddp_cpu"]).trainer.precision == expected
    assert compose_config("train-generator", ["generator=diffusion"]).generator.precision == expected
    assert compose_config("train", ["trainer=gpu"]).trainer.precision == "bf16-mixed"  # a GPU has it
    assert compose_config("train", ["trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"  # asked
