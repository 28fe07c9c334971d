"""Bootstrap confidence intervals over images: FAUC-x with its percentile CI, the paired
comparison of two models on the same images, and a pointwise band of the FROC curve. The
replicates come from :mod:`metrics.froc._resampling` and are kept with each model's records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metrics.froc._resampling import _bootstrap_faucs, _resampled_counts, resample_counts
from metrics.froc.curve import fauc
from metrics.froc.matching import MatchedDetections


@dataclass(frozen=True, eq=False)
class BootstrapResult:
    """A statistic with its percentile bootstrap confidence interval: ``estimate``, ``low``
    and ``high`` floats, ``replicates`` ``(n_boot,)`` float64 (nan for a resample without
    lesions)."""

    estimate: float
    low: float
    high: float
    replicates: np.ndarray


@dataclass(frozen=True, eq=False)
class PairedBootstrapResult:
    """FAUC-x of model a minus model b on the same images, with a percentile bootstrap CI and
    a two-sided bootstrap p-value for "no difference". ``replicates``: ``(n_boot,)`` float64,
    the differences on each resample (nan for a resample without lesions)."""

    difference: float
    low: float
    high: float
    p_value: float
    fauc_a: float
    fauc_b: float
    replicates: np.ndarray


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
    (``bootstrap_fauc`` of a model and its ``paired_bootstrap_fauc`` then cost one pass).

    Returns one ``(n_boot,)`` float64 array per model, in order; nan for a resample without
    lesions. ``chunk_size``: resamples scored at once (None: about a million elements); it
    changes no value. Raises :class:`~metrics.froc.pruning.IncompleteDetections` when a
    resample of pruned records needs a detection that was left out.
    """
    key = (float(max_fp), int(n_boot), int(seed), chunk_size)
    pending: dict[int, list[MatchedDetections]] = {}
    for matched in matched_models:
        group = pending.setdefault(matched.n_images, [])
        if key not in matched._replicates and all(m is not matched for m in group):
            group.append(matched)
    for group in pending.values():
        if group:
            for matched, replicates in zip(
                group, _bootstrap_faucs(group, max_fp, n_boot, seed, chunk_size)
            ):
                replicates.flags.writeable = False
                matched._replicates[key] = replicates
    return [matched._replicates[key] for matched in matched_models]


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
    ``n_images`` images drawn with replacement; resamples without lesions are left out).

    ``level``: the interval's coverage, in (0, 1). Returns a :class:`BootstrapResult`: the
    estimate is :func:`~metrics.froc.curve.fauc`, the replicates those of
    :func:`bootstrap_replicates` (``(n_boot,)`` float64, read-only); ``low`` and ``high`` are
    nan when every resample lacks lesions. Raises ValueError when ``n_boot < 1`` or ``level``
    lies outside (0, 1).
    """
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
    resampled together.

    Returns a :class:`PairedBootstrapResult` (its replicates ``(n_boot,)`` float64). Raises
    ValueError when the two records differ in images, image ids or (with ``same_lesions``)
    lesions, when ``n_boot < 1`` or when ``level`` lies outside (0, 1).
    """
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
    each of ``fp_rates`` (for plots): ``(low, high)``.

    ``fp_rates``: 1-D, false positives per image. Returns ``low`` and ``high``, each
    ``(len(fp_rates),)`` float64 (nan where every resample lacks lesions).
    """
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
