"""Progress of long loops: a live bar on a terminal, a line now and then when the output goes to a file
(`make demo > log` would otherwise hold every redraw of every bar: about 790 KB for one demo)."""

from __future__ import annotations

import os
import sys
from typing import Iterable

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between progress lines in a log file ($STUDIO_PROGRESS_INTERVAL sets another)


def interactive(stream=None) -> bool:
    """Does `stream` (default stderr, where tqdm writes) go to a terminal?"""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def bar(iterable: Iterable, enabled: bool = True, **options) -> tqdm:
    """tqdm over `iterable` (off unless `enabled`): redrawn live on a terminal, at most one line per
    LOG_INTERVAL seconds (and the last) otherwise."""
    live = interactive(options.get("file"))
    interval = float(os.environ.get("STUDIO_PROGRESS_INTERVAL", LOG_INTERVAL))
    return tqdm(iterable, disable=not enabled, mininterval=0.1 if live else interval,
                dynamic_ncols=live, **options)
