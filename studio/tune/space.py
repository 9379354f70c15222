"""The search space (`hydra.sweeper.params` and the command line's sweeps) checked before a trial runs.

Optuna would refuse `interval(1.0, 0.5)` or `range(8, 4)` with a traceback after the sweep dir and its database
exist; here each is one line, before anything is written.
"""

from __future__ import annotations

from studio.errors import StudioError

HOW = "interval(low, high) with low < high, tag(log, interval(low, high)) with 0 < low, range(start, stop, step) " \
      "with start < stop (stop included), or choice(a, b, ...)"


def check_space(arguments: list[str]) -> None:
    """Raise one StudioError line for the first search-space entry that searches nothing."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for text in arguments:
        try:
            override = parser.parse_overrides([text])[0]
        except HydraException:
            raise StudioError(f"cannot parse the search space entry {text!r}; use {HOW}") from None
        if override.is_sweep_override():
            why = _empty(override)
            if why:
                raise StudioError(f"empty search range for {override.key_or_group}: "
                                  f"{text.split('=', 1)[1]} {why}; use {HOW}")


def last_per_key(arguments: list[str]) -> list[str]:
    """The entries with one per key, the last one given: the command line's `steps=range(4, 8, 4)` replaces the
    experiment's `steps: 64` (the plugin would keep both, and its fixed value would win over the sweep)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(list(arguments))]
    last = {key: i for i, key in enumerate(keys)}
    return [text for i, (key, text) in enumerate(zip(keys, arguments)) if last[key] == i]


def _empty(override) -> str | None:
    """Why this sweep holds nothing to search (None: it holds something). Optuna reads range(start, stop, step)
    with stop included (an int distribution from start to stop), so range(4, 4) is a single value, not a search."""
    value = override.value()
    if override.is_interval_sweep():
        if not value.start < value.end:
            return f"has low {value.start} >= high {value.end}"
        if "log" in value.tags and value.start <= 0:
            return f"is on a log scale but low {value.start} <= 0"
        return None
    if override.is_range_sweep() and not value.start < value.stop:
        return f"has start {value.start} >= stop {value.stop}"
    if not override.is_range_sweep() and not list(override.sweep_iterator()):
        return "holds no value"
    return None
