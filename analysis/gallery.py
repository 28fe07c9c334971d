"""Galleries of test images in the style of the paper's Figure S4: one row per image, one panel
per model on its own modality's image (SM and FFDM side by side), the ground truth in red and
the model's detections above its 1 FP/image validation threshold in green. Images are shown
as stored in the DICOM (boxes are in those pixels), windowed for display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from datamodules.dicom import read_dicom, to_unit_range
from metrics.evaluate import BOX_COLUMNS

if TYPE_CHECKING:
    from analysis.model_runs import ModelRun


def plot_cases(
    title: str,
    image_ids: Sequence[str],
    panels: Sequence[tuple[ModelRun, float]],
    manifest: pd.DataFrame,
    path: str | Path,
    max_cases: int = 4,
    seed: int = 0,
) -> Path:
    """Up to ``max_cases`` of ``image_ids`` (drawn at random with ``seed``), each a row of
    ``panels`` ((model, threshold) pairs), written as a PNG to ``path``."""
    rng = np.random.default_rng(seed)
    chosen = [str(i) for i in rng.permutation(np.asarray(image_ids, dtype=object))[:max_cases]]
    rows, columns = max(len(chosen), 1), len(panels)
    figure = Figure(figsize=(max(2.6 * columns, 6.0), 2.9 * rows + 0.7), dpi=110)
    FigureCanvasAgg(figure)
    paths = manifest.set_index("pair_id")
    if not chosen:
        figure.text(
            0.5,
            0.5,
            f"{title}:\nno test image in this bucket",
            ha="center",
            va="center",
            fontsize=10,
        )
    for row, image_id in enumerate(chosen):
        for column, (model, threshold) in enumerate(panels):
            axes = figure.add_subplot(rows, columns, row * columns + column + 1)
            _draw(axes, model, threshold, image_id, paths.loc[image_id])
            if row == 0:
                axes.set_title(f"{model.name} ({model.modality.upper()})", fontsize=9)
            if column == 0:
                axes.set_ylabel(_caption(image_id, paths.loc[image_id]), fontsize=7)
    figure.suptitle(
        f"{title} ({len(image_ids)} test images; {len(chosen)} shown)\n"
        "red: lesion; green: detections above the model's 1 FP/image validation "
        "threshold",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.94 if chosen else 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _caption(image_id: str, pair: pd.Series) -> str:
    extra = [f"density {pair['density']}"] if "density" in pair.index else []
    return "\n".join([image_id, *extra])


def _draw(axes, model: ModelRun, threshold: float, image_id: str, pair: pd.Series) -> None:
    pixels, dataset = read_dicom(pair[f"{model.modality}_path"])
    axes.imshow(to_unit_range(pixels, dataset), cmap="gray", vmin=0, vmax=1)
    truth = model.tables["test"].ground_truth
    for _, lesion in truth[truth["image_id"] == image_id].iterrows():
        x1, y1, x2, y2 = (float(lesion[c]) for c in BOX_COLUMNS)
        axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="red", lw=1.3))
    predictions = model.tables["test"].predictions
    shown = predictions[(predictions["image_id"] == image_id) & (predictions["score"] >= threshold)]
    for _, detection in shown.iterrows():
        x1, y1, x2, y2 = (float(detection[c]) for c in BOX_COLUMNS)
        axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="lime", lw=1.0))
    axes.set_xticks([])
    axes.set_yticks([])
