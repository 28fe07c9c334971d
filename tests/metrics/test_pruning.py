"""Pruning before matching (``metrics.froc.prune_detections``) is exact: on randomised cases
with many tied scores, every number the evaluation and the report give (FAUC-x, FAUC-x+, the
bootstrap replicates and CIs, the paired bootstrap, the threshold, the operating point, the
per-image outcomes, the FROC band) is the same, bit for bit, from the pruned records as from
all of them, or the computation refuses (``IncompleteDetections``), never another number."""

from __future__ import annotations

import numpy as np
import pytest

from metrics.froc import (
    IncompleteDetections,
    bootstrap_fauc,
    fauc,
    froc_band,
    image_outcomes,
    lowest_score_read,
    match_detections,
    operating_point,
    paired_bootstrap_fauc,
    prune_detections,
    sensitivity_at_fp,
    threshold_at_fp,
)
from metrics.plot import plot_froc


def random_case(seed: int):
    """Images of which a fifth hold lesions; a model's detections near most lesions and
    scattered elsewhere, scores on a coarse grid (ties between false and true positives and
    at the pruning cut); a second model's scores the first's with noise, on the same grid."""
    rng = np.random.default_rng(seed)
    n_images = int(rng.integers(40, 400))
    n_lesions = int(rng.integers(1, n_images // 4 + 2))
    lesion_image = np.sort(rng.integers(0, n_images, n_lesions))
    centre = rng.uniform(100, 900, size=(n_lesions, 2))
    lesion_boxes = np.hstack([centre - 30, centre + 30])
    per_image = rng.poisson(rng.uniform(1, 12), n_images)
    if seed % 4 == 0:  # false positives crowded on a few images: resamples vary a lot
        per_image[: max(1, n_images // 20)] += 60
    background = np.repeat(np.arange(n_images), per_image)
    near = lesion_image[rng.random(n_lesions) < 0.8]
    detection_image = np.concatenate([background, near, near])  # duplicates on lesions too
    near_centre = np.vstack([centre[np.searchsorted(lesion_image, near)]] * 2)
    detection_centre = np.vstack(
        [
            rng.uniform(0, 1000, (background.size, 2)),
            near_centre + rng.normal(0, 15, (2 * near.size, 2)),
        ]
    )
    boxes = np.hstack([detection_centre - 20, detection_centre + 20])
    levels = [8, 30, 200][seed % 3]
    scores_a = np.round(rng.random(detection_image.size) * levels) / levels
    scores_b = np.clip(
        np.round((scores_a + rng.normal(0, 0.1, scores_a.size)) * levels) / levels, 0, 1
    )
    return n_images, detection_image, boxes, (scores_a, scores_b), lesion_image, lesion_boxes


def numbers(models, max_fp: float, threshold_of=None, n_boot: int = 60) -> dict:
    """What evaluate and the report compute from matched records; every array compared
    bit for bit."""
    a, b = models
    threshold = threshold_at_fp(a, max_fp) if threshold_of is None else threshold_of
    point = operating_point(a, threshold)
    outcomes = image_outcomes(a, threshold)
    paired = paired_bootstrap_fauc(a, b, max_fp, n_boot=n_boot, seed=2)
    return {
        "fauc": fauc(a, max_fp),
        "fauc_positive": fauc(a.positive_images(), max_fp),
        "replicates": bootstrap_fauc(a, max_fp, n_boot=n_boot, seed=1).replicates,
        "positive_replicates": bootstrap_fauc(
            a.positive_images(), max_fp, n_boot=n_boot, seed=1
        ).replicates,
        "paired": (paired.difference, paired.low, paired.high, paired.p_value),
        "paired_replicates": paired.replicates,
        "threshold": threshold,
        "point": (point.fp_rate, point.sensitivity, point.n_false_positives),
        "outcomes": np.concatenate(outcomes),
        "band": np.concatenate(froc_band(a, np.linspace(0, max_fp, 9), n_boot=n_boot, seed=3)),
        "sensitivity": sensitivity_at_fp(a, [max_fp / 2, max_fp]),
        "lowest_read": lowest_score_read(a, max_fp),
    }


def matched_models(case, pruned: bool, fp_per_image: float, margin_sd=None, min_score=np.inf):
    n_images, detection_image, boxes, scores, lesion_image, lesion_boxes = case
    has_lesion = np.bincount(lesion_image, minlength=n_images) > 0
    models, cuts = [], []
    for model_scores in scores:
        keep, cut = np.ones(model_scores.size, bool), -np.inf
        if pruned:
            keep, cut = prune_detections(
                detection_image,
                model_scores,
                has_lesion,
                fp_per_image,
                min_score=min_score,
                margin_sd=margin_sd,
            )
        models.append(
            match_detections(
                detection_image[keep],
                boxes[keep],
                model_scores[keep],
                lesion_image,
                lesion_boxes,
                n_images=n_images,
                pruned_below=cut,
            )
        )
        cuts.append(cut)
    return models, cuts


def assert_same(got: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert np.array_equal(np.asarray(got[key]), np.asarray(value), equal_nan=True), key


@pytest.mark.parametrize("max_fp", [0.25, 1.0, 2.0])
def test_pruned_records_give_the_same_numbers_bit_for_bit(max_fp):
    pruned_cases = 0
    for seed in range(16):
        case = random_case(seed)
        whole, _ = matched_models(case, pruned=False, fp_per_image=max_fp)
        pruned, cuts = matched_models(case, pruned=True, fp_per_image=max_fp)
        expected = numbers(whole, max_fp)
        assert_same(numbers(pruned, max_fp), expected)
        if np.isfinite(cuts[0]):
            pruned_cases += 1
            assert pruned[0].n_detections < whole[0].n_detections
            # the pruned-away detections lie on lesion-free images, below the cut
            assert (
                pruned[0].positive_images().n_detections == whole[0].positive_images().n_detections
            )
    assert pruned_cases >= 8  # half the cases or more did lose detections


def test_a_threshold_below_the_cut_is_kept_by_min_score():
    """The report applies the validation threshold to test: test is pruned no higher."""
    for seed in range(8):
        case = random_case(seed)
        whole, _ = matched_models(case, pruned=False, fp_per_image=1.0)
        threshold = float(np.quantile(whole[0].detection_score, 0.2))  # deep: about 4 FP/image
        pruned, cuts = matched_models(case, pruned=True, fp_per_image=1.0, min_score=threshold)
        assert cuts[0] <= threshold
        assert_same(numbers(pruned, 1.0, threshold), numbers(whole, 1.0, threshold))


def test_a_cut_too_shallow_for_some_resample_refuses_instead_of_guessing():
    """With a negative margin the pruned records reach the cut on the full sample only: each
    computation either gives exactly the whole records' number or raises."""
    outcomes = {"equal": 0, "refused": 0}
    for seed in range(16):
        case = random_case(seed)
        whole, _ = matched_models(case, pruned=False, fp_per_image=1.0)
        pruned, cuts = matched_models(case, pruned=True, fp_per_image=1.0, margin_sd=-3.0)
        if not np.isfinite(cuts[0]):
            continue
        assert fauc(pruned[0], 1.0) == fauc(whole[0], 1.0)  # the full sample always reaches
        for function in (
            lambda models: bootstrap_fauc(models[0], 1.0, n_boot=200, seed=1).replicates,
            lambda models: paired_bootstrap_fauc(*models, 1.0, n_boot=200, seed=2).replicates,
            lambda models: froc_band(models[0], np.linspace(0, 1, 5), n_boot=200, seed=3),
        ):
            expected = function(whole)
            try:
                got = function(pruned)
            except IncompleteDetections:
                outcomes["refused"] += 1
                continue
            assert np.array_equal(np.asarray(got), np.asarray(expected), equal_nan=True)
            outcomes["equal"] += 1
    assert outcomes["refused"] > 0 and outcomes["equal"] > 0, outcomes


def test_what_lies_below_the_cut_is_refused(tmp_path):
    case = random_case(5)
    pruned, cuts = matched_models(case, pruned=True, fp_per_image=0.5)
    model = pruned[0]
    assert np.isfinite(cuts[0])
    below = cuts[0] - 1e-9
    with pytest.raises(IncompleteDetections, match="below"):
        operating_point(model, below)
    with pytest.raises(IncompleteDetections, match="below"):
        image_outcomes(model, below)
    with pytest.raises(IncompleteDetections, match="false positives per image"):
        fauc(model, 50.0)
    with pytest.raises(IncompleteDetections, match="false positives per image"):
        threshold_at_fp(model, 50.0)
    with pytest.raises(IncompleteDetections, match="false positives per image"):
        plot_froc({"model": model}, tmp_path / "froc.png", max_fp=50.0, n_boot=0)
    # the images with lesions lost nothing: FAUC+ at any x is that of every detection
    whole, _ = matched_models(case, pruned=False, fp_per_image=0.5)
    assert fauc(model.positive_images(), 50.0) == fauc(whole[0].positive_images(), 50.0)
