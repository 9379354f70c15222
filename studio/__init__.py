"""Generator-constrained feature visualization: see what a neural network has learned.

`studio.load_classifier()` and `studio.load_generator()` give the cached trained models, `studio.run_sweep()` runs a
sweep with any launcher, `studio.load_tuning()` reads an Optuna search's trials, `studio.dissect_labels()` gives
each unit's Network Dissection label (studio/api.py);
the engines are `studio.optvis` (feature visualization) and `studio.explain` (local explanations); the
CLI is `studio <command>` (studio/cli.py).
"""

__all__ = ["load_classifier", "load_generator", "load_tuning", "run_sweep", "dissect_labels"]


def __getattr__(name: str):
    # imported on first use: `studio --help` must not pay for torch
    if name in __all__:
        from studio import api

        return getattr(api, name)
    raise AttributeError(f"module 'studio' has no attribute {name!r}")
