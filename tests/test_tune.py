"""The Optuna search of a recipe's weights (`experiment=tune_regularizer`, studio/tune/, issue 19 item 3),
through the real CLI: a search killed with -9 resumes from its SQLite storage without repeating a finished
trial, the report writes the best trial as a recipe that renders what the trial rendered, and every bad
search space or objective is one line, exit 2, with no sweep dir. With tune.first_trial=config a new search's
trial 0 renders with the config's own values (the recipe the search starts from). Tiny trials: 3 classes, a
few steps, no judge (the objective is the model's own activation gain), W&B off.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import optuna  # the `optuna` extra, which the dev extra (make test) installs: missing fails, not skips
import pytest

from tests.conftest import assert_one_line_error, compose_config, read_manifest, run_studio, run_studio_forked
from tests.test_interruptions import kill9_when, start_studio

TINY = ["experiment=tune_regularizer", "logger=none", "objective.classes=[0,1,2]", "judge_metrics=false",
        "tune.objectives=[activation_gain_mean]", "steps=range(4,8,4)"]


def _study(sweep_dir: Path):
    return optuna.load_study(study_name="regularizer", storage=f"sqlite:///{sweep_dir}/optuna.db")


def test_a_killed_search_resumes_from_its_storage_and_its_best_trial_is_a_recipe(small_cnn, outputs, tmp_path):
    sweep_dir = tmp_path / "search"
    # steps held fixed by the sweeper's params, not searched: the recipe must carry it too
    fixed_steps = [a for a in TINY if not a.startswith("steps=")] + ["hydra.sweeper.params.steps=4"]
    args = ["visualize", *fixed_steps, "tune.first_trial=config", "hydra.sweeper.n_trials=3",
            f"hydra.sweep.dir={sweep_dir}"]
    process = start_studio(*args, outputs=outputs, log=tmp_path / "killed.log")
    kill9_when(process, lambda: (sweep_dir / "1" / ".hydra" / "overrides.yaml").exists(), "trial 1 under way")
    before = {t.number: t.state for t in _study(sweep_dir).trials}
    assert optuna.trial.TrialState.RUNNING in before.values()  # the kill cut a trial short
    finished = {n: (sweep_dir / str(n) / "manifest.json").stat().st_mtime_ns for n, state in before.items()
                if state == optuna.trial.TrialState.COMPLETE}
    assert finished  # trial 0 was done

    result = run_studio(*args, outputs=outputs)  # the same command: resumes the study in the sweep dir
    assert result.returncode == 0, result.stderr
    trials = _study(sweep_dir).trials
    assert [t.number for t in trials] == [0, 1, 2]  # n_trials in all, the interrupted one run again, none extra
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    from studio.tune.first_trial import FIRST_TRIALS

    config = compose_config("visualize", ["+experiment=tune_regularizer"])
    start = FIRST_TRIALS["config"](config, trials[0].distributions)
    assert start and {k: trials[0].params[k] for k in start} == pytest.approx(start)  # trial 0: the config's values
    assert any(t.params != trials[0].params for t in trials[1:])  # the later ones: the sampler's
    for number, mtime in finished.items():  # a finished trial is not repeated
        assert (sweep_dir / str(number) / "manifest.json").stat().st_mtime_ns == mtime
    for t in trials:  # each trial's job dir holds its own parameters and the value Optuna was told
        manifest = read_manifest(sweep_dir / str(t.number))
        assert manifest["status"] == "complete"
        assert manifest["config"]["lr"] == pytest.approx(t.params["lr"])
        assert manifest["metrics"]["activation_gain_mean"] == pytest.approx(t.value)

    best = max(trials, key=lambda t: t.value)
    import studio

    search = studio.load_tuning(sweep_dir)  # the same search from Python
    assert [t.number for t in search.best] == [best.number] and search.recipes == {"tuned_regularizer": best.number}
    recipe = sweep_dir / "recipe" / "tuned_regularizer.yaml"
    use = next(line for line in recipe.read_text().splitlines() if line.startswith("# Use it: "))
    line = use[len("# Use it: "):]
    assert f"best: trial {best.number} (activation_gain_mean = " in result.stdout and line in result.stdout
    command = shlex.split(line)
    assert command[:2] == ["studio", "visualize"]
    again = run_studio_forked(*command[1:], "objective=class", "objective.classes=[0,1,2]", "judge_metrics=false",
                              "exemplars.k=0", "logger=none", f"hydra.run.dir={tmp_path / 'tuned'}", outputs=outputs)
    assert again.returncode == 0, again.stderr
    tuned, trial = read_manifest(tmp_path / "tuned"), read_manifest(sweep_dir / str(best.number))
    assert trial["config"]["steps"] == 4
    for key in ("lr", "steps", "regularizer"):  # the recipe renders with the best trial's settings, fixed ones too
        assert tuned["config"][key] == trial["config"][key]
    assert tuned["metrics"]["activation_gain_mean"] == pytest.approx(best.value, rel=1e-4)


@pytest.mark.parametrize("bad, fragments", [
    ("lr=interval(0.5,0.1)", ["empty search range for lr", "interval(0.5,0.1)", "low < high"]),
    ("steps=range(8,4)", ["empty search range for steps", "range(8,4)", "start < stop"]),
    ("lr=tag(log,interval(0,0.1))", ["lr", "log scale", "0 < low"]),
    ("tune.objectives=[judge_recog]", ["unknown tune metric 'judge_recog'", "judge_recognition", "realism_ratio"]),
    ("tune.objectives=[]", ["tune.objectives is empty"]),
    ("hydra.sweeper.direction=[maximize,minimize]", ["1 objective(s)", "direction has 2"]),
    ("tune.first_trial=best", ["unknown tune.first_trial 'best'", "config", "sampled"]),
])
def test_a_bad_search_is_one_line_and_leaves_no_sweep_dir(bad, fragments, outputs, tmp_path):
    sweep_dir = tmp_path / "search"
    result = run_studio_forked("visualize", *TINY, bad, f"hydra.sweep.dir={sweep_dir}", outputs=outputs)
    assert_one_line_error(result, *fragments)
    assert not sweep_dir.exists()


def test_a_sweep_that_is_no_search_is_refused_by_load_tuning(tmp_path):
    import studio
    from studio.errors import StudioError

    with pytest.raises(StudioError, match="is not an Optuna search"):
        studio.load_tuning(tmp_path)


def test_the_first_trial_takes_the_configs_values_that_the_space_holds():
    from omegaconf import OmegaConf
    from optuna.distributions import IntUniformDistribution, LogUniformDistribution

    from studio.tune.first_trial import first_trial

    config = OmegaConf.create({"lr": 0.1, "steps": 256, "regularizer": {"l2": {"weight": 0.1}}, "tune": {}})
    assert first_trial(config)(config, {"lr": LogUniformDistribution(0.05, 1.0)}) == {}  # default: the sampler's
    config.tune.first_trial = "config"
    space = {"lr": LogUniformDistribution(0.05, 1.0), "regularizer.l2.weight": LogUniformDistribution(0.1, 1.0),
             "steps": IntUniformDistribution(4, 8, 4), "regularizer.tv.weight": LogUniformDistribution(0.1, 1.0)}
    # steps 256 is outside its range and tv is not in the config: both are left to the sampler
    assert first_trial(config)(config, space) == {"lr": 0.1, "regularizer.l2.weight": 0.1}
    config.tune.first_trial = "sampled"
    assert first_trial(config)(config, space) == {}


def test_a_search_key_given_twice_is_searched_as_given_last():
    from studio.tune.space import last_per_key

    experiment = ["steps=64", "lr=tag(log, interval(0.1, 1.0))"]
    assert last_per_key([*experiment, "steps=range(4,8,4)"]) == ["lr=tag(log, interval(0.1, 1.0))",
                                                                 "steps=range(4,8,4)"]
    assert last_per_key(["steps=range(4,8,4)", "steps=8"]) == ["steps=8"]
