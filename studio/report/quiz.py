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
from studio.images import grid_tiles, square_columns

SIDES = ("left", "right")
OUT = "quiz"  # the cut-out exemplars, under gallery/
PAGE_FIELDS = ("job", "group", "target", "seed", "image", "image_sha", "top_cell", "bottom_cell", "top_side")


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
    top_sha: str  # their content: the recipes of one target share one search, so their cut-outs too
    bottom_sha: str
    top_cell: int  # the cells shown (0 = the most extreme)
    bottom_cell: int
    columns: int  # cells per row of the grids
    cells: int  # exemplars.k
    top_side: str  # "left" or "right"

    def tile(self, which: str) -> str:
        """The cut-out exemplar's path under gallery/: named by its grid's content and cell, one file per picture."""
        sha, cell = (self.top_sha, self.top_cell) if which == "top" else (self.bottom_sha, self.bottom_cell)
        return f"{OUT}/{sha}_{cell}.png"


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
    top, bottom = (str((job.path / pair[w]).relative_to(sweep_dir)) for w in ("top", "bottom"))
    return Question(job.name, group, str(row.get("_subject", "")), str(row.get("seed", "")), row["image"],
                    _sha(sweep_dir / row["image"]), top, bottom, _sha(sweep_dir / top), _sha(sweep_dir / bottom),
                    rng.randrange(cells), rng.randrange(cells), square_columns(cells), cells, rng.choice(SIDES))


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
    """Cut each question's two exemplars out of their grids into gallery/quiz/ (each grid read once, each
    picture written once); returns the files."""
    wanted: dict[Path, tuple[str, int, int, int]] = {}  # tile -> (grid, cell, cells, columns)
    for q in questions:
        wanted.setdefault(gallery / q.tile("top"), (q.top, q.top_cell, q.cells, q.columns))
        wanted.setdefault(gallery / q.tile("bottom"), (q.bottom, q.bottom_cell, q.cells, q.columns))
    by_grid: dict[tuple, list[tuple[Path, int]]] = {}
    for target, (grid_path, cell, cells, columns) in wanted.items():
        if not target.exists():  # named by content and written atomically: one that exists is this picture
            by_grid.setdefault((grid_path, cells, columns), []).append((target, cell))
    for (grid_path, cells, columns), tiles in by_grid.items():
        with Image.open(sweep_dir / grid_path) as mosaic:
            cut = grid_tiles(mosaic, cells, columns)
        for target, cell in tiles:
            with atomic_path(target) as tmp:
                cut[cell].save(tmp, format="PNG")
    return set(wanted)


def page_data(questions: list[Question], sweep_dir: Path) -> dict:
    """What the page needs: the questions with their pictures' paths under gallery/."""
    fingerprint = hashlib.sha256(repr([astuple(q) for q in questions]).encode()).hexdigest()[:16]
    return {"sweep": sweep_id(sweep_dir), "key": fingerprint,  # the page keeps each set of questions' answers apart
            "questions": [{**{k: v for k, v in asdict(q).items() if k in PAGE_FIELDS},
                           "render": f"images/{q.image}", "top": q.tile("top"), "bottom": q.tile("bottom")}
                          for q in questions]}
