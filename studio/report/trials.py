"""An Optuna search's trials (`experiment=tune_regularizer`, studio/tune/), read from the sweep's jobs on disk
like the rest of the report: each job is a trial (its dir name is the trial number), its searched values are
its overrides, its objective values are tune.objectives of its manifest's metrics.

Written into the sweep dir: trials.csv / trials.md (every trial, the best or the Pareto front marked),
plots/trials.png (each objective per trial, with the best so far), plots/pareto_front.png (two objectives:
every trial and the non-dominated ones), and recipe/tuned_<study>.yaml (the best trial; with several
objectives one recipe per front trial, recipe/tuned_<study>_trial<k>.yaml).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from studio.files import write_text
from studio.images import pyplot, save_figure
from studio.report.jobs import Job
from studio.tune.objectives import objective_terms, objective_values
from studio.tune.recipe import trial_settings, usage, write_recipe


@dataclass
class Trial:
    number: int
    job: Job
    params: dict                 # searched key -> value, as the job got it
    values: list[float] | None   # None: the trial failed


@dataclass
class Tuning:
    study: str
    directions: list[str]        # maximize / minimize, one per objective
    objectives: list[str]        # each objective as a formula of metrics
    searched: list[str]
    trials: list[Trial]
    best: list[Trial]            # one objective: the best trial; several: the Pareto front
    recipes: dict                # recipe name -> trial number
    fixed: list[str] = field(default_factory=list)  # keys hydra.sweeper.params holds at one value; recipes set them


def find_tuning(sweep_dir: Path, jobs: list[Job]) -> Tuning | None:
    """The sweep's search, if it is one (multirun.yaml with tune.objectives); None otherwise."""
    try:
        cfg = OmegaConf.load(Path(sweep_dir) / "multirun.yaml")
    except (OSError, ValueError):
        return None
    tune = cfg.get("tune")
    tune = OmegaConf.to_container(tune, resolve=False) if OmegaConf.is_config(tune) else {}
    if not objective_terms(tune) or "direction" not in cfg.hydra.sweeper:
        return None
    direction = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False)["direction"]
    directions = [str(d) for d in (direction if isinstance(direction, list) else [direction])]
    searched, fixed = _sweeper_keys(cfg)
    trials = [Trial(int(job.name), job, {k: job.overrides.get(k, "") for k in searched},
                    _as_list(objective_values(tune, (job.manifest.get("metrics") or {}))) if job.status == "complete"
                    else None) for job in jobs if job.name.isdigit()]
    done = [t for t in trials if t.values is not None]
    best = pareto_front(done, directions)
    if len(directions) == 1 and best:
        best = [max(best, key=lambda t: t.values[0] * _sign(directions[0]))]
    study = str(cfg.hydra.sweeper.get("study_name") or "study")
    names = {f"tuned_{study}": best[0].number} if len(best) == 1 else \
        {f"tuned_{study}_trial{t.number}": t.number for t in best}
    return Tuning(study, directions, [_formula(o) for o in objective_terms(tune)], searched, trials, best, names,
                  fixed)


def _as_list(value) -> list[float] | None:
    return None if value is None else [value] if isinstance(value, float) else list(value)


def _sign(direction: str) -> float:
    return 1.0 if direction.endswith("maximize") else -1.0


def _formula(terms: dict) -> str:
    """{judge_recognition: 1, realism_ratio: -0.01} -> 'judge_recognition - 0.01 realism_ratio'."""
    text = " ".join(f"{'-' if w < 0 else '+'} {'' if abs(w) == 1 else f'{abs(w):g} '}{m}" for m, w in terms.items())
    return text[2:] if text.startswith("+ ") else text


def _sweeper_keys(cfg) -> tuple[list[str], list[str]]:
    """(searched, fixed): the keys the sweeper searched (sweeps in hydra.sweeper.params and on the command line),
    and those hydra.sweeper.params holds at one value and nothing searched (e.g. `steps: 64`): a recipe must set
    them too, or it would render with the config's own value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.to_container(cfg.hydra.sweeper.get("params") or {}, resolve=False)
    parser = OverridesParser.create()
    given = parser.parse_overrides([f"{k}={v}" for k, v in params.items()])
    task = parser.parse_overrides([str(o) for o in cfg.hydra.overrides.task])
    searched = list(dict.fromkeys(o.key_or_group for o in given + task if o.is_sweep_override()))
    return searched, [o.key_or_group for o in given if not o.is_sweep_override() and o.key_or_group not in searched]


def pareto_front(trials: list[Trial], directions: list[str]) -> list[Trial]:
    """The trials no other trial beats in every objective (ties kept), in trial order."""
    signs = [_sign(d) for d in directions]
    score = [[s * v for s, v in zip(signs, t.values)] for t in trials]

    def dominated(i: int) -> bool:
        return any(all(o >= m for o, m in zip(other, score[i])) and other != score[i] for other in score)

    return [t for i, t in enumerate(trials) if not dominated(i)]


# --- what the report writes ----------------------------------------------------------------------
def write_trials(sweep_dir: Path, tuning: Tuning) -> dict[str, Path]:
    """trials.csv, trials.md, plots/trials.png, plots/pareto_front.png (several objectives) and the recipes."""
    sweep_dir = Path(sweep_dir)
    paths = {"trials.csv": sweep_dir / "trials.csv", "trials.md": sweep_dir / "trials.md"}
    header, rows = _rows(tuning)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    write_text(paths["trials.csv"], out.getvalue())
    for name, number in tuning.recipes.items():
        paths[f"recipe/{name}.yaml"] = _recipe(sweep_dir, tuning, name, number)
    write_text(paths["trials.md"], _markdown(sweep_dir, tuning, header, rows))
    paths["plots/trials.png"] = plot_trials(sweep_dir / "plots" / "trials.png", tuning)
    if len(tuning.directions) > 1:
        paths["plots/pareto_front.png"] = plot_front(sweep_dir / "plots" / "pareto_front.png", tuning)
    return paths


def _rows(tuning: Tuning) -> tuple[list[str], list[list]]:
    best = {t.number for t in tuning.best}
    mark = "best" if len(tuning.directions) == 1 else "pareto_front"
    header = ["trial", "status", *tuning.searched, *tuning.objectives, mark]
    rows = []
    for t in tuning.trials:
        values = [f"{v:.6g}" for v in t.values] if t.values else [""] * len(tuning.objectives)
        rows.append([t.number, "complete" if t.values else "failed", *(t.params[k] for k in tuning.searched),
                     *values, int(t.number in best)])
    return header, rows


def _markdown(sweep_dir: Path, tuning: Tuning, header: list[str], rows: list[list]) -> str:
    goals = ", ".join(f"{d} {o}" for d, o in zip(tuning.directions, tuning.objectives))
    lines = [f"# Study {tuning.study}: {len(tuning.trials)} trial(s), {goals}", ""]
    lines += [f"Recipe {name} (trial {number}): `{usage(name, sweep_dir)}`" for name, number in tuning.recipes.items()]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _recipe(sweep_dir: Path, tuning: Tuning, name: str, number: int) -> Path:
    """The trial as a recipe: its job's param (and generator) choice, its regularizer's terms, its searched values
    and the values the search held fixed."""
    trial = next(t for t in tuning.trials if t.number == number)
    fixed = {k: trial.job.overrides[k] for k in tuning.fixed if k in trial.job.overrides}
    choices, settings = trial_settings(trial.job.manifest.get("config") or {}, {**fixed, **trial.params})
    choices.update({g: trial.job.choices[g] for g in ("param", "generator") if g in trial.job.choices})
    scores = ", ".join(f"{o} = {v:.4g}" for o, v in zip(tuning.objectives, trial.values))
    return write_recipe(sweep_dir, name, choices, settings,
                        f"Optuna trial {number} of the study {tuning.study!r} in {Path(sweep_dir).resolve()}: {scores}")


def plot_trials(path: Path, tuning: Tuning) -> Path:
    """Each objective per trial (failed trials left out), with the best value so far as a line."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tuning.objectives), figsize=(5.5 * len(tuning.objectives), 3.6), squeeze=False)
    done = [t for t in tuning.trials if t.values is not None]
    best = {t.number for t in tuning.best}
    for i, (ax, objective, direction) in enumerate(zip(axes[0], tuning.objectives, tuning.directions)):
        x, y = [t.number for t in done], [t.values[i] for t in done]
        pick = max if direction.endswith("maximize") else min
        ax.plot(x, [pick(y[:k + 1]) for k in range(len(y))], color="0.4", linewidth=1, label=f"best so far ({pick.__name__})")
        ax.scatter(x, y, s=18, c=["C3" if t.number in best else "C0" for t in done], zorder=3)
        ax.set_xlabel("trial")
        ax.set_ylabel(objective)
        ax.set_title(f"{direction} {objective}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
    return path


def plot_front(path: Path, tuning: Tuning) -> Path:
    """The first two objectives of every trial, the Pareto front joined and labelled with trial numbers."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    done = [t for t in tuning.trials if t.values is not None]
    ax.scatter([t.values[0] for t in done], [t.values[1] for t in done], s=16, color="C0", label="trial")
    front = sorted(tuning.best, key=lambda t: t.values[0])
    ax.plot([t.values[0] for t in front], [t.values[1] for t in front], "o-", color="C3", label="Pareto front")
    for t in front:
        ax.annotate(str(t.number), (t.values[0], t.values[1]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"{tuning.objectives[0]} ({tuning.directions[0]})")
    ax.set_ylabel(f"{tuning.objectives[1]} ({tuning.directions[1]})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return path
