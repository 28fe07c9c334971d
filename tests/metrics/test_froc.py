"""The FROC core: hand-worked FAUC values, the hit rule (and DBTex's version of it), agreement of
the vectorised matching, curve and bootstrap with plain loop implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics.froc import (
    DUPLICATE,
    FALSE_POSITIVE,
    TRUE_POSITIVE,
    bootstrap_fauc,
    fauc,
    fauc_from_curve,
    froc_band,
    froc_curve,
    image_outcomes,
    lesions_found,
    match_detections,
    operating_point,
    paired_bootstrap_fauc,
    resample_counts,
    sensitivity_at_fp,
    threshold_at_fp,
)
from metrics.froc._resampling import _resampled_counts
from metrics.froc.curve import _fauc_from_counts

FAR = (3000.0, 3000.0)  # a detection centre far from every lesion below


def box(cx: float, cy: float, half: float = 10.0) -> list[float]:
    return [cx - half, cy - half, cx + half, cy + half]


def matched_from(images: list[dict], **options):
    """``images[i] = {"lesions": [box, ...], "detections": [(box, score), ...]}``."""
    detection_image, detection_boxes, scores, lesion_image, lesion_boxes = [], [], [], [], []
    for index, image in enumerate(images):
        for lesion in image.get("lesions", []):
            lesion_image.append(index)
            lesion_boxes.append(lesion)
        for detection, score in image.get("detections", []):
            detection_image.append(index)
            detection_boxes.append(detection)
            scores.append(score)
    return match_detections(
        np.array(detection_image, dtype=np.int64),
        np.array(detection_boxes, dtype=np.float64).reshape(-1, 4),
        np.array(scores, dtype=np.float64),
        np.array(lesion_image, dtype=np.int64),
        np.array(lesion_boxes, dtype=np.float64).reshape(-1, 4),
        n_images=len(images),
        **options,
    )


LESION = box(500, 500, 50)


# --- hand-worked examples ------------------------------------------------------------------


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


# --- bootstrap ----------------------------------------------------------------------------------


def synthetic_case(n_images: int, seed: int, skill: float = 1.0) -> dict:
    """Random images, ~30% with a lesion; detections near lesions score higher with ``skill``;
    scores rounded to 0.01 so that ties occur."""
    rng = np.random.default_rng(seed)
    lesion_image = np.flatnonzero(rng.random(n_images) < 0.3)
    lesion_centre = rng.uniform(200, 2000, size=(lesion_image.size, 2))
    near = rng.random(lesion_image.size) < 0.8
    background = rng.poisson(1.5, n_images)
    n_background, n_near = int(background.sum()), int(near.sum())
    centres = np.vstack(
        [
            rng.uniform(0, 2200, size=(n_background, 2)),
            lesion_centre[near] + rng.normal(0, 20, (n_near, 2)),
        ]
    )
    scores = np.concatenate(
        [rng.random(n_background), np.clip(rng.random(n_near) + skill * 0.4, 0, 1)]
    )
    return {
        "detection_image": np.concatenate(
            [np.repeat(np.arange(n_images), background), lesion_image[near]]
        ),
        "detection_boxes": np.hstack([centres - 15, centres + 15]),
        "detection_scores": np.round(scores, 2),
        "lesion_image": lesion_image,
        "lesion_boxes": np.hstack([lesion_centre - 40, lesion_centre + 40]),
        "n_images": n_images,
    }


def test_bootstrap_replicates_equal_fauc_on_literally_resampled_images():
    case = synthetic_case(60, seed=1)
    matched = match_detections(**case)
    result = bootstrap_fauc(matched, max_fp=1.0, n_boot=25, seed=7, chunk_size=4)
    counts = np.vstack(list(resample_counts(case["n_images"], 25, seed=7, chunk_size=4)))
    assert (counts.sum(axis=1) == case["n_images"]).all()
    for replicate, multiplicity in enumerate(counts):
        # the resample as a data set of its own: image i present multiplicity[i] times
        drawn = np.repeat(np.arange(case["n_images"]), multiplicity)
        detection_rows = [np.flatnonzero(case["detection_image"] == old) for old in drawn]
        lesion_rows = [np.flatnonzero(case["lesion_image"] == old) for old in drawn]
        resampled = match_detections(
            np.repeat(np.arange(drawn.size), [rows.size for rows in detection_rows]),
            case["detection_boxes"][np.concatenate(detection_rows)],
            case["detection_scores"][np.concatenate(detection_rows)],
            np.repeat(np.arange(drawn.size), [rows.size for rows in lesion_rows]),
            case["lesion_boxes"][np.concatenate(lesion_rows)],
            n_images=drawn.size,
        )
        assert result.replicates[replicate] == pytest.approx(fauc(resampled, 1.0), abs=1e-12)


def test_bootstrap_is_seeded_and_independent_of_the_chunk_size():
    matched = match_detections(**synthetic_case(200, seed=2))
    first = bootstrap_fauc(matched, n_boot=300, seed=3)
    again = bootstrap_fauc(matched, n_boot=300, seed=3, chunk_size=7)
    other = bootstrap_fauc(matched, n_boot=300, seed=4)
    assert np.array_equal(first.replicates, again.replicates)
    assert not np.array_equal(first.replicates, other.replicates)
    assert first.estimate == fauc(matched)
    assert first.low < first.estimate < first.high
    assert (first.low, first.high) == tuple(np.percentile(first.replicates, [2.5, 97.5]))
    # the resample that keeps every image once reproduces the estimate exactly
    ones = np.ones((1, matched.n_images), dtype=np.int8)
    fp_counts, tp_counts, n_lesions = _resampled_counts(matched._events, ones, 1.0)
    assert _fauc_from_counts(fp_counts, tp_counts, matched.n_images, n_lesions, 1.0)[0] == (
        fauc(matched)
    )


def test_bootstrap_with_max_fp_cut_matches_the_uncut_curves():
    # the bootstrap keeps only the points FAUC-x needs; the whole curves must give the same
    matched = match_detections(**synthetic_case(150, seed=5))
    counts = np.vstack(list(resample_counts(matched.n_images, 40, seed=1)))
    fp_counts, tp_counts, n_lesions = _resampled_counts(matched._events, counts, None)
    for max_fp in (0.1, 0.5, 1.0, 3.0):
        result = bootstrap_fauc(matched, max_fp=max_fp, n_boot=40, seed=1)
        whole = _fauc_from_counts(fp_counts, tp_counts, matched.n_images, n_lesions, max_fp)
        assert np.array_equal(result.replicates, whole)


def test_paired_bootstrap_of_a_model_with_itself_shows_no_difference():
    matched = match_detections(**synthetic_case(200, seed=6))
    paired = paired_bootstrap_fauc(matched, matched, n_boot=200, seed=0)
    assert paired.difference == 0.0
    assert (paired.low, paired.high) == (0.0, 0.0)
    assert paired.p_value == 1.0


def test_paired_bootstrap_finds_a_clearly_better_model():
    weak = synthetic_case(300, seed=8, skill=0.0)
    # the same images, detections and lesions; the strong model scores its hits 0.5 higher
    hits = match_detections(**weak).detection_outcome != FALSE_POSITIVE
    strong = dict(weak, detection_scores=weak["detection_scores"].copy())
    strong["detection_scores"][hits] = np.minimum(1.0, weak["detection_scores"][hits] + 0.5)
    a, b = match_detections(**strong), match_detections(**weak)
    paired = paired_bootstrap_fauc(a, b, n_boot=500, seed=0)
    assert paired.difference == fauc(a) - fauc(b) > 0
    assert 0 < paired.low <= paired.difference <= paired.high
    assert paired.p_value == pytest.approx(2 / 501)
    # the same resamples as two single bootstraps with the seed
    single_a = bootstrap_fauc(a, n_boot=500, seed=0).replicates
    single_b = bootstrap_fauc(b, n_boot=500, seed=0).replicates
    assert np.array_equal(paired.replicates, single_a - single_b)


def test_paired_bootstrap_refuses_different_images():
    a = match_detections(**synthetic_case(50, seed=1))
    b = match_detections(**synthetic_case(51, seed=1))
    with pytest.raises(ValueError, match="different numbers of images"):
        paired_bootstrap_fauc(a, b, n_boot=10)


def test_froc_band_brackets_the_curve_and_agrees_with_per_resample_curves():
    matched = match_detections(**synthetic_case(300, seed=9))
    grid = np.linspace(0.013, 1.9, 37)  # off the curve's points: no vertical-jump ambiguity
    low, high = froc_band(matched, grid, n_boot=120, seed=2)
    assert np.all(low <= high)
    curve = froc_curve(matched)
    observed = np.interp(grid, curve.fp_rate, curve.sensitivity)
    assert np.mean((low <= observed) & (observed <= high)) > 0.9
    # each resample's curve, rebuilt by hand and interpolated with numpy
    curves = []
    for counts in resample_counts(matched.n_images, 120, seed=2):
        for row in counts:
            weights_fp = row[matched.detection_image][matched.detection_outcome == FALSE_POSITIVE]
            fp_scores = matched.detection_score[matched.detection_outcome == FALSE_POSITIVE]
            found = np.isfinite(matched.lesion_score)
            thresholds = np.unique(np.concatenate([fp_scores, matched.lesion_score[found]]))[::-1]
            fp = [(weights_fp * (fp_scores >= t)).sum() / matched.n_images for t in thresholds]
            tp = [
                (row[matched.lesion_image] * (matched.lesion_score >= t)).sum()
                / row[matched.lesion_image].sum()
                for t in thresholds
            ]
            curves.append(np.interp(grid, np.r_[0.0, fp], np.r_[0.0, tp]))
    expected_low, expected_high = np.percentile(np.array(curves), [2.5, 97.5], axis=0)
    assert np.allclose(low, expected_low, atol=1e-12)
    assert np.allclose(high, expected_high, atol=1e-12)


def test_bootstrap_replicates_do_not_depend_on_the_threads(monkeypatch):
    """Resamples are drawn in order and scored on several threads: the same replicates."""
    from metrics.froc import paired_bootstrap_fauc

    rng = np.random.default_rng(3)
    n_images = 300
    lesion_image = np.sort(rng.choice(n_images, 40, replace=False))
    centre = rng.uniform(200, 800, size=(40, 2))
    lesion_boxes = np.hstack([centre - 30, centre + 30])
    detection_image = np.concatenate([rng.integers(0, n_images, 600), lesion_image])
    detection_centre = np.vstack([rng.uniform(0, 1000, (600, 2)), centre + 5])
    boxes = np.hstack([detection_centre - 20, detection_centre + 20])
    scores = [rng.random(640), rng.random(640)]
    results = {}
    for threads in ("1", "3"):
        # new records each time: records keep their replicates once computed
        matched = [
            match_detections(
                detection_image, boxes, s, lesion_image, lesion_boxes, n_images=n_images
            )
            for s in scores
        ]
        monkeypatch.setenv("MAMMOFUSE_BOOTSTRAP_THREADS", threads)
        single = bootstrap_fauc(matched[0], n_boot=50, seed=1, chunk_size=4)
        paired = paired_bootstrap_fauc(*matched, n_boot=50, seed=1, chunk_size=4)
        results[threads] = (single.replicates, paired.replicates)
    assert np.isfinite(results["1"][0]).all() and results["1"][0].std() > 0
    for one, three in zip(results["1"], results["3"]):
        assert np.array_equal(one, three)


@pytest.mark.parametrize("segment", [3, 1024])
@pytest.mark.parametrize("seed", range(6))
def test_the_per_false_positive_bootstrap_scorer_equals_the_curve_one_bit_for_bit(
    seed, segment, monkeypatch
):
    """``_resampled_faucs`` sums the trapezoids per false positive, by segments; it must give
    exactly what the per-point curve gives, ties between false and true positives, flat tails
    and cuts inside short and long segments included."""
    import metrics.froc.curve
    from metrics.froc._resampling import _resampled_faucs

    monkeypatch.setattr(metrics.froc.curve, "_SEGMENT", segment)

    rng = np.random.default_rng(seed)
    n_images = int(rng.integers(5, 200))
    n_lesions = int(rng.integers(0, 60))
    lesion_image = np.sort(rng.integers(0, n_images, n_lesions))
    centre = rng.uniform(100, 900, size=(n_lesions, 2))
    lesion_boxes = np.hstack([centre - 30, centre + 30])
    n_background = int(rng.integers(0, 8 * n_images))
    detection_image = np.concatenate([rng.integers(0, n_images, n_background), lesion_image])
    detection_centre = np.vstack([rng.uniform(0, 1000, (n_background, 2)), centre + 4])
    boxes = np.hstack([detection_centre - 20, detection_centre + 20])
    levels = [4, 17, 1000][seed % 3]  # few distinct scores: many ties, some FP with TP
    scores = np.round(rng.random(detection_image.size) * levels) / levels
    matched = match_detections(
        detection_image, boxes, scores, lesion_image, lesion_boxes, n_images=n_images
    )
    counts = np.vstack(list(resample_counts(n_images, 30, seed=seed, chunk_size=7)))
    for max_fp in (0.05, 0.5, 1.0, 3.0, 50.0):
        expected = _fauc_from_counts(
            *_resampled_counts(matched._events, counts, max_fp)[:2],
            n_images,
            _resampled_counts(matched._events, counts, max_fp)[2],
            max_fp,
        )
        got = _resampled_faucs(matched._events, counts, max_fp)
        assert np.array_equal(got, expected, equal_nan=True), (max_fp, got - expected)


def test_the_bootstrap_scorer_reaches_past_a_short_first_prefix():
    """When most false positives sit on a few images, a resample that leaves those images out
    needs far more of the ranked false positives than the full sample to reach the cut: the
    scorer must widen its prefix and still give the per-point curve's values exactly."""
    from metrics.froc._resampling import _resampled_faucs

    rng = np.random.default_rng(3)
    n_images = 20
    lesion_image = np.arange(0, n_images, 2)
    centre = rng.uniform(300, 700, size=(lesion_image.size, 2))
    lesion_boxes = np.hstack([centre - 30, centre + 30])
    crowded = np.repeat([0, 1], 250)  # 500 high-scoring false positives on two images
    sparse = rng.integers(0, n_images, 60)
    detection_image = np.concatenate([crowded, sparse, lesion_image])
    far = np.tile([[2000.0, 2000.0]], (crowded.size + sparse.size, 1))
    detection_centre = np.vstack([far + rng.uniform(0, 500, far.shape), centre + 4])
    boxes = np.hstack([detection_centre - 20, detection_centre + 20])
    scores = np.concatenate(
        [
            rng.uniform(0.6, 1.0, crowded.size),
            rng.uniform(0, 0.5, 60),
            rng.uniform(0.2, 0.9, lesion_image.size),
        ]
    )
    matched = match_detections(
        detection_image, boxes, scores, lesion_image, lesion_boxes, n_images=n_images
    )
    counts = np.vstack(list(resample_counts(n_images, 40, seed=0)))
    assert (counts[:, :2].sum(axis=1) == 0).any()  # some resamples leave both crowded out
    for max_fp in (0.5, 1.0, 4.0):
        fp_counts, tp_counts, n_lesions = _resampled_counts(matched._events, counts, max_fp)
        expected = _fauc_from_counts(fp_counts, tp_counts, n_images, n_lesions, max_fp)
        got = _resampled_faucs(matched._events, counts, max_fp)
        assert np.isfinite(got).all() and got.std() > 0
        assert np.array_equal(got, expected), (max_fp, got - expected)


def test_models_on_the_same_images_share_their_resamples(monkeypatch):
    """A model's replicates are kept with it: scored alone, then paired, it is resampled
    once; models with the same number of images are scored on one draw of the resamples."""
    import metrics.froc.bootstrap
    from metrics.froc import bootstrap_replicates

    calls = []
    original = metrics.froc.bootstrap._bootstrap_faucs
    monkeypatch.setattr(
        metrics.froc.bootstrap,
        "_bootstrap_faucs",
        lambda models, *rest: calls.append(len(models)) or original(models, *rest),
    )

    def models(seed):
        case = synthetic_case(120, seed=seed)
        return match_detections(**case)

    a, b, c = models(1), models(2), models(3)
    single_a = bootstrap_fauc(a, n_boot=80, seed=4)
    single_b = bootstrap_fauc(b, n_boot=80, seed=4)
    paired = paired_bootstrap_fauc(a, b, n_boot=80, seed=4, same_lesions=False)
    assert calls == [1, 1]
    fresh = paired_bootstrap_fauc(models(1), models(2), n_boot=80, seed=4, same_lesions=False)
    assert calls == [1, 1, 2]
    assert np.array_equal(paired.replicates, fresh.replicates)
    assert np.array_equal(paired.replicates, single_a.replicates - single_b.replicates)
    together = bootstrap_replicates([c, a, models(3)], n_boot=80, seed=4)
    assert calls == [1, 1, 2, 2]  # c and the new c in one pass; a kept
    assert np.array_equal(together[0], together[2]) and together[1] is single_a.replicates
    with pytest.raises(ValueError):
        single_a.replicates[0] = 0.0  # kept replicates are read-only
