"""Config -> engine translation, one adapter per engine; the only code besides commands that reads config nodes."""

from __future__ import annotations


def plain(node):
    """A config node as plain Python values, resolved (a `???` left in it is Hydra's one-line missing-value
    error); anything else as it is."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    return node
