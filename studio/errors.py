"""The one exception users are meant to see: a single line that names the bad value."""


class StudioError(Exception):
    """A mistake the user can fix (bad name, bad index, missing file); printed as one line."""


def unknown(kind: str, value, choices) -> StudioError:
    """`unknown model 'foo'; choose from: a, b, c` — the standard wording for a bad name."""
    listed = ", ".join(str(c) for c in choices)
    return StudioError(f"unknown {kind} {value!r}; choose from: {listed}")


def lookup(registry: dict, kind: str, name: str):
    """registry[name], or a StudioError that lists the known names."""
    try:
        return registry[name]
    except KeyError:
        raise unknown(kind, name, sorted(registry)) from None


def is_number(value) -> bool:
    """A number as a config gives it: an int or a float, not a word, and not a bool (which is an int in Python);
    the first half of most value checks that end in a StudioError."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
