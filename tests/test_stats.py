"""Statistics in every comparison: bootstrap intervals that cover the mean as often as they claim, paired
tests that find a planted difference and not a null one, and `studio report`'s paired.csv / paired.md on
hand-made and real sweeps (the one-seed sweep: tests/test_report.py's tiny sweep)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from studio.report import report
from studio.report.paired import COLUMNS
from studio.report.stats import holm, mean_interval, min_pairs, signed_rank
from tests.conftest import run_studio_forked
from tests.test_report import TINY, _item, make_job


def _csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- the numbers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("draw, mean", [(lambda rng: rng.normal(2.0, 1.0, 40), 2.0),
                                        (lambda rng: rng.exponential(1.0, 40), 1.0)])  # skewed, as gains are
def test_the_bootstrap_interval_covers_a_known_mean_at_about_the_nominal_rate(draw, mean):
    rng = np.random.default_rng(7)
    covered = [low <= mean <= high for low, high in (mean_interval(draw(rng), resamples=999) for _ in range(200))]
    assert 0.90 <= np.mean(covered) <= 0.99  # 95% claimed; 200 draws: +- 0.03 by chance


def test_an_interval_needs_two_values_and_a_constant_one_is_a_point():
    assert mean_interval([3.0]) is None
    assert mean_interval([1.0, 1.0, 1.0]) == (1.0, 1.0)  # where BCa would divide by zero, no NaN
    low, high = mean_interval([1] * 39 + [0])  # a 0/1 metric, right almost everywhere
    assert 0.8 <= low < 0.975 < high == 1.0


def test_the_paired_test_finds_a_planted_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 1.0, 40)  # per target x seed: the targets differ a lot ...
    planted = base + 0.5 + rng.normal(0.0, 0.3, 40)  # ... the recipes by a little, on every one of them
    n, median, p = signed_rank(planted, base)
    assert n == 40 and median == pytest.approx(0.5, abs=0.15) and p < 1e-6
    rejections = [signed_rank(base + rng.normal(0, 0.3, 40), base + rng.normal(0, 0.3, 40))[2] < 0.05
                  for _ in range(200)]
    assert np.mean(rejections) <= 0.09  # 5% by construction
    assert signed_rank([1, 2, np.nan], [1, 2, 5]) == (2, 0.0, 1.0)  # NaN pairs out; no difference: p = 1


def test_holm_matches_the_step_down_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max, input order
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # never below an earlier step
    assert min_pairs(0.05) == 6  # 2 / 2^5 = 0.0625, 2 / 2^6 = 0.031


# --- the report on hand-made sweeps ----------------------------------------------------------------
def _planted_sweep(sweep_dir, shift: dict, targets: int = 10, seeds: int = 3):
    """One job per recipe, `targets` classes x `seeds` seeds; a recipe's gain = the target's own + shift."""
    rng = np.random.default_rng(3)
    own = rng.normal(5.0, 2.0, (targets, seeds))
    for k, (recipe, delta) in enumerate(shift.items()):
        noise = rng.normal(0.0, 0.2, (targets, seeds))
        items = [_item(f"class:{t}", s, gain=float(own[t, s] + delta + noise[t, s]), correct=1)
                 for t in range(targets) for s in range(seeds)]
        make_job(sweep_dir, str(k), [f"+recipe={recipe}"], {"recipe": recipe}, items)
    return sweep_dir


def test_report_names_the_planted_winner_and_finds_no_difference_in_the_null_pair(tmp_path, capsys):
    from studio.report import print_report

    result = report(_planted_sweep(tmp_path, {"none": 0.0, "l2": 0.0, "fft": 1.0}), gallery=False)
    rows = _csv(tmp_path / "paired.csv")
    assert list(rows[0]) == COLUMNS
    by_pair = {(r["metric"], r["recipe_a"], r["recipe_b"]): r for r in rows}
    assert sorted(by_pair) == sorted((m, a, b) for m in ("gain", "correct")
                                     for a, b in (("none", "l2"), ("none", "fft"), ("l2", "fft")))
    for other in ("none", "l2"):
        planted = by_pair[("gain", other, "fft")]
        assert planted["n"] == "30" and planted["winner"] == "fft" and float(planted["p_holm"]) < 1e-4
        assert float(planted["median_diff"]) == pytest.approx(-1.0, abs=0.2)
    null = by_pair[("gain", "none", "l2")]
    assert null["winner"] == "" and float(null["p_holm"]) > 0.05
    assert by_pair[("correct", "none", "l2")]["p"] == "1.0"  # the same everywhere: nothing to find
    assert float(null["p_holm"]) >= float(null["p"])

    gain = next(line for line in result.comparison.verdicts if line.startswith("gain"))
    assert gain.startswith("gain: best fft (mean ") and "significant at 0.05" in gain and "not significant" not in gain
    assert "significantly better than 2 of 2 others" in gain
    summary = {s["recipe"]: s for s in _csv(tmp_path / "summary.csv")}
    for s in summary.values():  # the interval holds the mean
        assert float(s["gain_ci_low"]) < float(s["gain"]) < float(s["gain_ci_high"])
    from studio.report.plots import _error_bar

    fft = result.summary[-1]  # the plots' error bars reach the interval's ends (std for a run metric)
    assert _error_bar(fft, "gain") == pytest.approx((fft["gain"] - fft["gain_ci_low"], fft["gain_ci_high"] - fft["gain"]))
    assert _error_bar({"m": 1.0, "m_std": 0.5}, "m") == (0.5, 0.5)
    table = _csv(tmp_path / "table.csv")  # each row carries its group's interval
    assert {(r["recipe"], r["gain_ci_low"]) for r in table} == {(k, s["gain_ci_low"]) for k, s in summary.items()}
    print_report(result)
    out = capsys.readouterr().out
    assert gain in out and "paired tests -> " in out and "[" in out.splitlines()[2]  # the summary shows intervals
    assert "paired.md" in json.loads((tmp_path / "report.json").read_text())["files"]
    assert result.comparison.note == ""  # every pair tested


def test_a_close_race_names_the_best_but_not_a_significant_winner(tmp_path):
    result = report(_planted_sweep(tmp_path, {"none": 0.0, "l2": 0.02}), gallery=False)
    gain = next(line for line in result.comparison.verdicts if line.startswith("gain"))
    assert "not significant at 0.05" in gain and "significantly better than 0 of 1 others" in gain


def test_paired_tests_can_be_turned_off_and_a_single_group_has_nothing_to_compare(tmp_path):
    from studio.report.paired import compare

    _planted_sweep(tmp_path, {"none": 0.0, "l2": 1.0}, targets=3, seeds=2)
    assert report(tmp_path, gallery=False).comparison.note == ""  # 6 pairs: tested
    assert report(tmp_path, gallery=False, paired=False).comparison is None
    assert not (tmp_path / "paired.csv").exists() and not (tmp_path / "paired.md").exists()  # not left from before
    rows = [{"job": "0", "status": "complete", "recipe": "none", "_subject": f"class:{t}", "seed": 0, "_item": {"g": t}}
            for t in range(8)]
    assert compare(rows, [], [], [], ["g"]).note == "none: the sweep has one group, nothing to compare"


def _rows(values: dict, metric: str) -> list[dict]:
    """Job rows as studio.report.tables makes them: one per recipe x target (seed 0)."""
    return [{"job": recipe, "status": "complete", "recipe": recipe, "_subject": f"class:{t}", "seed": 0,
             "_item": {metric: v}} for recipe, vs in values.items() for t, v in enumerate(vs)]


def test_the_verdict_follows_the_metrics_direction_and_says_when_the_median_disagrees_with_the_mean():
    from studio.report.paired import compare

    # 'a' loses on every target but one, where it wins by a mile: the higher mean, the lower median
    values = {"a": [1.0] * 13 + [100.0], "b": [2.0] * 13 + [0.0]}
    summary = [{"recipe": r, "gain": sum(v) / 14} for r, v in values.items()]
    result = compare(_rows(values, "gain"), summary, ["recipe"], [], ["gain"])
    assert result.records[0]["winner"] == "b" and result.records[0]["median_diff"] == -1.0
    assert result.verdicts == ["gain: best a (mean 8.071); vs next best b: median difference -1 over 14 pairs, Holm "
                               "p = 0.0076: significant the other way (the paired median favours b) at 0.05; "
                               "significantly better than 0 of 1 others"]
    summary = [{"recipe": r, "deletion_auc": sum(v) / 14} for r, v in values.items()]  # less is better
    result = compare(_rows(values, "deletion_auc"), summary, ["recipe"], [], ["deletion_auc"])
    assert result.records[0]["winner"] == "a" and result.verdicts[0].startswith("deletion_auc: best b (mean 1.857)")
    assert signed_rank([np.nan], [1.0])[0] == 0  # no pair at all


def test_groups_with_too_few_shared_items_are_left_out_and_counted(tmp_path):
    _planted_sweep(tmp_path, {"none": 0.0, "l2": 1.0})
    make_job(tmp_path, "2", ["+recipe=tv"], {"recipe": "tv"}, [_item("class:0", 0, gain=3.0, correct=1)])
    result = report(tmp_path, gallery=False)
    assert {(r["recipe_a"], r["recipe_b"]) for r in result.comparison.records} == {("none", "l2")}
    assert result.comparison.note == "4 pair(s) of recipe groups share under 6 target x seed items: not tested"


# --- the report on a real sweep --------------------------------------------------------------------
def test_a_real_sweep_gets_paired_tests_with_intervals_on_its_plots(small_cnn, outputs, tmp_path):
    sweep_dir = tmp_path / "sweep"  # 2 recipes x 3 classes x 2 seeds: 6 pairs, the fewest that can test
    result = run_studio_forked("visualize", *TINY, "objective.classes=[0,1,2]", "seeds=2", "+recipe=none,standard",
                               "judge_metrics=false", "logger=none", f"hydra.sweep.dir={sweep_dir}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    rows = _csv(sweep_dir / "paired.csv")
    sanity = {"render_vs_exemplars", "path_similarity", "path_similarity_natural", "randomized_similarity"}
    assert list(rows[0]) == COLUMNS and {r["metric"] for r in rows} == {"objective", "activation_gain", "target_prob",
                                                                        *sanity}  # every per-image metric
    assert all(r["n"] == "6" and (r["recipe_a"], r["recipe_b"]) == ("none", "standard") for r in rows)
    assert all(0 < float(r["p"]) <= float(r["p_holm"]) <= 1 for r in rows)
    assert "activation_gain: best " in result.stdout and "paired tests -> " in result.stdout
    header = next(csv.reader(open(sweep_dir / "table.csv")))
    assert {"activation_gain_ci_low", "activation_gain_ci_high", "target_prob_ci_low"} <= set(header)
    assert (sweep_dir / "plots" / "activation_gain.png").is_file()


def test_a_significance_level_outside_0_to_1_is_one_clear_error(tmp_path):
    from studio.commands import report as report_command
    from studio.errors import StudioError
    from tests.conftest import compose_config

    cfg = compose_config("report", [f"sweep={tmp_path}", "report.alpha=5", "logger=none"])
    with pytest.raises(StudioError, match=r"^report.alpha must lie between 0 and 1 \(the paired tests' significance "
                                          r"level\), not 5$"):
        report_command.run(cfg, None)
    assert not any(tmp_path.iterdir())  # nothing written
