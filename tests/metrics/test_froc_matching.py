"""FROC matching: the hit rule, DBTex's version of it, and agreement with plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
from froc_cases import FAR, LESION, box, matched_from
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics.froc import (
    DUPLICATE,
    FALSE_POSITIVE,
    TRUE_POSITIVE,
    fauc,
    fauc_from_curve,
    froc_curve,
    lesions_found,
    match_detections,
    operating_point,
)

# --- the hit rule --------------------------------------------------------------------------


def test_duplicate_hits_on_one_lesion_are_neither_true_nor_false_positives():
    images = [
        {"lesions": [LESION], "detections": [(box(500, 500), 0.9), (box(520, 480), 0.8)]},
        {"lesions": [LESION], "detections": [(box(500, 500), 0.7), (box(*FAR), 0.85)]},
    ]
    matched = matched_from(images)
    assert matched.detection_outcome.tolist() == [
        TRUE_POSITIVE,
        DUPLICATE,
        TRUE_POSITIVE,
        FALSE_POSITIVE,
    ]
    assert matched.detection_lesion.tolist() == [0, 0, 1, -1]
    curve = froc_curve(matched)
    assert curve.thresholds.tolist() == [math.inf, 0.9, 0.85, 0.7]
    assert curve.fp_rate.tolist() == [0.0, 0.0, 0.5, 0.5]
    assert curve.sensitivity.tolist() == [0.0, 0.5, 0.5, 1.0]
    # 0.5 * 0.5 + 0.5 * 1; counting the duplicate as a false positive would give 0.5
    assert fauc(matched) == 0.75
    assert operating_point(matched, 0.0).n_false_positives == 1


@pytest.mark.parametrize(
    ("lesion", "distance", "min_distance", "strict_hit", "inclusive_hit"),
    [
        # 60 x 80 lesion: half diagonal 50, so the 100 px floor decides
        ([0, 0, 60, 80], 99.0, 100.0, True, True),
        ([0, 0, 60, 80], 100.0, 100.0, False, True),
        ([0, 0, 60, 80], 101.0, 100.0, False, False),
        # 300 x 400 lesion: half diagonal 250 beats the floor
        ([0, 0, 300, 400], 200.0, 100.0, True, True),
        ([0, 0, 300, 400], 249.9, 100.0, True, True),
        ([0, 0, 300, 400], 250.0, 100.0, False, True),
        ([0, 0, 300, 400], 251.0, 100.0, False, False),
        # the phantom's 1/8 scale: 12.5 px floor
        ([0, 0, 6, 8], 12.0, 12.5, True, True),
        ([0, 0, 6, 8], 12.5, 12.5, False, True),
        ([0, 0, 6, 8], 13.0, 12.5, False, False),
    ],
)
def test_hit_radius_is_the_larger_of_half_the_diagonal_and_min_distance(
    lesion, distance, min_distance, strict_hit, inclusive_hit
):
    centre_x, centre_y = (lesion[0] + lesion[2]) / 2, (lesion[1] + lesion[3]) / 2
    detection = box(centre_x + distance, centre_y, 5)
    for inclusive, hit in ((False, strict_hit), (True, inclusive_hit)):
        matched = matched_from(
            [{"lesions": [lesion], "detections": [(detection, 0.5)]}],
            min_distance=min_distance,
            inclusive=inclusive,
        )
        assert matched.detection_outcome.tolist() == [TRUE_POSITIVE if hit else FALSE_POSITIVE]


def test_a_detection_goes_to_the_nearest_lesion_it_hits():
    lesions = [box(500, 500, 50), box(600, 500, 50), box(800, 500, 50)]
    images = [
        {
            "lesions": lesions,
            "detections": [(box(560, 500), 0.9), (box(550, 500), 0.8), (box(700, 500), 0.7)],
        }
    ]
    matched = matched_from(images)
    # 560 is 60 from lesion 0 and 40 from lesion 1; 550 is equidistant: the lower index;
    # 700 hits lesions 1 and 2 at 100 each, strictly not
    assert matched.detection_lesion.tolist() == [1, 0, -1]
    assert matched.detection_outcome.tolist() == [TRUE_POSITIVE, TRUE_POSITIVE, FALSE_POSITIVE]
    assert lesions_found(matched, 0.85).tolist() == [False, True, False]
    assert lesions_found(matched, 0.8).tolist() == [True, True, False]


def test_records_keep_the_input_order_of_detections_and_lesions():
    matched = match_detections(
        detection_image=[2, 0, 2],
        detection_boxes=[box(100, 100), box(900, 900), box(1000, 1000)],
        detection_scores=[0.3, 0.2, 0.1],
        lesion_image=[2, 0],
        lesion_boxes=[box(100, 100, 40), box(900, 900, 40)],
        n_images=3,
    )
    assert matched.detection_lesion.tolist() == [0, 1, -1]
    assert matched.lesion_score.tolist() == [0.3, 0.2]
    subset = matched.subset(np.array([False, True, True]))
    assert subset.n_images == 2
    assert subset.lesion_image.tolist() == [1]
    assert subset.detection_lesion.tolist() == [0, -1]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="outside"):
        match_detections([3], [box(0, 0)], [0.5], [], np.zeros((0, 4)), n_images=2)
    with pytest.raises(ValueError, match="finite"):
        match_detections([0], [box(0, 0)], [math.nan], [], np.zeros((0, 4)), n_images=1)
    with pytest.raises(ValueError, match="max_fp"):
        fauc(matched_from([{"lesions": [LESION]}]), max_fp=0)


# --- the DBTex rule ----------------------------------------------------------------------------


def dbtex_true_positive(pred: dict, true: dict, min_dist: float = 100.0) -> bool:
    """DBTex's ``_is_tp`` in 2-D (duke_dbt_data.py): boxes as X, Y, Width, Height; the centre
    distance at most max(half the true box's diagonal, min_dist)."""
    pred_x, pred_y = pred["X"] + pred["Width"] / 2, pred["Y"] + pred["Height"] / 2
    true_x, true_y = true["X"] + true["Width"] / 2, true["Y"] + true["Height"] / 2
    distance = np.linalg.norm((pred_x - true_x, pred_y - true_y))
    threshold = max(np.sqrt(true["Width"] ** 2 + true["Height"] ** 2) / 2.0, min_dist)
    return bool(distance <= threshold)


def dbtex_assign(preds: list[dict], boxes: list[dict]) -> list[int]:
    """DBTex's loop: each prediction's nearest true box among those it hits, -1 if none."""
    assigned = []
    for pred in preds:
        hits = [index for index, true in enumerate(boxes) if dbtex_true_positive(pred, true)]
        centre = np.array([pred["X"] + pred["Width"] / 2, pred["Y"] + pred["Height"] / 2])

        def distance(index: int, centre=centre) -> float:
            true = boxes[index]
            return float(
                np.linalg.norm(
                    centre - [true["X"] + true["Width"] / 2, true["Y"] + true["Height"] / 2]
                )
            )

        assigned.append(min(hits, key=distance) if hits else -1)
    return assigned


def xyxy(row: dict) -> list[float]:
    return [row["X"], row["Y"], row["X"] + row["Width"], row["Y"] + row["Height"]]


def test_the_dbtex_rule_is_matched_with_inclusive_true():
    # DBTex boxes (X, Y, Width, Height): a small lesion (the 100 px floor), a large one (its
    # half diagonal, 250), and predictions on, inside and outside both radii
    boxes = [
        {"X": 1000, "Y": 1000, "Width": 60, "Height": 80},
        {"X": 2000, "Y": 1000, "Width": 300, "Height": 400},
    ]
    preds = [
        {"X": 1130 - 20, "Y": 1040 - 20, "Width": 40, "Height": 40},  # 100 from the small one
        {"X": 1131 - 20, "Y": 1040 - 20, "Width": 40, "Height": 40},  # 101
        {"X": 2150 - 10, "Y": 1200 + 250 - 10, "Width": 20, "Height": 20},  # 250 from the large
        {"X": 2150 - 10, "Y": 1200 + 251 - 10, "Width": 20, "Height": 20},  # 251
        {"X": 1030 - 5, "Y": 1040 - 5, "Width": 10, "Height": 10},  # the small one's centre
    ]
    rng = np.random.default_rng(4)
    for _ in range(200):  # and predictions scattered around both
        centre = rng.uniform([900, 900], [2500, 1700])
        size = rng.uniform(10, 200, 2)
        preds.append({"X": centre[0], "Y": centre[1], "Width": size[0], "Height": size[1]})
    expected = dbtex_assign(preds, boxes)
    assert expected[:5] == [0, -1, 1, -1, 0]
    matched = match_detections(
        np.zeros(len(preds), np.int64),
        np.array([xyxy(pred) for pred in preds]),
        np.linspace(1, 0.01, len(preds)),
        np.zeros(len(boxes), np.int64),
        np.array([xyxy(true) for true in boxes]),
        n_images=1,
        inclusive=True,
    )
    assert matched.detection_lesion.tolist() == expected
    # DBTex counts each hit lesion once (drop_duplicates on GTID) and FPs as TP == 0
    assert np.isfinite(matched.lesion_score).sum() == len(
        {index for index in expected if index >= 0}
    )
    assert (matched.detection_outcome == FALSE_POSITIVE).sum() == expected.count(-1)


# --- the vectorised code against plain loops ---------------------------------------------------


def loop_match(images: list[dict], min_distance=100.0, inclusive=False):
    """Matching one detection and one lesion at a time (outcomes in input order)."""
    outcomes, lesion_scores = [], []
    for image in images:
        lesions = image.get("lesions", [])
        assigned = []
        for detection, _ in image.get("detections", []):
            centre = np.array(
                [(detection[0] + detection[2]) / 2, (detection[1] + detection[3]) / 2]
            )
            best, best_distance = -1, math.inf
            for index, lesion in enumerate(lesions):
                lesion_centre = np.array([(lesion[0] + lesion[2]) / 2, (lesion[1] + lesion[3]) / 2])
                radius = max(
                    math.hypot(lesion[2] - lesion[0], lesion[3] - lesion[1]) / 2, min_distance
                )
                distance = math.hypot(*(centre - lesion_centre))
                hit = distance <= radius if inclusive else distance < radius
                if hit and distance < best_distance:
                    best, best_distance = index, distance
            assigned.append(best)
        scores = [score for _, score in image.get("detections", [])]
        image_outcomes = []
        for position, lesion in enumerate(assigned):
            if lesion < 0:
                image_outcomes.append(FALSE_POSITIVE)
                continue
            rivals = [p for p, other in enumerate(assigned) if other == lesion]
            top = max(rivals, key=lambda p: (scores[p], -p))
            image_outcomes.append(TRUE_POSITIVE if top == position else DUPLICATE)
        outcomes.extend(image_outcomes)
        for index in range(len(lesions)):
            hits = [scores[p] for p, other in enumerate(assigned) if other == index]
            lesion_scores.append(max(hits) if hits else -math.inf)
    return outcomes, lesion_scores


def loop_fauc(images: list[dict], max_fp: float) -> float:
    """FAUC by thresholding at every score and counting, joined points, held flat."""
    outcomes, lesion_scores = loop_match(images)
    scores = [score for image in images for _, score in image.get("detections", [])]
    fp_scores = [s for s, outcome in zip(scores, outcomes) if outcome == FALSE_POSITIVE]
    counted = sorted(set(fp_scores) | {s for s in lesion_scores if s > -math.inf}, reverse=True)
    xs, ys = [0.0], [0.0]
    for threshold in counted:
        xs.append(sum(s >= threshold for s in fp_scores) / len(images))
        ys.append(sum(s >= threshold for s in lesion_scores) / len(lesion_scores))
    return float(fauc_from_curve(np.array(xs), np.array(ys), max_fp))


@st.composite
def random_images(draw):
    """Small images with lesions and detections near them; scores on a coarse grid (ties)."""
    n_images = draw(st.integers(1, 6))
    images = []
    for _ in range(n_images):
        lesions = [
            box(
                draw(st.integers(0, 4)) * 60.0,
                draw(st.integers(0, 4)) * 60.0,
                draw(st.sampled_from([20.0, 90.0, 150.0])),
            )
            for _ in range(draw(st.integers(0, 3)))
        ]
        detections = [
            (
                box(draw(st.integers(0, 25)) * 10.0, draw(st.integers(0, 25)) * 10.0),
                draw(st.integers(1, 5)) / 5,
            )
            for _ in range(draw(st.integers(0, 5)))
        ]
        images.append({"lesions": lesions, "detections": detections})
    return images


@settings(max_examples=150, deadline=None)
@given(images=random_images(), max_fp=st.sampled_from([0.25, 0.5, 1.0, 2.0]))
def test_vectorised_matching_and_fauc_agree_with_loops(images, max_fp):
    matched = matched_from(images)
    outcomes, lesion_scores = loop_match(images)
    assert matched.detection_outcome.tolist() == outcomes
    assert matched.lesion_score.tolist() == lesion_scores
    if not lesion_scores:
        assert math.isnan(fauc(matched, max_fp))
        return
    value = fauc(matched, max_fp)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(loop_fauc(images, max_fp), abs=1e-12)
    curve = froc_curve(matched)
    assert value == pytest.approx(
        float(fauc_from_curve(curve.fp_rate, curve.sensitivity, max_fp)), abs=1e-12
    )
