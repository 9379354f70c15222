"""What the gallery quiz adds to `studio report` on a sweep the size of experiment=compare_regularizers
(10 recipes x {10 classes, 12 filters} x 4 seeds = 880 renders, k = 9 exemplars per side, the same
exemplars for every recipe, as in a real sweep): drawing the questions (a content hash per render and
grid), cutting their exemplars out of the grids, and scoring a CSV of answers; beside the whole report's
time. A hand-made sweep (random 28 x 28 images), no model needed.

    python bench/quiz_report.py                 # prints a Markdown table
    python bench/quiz_report.py --answers 500
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from studio.images import grid, save_png, square_columns
from studio.report import report
from studio.report.answers import COLUMNS, read_answers
from studio.report.jobs import find_jobs
from studio.report.quiz import page_data, quiz_questions, write_tiles
from studio.report.tables import job_rows, key_columns

RECIPES = ["none", "l2", "tv", "l2_tv", "blur", "clip", "standard", "fft", "latent_gan", "latent_vae"]
OBJECTIVES = {"class": [f"class:{c}" for c in range(10)], "channel": [f"conv2:{c}" for c in range(12)]}


def make_sweep(root: Path, seeds: int, k: int) -> Path:
    """A sweep dir as `studio visualize` leaves it: per job, renders, exemplar grids and manifest.json."""
    gen = torch.Generator().manual_seed(0)
    # one exemplar search per target, the same for every recipe (as in a real sweep: one model, one data split)
    found = {t: {w: torch.rand(k, 1, 28, 28, generator=gen) for w in ("top", "bottom")} for ts in OBJECTIVES.values() for t in ts}
    for n, (recipe, objective) in enumerate((r, o) for r in RECIPES for o in OBJECTIVES):
        job = root / str(n)
        (job / ".hydra").mkdir(parents=True)
        choices = {"recipe": recipe, "objective": objective}
        OmegaConf.save(OmegaConf.create([f"+recipe={recipe}", f"objective={objective}"]), job / ".hydra" / "overrides.yaml")
        OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": choices}}}), job / ".hydra" / "hydra.yaml")
        items = []
        for target in OBJECTIVES[objective]:
            name = target.replace(":", "_")
            pair = {w: f"exemplars/{name}_{w}.png" for w in ("top", "bottom")}
            for which, rel in pair.items():
                save_png(grid(found[target][which], square_columns(k)), job / rel)
            for seed in range(seeds):
                image = f"images/{name}_s{seed}.png"
                save_png(torch.rand(1, 28, 28, generator=gen), job / image)
                items.append({"target": target, "seed": seed, "image": image, "exemplars": pair,
                              "metrics": {"target_prob": random.Random(f"{n}{target}{seed}").random()}})
        (job / "manifest.json").write_text(json.dumps({
            "command": "visualize", "status": "complete", "config": {"exemplars": {"k": k}},
            "metrics": {"images": len(items)}, "items": items, "artifacts": {}}))
    return root


def timed(fn):
    began = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--answers", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep = make_sweep(Path(tmp) / "bench" / "sweep", args.seeds, args.k)
        jobs, _ = find_jobs(sweep)
        names = key_columns(jobs, ["recipe", "objective"])
        rows = job_rows(jobs, ["recipe", "objective"], names, sweep)
        questions, t_questions = timed(lambda: quiz_questions(sweep, jobs, rows, names))
        tiles, t_tiles = timed(lambda: write_tiles(questions, sweep, sweep / "gallery"))
        data = page_data(questions, sweep)
        answers = Path(tmp) / "answers.csv"
        with open(answers, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for i, q in enumerate(data["questions"][:args.answers]):
                writer.writerow({**q, "sweep": data["sweep"], "question": i, "answer": "left"})
        _, t_read = timed(lambda: read_answers(answers, questions, sweep))
        _, t_report = timed(lambda: report(sweep, paired=False))
        _, t_quiz_report = timed(lambda: report(sweep, paired=False, quiz=answers))
        page_kb = (sweep / "gallery" / "index.html").stat().st_size / 1024
    print(f"| {len(questions)} questions, k = {args.k} | seconds |\n| --- | --- |")
    print(f"| draw the questions (hash every render) | {t_questions:.2f} |")
    print(f"| cut out the {len(tiles)} exemplar pictures they show (first report) | {t_tiles:.2f} |")
    print(f"| read and check {min(args.answers, len(questions))} answers | {t_read:.3f} |")
    print(f"| whole report (no paired tests), quiz in the gallery | {t_report:.1f} |")
    print(f"| the same with --quiz (scored, tables, plot) | {t_quiz_report:.1f} |")
    print(f"gallery/index.html: {page_kb:.0f} KiB")


if __name__ == "__main__":
    main()
