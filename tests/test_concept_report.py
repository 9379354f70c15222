"""`studio report` on real sweeps of `studio tcav` and `studio dissect` jobs: the TCAV scores and p-values across
jobs, the units labelled per concept across jobs, a section of table.md each, and the jobs' plots and strips in
the gallery."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from studio.tracking import read_offline_run
from tests.conftest import read_manifest, run_studio

FAST = ["trainer.enable_progress_bar=false"]


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _gallery(sweep_dir: Path) -> dict:
    page = (sweep_dir / "gallery" / "index.html").read_text()
    start = page.index('<script id="gallery-data" type="application/json">')
    return json.loads(page[page.index(">", start) + 1:page.index("</script>", start)])


@pytest.fixture(scope="module")
def tcav_sweep(outputs, tmp_path_factory):
    """Two seeds of the random sets on the Clever Hans model (test_tcav's), mark and thick, conv3 and fc1,
    classes 0 and 1; then `studio report` averaging over the seeds (W&B on: the report mirrors its table)."""
    sweep_dir = tmp_path_factory.mktemp("tcav-sweep") / "sweep"
    result = run_studio("tcav", "-m", "experiment=clever_hans", "tcav.seed=0,1", "tcav.classes=[0,1]",
                        "tcav.layers=[conv3,fc1]", "~concepts.thin", "~concepts.background_light", "logger=none",
                        *FAST, f"hydra.sweep.dir={sweep_dir}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    report = run_studio("report", str(sweep_dir), "report.average_over=[tcav.seed]",
                        f"hydra.run.dir={sweep_dir.parent / 'report'}", outputs=outputs)
    assert report.returncode == 0, report.stderr
    return sweep_dir, read_manifest(sweep_dir.parent / "report")


def test_a_tcav_sweep_reports_each_concept_layer_and_class_across_jobs(tcav_sweep):
    sweep_dir, _ = tcav_sweep
    rows = _csv(sweep_dir / "tcav.csv")
    assert [(r["concept"], r["layer"], r["class"]) for r in rows] == [
        (c, layer, k) for layer in ("conv3", "fc1") for c in ("mark", "thick") for k in ("0", "1")]
    jobs = [json.loads((sweep_dir / j / "manifest.json").read_text())["items"] for j in ("0", "1")]
    for row in rows:
        cell = [next(i for i in items if (i["concept"], i["layer"], str(i["class"])) ==
                     (row["concept"], row["layer"], row["class"])) for items in jobs]
        assert row["jobs"] == "2"
        assert float(row["score"]) == pytest.approx(sum(i["score"] for i in cell) / 2)
        assert float(row["p_max"]) == pytest.approx(max(i["p_value"] for i in cell))
        assert int(row["significant_jobs"]) == sum(i["significant"] for i in cell)
        assert len(row["p_values"].split()) == 2
    mark = next(r for r in rows if (r["concept"], r["layer"], r["class"]) == ("mark", "conv3", "0"))
    assert float(mark["score_min"]) >= 0.9 and mark["significant_jobs"] == "2"  # caught with both random sets


def test_the_tcav_report_keeps_the_summary_readable_and_shows_the_plots(tcav_sweep):
    sweep_dir, report = tcav_sweep
    assert report["artifacts"]["tcav.png"] == str((sweep_dir / "tcav.png").resolve())
    header = next(csv.reader(open(sweep_dir / "summary.csv")))
    assert not [c for c in header if c.startswith(("tcav/", "tcav_p/"))]  # in tcav.csv instead: one row each
    assert not [c for c in next(csv.reader(open(sweep_dir / "table.csv"))) if c.startswith("run.tcav/")]
    assert not list((sweep_dir / "plots").glob("tcav_mark*"))
    table = (sweep_dir / "table.md").read_text()
    assert "## TCAV across jobs" in table and "| mark | conv3 | 0 |" in table
    assert (sweep_dir / "tcav.png").stat().st_size > 10_000
    cards = _gallery(sweep_dir)["cards"]
    assert sorted(c["image"] for c in cards) == ["images/0/tcav.png", "images/1/tcav.png"]
    assert all((sweep_dir / "gallery" / c["image"]).is_file() for c in cards)
    logged = read_offline_run(report["artifacts"]["wandb_run"])  # the report's own run
    assert any(row.get("report/tcav/_type") == "table-file" and row.get("report/tcav/nrows") == len(
        _csv(sweep_dir / "tcav.csv")) for row in logged["history"])


@pytest.fixture(scope="module")
def dissect_sweep(outputs, tmp_path_factory):
    """conv2 and conv3 of the Clever Hans model (test_dissect's), then `studio report`."""
    sweep_dir = tmp_path_factory.mktemp("dissect-sweep") / "sweep"
    result = run_studio("dissect", "-m", "experiment=clever_hans", "dissect.layer=conv2,conv3", "logger=none", *FAST,
                        f"hydra.sweep.dir={sweep_dir}", outputs=outputs)
    assert result.returncode == 0, result.stderr
    report = run_studio("report", str(sweep_dir), "logger=none", outputs=outputs)
    assert report.returncode == 0, report.stderr
    return sweep_dir


def test_a_dissect_sweep_reports_units_per_concept_and_the_strips(dissect_sweep):
    sweep_dir = dissect_sweep
    rows = _csv(sweep_dir / "dissect.csv")
    manifests = {j: json.loads((sweep_dir / j / "manifest.json").read_text()) for j in ("0", "1")}
    for job, layer in (("0", "conv2"), ("1", "conv3")):
        mine = {r["concept"]: r for r in rows if r["dissect.layer"] == layer}
        m, items = manifests[job]["metrics"], manifests[job]["items"]
        assert {c: int(float(r["labelled_units"])) for c, r in mine.items()} == {
            k.rpartition("/")[2]: v for k, v in m.items() if k.startswith("dissect/units_per_concept/")}
        best = max((i for i in items if i["concept"] == "mark"), key=lambda i: i["iou"])
        assert mine["mark"]["best_unit"] == f"{best['unit']} (job {job})"
        assert float(mine["mark"]["best_iou"]) == pytest.approx(best["iou"])
    assert "## Network Dissection across jobs" in (sweep_dir / "table.md").read_text()
    cards = _gallery(sweep_dir)["cards"]
    strips = {f"images/{j}/{v}" for j, m in manifests.items() for k, v in m["artifacts"].items()
              if k.startswith("strip_")}
    assert {c["image"] for c in cards} == strips and len(strips) >= 8
    # each job's best mark unit has its strip in the gallery (other mark units only when among the 4 best)
    marks = {(j, max((i for i in m["items"] if i["concept"] == "mark" and i["labelled"]), key=lambda i: i["iou"])["unit"])
             for j, m in manifests.items() if any(i["concept"] == "mark" and i["labelled"] for i in m["items"])}
    assert marks and marks <= {(c["job"], c["facets"]["target"]) for c in cards}
    for card in cards:
        item = next(i for i in manifests[card["job"]]["items"] if i["unit"] == card["facets"]["target"])
        assert card["fields"]["concept"] == item["concept"] and card["fields"]["iou"] == item["iou"]
