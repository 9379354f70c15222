"""Searching a recipe's weights with Hydra's Optuna sweeper (`experiment=tune_regularizer`).

- objectives.py  what a trial returns to the sweeper: weighted sums of the job's run metrics (`tune.objectives`)
- space.py       the search space checked before anything is written (an empty range is one error line)
- first_trial.py what a new study's trial 0 renders (`tune.first_trial`: the sampler's, or the config's own values)
- sweeper.py     the Optuna sweeper, resumable: trials live in an SQLite file in the sweep dir, job dir = trial number
- recipe.py      the best trial (or each trial of the Pareto front) as a recipe YAML for `+recipe=...`

The report (studio/report/trials.py) draws the trials and the front and writes the recipes.
"""
