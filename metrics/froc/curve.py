"""The FROC curve and FAUC-x from matched detections (:mod:`metrics.froc.matching`), and what
else derives from the same score-sorted events: operating thresholds and points, sensitivity at
given false-positive rates, per-lesion and per-image outcomes.

- The curve has one point per distinct score of a true or false positive (tied scores enter
  together) plus the origin. Sensitivity = found lesions / lesions; FP rate = false positives /
  images, every image counted.
- FAUC-x is the exact area under that curve, points joined by straight segments, from 0 to x
  false positives per image, held flat after its last point, divided by x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metrics.froc.matching import FALSE_POSITIVE, MatchedDetections
from metrics.froc.pruning import _require_threshold, require_false_positives

# the longest run of false positives the bootstrap scorer sums one by one (see _CurveEvents)
_SEGMENT = 1024


@dataclass(frozen=True, eq=False)
class FrocCurve:
    """The empirical FROC curve: point k keeps the detections scoring >= ``thresholds[k]``;
    point 0 is the origin (threshold +inf).

    Each field is ``(K + 1,)`` float64, K the number of distinct scores of true and false
    positives: ``fp_rate`` (false positives per image) and ``sensitivity`` non-decreasing,
    ``thresholds`` decreasing.
    """

    fp_rate: np.ndarray
    sensitivity: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True)
class OperatingPoint:
    """What a model does when its detections scoring >= ``threshold`` are kept."""

    threshold: float
    fp_rate: float
    sensitivity: float
    n_false_positives: int
    n_lesions_found: int


@dataclass(frozen=True, eq=False)
class _CurveEvents:
    """The counted detections of a MatchedDetections, sorted once by descending score.

    ``group_scores`` are the distinct scores of false and true positives, descending;
    ``*_group_end[g]`` is how many false (true) positives score >= ``group_scores[g]``.
    """

    n_images: int
    group_scores: np.ndarray
    fp_image: np.ndarray
    fp_group_end: np.ndarray
    tp_image: np.ndarray
    tp_group_end: np.ndarray
    lesion_image: np.ndarray
    count_type: type  # wide enough for any resample's cumulative counts
    # per false positive, in the order above: how many false positives score >= it (its
    # group's end), and how many true positives score > it and >= it
    fp_end: np.ndarray
    tp_above: np.ndarray
    tp_through: np.ndarray
    tied: np.ndarray  # the false positives with tp_above != tp_through (a TP of equal score)
    # where the bootstrap scorer cuts the false positives into runs it sums at once: at every
    # change of tp_above and at least every _SEGMENT events, always at a group's start
    segment_start: np.ndarray
    pruned: bool  # false positives below the last ones here were left out (prune_detections)

    @classmethod
    def of(cls, matched: MatchedDetections) -> _CurveEvents:
        # pruned records: only the events scoring >= the cut are those of every detection
        # (images with lesions keep lower ones, but the curve there lacks the others' FPs)
        floor = matched.pruned_below
        is_fp = (matched.detection_outcome == FALSE_POSITIVE) & (matched.detection_score >= floor)
        fp_score, fp_image = matched.detection_score[is_fp], matched.detection_image[is_fp]
        found = np.isfinite(matched.lesion_score) & (matched.lesion_score >= floor)
        tp_score, tp_image = matched.lesion_score[found], matched.lesion_image[found]
        group_scores = np.unique(np.concatenate([fp_score, tp_score]))[::-1]
        fp_order = np.argsort(-fp_score, kind="stable")
        tp_order = np.argsort(-tp_score, kind="stable")
        # a resample holds n_images images, none with more events than the busiest image
        busiest = max(np.bincount(fp_image).max(initial=0), np.bincount(tp_image).max(initial=0))
        fp_sorted, tp_ascending = fp_score[fp_order], np.sort(tp_score)
        tp_above = tp_score.size - np.searchsorted(tp_ascending, fp_sorted, side="right")
        tp_through = tp_score.size - np.searchsorted(tp_ascending, fp_sorted, side="left")
        group_start = np.flatnonzero(np.diff(fp_sorted, prepend=np.inf))  # 0 first when any
        regular = np.searchsorted(group_start, np.arange(0, fp_sorted.size, _SEGMENT))
        segment_start = np.union1d(
            group_start[regular[regular < group_start.size]],
            np.flatnonzero(np.diff(tp_above, prepend=-1)),
        )
        return cls(
            n_images=matched.n_images,
            group_scores=group_scores,
            fp_image=fp_image[fp_order],
            fp_group_end=_count_at_least(fp_score, group_scores),
            tp_image=tp_image[tp_order],
            tp_group_end=_count_at_least(tp_score, group_scores),
            lesion_image=matched.lesion_image,
            count_type=np.int32 if matched.n_images * int(busiest) < 2**30 else np.int64,
            fp_end=_count_at_least(fp_score, fp_sorted),
            tp_above=tp_above,
            tp_through=tp_through,
            tied=np.flatnonzero(tp_above != tp_through),
            segment_start=segment_start,
            pruned=matched.pruned_below > -np.inf,
        )


def _count_at_least(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each threshold, how many values are >= it."""
    return values.size - np.searchsorted(np.sort(values), thresholds, side="left")


def froc_curve(matched: MatchedDetections) -> FrocCurve:
    """The empirical FROC curve (origin first, then one point per distinct counted score).

    Returns a :class:`FrocCurve` of ``(K + 1,)`` float64 arrays; its sensitivity is nan when
    there are no lesions.
    """
    events = matched._events
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.concatenate([[0], events.tp_group_end]) / matched.n_lesions
    return FrocCurve(
        fp_rate=np.concatenate([[0], events.fp_group_end]) / matched.n_images,
        sensitivity=sensitivity,
        thresholds=np.concatenate([[np.inf], events.group_scores]),
    )


def fauc_from_curve(fp_rate: np.ndarray, sensitivity: np.ndarray, max_fp: float = 1.0):
    """FAUC-``max_fp`` of a curve given by its points (rows, for 2-D input), which start at the
    origin and have non-decreasing FP rate: the area from 0 to ``max_fp`` under the points
    joined by straight segments, held flat after the last point, divided by ``max_fp``.

    Args:
        fp_rate: ``(P,)`` or ``(rows, P)`` float, false positives per image.
        sensitivity: the same shape as ``fp_rate``.
        max_fp: x of FAUC-x, positive.

    Returns:
        float64: a numpy scalar for 1-D input, ``(rows,)`` for 2-D.
    """
    if not max_fp > 0:
        raise ValueError(f"max_fp must be positive, got {max_fp}")
    x = np.asarray(fp_rate, dtype=np.float64)
    y = np.asarray(sensitivity, dtype=np.float64)
    x0, x1, y0, y1 = x[..., :-1], x[..., 1:], y[..., :-1], y[..., 1:]
    width = np.minimum(x1, max_fp) - np.minimum(x0, max_fp)
    step = x1 - x0
    # the part of each segment left of max_fp; vertical segments have no width
    rise = np.divide((y1 - y0) * width, step, out=np.zeros_like(width), where=step > 0)
    area = np.sum(width * (y0 + rise / 2), axis=-1)
    area = area + (max_fp - np.minimum(x[..., -1], max_fp)) * y[..., -1]
    return area / max_fp


def fauc(matched: MatchedDetections, max_fp: float = 1.0) -> float:
    """FAUC-``max_fp`` (in [0, 1]; nan when there are no lesions), a float.

    Raises :class:`~metrics.froc.pruning.IncompleteDetections` when pruned records do not
    reach ``max_fp`` false positives per image, ValueError unless ``max_fp`` is positive.
    """
    require_false_positives(matched, max_fp)
    events = matched._events
    fp_counts = np.concatenate([[0], events.fp_group_end])[None, :]
    tp_counts = np.concatenate([[0], events.tp_group_end])[None, :]
    n_lesions = np.array([matched.n_lesions])
    return float(_fauc_from_counts(fp_counts, tp_counts, matched.n_images, n_lesions, max_fp)[0])


def threshold_at_fp(matched: MatchedDetections, target_fp: float = 1.0) -> float:
    """The lowest score t of a true or false positive with false positives(score >= t) / images
    <= ``target_fp`` (picai_eval's operating point); +inf when even the top score exceeds it.

    Returns a float; ``target_fp`` is in false positives per image.
    """
    require_false_positives(matched, target_fp)
    events = matched._events
    within = np.flatnonzero(events.fp_group_end / matched.n_images <= target_fp)
    return float(events.group_scores[within[-1]]) if within.size else float(np.inf)


def lowest_score_read(matched: MatchedDetections, max_fp: float = 1.0) -> float:
    """The lowest score FAUC-``max_fp`` reads: that of the curve's first point past the cut
    (-inf when the curve never passes it: then every detection counts). Returns a float."""
    require_false_positives(matched, max_fp)
    events = matched._events
    past = np.flatnonzero(events.fp_group_end > max_fp * matched.n_images)
    return float(events.group_scores[past[0]]) if past.size else -np.inf


def operating_point(matched: MatchedDetections, threshold: float) -> OperatingPoint:
    """FP rate and sensitivity when the detections scoring >= ``threshold`` are kept.

    Returns an :class:`OperatingPoint` (its sensitivity nan when there are no lesions); raises
    :class:`~metrics.froc.pruning.IncompleteDetections` when ``threshold`` lies below where the
    predictions were pruned.
    """
    _require_threshold(matched, threshold)
    n_false_positives = int(
        np.count_nonzero(
            (matched.detection_outcome == FALSE_POSITIVE) & (matched.detection_score >= threshold)
        )
    )
    n_found = int(np.count_nonzero(lesions_found(matched, threshold)))
    return OperatingPoint(
        threshold=float(threshold),
        fp_rate=n_false_positives / matched.n_images,
        sensitivity=n_found / matched.n_lesions if matched.n_lesions else float("nan"),
        n_false_positives=n_false_positives,
        n_lesions_found=n_found,
    )


def sensitivity_at_fp(matched: MatchedDetections, fp_rates) -> np.ndarray:
    """Sensitivity at the operating point of each target FP rate (:func:`threshold_at_fp`;
    picai_eval's ``lesion_TPR_at_FPR``): a step, not an interpolation.

    ``fp_rates``: a float or a sequence of them, false positives per image. Returns float64
    of ``fp_rates``'s shape (``(1,)`` for a float), nan when there are no lesions.
    """
    events = matched._events
    fp_rates = np.atleast_1d(np.asarray(fp_rates, dtype=np.float64))
    require_false_positives(matched, float(fp_rates.max(initial=0)))
    fp_rate = events.fp_group_end / matched.n_images
    n_within = np.searchsorted(fp_rate, fp_rates, side="right")
    found = np.concatenate([[0], events.tp_group_end])[n_within]
    with np.errstate(invalid="ignore", divide="ignore"):
        return found / matched.n_lesions


def lesions_found(matched: MatchedDetections, threshold: float) -> np.ndarray:
    """Per lesion (in input order), whether a detection assigned to it scores >= threshold:
    ``(n_lesions,)`` bool."""
    return matched.lesion_score >= threshold


def image_outcomes(matched: MatchedDetections, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per image: how many false positives score >= ``threshold`` and how many of its lesions
    are missed there (the paper's "False Detections" and "Missed Lesions" buckets).

    Returns ``(false_positives, missed_lesions)``, each ``(n_images,)`` int64; raises
    :class:`~metrics.froc.pruning.IncompleteDetections` when ``threshold`` lies below where
    the predictions were pruned.
    """
    _require_threshold(matched, threshold)
    false_positive = (matched.detection_outcome == FALSE_POSITIVE) & (
        matched.detection_score >= threshold
    )
    missed = ~lesions_found(matched, threshold)
    return (
        np.bincount(matched.detection_image[false_positive], minlength=matched.n_images),
        np.bincount(matched.lesion_image[missed], minlength=matched.n_images),
    )


def _fauc_from_counts(
    fp_counts: np.ndarray,
    tp_counts: np.ndarray,
    n_images: int,
    n_lesions: np.ndarray,
    max_fp: float,
) -> np.ndarray:
    """FAUC-max_fp of each row of a curve given in counts (``[b, K + 1]``, origin first):
    the trapezoids of the segments that end at or before the cut, the crossing segment's part
    left of the cut, and the flat tail when the curve ends before it. Integer sums, so that the
    estimate and the bootstrap replicates agree exactly."""
    if not max_fp > 0:
        raise ValueError(f"max_fp must be positive, got {max_fp}")
    rows, n_points = fp_counts.shape
    cut = max_fp * n_images
    inside = fp_counts[:, 1:] <= cut
    fp_step = np.diff(fp_counts, axis=1) * inside
    tp_pair = tp_counts[:, :-1] + tp_counts[:, 1:]
    twice_area = np.einsum("ij,ij->i", fp_step, tp_pair, dtype=np.int64)
    # each row's last point at or before the cut, and the segment that crosses it
    last = np.count_nonzero(inside, axis=1)
    following = np.minimum(last + 1, n_points - 1)
    row = np.arange(rows)
    x0, y0 = fp_counts[row, last].astype(np.float64), tp_counts[row, last].astype(np.float64)
    x1, y1 = fp_counts[row, following], tp_counts[row, following]
    width = cut - x0
    slope = np.divide(y1 - y0, x1 - x0, out=np.zeros(rows), where=following > last)
    area = twice_area / 2 + width * (y0 + slope * width / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_lesions > 0, area / (cut * n_lesions), np.nan)
