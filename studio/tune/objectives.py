"""What a tuning trial is scored by: `tune.objectives`, a list of {metric: weight} sums of the job's run
metrics (manifest.json `metrics`), one value per sweeper direction.

    tune:
      objectives:
        - {judge_recognition: 1.0, realism_ratio: -0.05}   # one objective, hydra.sweeper.direction: maximize

Only the metrics of TUNABLE can be named: a sweep of many minutes must not end in trials that all failed
because of a typo, so the names are checked before the first trial starts.
"""

from __future__ import annotations

import math

from studio.errors import StudioError, unknown

# Run metrics of `studio visualize` that a search may weigh, with the direction that is better.
TUNABLE = {
    "judge_recognition": "higher",   # share of class renders the independent judge labels as their class
    "judge_prob_mean": "higher",     # the judge's mean probability of the target class
    "realism_ratio": "lower",        # Fréchet ratio against real images, worst view (real data ~1)
    "realism_ratio/judge": "lower",  # the same in the judge's view alone
    "realism_ratio/eye": "lower",    # ... and in the eye's (model@eye)
    "activation_gain_mean": "higher",  # objective rise from the start image, mean over the images
    "objective_mean": "higher",      # final objective value, mean over the images
    "target_prob_mean": "higher",    # the model's own softmax of the target class
    "target_prob_min": "higher",
    "render_seconds": "lower",
}


def objective_terms(tune_cfg) -> list[dict[str, float]]:
    """tune.objectives as plain [{metric: weight}]; a bare metric name means weight 1."""
    given = list((tune_cfg or {}).get("objectives") or [])
    terms = []
    for objective in given:
        if isinstance(objective, str):
            objective = {objective: 1.0}
        try:
            terms.append({str(k): float(v) for k, v in dict(objective).items()})
        except (TypeError, ValueError):
            raise StudioError(f"bad tune objective {objective!r}: give a metric name or {{metric: weight, ...}}") from None
    return terms


def check_objectives(tune_cfg, directions: list[str]) -> None:
    """One StudioError line for an unknown metric, an empty objective, or a count that is not the directions'."""
    terms = objective_terms(tune_cfg)
    if not terms or not all(terms):
        raise StudioError("tune.objectives is empty: name at least one metric, e.g. "
                          "tune.objectives=[{judge_recognition:1,realism_ratio:-0.05}]")
    for metric in (m for objective in terms for m in objective):
        if metric not in TUNABLE:
            raise unknown("tune metric", metric, list(TUNABLE))
    if len(terms) != len(directions):
        raise StudioError(f"tune.objectives gives {len(terms)} objective(s) but hydra.sweeper.direction has "
                          f"{len(directions)} ({', '.join(directions)}): give one direction per objective")


def objective_values(tune_cfg, metrics: dict) -> float | list[float] | None:
    """The value(s) the sweeper gets for a job with these run metrics: a float for one objective, a list for
    several; None (a failed trial) when a metric is missing or not finite."""
    terms = objective_terms(tune_cfg)
    if not terms:
        return None
    values = []
    for objective in terms:
        if not all(isinstance(metrics.get(m), (int, float)) for m in objective):
            return None
        values.append(sum(w * float(metrics[m]) for m, w in objective.items()))
    if not all(math.isfinite(v) for v in values):
        return None
    return values[0] if len(values) == 1 else values
