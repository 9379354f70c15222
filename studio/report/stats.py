"""The statistics of a comparison: a mean's bootstrap interval, a paired signed-rank test, Holm's correction.

Plain lists of numbers in, plain numbers out (the report decides what is paired with what)."""

from __future__ import annotations

import math
import warnings

import numpy as np

RESAMPLES = 9999  # scipy's default; ~10 ms per interval of 20-60 values


def mean_interval(values, confidence: float = 0.95, seed: int = 0,
                  resamples: int = RESAMPLES) -> tuple[float, float] | None:
    """The mean's bootstrap interval (BCa), or None under 2 values (or where BCa is undefined).

    A fixed seed: the same sweep gives the same report, byte for byte."""
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        return None
    if np.all(data == data[0]):  # no spread: every resample has the same mean (and BCa divides by zero)
        return float(data[0]), float(data[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DegenerateDataWarning: the NaN below says it
        ci = bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=resamples,
                       rng=np.random.default_rng(seed)).confidence_interval
    finite = math.isfinite(ci.low) and math.isfinite(ci.high)
    return (float(ci.low), float(ci.high)) if finite else None


def proportion_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson's score interval of a share successes / n (None for n = 0).

    Not the bootstrap: a share of 0/1 answers has a closed form, and unlike the normal approximation it
    stays inside [0, 1] and is not a point at 0 or n successes (10 of 10 right: 0.72 to 1)."""
    from scipy.stats import binomtest

    if n <= 0:
        return None
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(min(ci.high, 1.0))


def signed_rank(a, b) -> tuple[int, float, float]:
    """Wilcoxon signed-rank test of paired values a[i] vs b[i]: (pairs, median of a - b, two-sided p).

    Pairs with a NaN on either side are left out; all differences zero is p = 1."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    diff = a[keep] - b[keep]
    if not len(diff):
        return 0, math.nan, math.nan
    if not np.any(diff):
        return len(diff), 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the normal approximation's warnings on tied, few pairs
        p = float(wilcoxon(diff).pvalue)
    return len(diff), float(np.median(diff)), p


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input's order.

    scipy has Benjamini-Hochberg (false_discovery_control) but not Holm; statsmodels' multipletests is
    these few lines behind a large dependency."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(scaled, 1.0)
    return adjusted.tolist()


def min_pairs(alpha: float) -> int:
    """Fewest pairs with which a two-sided signed-rank test can reach p < alpha (exact: 2 / 2^n)."""
    return next(n for n in range(1, 64) if 2.0 / 2 ** n < alpha)
