"""The resampling engine behind :mod:`metrics.froc.bootstrap`: it draws the bootstrap resamples
of the images, counts how often each image was drawn, and scores every resample's FROC points
and FAUC-x from a model's score-sorted events (:class:`metrics.froc.curve._CurveEvents`)
without forming each resample's curve, on several threads.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from metrics.froc.curve import _CurveEvents
from metrics.froc.matching import MatchedDetections
from metrics.froc.pruning import IncompleteDetections

# bootstrap work arrays hold about this many elements per chunk of replicates
_CHUNK_ELEMENTS = 1_000_000


def resample_counts(
    n_images: int, n_boot: int, seed: int = 0, chunk_size: int | None = None
) -> Iterator[np.ndarray]:
    """The bootstrap resamples, as chunks of per-image multiplicities ``[b, n_images]`` (int8, or
    int32 when one exceeds 127; each row sums to ``n_images``: n images drawn with
    replacement). The same seed gives the same rows whatever the chunk size.

    Yields ``n_boot`` rows in all, ``chunk_size`` at a time (the last chunk may be shorter;
    None: about a million elements a chunk).
    """
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
    reach = (
        "every point of the curve"
        if fp_per_image is None
        else f"{fp_per_image:g} false positives per image"
    )
    raise IncompleteDetections(
        f"a bootstrap resample needs detections below the score where "
        f"the predictions were pruned to reach {reach}"
    )


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
    np.cumsum(
        np.take(counts, events.tp_image, axis=1), axis=1, dtype=count_type, out=tp_cumulative[:, 1:]
    )
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
            twice_area = 2 * (
                int(area_before[s])
                + int(local[inside - low] - fp_before[s]) * int(tp[segment_above[s]])
            )
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
