"""At scale most detections are never read: :func:`prune_detections` keeps what FAUC-x can reach
(see there), and every function of :mod:`metrics.froc` that would need a detection it left out
raises :class:`IncompleteDetections` instead of giving another number.
"""

from __future__ import annotations

import numpy as np

from metrics.froc.matching import MatchedDetections

# prune_detections keeps this many standard deviations (over resamples) of false positives
# past the cut: a resample falling short then has odds far below 1e-20
PRUNE_MARGIN_SD = 10.0


class IncompleteDetections(ValueError):
    """A computation needs detections that :func:`prune_detections` left out: read the
    predictions again without pruning (``cli.py evaluate`` and the report do)."""


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
    resamples. A resample that still falls short is not scored on a guess: the functions of
    :mod:`metrics.froc` raise :class:`IncompleteDetections` whenever a computation needs a
    detection below s.

    Args:
        detection_image: ``(D,)`` int, the image of each detection, in ``[0, N)``.
        detection_scores: ``(D,)`` float.
        image_has_lesion: ``(N,)`` bool, one per image evaluated.
        fp_per_image: the highest x of FAUC-x (and of the threshold at x) to keep exact.
        min_score: keep at least every detection scoring >= it.
        margin_sd: the margin over resamples, in standard deviations; None:
            :data:`PRUNE_MARGIN_SD`.

    Returns:
        ``(keep, pruned_below)``: ``keep`` ``(D,)`` bool, the detections to match;
        ``pruned_below`` float, the score s (-inf when ``keep`` is all true), to pass to
        :func:`~metrics.froc.matching.match_detections`.
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
    point a computation up to that rate reads (always true of unpruned records).

    Returns None; raises :class:`IncompleteDetections` when the records fall short.
    """
    if matched.pruned_below == -np.inf:
        return
    have = matched._events.fp_image.size
    if have < fp_per_image * matched.n_images + 1:
        raise IncompleteDetections(
            f"{fp_per_image:g} false positives per image need detections scoring below "
            f"{matched.pruned_below:g}, where the predictions were pruned ({have} false "
            f"positives on {matched.n_images} images)"
        )


def _require_threshold(matched: MatchedDetections, threshold: float) -> None:
    if threshold < matched.pruned_below:
        raise IncompleteDetections(
            f"threshold {threshold:g} lies below {matched.pruned_below:g}, where the predictions "
            "were pruned"
        )
