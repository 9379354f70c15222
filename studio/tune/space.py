"""The search space (`hydra.sweeper.params` and the command line's sweeps) checked before a trial runs.

Optuna would take `interval(1.0, 0.5)` and fail on the first trial, after the sweep dir, its database and a
job dir exist; an empty `range(4, 4)` would crash the sweeper with an assertion. Here each is one line.
"""

from __future__ import annotations

from studio.errors import StudioError

HOW = "interval(low, high) with low < high, tag(log, interval(low, high)) with 0 < low, range(start, stop, step) " \
      "with start < stop, or choice(a, b, ...)"


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
                raise StudioError(f"empty search range for {override.get_key_element()}: "
                                  f"{override.get_value_element_as_str()} {why}; use {HOW}")


def _empty(override) -> str | None:
    """Why this sweep holds no value to try (None: it holds some)."""
    value = override.value()
    if override.is_interval_sweep():
        if not value.start < value.end:
            return f"has low {value.start} >= high {value.end}"
        if "log" in value.tags and value.start <= 0:
            return f"is on a log scale but low {value.start} <= 0"
        return None
    if not list(override.sweep_iterator()):
        return "holds no value"
    return None
