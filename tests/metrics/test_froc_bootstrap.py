"""The FAUC bootstrap: replicates against literal resamples, pairing, bands, threads, scorer."""

from __future__ import annotations

import numpy as np
import pytest

from metrics.froc import (
    FALSE_POSITIVE,
    bootstrap_fauc,
    fauc,
    froc_band,
    froc_curve,
    match_detections,
    paired_bootstrap_fauc,
    resample_counts,
)
from metrics.froc._resampling import _resampled_counts
from metrics.froc.curve import _fauc_from_counts


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
