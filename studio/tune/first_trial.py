"""What a new search's first trial renders (`tune.first_trial`), before the sampler proposes anything.

    tune:
      first_trial: sampled   # the sampler proposes trial 0 like any other (the default)
      first_trial: config    # the composed config's own values of the searched keys

`config` puts the recipe the search starts from into the study (experiment=tune_regularizer: the `l2_tv`
recipe's weights, `blur`'s sigma, the parameterization's lr, rendered with the search's held keys), scored like
every other trial, and TPE starts knowing one point of the space. A value the search space does not hold (a
held key, or one outside its range) is left to the sampler. The default is `sampled`: at 16 trials `config`
spent one trial on a point far from the best and helped no search measured (README, Searching a recipe's
weights).
"""

from __future__ import annotations

from omegaconf import OmegaConf

from studio.errors import lookup


def _config_values(config, distributions: dict) -> dict:
    """The config's value of every searched key that its distribution holds."""
    values = {}
    for name, distribution in distributions.items():
        value = OmegaConf.select(config, name, default=None)
        if value is not None and _holds(distribution, value):
            values[name] = value
    return values


# tune.first_trial -> the parameters trial 0 is given ({}: the sampler's own proposal).
FIRST_TRIALS = {
    "config": _config_values,
    "sampled": lambda config, distributions: {},
}


def first_trial(config):
    """The rule `tune.first_trial` names (default `sampled`): rule(config, distributions) gives the parameters
    to enqueue as a new study's trial 0. An unknown name is one StudioError line naming the choices."""
    choice = OmegaConf.select(config, "tune.first_trial", default="sampled")
    return lookup(FIRST_TRIALS, "tune.first_trial", str(choice))


def _holds(distribution, value) -> bool:
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (TypeError, ValueError):  # a value of another type (a string for a float range): not in the space
        return False
