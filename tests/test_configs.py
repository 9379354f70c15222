"""Every config composes: each command with each choice of each of its groups."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from studio.cli import CONF_DIR, config_choices
from studio.commands import COMMANDS
from tests.conftest import compose_config

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
