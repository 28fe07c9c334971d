"""Gallery of test lesions that one model finds and the other misses (the paper's Figure S4).

Each row is one lesion: each model's own image (its modality), cropped around the lesion, the
ground truth in red and the model's detections above its validation threshold in green.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from datamodules.dicom import read_dicom, to_unit_range
from metrics.evaluate import BOX_COLUMNS
from metrics.froc import threshold_at_fp

if TYPE_CHECKING:
    from analysis.report import ModelRun


def plot_gallery(models: list[ModelRun], flags: pd.DataFrame, path: str | Path,
                 target_fp: float = 1.0, cases_per_side: int = 4, seed: int = 0) -> Path:
    """Two blocks: up to ``cases_per_side`` lesions found only by the first model, then only
    by the second; in each block a column per lesion, a row per model's view. With more than
    two models, the first two."""
    first, second = models[0], models[1]
    thresholds = {model.name: threshold_at_fp(model.matched["val"], target_fp)
                  for model in (first, second)}
    rng = np.random.default_rng(seed)
    blocks = []
    for winner, loser in ((first, second), (second, first)):
        only = flags.index[flags[winner.name] & ~flags[loser.name]].to_numpy()
        blocks.append((winner, loser, list(rng.permutation(only)[:cases_per_side])))

    columns = max(cases_per_side, 1)
    figure = Figure(figsize=(2.3 * columns, 2.45 * 4 + 0.9), dpi=110)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(4, columns, top=0.93, bottom=0.02, left=0.06, right=0.99,
                               hspace=0.35, wspace=0.08)
    for block, (winner, loser, keys) in enumerate(blocks):
        for row, model in enumerate((first, second)):
            for column in range(columns):
                axes = figure.add_subplot(grid[2 * block + row, column])
                axes.set_xticks([])
                axes.set_yticks([])
                if column == 0:
                    axes.set_ylabel(f"{model.name}\n({model.modality.upper()})", fontsize=8)
                if column >= len(keys):  # an empty slot; the first keeps its row label
                    axes.set_frame_on(False)
                    continue
                _draw_case(axes, model, keys[column], thresholds[model.name])
                found = model.name == winner.name
                axes.set_title("found" if found else "missed", fontsize=8,
                               color="darkgreen" if found else "darkred")
        title = (f"Found by {winner.name}, missed by {loser.name}" if keys
                 else f"No test lesion is found by {winner.name} and missed by {loser.name}")
        top = grid[2 * block, 0].get_position(figure).y1
        figure.text(0.5, top + 0.022, title, ha="center", fontsize=10, weight="bold")
    figure.suptitle("Test lesions one model finds and the other misses. Red: lesion; green: "
                    "detections above the model's 1 FP/image validation threshold",
                    fontsize=9, y=0.995)
    path = Path(path)
    figure.savefig(path)
    return path


def _draw_case(axes, model: ModelRun, key, threshold: float) -> None:
    lesions = model.lesions["test"]
    column = "lesion_id" if "lesion_id" in lesions.columns else "image_id"
    lesion = lesions[lesions[column] == key].iloc[0]
    image_id = lesion["image_id"]
    path = lesion[f"{model.modality}_path"]
    pixels, dataset = read_dicom(path)
    image = to_unit_range(pixels, dataset)
    x1, y1, x2, y2 = (float(lesion[c]) for c in BOX_COLUMNS)
    half = max(x2 - x1, y2 - y1, 40.0) * 1.6
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(max(cx - half, 0)), int(max(cy - half, 0))
    right, bottom = int(min(cx + half, image.shape[1])), int(min(cy + half, image.shape[0]))
    axes.imshow(image[top:bottom, left:right], cmap="gray", vmin=0, vmax=1,
                extent=(left, right, bottom, top))
    axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", lw=1.4))
    predictions = model.tables["test"].predictions
    shown = predictions[(predictions["image_id"] == image_id) & (predictions["score"] >= threshold)]
    for _, detection in shown.iterrows():
        dx1, dy1, dx2, dy2 = (float(detection[c]) for c in BOX_COLUMNS)
        axes.add_patch(Rectangle((dx1, dy1), dx2 - dx1, dy2 - dy1, fill=False,
                                 edgecolor="lime", lw=1.0))
    axes.set_xlim(left, right)
    axes.set_ylim(bottom, top)
    axes.set_xticks([])
    axes.set_yticks([])
    kind = lesion.get("lesion_type", "")
    density = lesion.get("density", "")
    axes.set_xlabel(f"{image_id} {kind} density {density}".strip(), fontsize=7)
