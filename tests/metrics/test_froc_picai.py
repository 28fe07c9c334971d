"""Agreement with picai_eval (DIAG, Radboudumc), the public reference for FROC areas and
operating points: the same per-detection true/false positive lists give the same FAUC-x (its
``calculate_pAUC_from_graph``, normalised), threshold and sensitivity at a target FP rate."""

from __future__ import annotations

import numpy as np
import pytest
from picai_eval.analysis_utils import calculate_pAUC_from_graph
from picai_eval.metrics import Metrics

from metrics.froc import (
    FALSE_POSITIVE,
    MatchedDetections,
    fauc,
    match_detections,
    sensitivity_at_fp,
    threshold_at_fp,
)


def synthetic_matched(seed: int, n_images: int = 37) -> MatchedDetections:
    """Lesions on about a third of the images, detections near them and elsewhere, scores in
    [0.05, 1] on a 0.05 grid (so tied true and false positives occur), some lesions missed."""
    rng = np.random.default_rng(seed)
    lesion_image = np.flatnonzero(rng.random(n_images) < 0.35)
    lesion_centre = rng.uniform(300, 3000, size=(lesion_image.size, 2))
    near = rng.random(lesion_image.size) < 0.75
    near_twice = near & (rng.random(lesion_image.size) < 0.3)  # duplicates
    background = rng.poisson(1.2, n_images)
    detection_image = np.concatenate(
        [np.repeat(np.arange(n_images), background), lesion_image[near], lesion_image[near_twice]]
    )
    centres = np.vstack(
        [
            rng.uniform(0, 3300, size=(int(background.sum()), 2)),
            lesion_centre[near] + rng.normal(0, 30, (int(near.sum()), 2)),
            lesion_centre[near_twice] + rng.normal(0, 30, (int(near_twice.sum()), 2)),
        ]
    )
    scores = rng.integers(1, 21, detection_image.size) / 20
    matched = match_detections(
        detection_image,
        np.hstack([centres - 25, centres + 25]),
        scores,
        lesion_image,
        np.hstack([lesion_centre - 60, lesion_centre + 60]),
        n_images=n_images,
    )
    assert not np.isfinite(matched.lesion_score).all(), "want a missed lesion (see picai_metrics)"
    return matched


def picai_metrics(matched: MatchedDetections) -> Metrics:
    """picai_eval's lesion results from our matching: per image, ``(1, score, overlap)`` for a
    lesion (score 0 when missed, as picai_eval writes it), ``(0, score, 0)`` for a false
    positive; duplicates are left out (picai_eval's default,
    allow_unmatched_candidates_with_minimal_overlap). picai_eval drops its lowest threshold's
    point for (inf, last sensitivity), which is right when that threshold is 0 (a missed
    lesion), hence the missed lesion in every case here."""
    lesion_results = {f"image{index:03d}": [] for index in range(matched.n_images)}
    for image, score in zip(matched.lesion_image, matched.lesion_score):
        found = bool(np.isfinite(score))
        lesion_results[f"image{image:03d}"].append(
            (1, float(score) if found else 0.0, 1.0 if found else 0.0)
        )
    is_fp = matched.detection_outcome == FALSE_POSITIVE
    for image, score in zip(matched.detection_image[is_fp], matched.detection_score[is_fp]):
        lesion_results[f"image{image:03d}"].append((0, float(score), 0.0))
    return Metrics(lesion_results=lesion_results)


def picai_fauc(metrics: Metrics, max_fp: float, from_origin: bool = True) -> float:
    x, y = np.asarray(metrics.lesion_FPR, float), np.asarray(metrics.lesion_TPR, float)
    if from_origin:
        x, y = np.concatenate([[0.0], x]), np.concatenate([[0.0], y])
    area = calculate_pAUC_from_graph(x=x, y=y, pAUC_start=0.0, pAUC_end=max_fp)[0]
    return area / max_fp


def top_score_mixes_true_and_false_positives(matched: MatchedDetections) -> bool:
    counted = (matched.detection_outcome != 2) & (
        matched.detection_score == matched.detection_score.max()
    )
    outcomes = set(matched.detection_outcome[counted].tolist())
    return len(outcomes) == 2


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("max_fp", [0.5, 1.0, 2.0])
def test_fauc_equals_picai_partial_auc_normalised(seed, max_fp):
    matched = synthetic_matched(seed)
    metrics = picai_metrics(matched)
    assert metrics.num_lesions == matched.n_lesions
    assert metrics.num_cases == matched.n_images
    assert fauc(matched, max_fp) == pytest.approx(picai_fauc(metrics, max_fp), abs=1e-6)
    if not top_score_mixes_true_and_false_positives(matched):
        # picai_eval's curve starts at its first threshold; without a tie of a true and a
        # false positive at the top score that start adds no area, and the origin is moot
        raw = picai_fauc(metrics, max_fp, from_origin=False)
        assert fauc(matched, max_fp) == pytest.approx(raw, abs=1e-6)


def test_picai_without_the_origin_gives_full_credit_to_a_tie_at_the_top_score():
    # one image: a lesion hit at 0.5 and a false positive at 0.5. Our curve (and Bandos' half
    # credit) runs from the origin to (1, 1): 0.5. picai_eval's curve has no origin point,
    # np.interp holds its first point (1 FP, sensitivity 1) flat to the left: 1.0.
    matched = match_detections(
        [0, 0],
        [[0, 0, 20, 20], [900, 900, 920, 920]],
        [0.5, 0.5],
        [0],
        [[0, 0, 20, 20]],
        n_images=1,
    )
    metrics = Metrics(lesion_results={"a": [(1, 0.5, 1.0), (0, 0.5, 0.0), (0, 0.0, 0.0)]})
    assert fauc(matched) == 0.5
    assert picai_fauc(metrics, 1.0) == pytest.approx(0.5, abs=1e-6)
    assert picai_fauc(metrics, 1.0, from_origin=False) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("seed", range(8))
def test_threshold_and_sensitivity_equal_picai_operating_point(seed):
    matched = synthetic_matched(seed)
    metrics = picai_metrics(matched)
    fp_rate = np.asarray(metrics.lesion_FPR)
    checked = 0
    for target in (0.05, 0.1, 0.3, 0.5, 1.0, 1.5):
        within = np.flatnonzero(fp_rate <= target)
        expected = float(metrics.thresholds[within[-1]]) if within.size else np.inf
        assert threshold_at_fp(matched, target) == expected
        expected_sensitivity = metrics.lesion_TPR_at_FPR(target)
        assert sensitivity_at_fp(matched, target)[0] == pytest.approx(expected_sensitivity)
        checked += within.size > 0
    assert checked >= 4
