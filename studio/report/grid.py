"""A report's comparison grid: rows = targets, columns = groups, each cell one image."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from studio.images import pyplot as _pyplot
from studio.images import save_figure
from studio.report.plots import group_label

def _load_rgb(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def comparison_grid(path: Path, rows: list[dict], columns: list[str], cell: int = 56) -> tuple[list, list] | None:
    """Rows = targets (subjects), columns = column groups; each cell the lowest seed's image.
    Returns the (row, column) labels, or None when there is no image."""
    import numpy as np

    cells: OrderedDict = OrderedDict()
    column_labels: list[str] = []
    for row in rows:
        if row["status"] != "complete" or not row.get("image") or "_subject" not in row:
            continue
        label = group_label(row, columns)
        if label not in column_labels:
            column_labels.append(label)
        key = (row["_subject"], label)
        seed = row.get("seed", 0)
        if key not in cells or (isinstance(seed, (int, float)) and seed < cells[key][0]):
            cells[key] = (seed if isinstance(seed, (int, float)) else 0, row["image"])
    if not cells:
        return None
    subjects = list(OrderedDict.fromkeys(k[0] for k in cells))
    sweep_dir = path.parent
    images = {k: _load_rgb(sweep_dir / v[1]) for k, v in cells.items()}
    size = max(max(a.shape[:2]) for a in images.values())
    factor = max(1, cell // size)
    side, pad = size * factor, 2
    mosaic = np.full((len(subjects) * (side + pad) + pad, len(column_labels) * (side + pad) + pad, 3), 128, np.uint8)
    for (subject, label), array in images.items():
        r, c = subjects.index(subject), column_labels.index(label)
        array = array.repeat(factor, 0).repeat(factor, 1)
        y, x = pad + r * (side + pad), pad + c * (side + pad)
        mosaic[y:y + array.shape[0], x:x + array.shape[1]] = array
    plt = _pyplot()
    h, w = mosaic.shape[:2]
    fig, ax = plt.subplots(figsize=(w / 100 + 1.6, h / 100 + 1.2))
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([pad + c * (side + pad) + side / 2 for c in range(len(column_labels))])
    ax.set_xticklabels(column_labels, rotation=30, ha="left", fontsize=8)
    ax.xaxis.tick_top()
    ax.set_title(f"rows: targets; columns: {' / '.join(columns) or 'all'} (lowest seed)", fontsize=9, pad=28)
    ax.set_yticks([pad + r * (side + pad) + side / 2 for r in range(len(subjects))])
    ax.set_yticklabels(subjects, fontsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    save_figure(fig, path)
    return subjects, column_labels
