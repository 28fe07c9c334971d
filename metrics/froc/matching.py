"""Matching detections to lesions: which lesion each detection hits, per image, and which
detections are true positives, duplicates and false positives. Every FROC quantity
(:mod:`metrics.froc.curve`, :mod:`metrics.froc.bootstrap`) derives from the matched records.

Conventions (public anchors: the DBTex rule of mazurowski-lab/duke-dbt-data and picai_eval):

- A detection hits a lesion when the distance between the two box centres is below
  ``max(half the lesion box's diagonal, min_distance)`` (``<=`` with ``inclusive=True``, as in
  DBTex). Boxes are xyxy in the original image's pixels.
- A detection is assigned to the nearest lesion it hits (ties: the lower lesion index). A lesion
  is found at threshold t once a detection assigned to it scores >= t; its best assigned
  detection is its true positive, the others are duplicates: neither true nor false positives.
  A detection that hits no lesion is a false positive.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from common.defaults import HIT_MIN_DISTANCE

if TYPE_CHECKING:
    from metrics.froc.curve import _CurveEvents

FALSE_POSITIVE = 0
TRUE_POSITIVE = 1
DUPLICATE = 2  # hits a lesion that a higher-scoring detection already finds: not counted


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
        """How many lesions (``L``), found or not."""
        return int(self.lesion_image.size)

    @property
    def n_detections(self) -> int:
        """How many detections (``D``), every outcome counted."""
        return int(self.detection_image.size)

    @cached_property
    def _events(self) -> _CurveEvents:
        # imported here: metrics.froc.curve imports this module
        from metrics.froc.curve import _CurveEvents

        return _CurveEvents.of(self)

    def subset(self, keep_images: np.ndarray) -> MatchedDetections:
        """The same records restricted to the images where ``keep_images`` (bool [N]) is true,
        images, lesions and detections renumbered in their original order.

        Returns a new :class:`MatchedDetections` on ``keep_images.sum()`` images; outcomes and
        lesion scores are kept as matched on the whole set (matching is per image).
        """
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
        """The records of the images with at least one lesion (for FAUC-x+), a
        :class:`MatchedDetections` (see :meth:`subset`); the same object on every call (its
        bootstrap replicates are kept with it)."""
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
    :func:`~metrics.froc.pruning.prune_detections` kept at that score.

    Args:
        detection_image: ``(D,)`` int, the image of each detection.
        detection_boxes: ``(D, 4)`` float, xyxy.
        detection_scores: ``(D,)`` float, finite.
        lesion_image: ``(L,)`` int, the image of each lesion.
        lesion_boxes: ``(L, 4)`` float, xyxy.
        n_images: every image evaluated, with or without detections and lesions.
        min_distance: the smallest hit radius, in pixels.
        inclusive: a detection at exactly the radius hits (``<=``, as in DBTex).
        image_ids: ``(n_images,)`` str, kept with the records when given.

    Returns:
        :class:`MatchedDetections`: per detection (``D``) its image (int64), score (float64),
        assigned lesion (int64, -1 for none) and outcome (int8: :data:`FALSE_POSITIVE`,
        :data:`TRUE_POSITIVE` or :data:`DUPLICATE`); per lesion (``L``) its image (int64) and
        its true positive's score (float64, -inf when never hit).

    Raises:
        ValueError: arrays of different lengths, image indices outside ``[0, n_images)``,
            scores that are not finite, or ``image_ids`` of another shape.
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


def _first_of_runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Boolean mask of the first element of each run of equal keys."""
    first = np.ones(sorted_keys.size, dtype=bool)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return first
