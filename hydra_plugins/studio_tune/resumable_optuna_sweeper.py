"""`hydra.sweeper._target_: hydra_plugins.studio_tune.resumable_optuna_sweeper.ResumableOptunaSweeper`.

Hydra imports every module of `hydra_plugins` on every run, so this one imports nothing heavy: the work is
studio.tune.sweeper's, which needs the optional Optuna sweeper (pip install 'feature-viz-studio[optuna]').
"""

from __future__ import annotations

from hydra.plugins.sweeper import Sweeper


class ResumableOptunaSweeper(Sweeper):
    """Hydra's Optuna sweeper, resumable from its storage (studio/tune/sweeper.py); the same config keys."""

    def __init__(self, **kwargs) -> None:
        from studio.tune.sweeper import ResumableSweep

        self.sweeper = ResumableSweep(**kwargs)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
