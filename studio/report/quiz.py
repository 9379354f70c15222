"""The gallery's two-choice quiz (Borowski et al. 2021, Zimmermann et al. 2021): a render beside two
natural images, one of its target's top exemplars and one of its bottom ones, in random order; the
reviewer picks the one the unit prefers. The share of right picks per recipe measures how well that
recipe's renders explain the unit to a person.

One question per gallery image whose manifest item has exemplars. Everything random is drawn here,
from report.quiz_seed and the question's own job and image, so a question is the same in every report
of the sweep and does not move when other jobs are added: which top and which bottom exemplar (a cell
of each k-image grid, cut out under gallery/quiz/) and which side the top one is on. The order mixes
the groups round-robin, so a reviewer who stops early has answered about as many of each.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, astuple, dataclass
from pathlib import Path

from PIL import Image

from studio.files import atomic_path
from studio.images import grid_tiles, slug, square_columns

SIDES = ("left", "right")
OUT = "quiz"  # the cut-out exemplars, under gallery/


@dataclass(frozen=True)
class Question:
    job: str
    group: str  # the card's group label (studio.report.plots.group_label)
    target: str
    seed: str
    image: str  # the render, relative to the sweep dir
    image_sha: str  # its content: answers from another sweep do not match
    top: str  # the exemplar grids, relative to the sweep dir
    bottom: str
    top_cell: int  # the cells shown (0 = the most extreme)
    bottom_cell: int
    columns: int  # cells per row of the grids
    cells: int  # exemplars.k
    top_side: str  # "left" or "right"

    def tile(self, which: str) -> str:
        """The cut-out exemplar's path under gallery/."""
        cell = self.top_cell if which == "top" else self.bottom_cell
        return f"{OUT}/{self.job}/{slug(self.target)}_{which}_{cell}.png"


def sweep_id(sweep_dir: Path) -> str:
    """The name the page and the answers carry: `<experiment>/<time>` (as the gallery's title)."""
    return f"{sweep_dir.parent.name}/{sweep_dir.name}"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _item(job, image: str) -> dict:
    return next((i for i in job.manifest.get("items") or [] if i.get("image") == image), {})


def _question(job, row: dict, group: str, sweep_dir: Path, seed: int) -> Question | None:
    """The question of one gallery image, or None where its item has no exemplars."""
    item = _item(job, row["_images"].get("image"))
    pair = item.get("exemplars") or {}
    cells = int(((job.manifest.get("config") or {}).get("exemplars") or {}).get("k") or 0)
    if not (job.path and cells and {"top", "bottom"} <= set(pair)):
        return None
    rng = random.Random(f"{seed}|{job.name}|{row['image']}")  # a str seed hashes the same in every process
    return Question(job.name, group, str(row.get("_subject", "")), str(row.get("seed", "")), row["image"],
                    _sha(sweep_dir / row["image"]), str((job.path / pair["top"]).relative_to(sweep_dir)),
                    str((job.path / pair["bottom"]).relative_to(sweep_dir)), rng.randrange(cells),
                    rng.randrange(cells), square_columns(cells), cells, rng.choice(SIDES))


def _interleave(questions: list[Question], seed: int) -> list[Question]:
    """Shuffled within each group, then one of each group in turn (groups in a shuffled order)."""
    rng = random.Random(f"{seed}|order")
    groups: dict[str, list[Question]] = {}
    for q in questions:
        groups.setdefault(q.group, []).append(q)
    for members in groups.values():
        rng.shuffle(members)
    order = sorted(groups)
    rng.shuffle(order)
    longest = max((len(m) for m in groups.values()), default=0)
    return [groups[g][i] for i in range(longest) for g in order if i < len(groups[g])]


def quiz_questions(sweep_dir: Path, jobs, rows: list[dict], names: list[str], seed: int = 0) -> list[Question]:
    """Every question of the sweep, in the order the page asks them."""
    by_name = {j.name: j for j in jobs}
    out = []
    for row in rows:
        if row["status"] == "complete" and row.get("image"):
            group = " / ".join(str(row[n]) for n in names) if names else "all"
            question = _question(by_name[row["job"]], row, group, sweep_dir, seed)
            if question is not None:
                out.append(question)
    return _interleave(out, seed)


def write_tiles(questions: list[Question], sweep_dir: Path, gallery: Path) -> set[Path]:
    """Cut each question's two exemplars out of their grids into gallery/quiz/; returns the files."""
    written: set[Path] = set()
    for q in questions:
        for which, grid_path, cell in (("top", q.top, q.top_cell), ("bottom", q.bottom, q.bottom_cell)):
            target = gallery / q.tile(which)
            if target in written:
                continue
            with Image.open(sweep_dir / grid_path) as mosaic:
                tile = grid_tiles(mosaic, q.cells, q.columns)[cell]
                with atomic_path(target) as tmp:
                    tile.save(tmp, format="PNG")
            written.add(target)
    return written


def page_data(questions: list[Question], sweep_dir: Path) -> dict:
    """What the page needs: the questions with their pictures' paths under gallery/."""
    fingerprint = hashlib.sha256(repr([astuple(q) for q in questions]).encode()).hexdigest()[:16]
    return {"sweep": sweep_id(sweep_dir), "key": fingerprint,  # the page keeps each set of questions' answers apart
            "questions": [{**{k: v for k, v in asdict(q).items() if k not in ("top", "bottom", "columns", "cells")},
                           "render": f"images/{q.image}", "top": q.tile("top"), "bottom": q.tile("bottom")}
                          for q in questions]}
