"""The validated evaluation tables (`EvaluationTables`: matching per image, the writer's cap)
and the numbers ``cli.py evaluate`` prints from the matched records."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from common.defaults import HIT_MIN_DISTANCE
from common.tables import BOX_COLUMNS
from metrics.froc import (
    MatchedDetections,
    bootstrap_fauc,
    fauc,
    lowest_score_read,
    match_detections,
    operating_point,
    threshold_at_fp,
)


@dataclass(frozen=True, eq=False)
class EvaluationTables:
    """The three evaluation tables, validated. ``image_ids`` in the images file's order;
    ``predictions`` and ``ground_truth`` keep their files' columns (ids as text, box and
    score columns as float64) plus ``image_index``, the row of their image in ``image_ids``.

    ``predictions`` holds the rows evaluation reads: all of them, or with ``pruned_below``
    those :func:`metrics.froc.prune_detections` kept (``n_predictions`` counts the file's
    rows). ``dropped_score``: per image, the highest score the writer's cap left out (nan
    where it left none; None when the images file does not say)."""

    image_ids: np.ndarray
    predictions: pd.DataFrame
    ground_truth: pd.DataFrame
    n_predictions: int = -1
    pruned_below: float = -np.inf
    dropped_score: np.ndarray | None = None

    def sorted_by_image(self) -> EvaluationTables:
        """The same tables with the images in sorted id order (runs on different numbers of
        processes list them in different orders; comparisons need one)."""
        order = np.argsort(self.image_ids.astype(str), kind="stable")
        position = np.empty_like(order)
        position[order] = np.arange(order.size)
        tables = []
        for table in (self.predictions, self.ground_truth):
            table = table.assign(image_index=position[table["image_index"].to_numpy()])
            tables.append(table.sort_values("image_index", kind="stable").reset_index(drop=True))
        dropped = None if self.dropped_score is None else self.dropped_score[order]
        return replace(
            self,
            image_ids=self.image_ids[order],
            predictions=tables[0],
            ground_truth=tables[1],
            dropped_score=dropped,
        )

    def match(
        self, min_distance: float = HIT_MIN_DISTANCE, inclusive: bool = False
    ) -> MatchedDetections:
        """Match the predictions to the lesions; lesion i is row i of ``ground_truth`` and
        detection j row j of ``predictions``."""
        return match_detections(
            self.predictions["image_index"].to_numpy(),
            self.predictions[list(BOX_COLUMNS)].to_numpy(np.float64),
            self.predictions["score"].to_numpy(np.float64),
            self.ground_truth["image_index"].to_numpy(),
            self.ground_truth[list(BOX_COLUMNS)].to_numpy(np.float64),
            n_images=self.image_ids.size,
            min_distance=min_distance,
            inclusive=inclusive,
            image_ids=self.image_ids,
            pruned_below=self.pruned_below,
        )

    def capped_above(self, matched: MatchedDetections, max_fp: float) -> int | None:
        """How many images had a detection left out by the writer's cap (``max_detections``)
        that scores at or above the lowest score FAUC-``max_fp`` (or, on an image with
        lesions, FAUC-``max_fp``+) reads on these images; None when the images file does not
        say. Nan scores (nothing left out) never count."""
        if self.dropped_score is None:
            return None
        dropped = self.dropped_score
        binding = dropped >= lowest_score_read(matched, max_fp)
        has_lesion = np.bincount(matched.lesion_image, minlength=matched.n_images) > 0
        if has_lesion.any():
            positive = lowest_score_read(matched.positive_images(), max_fp)
            binding[has_lesion] |= dropped[has_lesion] >= positive
        return int(np.count_nonzero(binding))


def evaluation_report(
    matched: MatchedDetections,
    max_fp: float = 1.0,
    target_fp: float = 1.0,
    threshold: float | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """The numbers ``evaluate`` prints, as a JSON-ready dict (nan and inf become None)."""
    positive = matched.positive_images()
    if n_boot > 0:
        overall = bootstrap_fauc(matched, max_fp, n_boot=n_boot, seed=seed)
        positive_interval = bootstrap_fauc(positive, max_fp, n_boot=n_boot, seed=seed)
        fauc_ci = [overall.low, overall.high]
        positive_ci = [positive_interval.low, positive_interval.high]
    else:
        fauc_ci = positive_ci = None
    at_target = threshold_at_fp(matched, target_fp)
    used = at_target if threshold is None else float(threshold)
    point = operating_point(matched, used)
    report = {
        "fauc": fauc(matched, max_fp),
        "fauc_ci95": fauc_ci,
        "fauc_positive": fauc(positive, max_fp),
        "fauc_positive_ci95": positive_ci,
        "max_fp": max_fp,
        "n_images": matched.n_images,
        "n_positive_images": positive.n_images,
        "n_lesions": matched.n_lesions,
        "n_detections": matched.n_detections,
        "target_fp": target_fp,
        "threshold_at_target_fp": at_target,
        "threshold": used,
        "threshold_source": "target_fp" if threshold is None else "given",
        "sensitivity_at_threshold": point.sensitivity,
        "fp_rate_at_threshold": point.fp_rate,
        "lesions_found_at_threshold": point.n_lesions_found,
        "n_boot": n_boot,
        "seed": seed,
    }
    return _json_ready(report)


def _json_ready(value):
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def cap_message(images: int, max_fp: float, who: str = "evaluate") -> str:
    """The one line that says the writer's cap may have lowered FAUC-x."""
    return (
        f"{who}: on {images} image(s) the prediction writer's cap (max_detections) left "
        f"out a detection scoring at or above the lowest score FAUC-{max_fp:g} (or "
        f"FAUC-{max_fp:g}+) reads: those numbers and their CIs may be lower than with every "
        "detection; write the predictions again with a larger --predictions.max_detections"
    )
