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
    """Up to ``cases_per_side`` lesions found only by the first model, then only by the
    second, each model's view side by side. With other than two models, the first two."""
    first, second = models[0], models[1]
    thresholds = {model.name: threshold_at_fp(model.matched["val"], target_fp)
                  for model in models[:2]}
    rng = np.random.default_rng(seed)
    cases = []
    for winner, loser in ((first, second), (second, first)):
        only = flags.index[flags[winner.name] & ~flags[loser.name]].to_numpy()
        chosen = rng.permutation(only)[:cases_per_side] if only.size else []
        cases.extend((key, winner.name) for key in chosen)

    rows = max(len(cases), 1)
    figure = Figure(figsize=(2.6 * 2, 2.7 * rows), dpi=110)
    FigureCanvasAgg(figure)
    if not cases:
        axes = figure.add_subplot()
        axes.axis("off")
        axes.text(0.5, 0.5, "No lesion is found by one model and missed by the other.",
                  ha="center", va="center")
    for row, (key, winner) in enumerate(cases):
        for column, model in enumerate((first, second)):
            axes = figure.add_subplot(rows, 2, row * 2 + column + 1)
            _draw_case(axes, model, key, thresholds[model.name])
            verdict = "found" if model.name == winner else "missed"
            axes.set_title(f"{model.name} ({model.modality.upper()}): {verdict}", fontsize=8,
                           color="darkgreen" if verdict == "found" else "darkred")
    figure.suptitle("Test lesions found by one model only (red: lesion, green: detections "
                    "above the 1 FP/image validation threshold)", fontsize=8)
    figure.tight_layout()
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
