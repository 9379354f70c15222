"""Hydra's Optuna sweeper (hydra-optuna-sweeper), made resumable and checked before it writes anything.

ResumableSweep (Hydra's plugin class is hydra_plugins/studio_tune/resumable_optuna_sweeper.py; see
conf/experiment/tune_regularizer.yaml) changes these things of the plugin's sweep:
- n_trials counts the study's finished trials, those of an earlier, stopped run included: a rerun with the
  same hydra.sweep.dir runs only what is missing (the plugin would run n_trials more);
- a trial left RUNNING by a killed run is run again with its own parameters in its own job dir, and the
  job skips itself if its manifest was already complete (studio/sweep.py), so no finished work is repeated;
- the job dir of a trial is its trial number, so job dirs and the study's trials never collide across reruns;
- the search space, tune.objectives and tune.first_trial are checked first: a bad one is one line, exit 2,
  and no sweep dir;
- a new study's trial 0 is the one tune.first_trial names (studio/tune/first_trial.py): the sampler's, or
  with `config` the composed config's own values (the recipe the search starts from is in the study).
A failed trial (a job that raised, or a non-finite score) is told to Optuna as failed and the search goes on.
One process per sweep dir: a second one is refused while the first holds `optuna.lock`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import optuna
from filelock import FileLock, Timeout
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf
from optuna.trial import TrialState

from studio.errors import StudioError
from studio.sweep import USER_ERROR_EXIT
from studio.tune.first_trial import first_trial
from studio.tune.objectives import check_objectives
from studio.tune.space import check_space, last_per_key

FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
log = logging.getLogger(__name__)


class ResumableSweep(OptunaSweeperImpl):
    """The plugin's implementation with a resumable sweep (same config keys: sampler, direction, storage, ...)."""

    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        space = self._parse_sweeper_params_config() + list(arguments)
        directions = self._get_directions()
        _checked(lambda: check_space(space), self.config)
        _checked(lambda: check_objectives(self.config.get("tune"), directions), self.config)
        start = _checked(lambda: first_trial(self.config), self.config)
        distributions, fixed = create_params_from_overrides(last_per_key(space))
        sweep_dir = Path(str(self.sweep_dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)  # SQLite makes the file, not its folder
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # what the basic sweeper writes: the report reads it
        lock = FileLock(str(sweep_dir / "optuna.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            _checked(lambda: _busy(sweep_dir), self.config)
        with lock:
            study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                                        directions=directions, load_if_exists=True)
            first = start(self.config, distributions) if not study.trials else {}  # a resumed study has its own
            if first:
                log.info(f"Trial 0 renders with the config's values: {', '.join(f'{k}={v}' for k, v in first.items())}")
                study.enqueue_trial(first)
            self._finish_interrupted(study, distributions, fixed)
            done = sum(t.state in FINISHED for t in study.trials)
            if done:
                log.info(f"Resuming study {study.study_name}: {done} of {self.n_trials} trials already finished")
            while done < self.n_trials:
                trials = [study.ask() for _ in range(min(self.n_jobs, self.n_trials - done))]
                self._run(study, trials, self._configure_trials(trials, distributions, fixed))
                done += len(trials)

    def _finish_interrupted(self, study, distributions: dict, fixed: dict) -> None:
        """Trials a killed run left RUNNING: again with their own parameters (a partial one is failed)."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if set(trial.params) != set(distributions):
                study.tell(trial.number, state=TrialState.FAIL)
                continue
            log.info(f"Trial {trial.number} was interrupted: running it again")
            params = {**trial.params, **fixed}
            self._run(study, [trial.number], [tuple(f"{k}={v}" for k, v in params.items())])

    def _run(self, study, trials: list, overrides) -> None:
        """Launch trials (job num = trial number) and tell Optuna what each returned. Consecutive numbers go
        to the launcher as one batch (a parallel launcher runs them side by side); others one by one."""
        numbers = [t if isinstance(t, int) else t.number for t in trials]
        consecutive = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        batches = [(numbers, list(overrides))] if consecutive else [([n], [o]) for n, o in zip(numbers, overrides)]
        for batch, jobs in batches:
            returns = self.launcher.launch(jobs, initial_job_idx=batch[0])
            for number, ret in zip(batch, returns):
                study.tell(number, *_told(ret, len(self._get_directions())))


def _told(ret, n_objectives: int) -> tuple:
    """(values, state) for study.tell from a job's return: a job that failed, or returned nothing, failed."""
    try:
        value = ret.return_value
        values = [float(value)] if n_objectives == 1 else [float(v) for v in value]
        if len(values) != n_objectives:
            raise ValueError(f"{len(values)} values for {n_objectives} objectives")
    except Exception as e:  # noqa: BLE001 - the job's own error is in its manifest; the search goes on
        log.warning(f"Trial failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return None, TrialState.FAIL
    return values, TrialState.COMPLETE


def _busy(sweep_dir: Path) -> None:
    raise StudioError(f"another studio process is running the sweep in {sweep_dir} (it holds optuna.lock); "
                      "wait for it, or choose another hydra.sweep.dir=...")


def _checked(check, config):
    """Run a check and return what it returns; a StudioError is one line on stderr and exit 2 (Hydra would
    print a trace)."""
    try:
        return check()
    except StudioError as e:
        print(f"studio {config.get('command', '')}: error: {e}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
