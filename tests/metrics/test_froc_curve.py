"""The FROC curve and FAUC on hand-worked examples: ties, flat tails, cuts, operating points."""

from __future__ import annotations

import math

import pytest
from froc_cases import FAR, LESION, box, matched_from

from metrics.froc import (
    FALSE_POSITIVE,
    TRUE_POSITIVE,
    fauc,
    froc_curve,
    image_outcomes,
    lesions_found,
    operating_point,
    sensitivity_at_fp,
    threshold_at_fp,
)


def test_one_lesion_and_one_hit_scores_one():
    matched = matched_from([{"lesions": [LESION], "detections": [(box(505, 495), 0.9)]}])
    curve = froc_curve(matched)
    assert curve.fp_rate.tolist() == [0.0, 0.0]
    assert curve.sensitivity.tolist() == [0.0, 1.0]
    assert curve.thresholds.tolist() == [math.inf, 0.9]
    assert matched.detection_outcome.tolist() == [TRUE_POSITIVE]
    assert matched.lesion_score.tolist() == [0.9]
    assert fauc(matched) == 1.0
    assert fauc(matched.positive_images()) == 1.0
    assert threshold_at_fp(matched, 1.0) == 0.9
    assert sensitivity_at_fp(matched, [0.0, 1.0]).tolist() == [1.0, 1.0]


def test_a_miss_is_a_false_positive_and_scores_zero():
    matched = matched_from([{"lesions": [LESION], "detections": [(box(900, 900), 0.8)]}])
    curve = froc_curve(matched)
    assert curve.fp_rate.tolist() == [0.0, 1.0]
    assert curve.sensitivity.tolist() == [0.0, 0.0]
    assert matched.detection_outcome.tolist() == [FALSE_POSITIVE]
    assert matched.lesion_score.tolist() == [-math.inf]
    assert lesions_found(matched, 0.0).tolist() == [False]
    assert fauc(matched) == 0.0
    assert threshold_at_fp(matched, 1.0) == 0.8  # 1 FP / 1 image <= 1
    assert threshold_at_fp(matched, 0.5) == math.inf  # even the top score exceeds 0.5 FP/image
    assert sensitivity_at_fp(matched, 0.5).tolist() == [0.0]


@pytest.mark.parametrize(
    ("tp_score", "expected"),
    [(0.5, 0.5), (0.6, 1.0), (0.4, 0.0)],
    ids=["tie-diagonal", "tp-first", "fp-first"],
)
def test_a_tie_between_a_true_and_a_false_positive_is_a_diagonal(tp_score, expected):
    matched = matched_from(
        [{"lesions": [LESION], "detections": [(box(500, 500), tp_score), (box(*FAR), 0.5)]}]
    )
    assert fauc(matched) == expected
    if tp_score == 0.5:
        # one point for the tied score: from the origin straight to (1 FP, all found)
        curve = froc_curve(matched)
        assert curve.fp_rate.tolist() == [0.0, 1.0]
        assert curve.sensitivity.tolist() == [0.0, 1.0]
        # Bandos et al.'s half credit: the mean of the two orders
        assert expected == (1.0 + 0.0) / 2


def test_a_curve_that_ends_before_the_cut_is_held_flat():
    images = [
        {"lesions": [LESION], "detections": [(box(500, 500), 0.6)]},
        {"lesions": [LESION]},  # never detected
        {"detections": [(box(*FAR), 0.8)]},
        {},
    ]
    matched = matched_from(images)
    curve = froc_curve(matched)
    assert curve.fp_rate.tolist() == [0.0, 0.25, 0.25]
    assert curve.sensitivity.tolist() == [0.0, 0.0, 0.5]
    assert fauc(matched, max_fp=1.0) == 0.375  # 0.75 * 0.5
    assert fauc(matched, max_fp=2.0) == 0.4375  # 1.75 * 0.5 / 2
    assert fauc(matched, max_fp=0.25) == 0.0


def test_the_crossing_segment_is_interpolated_at_the_cut():
    images = [
        {"lesions": [LESION], "detections": [(box(500, 500), 0.9), (box(*FAR), 0.7)]},
        {"lesions": [LESION], "detections": [(box(500, 500), 0.8), (box(*FAR), 0.8)]},
    ]
    matched = matched_from(images)
    curve = froc_curve(matched)
    assert curve.fp_rate.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert curve.sensitivity.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert fauc(matched, 1.0) == 0.875
    assert fauc(matched, 0.5) == 0.75
    assert fauc(matched, 0.25) == 0.625  # the diagonal cut at 0.25: sensitivity 0.75


@pytest.mark.parametrize(("n_images", "expected"), [(1, 0.0), (2, 0.5), (4, 0.75)])
def test_images_without_lesions_or_detections_change_the_denominator(n_images, expected):
    images = [{"lesions": [LESION], "detections": [(box(*FAR), 0.9), (box(500, 500), 0.5)]}]
    matched = matched_from(images + [{}] * (n_images - 1))
    assert matched.n_images == n_images
    assert fauc(matched) == expected
    # FAUC+ looks at the image with a lesion only
    assert fauc(matched.positive_images()) == 0.0


def test_operating_point_and_threshold_at_a_target_fp_rate():
    images = [
        {"lesions": [LESION], "detections": [(box(500, 500), 0.9), (box(*FAR), 0.6)]},
        {"lesions": [LESION], "detections": [(box(500, 500), 0.4), (box(*FAR), 0.7)]},
        {"detections": [(box(*FAR), 0.5)]},
    ]
    matched = matched_from(images)
    # FP(>=0.7)=1, FP(>=0.6)=2, FP(>=0.5)=3 over 3 images
    assert threshold_at_fp(matched, 1 / 3) == 0.7
    assert threshold_at_fp(matched, 0.7) == 0.6
    assert threshold_at_fp(matched, 1.0) == 0.4  # all 3 FPs fit: down to the last TP
    point = operating_point(matched, 0.6)
    assert (point.n_false_positives, point.n_lesions_found) == (2, 1)
    assert point.fp_rate == 2 / 3 and point.sensitivity == 0.5
    assert sensitivity_at_fp(matched, [0.0, 1 / 3, 1.0]).tolist() == [0.5, 0.5, 1.0]
    false_positives, missed = image_outcomes(matched, 0.6)
    assert false_positives.tolist() == [1, 1, 0]
    assert missed.tolist() == [0, 1, 0]


def test_no_lesions_gives_nan_and_no_detections_gives_zero():
    assert math.isnan(fauc(matched_from([{"detections": [(box(10, 10), 0.5)]}, {}])))
    assert fauc(matched_from([{"lesions": [LESION]}, {}])) == 0.0
    assert threshold_at_fp(matched_from([{"lesions": [LESION]}]), 1.0) == math.inf
