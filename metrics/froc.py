"""FROC analysis of lesion detections: match detections to lesions once, then derive the FROC
curve, FAUC-x, operating thresholds, per-lesion outcomes and bootstrap confidence intervals from
the matched records, vectorised with numpy.

Conventions (issue 5; public anchors: the DBTex rule of mazurowski-lab/duke-dbt-data and
picai_eval):

- A detection hits a lesion when the distance between the two box centres is below
  ``max(half the lesion box's diagonal, min_distance)`` (``<=`` with ``inclusive=True``, as in
  DBTex). Boxes are xyxy in the original image's pixels.
- A detection is assigned to the nearest lesion it hits (ties: the lower lesion index). A lesion
  is found at threshold t once a detection assigned to it scores >= t; its best assigned
  detection is its true positive, the others are duplicates: neither true nor false positives.
  A detection that hits no lesion is a false positive.
- The curve has one point per distinct score of a true or false positive (tied scores enter
  together) plus the origin. Sensitivity = found lesions / lesions; FP rate = false positives /
  images, every image counted.
- FAUC-x is the exact area under that curve, points joined by straight segments, from 0 to x
  false positives per image, held flat after its last point, divided by x.

At scale most detections are never read: :func:`prune_detections` keeps what FAUC-x can reach
(see there), and every function below that would need a detection it left out raises
:class:`IncompleteDetections` instead of giving another number.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from common.defaults import HIT_MIN_DISTANCE

FALSE_POSITIVE = 0
TRUE_POSITIVE = 1
DUPLICATE = 2  # hits a lesion that a higher-scoring detection already finds: not counted

# bootstrap work arrays hold about this many elements per chunk of replicates
_CHUNK_ELEMENTS = 1_000_000
# the longest run of false positives the bootstrap scorer sums one by one (see _CurveEvents)
_SEGMENT = 1024
# prune_detections keeps this many standard deviations (over resamples) of false positives
# past the cut: a resample falling short then has odds far below 1e-20
PRUNE_MARGIN_SD = 10.0


class IncompleteDetections(ValueError):
    """A computation needs detections that :func:`prune_detections` left out: read the
    predictions again without pruning (``cli.py evaluate`` and the report do)."""


@dataclass(frozen=True, eq=False)
class MatchedDetections:
    """Detections matched to lesions, as flat arrays; every FROC quantity derives from it.

    Images are indexed ``0..n_images-1``; a lesion's index is its position in the lesion arrays
    given to :func:`match_detections` and a detection's its position in the detection arrays.
    Treat it as immutable: the score-sorted events behind the curve are computed once and kept.
    """

    n_images: int
    detection_image: np.ndarray  # int64 [D]
    detection_score: np.ndarray  # float64 [D]
    detection_lesion: np.ndarray  # int64 [D]: the lesion it is assigned to, -1 if none
    detection_outcome: np.ndarray  # int8 [D]: FALSE_POSITIVE, TRUE_POSITIVE or DUPLICATE
    lesion_image: np.ndarray  # int64 [L]
    lesion_score: np.ndarray  # float64 [L]: its true positive's score, -inf if never hit
    image_ids: np.ndarray | None = None  # str [N], when known
    # detections of images without lesions scoring below this were left out (prune_detections)
    pruned_below: float = -np.inf

    @property
    def n_lesions(self) -> int:
        return int(self.lesion_image.size)

    @property
    def n_detections(self) -> int:
        return int(self.detection_image.size)

    @cached_property
    def _events(self) -> _CurveEvents:
        return _CurveEvents.of(self)

    def subset(self, keep_images: np.ndarray) -> MatchedDetections:
        """The same records restricted to the images where ``keep_images`` (bool [N]) is true,
        images, lesions and detections renumbered in their original order."""
        keep_images = np.asarray(keep_images, dtype=bool)
        if keep_images.shape != (self.n_images,):
            raise ValueError(f"keep_images must have shape ({self.n_images},)")
        new_image = np.cumsum(keep_images) - 1
        keep_lesion = keep_images[self.lesion_image]
        new_lesion = np.cumsum(keep_lesion) - 1
        keep_detection = keep_images[self.detection_image]
        lesion_of_detection = self.detection_lesion[keep_detection]
        lesion_free = np.bincount(self.lesion_image, minlength=self.n_images) == 0
        return MatchedDetections(
            n_images=int(keep_images.sum()),
            detection_image=new_image[self.detection_image[keep_detection]],
            detection_score=self.detection_score[keep_detection],
            detection_lesion=np.where(
                lesion_of_detection >= 0, new_lesion[lesion_of_detection], -1
            ),
            detection_outcome=self.detection_outcome[keep_detection],
            lesion_image=new_image[self.lesion_image[keep_lesion]],
            lesion_score=self.lesion_score[keep_lesion],
            image_ids=None if self.image_ids is None else self.image_ids[keep_images],
            # only images without lesions lost detections: a subset without them has them all
            pruned_below=self.pruned_below if (keep_images & lesion_free).any() else -np.inf,
        )

    def positive_images(self) -> MatchedDetections:
        """The records of the images with at least one lesion (for FAUC-x+); the same object
        on every call (its bootstrap replicates are kept with it)."""
        return self._positive

    @cached_property
    def _positive(self) -> MatchedDetections:
        has_lesion = np.bincount(self.lesion_image, minlength=self.n_images) > 0
        return self.subset(has_lesion)

    @cached_property
    def _replicates(self) -> dict[tuple, np.ndarray]:
        """FAUC-x bootstrap replicates computed so far, by (x, n_boot, seed, chunk_size; the
        last changes nothing but is a test's subject): a model scored alone and in a paired
        comparison is resampled once (see ``bootstrap_replicates``)."""
        return {}


@dataclass(frozen=True, eq=False)
class FrocCurve:
    """The empirical FROC curve: point k keeps the detections scoring >= ``thresholds[k]``;
    point 0 is the origin (threshold +inf)."""

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
class BootstrapResult:
    """A statistic with its percentile bootstrap confidence interval."""

    estimate: float
    low: float
    high: float
    replicates: np.ndarray


@dataclass(frozen=True, eq=False)
class PairedBootstrapResult:
    """FAUC-x of model a minus model b on the same images, with a percentile bootstrap CI and
    a two-sided bootstrap p-value for "no difference"."""

    difference: float
    low: float
    high: float
    p_value: float
    fauc_a: float
    fauc_b: float
    replicates: np.ndarray


def match_detections(
    detection_image: np.ndarray,
    detection_boxes: np.ndarray,
    detection_scores: np.ndarray,
    lesion_image: np.ndarray,
    lesion_boxes: np.ndarray,
    n_images: int,
    *,
    min_distance: float = HIT_MIN_DISTANCE,
    inclusive: bool = False,
    image_ids: np.ndarray | None = None,
    pruned_below: float = -np.inf,
) -> MatchedDetections:
    """Match detections to lesions by the centre-distance rule (see the module docstring).

    ``detection_image``/``lesion_image`` are image indices in ``[0, n_images)``; boxes are
    ``[n, 4]`` xyxy in the original image's pixels. ``pruned_below``: the detections are what
    :func:`prune_detections` kept at that score.
    """
    detection_image = np.asarray(detection_image, dtype=np.int64).reshape(-1)
    lesion_image = np.asarray(lesion_image, dtype=np.int64).reshape(-1)
    detection_boxes = np.asarray(detection_boxes, dtype=np.float64).reshape(-1, 4)
    lesion_boxes = np.asarray(lesion_boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(detection_scores, dtype=np.float64).reshape(-1)
    n_detections, n_lesions = detection_image.size, lesion_image.size
    if detection_boxes.shape[0] != n_detections or scores.size != n_detections:
        raise ValueError("detection_image, detection_boxes and detection_scores differ in length")
    if lesion_boxes.shape[0] != n_lesions:
        raise ValueError("lesion_image and lesion_boxes differ in length")
    for name, index in (("detection_image", detection_image), ("lesion_image", lesion_image)):
        if index.size and (index.min() < 0 or index.max() >= n_images):
            raise ValueError(f"{name} holds indices outside [0, {n_images})")
    if not np.all(np.isfinite(scores)):
        raise ValueError("detection scores must be finite")
    if image_ids is not None:
        image_ids = np.asarray(image_ids, dtype=str)
        if image_ids.shape != (n_images,):
            raise ValueError(f"image_ids must have shape ({n_images},)")

    # every (detection, lesion) pair on the same image, without a loop over images
    lesion_order = np.argsort(lesion_image, kind="stable")
    lesions_per_image = np.bincount(lesion_image, minlength=n_images)
    first_lesion = np.cumsum(lesions_per_image) - lesions_per_image
    pairs_per_detection = lesions_per_image[detection_image]
    pair_detection = np.repeat(np.arange(n_detections), pairs_per_detection)
    pair_start = np.cumsum(pairs_per_detection) - pairs_per_detection
    offset = np.arange(pair_detection.size) - np.repeat(pair_start, pairs_per_detection)
    pair_lesion = lesion_order[
        np.repeat(first_lesion[detection_image], pairs_per_detection) + offset
    ]

    detection_centre = (detection_boxes[:, :2] + detection_boxes[:, 2:]) / 2
    lesion_centre = (lesion_boxes[:, :2] + lesion_boxes[:, 2:]) / 2
    lesion_size = lesion_boxes[:, 2:] - lesion_boxes[:, :2]
    radius = np.maximum(np.hypot(lesion_size[:, 0], lesion_size[:, 1]) / 2, min_distance)
    gap = detection_centre[pair_detection] - lesion_centre[pair_lesion]
    distance = np.hypot(gap[:, 0], gap[:, 1])
    hit = distance <= radius[pair_lesion] if inclusive else distance < radius[pair_lesion]
    pair_detection, pair_lesion, distance = pair_detection[hit], pair_lesion[hit], distance[hit]

    # the nearest lesion hit by each detection
    detection_lesion = np.full(n_detections, -1, dtype=np.int64)
    order = np.lexsort((pair_lesion, distance, pair_detection))
    first = _first_of_runs(pair_detection[order])
    detection_lesion[pair_detection[order][first]] = pair_lesion[order][first]

    # each lesion's best-scoring assigned detection is its true positive
    outcome = np.full(n_detections, FALSE_POSITIVE, dtype=np.int8)
    assigned = np.flatnonzero(detection_lesion >= 0)
    outcome[assigned] = DUPLICATE
    order = np.lexsort((assigned, -scores[assigned], detection_lesion[assigned]))
    best = assigned[order][_first_of_runs(detection_lesion[assigned][order])]
    outcome[best] = TRUE_POSITIVE
    lesion_score = np.full(n_lesions, -np.inf)
    lesion_score[detection_lesion[best]] = scores[best]

    return MatchedDetections(
        n_images=int(n_images),
        detection_image=detection_image,
        detection_score=scores,
        detection_lesion=detection_lesion,
        detection_outcome=outcome,
        lesion_image=lesion_image,
        lesion_score=lesion_score,
        image_ids=image_ids,
        pruned_below=float(pruned_below),
    )


def prune_detections(
    detection_image: np.ndarray,
    detection_scores: np.ndarray,
    image_has_lesion: np.ndarray,
    fp_per_image: float,
    min_score: float = np.inf,
    margin_sd: float | None = None,
) -> tuple[np.ndarray, float]:
    """The detections that FAUC-``fp_per_image`` (and any lower x), the threshold at up to
    ``fp_per_image`` false positives per image and any score down to ``min_score`` can reach,
    on the full sample and on its bootstrap resamples: ``(keep, pruned_below)``, a boolean mask
    and the score s it cuts at (-inf when it keeps everything).

    Every detection of an image with lesions is kept. On an image without lesions every
    detection is a false positive, whatever it overlaps, and matching is per image: dropping
    the ones scoring below s changes no other detection's outcome and no count of false
    positives scoring >= s, so every FROC point down to s stays as it was. Those points reach
    x past its cut (false positives > x * images) when the false positives scoring >= s number
    at least x * images + 1; s is chosen so that those on images without lesions alone do,
    plus ``margin_sd`` (default ``PRUNE_MARGIN_SD``) standard deviations of their count over
    resamples. A resample that still falls short is not scored on a guess: the functions here
    raise :class:`IncompleteDetections` whenever a computation needs a detection below s.
    """
    margin_sd = PRUNE_MARGIN_SD if margin_sd is None else margin_sd
    detection_image = np.asarray(detection_image, dtype=np.int64).reshape(-1)
    scores = np.asarray(detection_scores, dtype=np.float64).reshape(-1)
    image_has_lesion = np.asarray(image_has_lesion, dtype=bool).reshape(-1)
    n_images = image_has_lesion.size
    certain = ~image_has_lesion[detection_image]  # false positives whatever they overlap
    fp_scores, fp_image = scores[certain], detection_image[certain]
    needed = fp_per_image * n_images + 1
    wanted = needed
    while True:
        count = int(np.ceil(wanted))
        if count >= fp_scores.size:
            return np.ones(scores.size, dtype=bool), -np.inf
        cut = np.partition(fp_scores, fp_scores.size - count)[fp_scores.size - count]
        per_image = np.bincount(fp_image[fp_scores >= cut], minlength=n_images)
        total = int(per_image.sum())
        # over resamples of n images, the count's variance is sum(n_i^2) - total^2 / n
        spread = np.sqrt(max(float(np.dot(per_image, per_image)) - total**2 / n_images, 0.0))
        if total - margin_sd * spread >= needed:
            break
        wanted = max(needed + margin_sd * spread, 1.5 * wanted)
    cut = min(float(cut), float(min_score))
    keep = ~certain | (scores >= cut)
    return keep, (cut if not keep.all() else -np.inf)


def require_false_positives(matched: MatchedDetections, fp_per_image: float) -> None:
    """Raise unless the records reach ``fp_per_image`` false positives per image past every
    point a computation up to that rate reads (always true of unpruned records)."""
    if matched.pruned_below == -np.inf:
        return
    have = matched._events.fp_image.size
    if have < fp_per_image * matched.n_images + 1:
        raise IncompleteDetections(
            f"{fp_per_image:g} false positives per image need detections scoring below "
            f"{matched.pruned_below:g}, where the predictions were pruned ({have} false "
            f"positives on {matched.n_images} images)")


def _require_threshold(matched: MatchedDetections, threshold: float) -> None:
    if threshold < matched.pruned_below:
        raise IncompleteDetections(
            f"threshold {threshold:g} lies below {matched.pruned_below:g}, where the predictions "
            "were pruned")


def _first_of_runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean mask of the first element of each run of equal keys."""
    first = np.ones(sorted_keys.size, dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return first


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
    """The empirical FROC curve (origin first, then one point per distinct counted score)."""
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
    joined by straight segments, held flat after the last point, divided by ``max_fp``."""
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
    """FAUC-``max_fp`` (in [0, 1]; nan when there are no lesions)."""
    require_false_positives(matched, max_fp)
    events = matched._events
    fp_counts = np.concatenate([[0], events.fp_group_end])[None, :]
    tp_counts = np.concatenate([[0], events.tp_group_end])[None, :]
    n_lesions = np.array([matched.n_lesions])
    return float(_fauc_from_counts(fp_counts, tp_counts, matched.n_images, n_lesions, max_fp)[0])


def threshold_at_fp(matched: MatchedDetections, target_fp: float = 1.0) -> float:
    """The lowest score t of a true or false positive with false positives(score >= t) / images
    <= ``target_fp`` (picai_eval's operating point); +inf when even the top score exceeds it."""
    require_false_positives(matched, target_fp)
    events = matched._events
    within = np.flatnonzero(events.fp_group_end / matched.n_images <= target_fp)
    return float(events.group_scores[within[-1]]) if within.size else float(np.inf)


def lowest_score_read(matched: MatchedDetections, max_fp: float = 1.0) -> float:
    """The lowest score FAUC-``max_fp`` reads: that of the curve's first point past the cut
    (-inf when the curve never passes it: then every detection counts)."""
    require_false_positives(matched, max_fp)
    events = matched._events
    past = np.flatnonzero(events.fp_group_end > max_fp * matched.n_images)
    return float(events.group_scores[past[0]]) if past.size else -np.inf


def operating_point(matched: MatchedDetections, threshold: float) -> OperatingPoint:
    """FP rate and sensitivity when the detections scoring >= ``threshold`` are kept."""
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
    picai_eval's ``lesion_TPR_at_FPR``): a step, not an interpolation."""
    events = matched._events
    fp_rates = np.atleast_1d(np.asarray(fp_rates, dtype=np.float64))
    require_false_positives(matched, float(fp_rates.max(initial=0)))
    fp_rate = events.fp_group_end / matched.n_images
    n_within = np.searchsorted(fp_rate, fp_rates, side="right")
    found = np.concatenate([[0], events.tp_group_end])[n_within]
    with np.errstate(invalid="ignore", divide="ignore"):
        return found / matched.n_lesions


def lesions_found(matched: MatchedDetections, threshold: float) -> np.ndarray:
    """Per lesion (in input order), whether a detection assigned to it scores >= threshold."""
    return matched.lesion_score >= threshold


def image_outcomes(matched: MatchedDetections, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per image: how many false positives score >= ``threshold`` and how many of its lesions
    are missed there (the paper's "False Detections" and "Missed Lesions" buckets)."""
    _require_threshold(matched, threshold)
    false_positive = (matched.detection_outcome == FALSE_POSITIVE) & (
        matched.detection_score >= threshold
    )
    missed = ~lesions_found(matched, threshold)
    return (
        np.bincount(matched.detection_image[false_positive], minlength=matched.n_images),
        np.bincount(matched.lesion_image[missed], minlength=matched.n_images),
    )


def resample_counts(
    n_images: int, n_boot: int, seed: int = 0, chunk_size: int | None = None
) -> Iterator[np.ndarray]:
    """The bootstrap resamples, as chunks of per-image multiplicities ``[b, n_images]`` (int8, or
    int32 when one exceeds 127; each row sums to ``n_images``: n images drawn with
    replacement). The same seed gives the same rows whatever the chunk size."""
    for drawn in _resample_draws(n_images, n_boot, seed, chunk_size):
        yield _multiplicities(drawn, n_images)


def _resample_draws(n_images: int, n_boot: int, seed: int = 0, chunk_size: int | None = None):
    """The images drawn for each resample, ``[b, n_images]`` per chunk, in order from one
    generator: the stream ``resample_counts`` counts."""
    rng = np.random.default_rng(seed)
    chunk_size = chunk_size or max(1, _CHUNK_ELEMENTS // max(n_images, 1))
    draw_type = np.int32 if n_images < 2**31 else np.int64
    for start in range(0, n_boot, chunk_size):
        rows = min(chunk_size, n_boot - start)
        yield rng.integers(0, n_images, size=(rows, n_images), dtype=draw_type)


def _multiplicities(drawn: np.ndarray, n_images: int) -> np.ndarray:
    """How often each image was drawn, per row of ``drawn``."""
    rows = drawn.shape[0]
    # one bincount for the whole chunk: shift row r's draws by r * n_images
    flat = drawn + np.arange(rows, dtype=np.int64)[:, None] * n_images
    counts = np.bincount(flat.ravel(), minlength=rows * n_images).reshape(rows, n_images)
    # an image drawn more than 127 times is astronomically rare unless n_images is tiny;
    # int8 makes the gathers that follow several times faster
    return counts.astype(np.int8 if counts.size == 0 or counts.max() <= 127 else np.int32)


def _prefixes(events: _CurveEvents, limit: float | None) -> Iterator[int]:
    """How many of the highest-scoring false positives a bootstrap scorer reads, shortest
    first, each ending on a segment's start (so the group that crosses a cut is complete) and
    the last all of them: most resamples reach ``limit`` near where the full sample does, so a
    prefix a little past it usually suffices; it doubles when some resample falls short."""
    n_fp, starts = events.fp_image.size, events.segment_start
    guess = n_fp if limit is None else int(min(limit, n_fp) * 1.05) + 64
    while guess <= (starts[-1] if starts.size else -1):
        yield int(starts[np.searchsorted(starts, guess)])
        guess *= 2
    yield n_fp


def _false_positive_prefix(events: _CurveEvents, counts: np.ndarray, limit: float | None):
    """The resampled weights of the highest-scoring false positives and their cumulative sums
    (origin first), ``(weights, cumulative, prefix)``: enough of them that every row's sum
    reaches ``limit`` (all of them when ``limit`` is None or some row never does)."""
    for prefix in _prefixes(events, limit):
        weights = np.take(counts, events.fp_image[:prefix], axis=1)
        cumulative = np.zeros((counts.shape[0], prefix + 1), dtype=events.count_type)
        np.cumsum(weights, axis=1, dtype=events.count_type, out=cumulative[:, 1:])
        if limit is not None and cumulative[:, -1].min() >= limit:
            return weights, cumulative, prefix
        if prefix == events.fp_image.size:
            if events.pruned:
                _short_resample(None if limit is None else (limit - 1) / events.n_images)
            return weights, cumulative, prefix


def _short_resample(fp_per_image: float | None) -> None:
    reach = "every point of the curve" if fp_per_image is None else \
        f"{fp_per_image:g} false positives per image"
    raise IncompleteDetections(f"a bootstrap resample needs detections below the score where "
                               f"the predictions were pruned to reach {reach}")


def _resampled_counts(events: _CurveEvents, counts: np.ndarray, max_fp: float | None):
    """FROC points of the resamples in ``counts`` ``[b, n_images]``, in counts: false positives
    and found lesions, integer ``[b, K + 1]`` each with the origin first, and the lesions of each
    resample, int64 ``[b]``. With ``max_fp``, the points past every row's first point beyond
    ``max_fp`` are left out (they add nothing to FAUC-max_fp)."""
    rows, n_images = counts.shape[0], events.n_images
    n_groups = events.group_scores.size
    fp_end = events.fp_group_end
    # a margin of one false positive keeps the cut conservative against rounding
    limit = None if max_fp is None else max_fp * n_images + 1
    _, fp_cumulative, prefix = _false_positive_prefix(events, counts, limit)
    n_known = int(np.searchsorted(fp_end, prefix, side="right"))  # groups inside the prefix
    fp_counts = np.zeros((rows, n_known + 1), dtype=events.count_type)
    np.take(fp_cumulative, fp_end[:n_known], axis=1, out=fp_counts[:, 1:])
    n_keep = n_groups
    if limit is not None:
        below = np.count_nonzero(fp_counts[:, 1:] < limit, axis=1)
        n_keep = min(n_groups, int(below.max()) + 1)
        fp_counts = fp_counts[:, : n_keep + 1]
    tp_needed = int(events.tp_group_end[n_keep - 1]) if n_keep else 0
    tp_cumulative = np.zeros((rows, tp_needed + 1), dtype=events.count_type)
    weights = np.take(counts, events.tp_image[:tp_needed], axis=1)
    np.cumsum(weights, axis=1, dtype=events.count_type, out=tp_cumulative[:, 1:])
    tp_counts = np.zeros((rows, n_keep + 1), dtype=events.count_type)
    np.take(tp_cumulative, events.tp_group_end[:n_keep], axis=1, out=tp_counts[:, 1:])
    n_lesions = np.take(counts, events.lesion_image, axis=1).sum(axis=1, dtype=np.int64)
    return fp_counts, tp_counts, n_lesions


def _resampled_faucs(events: _CurveEvents, counts: np.ndarray, max_fp: float) -> np.ndarray:
    """FAUC-max_fp of each resample in ``counts`` ``[b, n_images]``: what
    ``_fauc_from_counts(*_resampled_counts(...))`` gives, bit for bit, in fewer passes.

    The trapezoids are summed per false positive instead of per curve point: a group of equal
    scores adds (its false positives' weight) x (found lesions before it + through it), and
    every false positive's two lesion counts are known before resampling (``tp_above``,
    ``tp_through``). Within a segment (``events.segment_start``) every false positive has the
    same ``tp_above``, so the false positives' resampled weights are summed per segment in one
    pass; only the segment where the cut falls is summed one by one, to find it exactly. The
    points past the cut are never formed."""
    rows, n_images = counts.shape
    cut = max_fp * n_images
    count_type = events.count_type
    n_fp, starts = events.fp_image.size, events.segment_start
    # enough false positives that every row's weight passes the cut (+1 against rounding)
    for prefix in _prefixes(events, cut + 1):
        weights = np.take(counts, events.fp_image[:prefix], axis=1)
        segment = starts[starts < prefix]
        if prefix:
            sums = np.add.reduceat(weights, segment, axis=1, dtype=count_type)
        else:
            sums = np.zeros((rows, 0), dtype=count_type)
        before = np.zeros((rows, segment.size + 1), dtype=np.int64)  # weight before segment s
        np.cumsum(sums, axis=1, out=before[:, 1:])
        if prefix == n_fp or before[:, -1].min() >= cut + 1:
            break
    if events.pruned and before[:, -1].min() < cut + 1:
        _short_resample(max_fp)
    tp_cumulative = np.zeros((rows, events.tp_image.size + 1), dtype=count_type)
    np.cumsum(np.take(counts, events.tp_image, axis=1), axis=1, dtype=count_type,
              out=tp_cumulative[:, 1:])
    n_lesions = np.take(counts, events.lesion_image, axis=1).sum(axis=1, dtype=np.int64)
    segment_above = events.tp_above[segment]
    segment_end = np.append(segment[1:], prefix)
    tied = events.tied[: np.searchsorted(events.tied, prefix)]
    tied_weight = np.take(counts, events.fp_image[tied], axis=1).astype(np.int64)
    out = np.empty(rows)
    for row in range(rows):
        tp, fp_before = tp_cumulative[row], before[row]
        # (found lesions before each segment) x (its weight), summed over whole segments
        area_before = np.zeros(segment.size + 1, dtype=np.int64)
        np.cumsum(sums[row] * tp[segment_above].astype(np.int64), out=area_before[1:])
        if fp_before[-1] <= cut:  # every false positive lies inside the cut: the curve ends
            inside, x0 = prefix, float(fp_before[-1])
            twice_area = 2 * int(area_before[-1])
        else:
            s = int(np.searchsorted(fp_before, cut, side="right")) - 1  # the crossing segment
            low = int(segment[s])
            local = np.zeros(int(segment_end[s]) - low + 1, dtype=np.int64)
            np.cumsum(weights[row, low : segment_end[s]], out=local[1:])
            local += fp_before[s]
            last = low + int(np.searchsorted(local, cut, side="right")) - 1
            # the groups whose end lies at or before the cut: a prefix of the false positives
            inside = int(np.searchsorted(events.fp_end, last, side="right"))
            x0 = float(local[inside - low])
            twice_area = 2 * (int(area_before[s])
                              + int(local[inside - low] - fp_before[s]) * int(tp[segment_above[s]]))
        n_tied = int(np.searchsorted(tied, inside))
        if n_tied:
            lift = tp[events.tp_through[tied[:n_tied]]] - tp[events.tp_above[tied[:n_tied]]]
            twice_area += int(np.dot(tied_weight[row, :n_tied], lift.astype(np.int64)))
        if inside < prefix:  # the group that crosses the cut
            y0 = float(tp[events.tp_above[inside]])
            x1, y1 = local[events.fp_end[inside] - low], tp[events.tp_through[inside]]
            slope = (y1 - y0) / (x1 - x0)
        else:  # the curve ends before the cut: flat
            y0, slope = float(tp[-1]), 0.0
        width = cut - x0
        area = twice_area / 2 + width * (y0 + slope * width / 2)
        out[row] = area / (cut * n_lesions[row]) if n_lesions[row] > 0 else np.nan
    return out


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


def _bootstrap_faucs(
    matched_models: list[MatchedDetections],
    max_fp: float,
    n_boot: int,
    seed: int,
    chunk_size: int | None,
) -> np.ndarray:
    """FAUC-max_fp of every model on the same resamples: ``[n_models, n_boot]``."""
    events = [matched._events for matched in matched_models]
    n_images = matched_models[0].n_images
    if chunk_size is None:
        widest = max(max(e.fp_image.size, e.tp_image.size, e.lesion_image.size) for e in events)
        chunk_size = max(1, _CHUNK_ELEMENTS // max(n_images, widest, 1))
    replicates = np.full((len(matched_models), n_boot), np.nan)
    if n_images == 0:
        return replicates

    def score(start: int, drawn: np.ndarray) -> None:
        counts = _multiplicities(drawn, n_images)
        stop = start + counts.shape[0]
        for model, model_events in enumerate(events):
            replicates[model, start:stop] = _resampled_faucs(model_events, counts, max_fp)

    # The resamples are drawn in order from one generator (the same rows whatever the threads);
    # counting and scoring them is numpy work that releases the GIL: done on every core.
    workers = _bootstrap_threads()
    start = 0
    if workers == 1 or n_boot <= chunk_size:
        for drawn in _resample_draws(n_images, n_boot, seed, chunk_size):
            score(start, drawn)
            start += drawn.shape[0]
        return replicates
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for drawn in _resample_draws(n_images, n_boot, seed, chunk_size):
            pending.append(pool.submit(score, start, drawn))
            start += drawn.shape[0]
            while len(pending) > 2 * workers:  # bound the resamples held in memory
                pending.popleft().result()
        for future in pending:
            future.result()
    return replicates


def bootstrap_replicates(
    matched_models: list[MatchedDetections],
    max_fp: float = 1.0,
    n_boot: int = 2000,
    seed: int = 0,
    chunk_size: int | None = None,
) -> list[np.ndarray]:
    """FAUC-``max_fp`` of each model on the ``n_boot`` resamples of ``seed`` (read-only
    arrays). The resamples depend only on the seed and the number of images, so every model
    with the same number of images is scored on the same resamples: those not yet scored are
    scored together, each set of resamples drawn once, and the replicates kept with the model
    (``bootstrap_fauc`` of a model and its ``paired_bootstrap_fauc`` then cost one pass)."""
    key = (float(max_fp), int(n_boot), int(seed), chunk_size)
    pending: dict[int, list[MatchedDetections]] = {}
    for matched in matched_models:
        group = pending.setdefault(matched.n_images, [])
        if key not in matched._replicates and all(m is not matched for m in group):
            group.append(matched)
    for group in pending.values():
        if group:
            for matched, replicates in zip(
                    group, _bootstrap_faucs(group, max_fp, n_boot, seed, chunk_size)):
                replicates.flags.writeable = False
                matched._replicates[key] = replicates
    return [matched._replicates[key] for matched in matched_models]


def _bootstrap_threads() -> int:
    """Threads that score bootstrap resamples: the CPUs this process may use
    (``MAMMOFUSE_BOOTSTRAP_THREADS`` overrides; 1 scores in the calling thread)."""
    value = os.environ.get("MAMMOFUSE_BOOTSTRAP_THREADS")
    if value:
        return max(1, int(value))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if np.all(np.isnan(replicates)):
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_fauc(
    matched: MatchedDetections,
    max_fp: float = 1.0,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    chunk_size: int | None = None,
) -> BootstrapResult:
    """FAUC-``max_fp`` with a percentile bootstrap CI over images (``n_boot`` resamples of
    ``n_images`` images drawn with replacement; resamples without lesions are left out)."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    replicates = bootstrap_replicates([matched], max_fp, n_boot, seed, chunk_size)[0]
    low, high = _percentile_interval(replicates, level)
    return BootstrapResult(fauc(matched, max_fp), low, high, replicates)


def paired_bootstrap_fauc(
    matched_a: MatchedDetections,
    matched_b: MatchedDetections,
    max_fp: float = 1.0,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    chunk_size: int | None = None,
    same_lesions: bool = True,
) -> PairedBootstrapResult:
    """FAUC-``max_fp`` of model a minus model b, both scored on the same images and resampled
    together. The p-value is two-sided: twice the smaller share of replicate differences on
    either side of zero, counted as ``(k + 1) / (n_boot + 1)`` so it is never 0, capped at 1.

    ``same_lesions=False`` compares models scored against different annotations of the same
    images (an SM model and an FFDM model: each modality's own boxes); images are still
    resampled together."""
    if matched_a.n_images != matched_b.n_images:
        raise ValueError("the two models were matched on different numbers of images")
    if same_lesions and not np.array_equal(matched_a.lesion_image, matched_b.lesion_image):
        raise ValueError("the two models were matched against different lesions")
    if matched_a.image_ids is not None and matched_b.image_ids is not None:
        if not np.array_equal(matched_a.image_ids, matched_b.image_ids):
            raise ValueError("the two models were matched on different image ids")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    both = bootstrap_replicates([matched_a, matched_b], max_fp, n_boot, seed, chunk_size)
    differences = both[0] - both[1]
    low, high = _percentile_interval(differences, level)
    valid = differences[~np.isnan(differences)]
    at_most_zero = np.count_nonzero(valid <= 0)
    at_least_zero = np.count_nonzero(valid >= 0)
    p_value = min(1.0, 2 * (min(at_most_zero, at_least_zero) + 1) / (valid.size + 1))
    fauc_a, fauc_b = fauc(matched_a, max_fp), fauc(matched_b, max_fp)
    return PairedBootstrapResult(
        difference=fauc_a - fauc_b,
        low=low,
        high=high,
        p_value=p_value,
        fauc_a=fauc_a,
        fauc_b=fauc_b,
        replicates=differences,
    )


def froc_band(
    matched: MatchedDetections,
    fp_rates,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile bootstrap band of the sensitivity on the piecewise-linear curve at
    each of ``fp_rates`` (for plots): ``(low, high)``."""
    fp_rates = np.asarray(fp_rates, dtype=np.float64)
    events = matched._events
    curves = np.empty((n_boot, fp_rates.size))
    start = 0
    for counts in resample_counts(matched.n_images, n_boot, seed, chunk_size):
        fp_counts, tp_counts, n_lesions = _resampled_counts(events, counts, float(fp_rates.max()))
        with np.errstate(invalid="ignore", divide="ignore"):
            sensitivity = tp_counts / n_lesions[:, None]
        fp_rate = fp_counts / matched.n_images
        curves[start : start + counts.shape[0]] = _interpolate_rows(fp_rate, sensitivity, fp_rates)
        start += counts.shape[0]
    tail = (1 - level) / 2 * 100
    with np.errstate(invalid="ignore"):
        low, high = np.nanpercentile(curves, [tail, 100 - tail], axis=0)
    return low, high


def _interpolate_rows(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Each row's piecewise-linear y (held flat after its last point) at the points ``at``."""
    rows, n_points = x.shape
    # one searchsorted for all rows: shift each row's x past the previous row's
    shift = (np.nanmax(x) + np.max(at) + 1) * np.arange(rows)[:, None]
    position = np.searchsorted((x + shift).ravel(), (at[None, :] + shift).ravel(), side="right")
    right = np.minimum(
        position.reshape(rows, -1) - np.arange(rows)[:, None] * n_points, n_points - 1
    )
    left = np.maximum(right - 1, 0)
    x0, x1 = np.take_along_axis(x, left, 1), np.take_along_axis(x, right, 1)
    y0, y1 = np.take_along_axis(y, left, 1), np.take_along_axis(y, right, 1)
    fraction = np.divide(at[None, :] - x0, x1 - x0, out=np.ones_like(x0), where=x1 > x0)
    return y0 + np.clip(fraction, 0, 1) * (y1 - y0)
