"""``python cli.py evaluate``: score any detector's output (FAUC-x, FAUC-x+, their bootstrap
CIs, the threshold at a target FP rate and the sensitivity there), and the reading and
checking of the prediction tables, which the reports reuse.

    python cli.py evaluate --predictions P.parquet --ground-truth G.parquet --images I.parquet \\
        [--max-fp 1] [--threshold T] [--target-fp 1] [--min-distance 100] [--inclusive] \\
        [--n-boot 2000] [--seed 0] [--plot froc.png]
    python cli.py evaluate --export-csv runs/stage1_sm/predictions   # every table as CSV too

Tables are Parquet (``.parquet``, ``.pq``: what ``PredictionWriter`` writes) or CSV. P:
``image_id,x1,y1,x2,y2,score``; G: ``image_id,x1,y1,x2,y2``; I: ``image_id``, every evaluated
image (images without lesions or detections count), and from the writer the highest score its
cap left out per image. Boxes are xyxy in the original image's pixels; other columns are kept
and ignored. Ids are text, stripped, as the manifest reader reads them. Prints one JSON object.

Refused, each named by file, row and column: a missing or unreadable file or column, an empty
id, an id the images file lists twice or does not list, a value that is not a finite number,
a score outside [0, 1], a box with x2 <= x1 or y2 <= y1 or a negative coordinate, a predictions
table without rows, and a repeated row (a ground-truth box, or a detection among the rows
evaluation reads).

Only the detections FAUC-x can reach are matched and resampled
(:func:`metrics.froc.prune_detections`); the numbers are those of every detection, and when
some resample needs more the files are read again whole. When the writer's cap left out a
detection above the cut, one line on stderr says on how many images.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.defaults import HIT_MIN_DISTANCE
from common.problems import Problem, ProblemsError
from common.tables import (
    BOX_AXES,
    BOX_COLUMNS,
    cell_text,
    file_row,
    inverted,
    inverted_kind,
    inverted_reason,
)
from metrics.froc import (
    IncompleteDetections,
    MatchedDetections,
    bootstrap_fauc,
    fauc,
    lowest_score_read,
    match_detections,
    operating_point,
    prune_detections,
    threshold_at_fp,
)

PREDICTION_COLUMNS = ("image_id", *BOX_COLUMNS, "score")
GROUND_TRUTH_COLUMNS = ("image_id", *BOX_COLUMNS)
IMAGE_COLUMNS = ("image_id",)
PARQUET_SUFFIXES = (".parquet", ".pq")
_BATCH_ROWS = 1 << 20  # rows of a Parquet file read at a time
_LISTED = 50  # rows listed of each problem in each column of each file; the rest counted


class EvaluationInputError(ProblemsError):
    """Bad evaluation files; ``problems`` lists every `Problem` found (file, row as a
    spreadsheet shows it, or as the CSV export of a Parquet file does, column), at most 50 rows
    of each kind in each column with a count of the rest, and the message one per line."""

    subject = "the evaluation files"
    more = "all in EvaluationInputError.problems"


@dataclass(frozen=True, eq=False)
class EvaluationTables:
    """The three evaluation tables, validated. ``image_ids`` in the images file's order;
    ``predictions`` and ``ground_truth`` keep their files' columns (ids as text, box and
    score columns as float64) plus ``image_index``, the row of their image in ``image_ids``.

    ``predictions`` holds the rows evaluation reads: all of them, or with ``pruned_below``
    those :func:`metrics.froc.prune_detections` kept (``n_predictions`` counts the file's
    rows). ``dropped_score``: per image, the highest score the writer's cap left out (nan
    where it left none; None when the images file does not say)."""

    image_ids: np.ndarray
    predictions: pd.DataFrame
    ground_truth: pd.DataFrame
    n_predictions: int = -1
    pruned_below: float = -np.inf
    dropped_score: np.ndarray | None = None

    def sorted_by_image(self) -> EvaluationTables:
        """The same tables with the images in sorted id order (runs on different numbers of
        processes list them in different orders; comparisons need one)."""
        order = np.argsort(self.image_ids.astype(str), kind="stable")
        position = np.empty_like(order)
        position[order] = np.arange(order.size)
        tables = []
        for table in (self.predictions, self.ground_truth):
            table = table.assign(image_index=position[table["image_index"].to_numpy()])
            tables.append(table.sort_values("image_index", kind="stable").reset_index(drop=True))
        dropped = None if self.dropped_score is None else self.dropped_score[order]
        return replace(
            self,
            image_ids=self.image_ids[order],
            predictions=tables[0],
            ground_truth=tables[1],
            dropped_score=dropped,
        )

    def match(
        self, min_distance: float = HIT_MIN_DISTANCE, inclusive: bool = False
    ) -> MatchedDetections:
        """Match the predictions to the lesions; lesion i is row i of ``ground_truth`` and
        detection j row j of ``predictions``."""
        return match_detections(
            self.predictions["image_index"].to_numpy(),
            self.predictions[list(BOX_COLUMNS)].to_numpy(np.float64),
            self.predictions["score"].to_numpy(np.float64),
            self.ground_truth["image_index"].to_numpy(),
            self.ground_truth[list(BOX_COLUMNS)].to_numpy(np.float64),
            n_images=self.image_ids.size,
            min_distance=min_distance,
            inclusive=inclusive,
            image_ids=self.image_ids,
            pruned_below=self.pruned_below,
        )

    def capped_above(self, matched: MatchedDetections, max_fp: float) -> int | None:
        """How many images had a detection left out by the writer's cap (``max_detections``)
        that scores at or above the lowest score FAUC-``max_fp`` (or, on an image with
        lesions, FAUC-``max_fp``+) reads on these images; None when the images file does not
        say. Nan scores (nothing left out) never count."""
        if self.dropped_score is None:
            return None
        dropped = self.dropped_score
        binding = dropped >= lowest_score_read(matched, max_fp)
        has_lesion = np.bincount(matched.lesion_image, minlength=matched.n_images) > 0
        if has_lesion.any():
            positive = lowest_score_read(matched.positive_images(), max_fp)
            binding[has_lesion] |= dropped[has_lesion] >= positive
        return int(np.count_nonzero(binding))


def read_evaluation_tables(
    predictions: str | Path,
    ground_truth: str | Path,
    images: str | Path,
    fp_per_image: float | None = None,
    min_score: float = np.inf,
) -> EvaluationTables:
    """Read and validate the predictions, ground-truth and images tables (Parquet, ``.parquet``
    or ``.pq``, else CSV). Raises :class:`EvaluationInputError` listing every problem of all
    three files at once.

    With ``fp_per_image``, only the predictions that FAUC-x up to that x, thresholds at up to
    that many false positives per image and any score down to ``min_score`` can reach are
    kept (:func:`metrics.froc.prune_detections`), before matching; the rest are read only to
    be checked."""
    # each file's problems, listed images first, then predictions, then ground truth
    image_problems, prediction_problems, truth_problems = _Problems(), _Problems(), _Problems()
    image_table = _read_frame(images, IMAGE_COLUMNS, image_problems)
    image_index = dropped = None
    if image_table is not None:
        ids = image_table["image_id"]
        image_problems.empty_ids(str(images), ids)
        repeated = ids.duplicated(keep="first")
        if repeated.any():
            first_row = pd.Series(np.arange(ids.size), index=ids).groupby(level=0).first()
            image_problems.rows(
                str(images),
                np.flatnonzero(repeated),
                "image_id",
                lambda row: (
                    f"{ids[row]!r} is listed more than once (first at "
                    f"row {file_row(first_row[ids[row]])})"
                ),
                "duplicate image_id",
            )
        elif ids.empty:
            image_problems.whole(str(images), "no images listed", "no images")
        else:
            image_index = pd.Index(ids)
        if "dropped_score" in image_table.columns:
            dropped = _numbers(image_table["dropped_score"])
    sizes = _sizes(image_table)
    truth = _read_frame(ground_truth, GROUND_TRUTH_COLUMNS, truth_problems)
    has_lesion = None
    if truth is not None:
        truth_problems.empty_ids(str(ground_truth), truth["image_id"])
        _index(truth, image_index, str(ground_truth), images, truth_problems)
        boxes = {column: _numbers(truth[column]) for column in BOX_COLUMNS}
        _check_numbers(
            boxes,
            truth,
            str(ground_truth),
            truth_problems,
            size=_row_sizes(sizes, truth["image_index"].to_numpy()),
            lesions=True,
        )
        truth = truth.assign(**boxes)
        if len(truth):
            _check_duplicates(
                truth,
                ["image_id", *BOX_COLUMNS],
                str(ground_truth),
                truth_problems,
                "the same image_id and box, a lesion counted twice",
            )
        if image_index is not None:
            has_lesion = np.zeros(image_index.size, dtype=bool)
            has_lesion[truth["image_index"].to_numpy()[truth["image_index"].to_numpy() >= 0]] = 1
    read = _read_predictions(
        predictions,
        image_index,
        images,
        has_lesion,
        sizes,
        fp_per_image,
        min_score,
        prediction_problems,
    )
    problems = [*image_problems.found(), *prediction_problems.found(), *truth_problems.found()]
    if problems:
        raise EvaluationInputError(problems)
    frame, n_rows, pruned_below = read
    return EvaluationTables(
        image_ids=image_table["image_id"].to_numpy(dtype=str),
        predictions=frame,
        ground_truth=truth,
        n_predictions=n_rows,
        pruned_below=pruned_below,
        dropped_score=dropped,
    )


class _Problems:
    """The problems found so far; of each (file, column, kind) the first ``_LISTED`` rows are
    listed and the rest counted in one line at the end (a file of millions of bad rows is
    reported in a few hundred lines)."""

    def __init__(self):
        self.listed: list[Problem] = []
        self.unlisted: dict[tuple[str, str | None, str], int] = {}
        self._counts: dict[tuple[str, str | None, str], int] = {}

    def __len__(self) -> int:
        """Every problem found, listed or counted."""
        return len(self.listed) + sum(self.unlisted.values())

    def found(self) -> list[Problem]:
        return self.listed + [
            Problem(
                file, None, column, f"{count} more rows like the {_LISTED} above ({kind})", kind
            )
            for (file, column, kind), count in self.unlisted.items()
        ]

    def whole(self, file: str, reason: str, kind: str, column: str | None = None) -> None:
        self.listed.append(Problem(file, None, column, reason, kind))

    def rows(self, file: str, rows: np.ndarray, column: str | None, reason, kind: str) -> None:
        """``rows``: positions in the file (0 = first data row); ``reason``: a text, or a
        function of the position giving one."""
        if not rows.size:
            return
        key = (file, column, kind)
        room = max(_LISTED - self._counts.get(key, 0), 0)
        for row in rows[:room]:
            text = reason(int(row)) if callable(reason) else reason
            self.listed.append(Problem(file, file_row(row), column, text, kind))
        self._counts[key] = self._counts.get(key, 0) + rows.size
        if rows.size > room:
            self.unlisted[key] = self.unlisted.get(key, 0) + rows.size - room

    def empty_ids(self, file: str, ids: pd.Series) -> None:
        self.rows(
            file,
            np.flatnonzero(ids.to_numpy(dtype=str) == ""),
            "image_id",
            "empty value",
            "empty value",
        )


def _read_frame(
    path: str | Path, required: tuple[str, ...], problems: _Problems
) -> pd.DataFrame | None:
    """A whole table (CSV as text, Parquet as typed), ``image_id`` as text stripped as the
    manifest reader strips it; None, with its problem, when it cannot be read or lacks a
    required column."""
    name = str(path)
    try:
        if _is_parquet(path):
            table = pq.read_table(path).to_pandas()
        else:
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        problems.whole(name, "file not found", "file not found")
        return None
    except pd.errors.EmptyDataError:
        problems.whole(name, "empty file (no header line)", "empty file")
        return None
    except (pd.errors.ParserError, UnicodeDecodeError, pa.ArrowException, OSError) as error:
        kind = "Parquet" if _is_parquet(path) else "CSV"
        problems.whole(name, f"not a readable {kind} file ({error})", "unreadable file")
        return None
    if not _has_columns(name, list(table.columns), required, problems):
        return None
    table = table.reset_index(drop=True)
    table["image_id"] = _text(table["image_id"])
    return table


def _has_columns(
    name: str, columns: list[str], required: tuple[str, ...], problems: _Problems
) -> bool:
    absent = [column for column in required if column not in columns]
    has = ", ".join(map(repr, columns))
    for column in absent:
        problems.whole(name, f"missing required column (has {has})", "missing column", column)
    return not absent


def _text(values: pd.Series) -> pd.Series:
    """Ids as the manifest reader compares them (`cell_text`), as Python strings."""
    return cell_text(values).astype(object)


def _numbers(values: pd.Series) -> np.ndarray:
    """float64, nan where a value is missing or not a number."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)


def _is_parquet(path: str | Path) -> bool:
    return str(path).lower().endswith(PARQUET_SUFFIXES)


def _index(
    table: pd.DataFrame, image_index: pd.Index | None, name: str, images, problems: _Problems
) -> None:
    """``image_index`` of each row (-1 when unknown), and the ids the images file lacks."""
    ids = table["image_id"]
    if image_index is None:
        table["image_index"] = -1
        return
    table["image_index"] = image_index.get_indexer(ids)
    _unlisted(
        name,
        np.flatnonzero((table["image_index"] < 0).to_numpy() & (ids != "")),
        lambda row: ids[row],
        images,
        problems,
    )


def _unlisted(name, rows, id_of, images, problems: _Problems) -> None:
    problems.rows(
        name,
        rows,
        "image_id",
        lambda row: f"{id_of(row)!r} is not listed in {images}",
        "image_id not listed",
    )


def _check_numbers(
    columns: dict[str, np.ndarray],
    text: pd.DataFrame | None,
    name: str,
    problems: _Problems,
    offset: int = 0,
    size: np.ndarray | None = None,
    lesions: bool = False,
) -> None:
    """Every value finite, scores in [0, 1], boxes with x2 > x1 and y2 > y1, in the image's
    pixels: a lesion inside its image, a detection's centre within half the image of it (a
    detector's box may reach past the border or lie just outside it; effdet's do).
    ``size``: each row's image (height, width), nan where the images file does not say;
    ``text``: the values as the file has them, for the messages (None: the numbers are the
    file's); ``offset``: the first row's position."""

    def shown(column):
        return (
            (lambda row: repr(text[column][row - offset]))
            if text is not None
            else (lambda row: repr(str(columns[column][row - offset])))
        )

    for column, values in columns.items():
        bad = ~np.isfinite(values)
        problems.rows(
            name,
            np.flatnonzero(bad) + offset,
            column,
            lambda row, c=column: f"{shown(c)(row)} is not a finite number",
            "not a number",
        )
    if "score" in columns:
        score = columns["score"]
        outside = np.flatnonzero((score < 0) | (score > 1)) + offset
        problems.rows(
            name,
            outside,
            "score",
            lambda row: f"{score[row - offset]:g} is not in [0, 1]",
            "score outside [0, 1]",
        )
    if "x1" not in columns:
        return
    x1, y1, x2, y2 = (columns[column] for column in BOX_COLUMNS)
    for (low, high), first, second in zip(BOX_AXES, (x1, y1), (x2, y2)):
        # rows whose numbers did not parse, or are infinite, are reported above
        wrong = np.flatnonzero(np.isfinite(first) & np.isfinite(second) & inverted(first, second))
        problems.rows(
            name,
            wrong + offset,
            high,
            lambda row, a=first, b=second, lo=low, hi=high: inverted_reason(
                lo, hi, a[row - offset], b[row - offset]
            ),
            inverted_kind(low, high),
        )
    height, width = (np.full(x1.size, np.nan),) * 2 if size is None else size
    if lesions:
        for column, values, limit, side in (
            ("x1", x1, None, ""),
            ("y1", y1, None, ""),
            ("x2", x2, width, "width"),
            ("y2", y2, height, "height"),
        ):
            if limit is None:
                wrong = np.flatnonzero(values < 0)
                why = "is negative (a lesion lies in its image's pixels, from 0)"
                problems.rows(
                    name,
                    wrong + offset,
                    column,
                    lambda row, v=values, w=why: f"{v[row - offset]:g} {w}",
                    "lesion outside its image",
                )
            else:
                wrong = np.flatnonzero(values > limit)
                problems.rows(
                    name,
                    wrong + offset,
                    column,
                    lambda row, v=values, m=limit, s=side: (
                        f"{v[row - offset]:g} lies past the image's {s}, {m[row - offset]:g}"
                    ),
                    "lesion outside its image",
                )
        return
    # A detector's box may reach past the border, or lie just outside it (the demo's BASE_UB:
    # x1 down to -5,943 px, centres up to 10.5% of the width outside; an FFDM model of the X1
    # seeds: boxes wholly above the image, centres 44 and 124 px above a 512 px one): those
    # are its false positives. A centre further out than half the image is not a detection in
    # this image's pixels (hits are judged at centres).
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    far = (
        (centre_x < -width / 2)
        | (centre_x > 1.5 * width)
        | (centre_y < -height / 2)
        | (centre_y > 1.5 * height)
    )
    problems.rows(
        name,
        np.flatnonzero(far) + offset,
        None,
        lambda row: (
            f"the box ({x1[row - offset]:g}, {y1[row - offset]:g}, "
            f"{x2[row - offset]:g}, {y2[row - offset]:g}) has its centre "
            f"({centre_x[row - offset]:g}, {centre_y[row - offset]:g}) more "
            "than half the image outside it"
            + _size_text(height[row - offset], width[row - offset])
            + ": x1, y1, x2, y2 are not in this image's pixels"
        ),
        "detection outside its image",
    )


def _size_text(height: float, width: float) -> str:
    return "" if np.isnan(height) else f" ({width:g} x {height:g} px)"


def _sizes(image_table: pd.DataFrame | None) -> np.ndarray | None:
    """The images' (height, width) ``[2, N]``, when the images file gives them."""
    if image_table is None or not {"height", "width"} <= set(image_table.columns):
        return None
    return np.vstack([_numbers(image_table["height"]), _numbers(image_table["width"])])


def _row_sizes(sizes: np.ndarray | None, index: np.ndarray) -> np.ndarray | None:
    """Each row's image size (nan where its image is unknown)."""
    if sizes is None:
        return None
    padded = np.hstack([sizes, np.full((2, 1), np.nan)])
    return padded[:, np.where(index >= 0, index, sizes.shape[1])]


def _check_duplicates(
    table: pd.DataFrame,
    columns: list[str],
    name: str,
    problems: _Problems,
    what: str,
    rows: np.ndarray | None = None,
) -> None:
    """Rows equal in ``columns`` to an earlier row; ``rows``: their positions in the file."""
    repeated = table.duplicated(columns, keep=False).to_numpy()
    if not repeated.any():
        return
    positions = np.arange(len(table)) if rows is None else rows
    groups = table[repeated].groupby(columns, sort=False, dropna=False).ngroup().to_numpy()
    where = positions[repeated]
    first = pd.Series(where).groupby(groups).transform("min").to_numpy()
    later = where != first
    first_of = dict(zip(where[later], first[later]))
    problems.rows(
        name,
        where[later],
        None,
        lambda row: f"repeats row {file_row(first_of[row])}: {what}",
        "duplicate row",
    )


def _read_predictions(
    path,
    image_index: pd.Index | None,
    images,
    has_lesion: np.ndarray | None,
    sizes: np.ndarray | None,
    fp_per_image: float | None,
    min_score: float,
    problems: _Problems,
):
    """The predictions file checked row by row (as columns) and the rows evaluation reads:
    ``(frame, rows in the file, pruned_below)``; None when it cannot be read."""
    name = str(path)
    if _is_parquet(path):
        return _read_parquet_predictions(
            path, image_index, images, has_lesion, sizes, fp_per_image, min_score, problems
        )
    frame = _read_frame(path, PREDICTION_COLUMNS, problems)
    if frame is None:
        return None
    before = len(problems)
    if frame.empty:
        problems.whole(name, "no detections (a header and no rows)", "no detections")
    problems.empty_ids(name, frame["image_id"])
    _index(frame, image_index, name, images, problems)
    numbers = {column: _numbers(frame[column]) for column in (*BOX_COLUMNS, "score")}
    _check_numbers(
        numbers, frame, name, problems, size=_row_sizes(sizes, frame["image_index"].to_numpy())
    )
    frame = frame.assign(**numbers)
    keep, pruned_below = _prune(
        frame["image_index"].to_numpy(),
        numbers["score"],
        has_lesion,
        fp_per_image,
        min_score,
        clean=len(problems) == before,
    )
    rows = np.arange(len(frame)) if keep is None else np.flatnonzero(keep)
    kept = frame if keep is None else frame[keep].reset_index(drop=True)
    _check_prediction_duplicates(kept, rows, name, problems)
    return kept, len(frame), pruned_below


def _read_parquet_predictions(
    path, image_index, images, has_lesion, sizes, fp_per_image, min_score, problems: _Problems
):
    """The Parquet path of :func:`_read_predictions`: ids and scores first, as columns; the
    boxes a row group at a time, checked whole and kept where the pruning keeps them."""
    name = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except FileNotFoundError:
        problems.whole(name, "file not found", "file not found")
        return None
    except (pa.ArrowException, OSError) as error:
        problems.whole(name, f"not a readable Parquet file ({error})", "unreadable file")
        return None
    columns = parquet.schema_arrow.names
    if not _has_columns(name, columns, PREDICTION_COLUMNS, problems):
        return None
    before = len(problems)
    n_rows = parquet.metadata.num_rows
    if n_rows == 0:
        problems.whole(name, "no detections (the table has no rows)", "no detections")
    ids, codes = _parquet_ids(path, parquet)
    empty = ids == ""
    problems.rows(name, np.flatnonzero(empty[codes]), "image_id", "empty value", "empty value")
    if image_index is None:
        index = np.full(n_rows, -1, dtype=np.int64)
    else:
        index = image_index.get_indexer(ids)[codes]
        _unlisted(
            name,
            np.flatnonzero((index < 0) & ~empty[codes]),
            lambda row: ids[codes[row]],
            images,
            problems,
        )
    score = _parquet_numbers(parquet.read(columns=["score"]).column(0))
    _check_numbers({"score": score}, None, name, problems)
    keep, pruned_below = _prune(
        index, score, has_lesion, fp_per_image, min_score, clean=len(problems) == before
    )
    extra = ["label"] if "label" in columns else []
    kept: dict[str, list[np.ndarray]] = {column: [] for column in (*BOX_COLUMNS, *extra)}
    offset = 0
    for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=[*BOX_COLUMNS, *extra]):
        boxes = {column: _parquet_numbers(batch.column(column)) for column in BOX_COLUMNS}
        _check_numbers(
            boxes,
            None,
            name,
            problems,
            offset,
            size=_row_sizes(sizes, index[offset : offset + batch.num_rows]),
        )
        chosen = slice(None) if keep is None else keep[offset : offset + batch.num_rows]
        for column in BOX_COLUMNS:
            kept[column].append(boxes[column][chosen])
        for column in extra:
            kept[column].append(batch.column(column).to_numpy(zero_copy_only=False)[chosen])
        offset += batch.num_rows
    rows = np.arange(n_rows) if keep is None else np.flatnonzero(keep)
    if image_index is None:
        return None
    frame = pd.DataFrame(
        {
            "image_id": pd.Categorical.from_codes(
                np.maximum(index[rows], 0), categories=image_index
            ),
            **{
                column: np.concatenate(parts) if parts else np.zeros(0)
                for column, parts in kept.items()
            },
            "score": score[rows],
            "image_index": index[rows],
        }
    )
    _check_prediction_duplicates(frame, rows, name, problems)
    return frame, n_rows, pruned_below


def _parquet_ids(path, parquet: pq.ParquetFile) -> tuple[np.ndarray, np.ndarray]:
    """The id column as its distinct values (text, stripped) and each row's code into them,
    without a Python string per row: Parquet keeps text columns dictionary-encoded."""
    field = parquet.schema_arrow.field("image_id")
    text = pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
    column = (
        pq.ParquetFile(path, read_dictionary=["image_id"] if text else None)
        .read(columns=["image_id"])
        .column(0)
    )
    if not text:  # numbers as ids read as the manifest reader reads them: their text
        column = pc.cast(column, pa.string()).dictionary_encode()
    values, codes, offset = [], [], 0
    for chunk in column.chunks:
        dictionary = _text(pd.Series(chunk.dictionary.to_numpy(zero_copy_only=False)))
        values.append(np.append(dictionary.to_numpy(dtype=object), ""))  # last: a missing id
        indices = chunk.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False)
        codes.append(indices.astype(np.int64) + offset)
        offset += len(dictionary) + 1
    if not values:
        return np.array([""], dtype=object), np.zeros(0, dtype=np.int64)
    return np.concatenate(values), np.concatenate(codes)


def _parquet_numbers(column) -> np.ndarray:
    """A Parquet column as float64, nan where missing or not a number."""
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    return _numbers(pd.Series(column.to_numpy(zero_copy_only=False)))


def _prune(
    index: np.ndarray,
    score: np.ndarray,
    has_lesion: np.ndarray | None,
    fp_per_image: float | None,
    min_score: float,
    clean: bool,
):
    """The rows evaluation reads (None: all) and the score they were cut at. A file with
    problems is not pruned: every row is checked and none is evaluated."""
    if fp_per_image is None or has_lesion is None or not clean:
        return None, -np.inf
    keep, pruned_below = prune_detections(index, score, has_lesion, fp_per_image, min_score)
    return (None, -np.inf) if pruned_below == -np.inf else (keep, pruned_below)


def _check_prediction_duplicates(
    frame: pd.DataFrame, rows: np.ndarray, name: str, problems: _Problems
) -> None:
    """Among the rows evaluation reads (a repeat below them changes no number)."""
    known = "image_index" in frame.columns and (frame["image_index"].to_numpy() >= 0).all()
    columns = [
        "image_index" if known else "image_id",
        *BOX_COLUMNS,
        "score",
        *(["label"] if "label" in frame.columns else []),
    ]
    what = "the same image_id, box, score" + (" and label" if "label" in columns else "")
    if len(frame):
        _check_duplicates(
            frame, columns, name, problems, f"{what}, a detection counted twice", rows
        )


def evaluation_report(
    matched: MatchedDetections,
    max_fp: float = 1.0,
    target_fp: float = 1.0,
    threshold: float | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """The numbers ``evaluate`` prints, as a JSON-ready dict (nan and inf become None)."""
    positive = matched.positive_images()
    if n_boot > 0:
        overall = bootstrap_fauc(matched, max_fp, n_boot=n_boot, seed=seed)
        positive_interval = bootstrap_fauc(positive, max_fp, n_boot=n_boot, seed=seed)
        fauc_ci = [overall.low, overall.high]
        positive_ci = [positive_interval.low, positive_interval.high]
    else:
        fauc_ci = positive_ci = None
    at_target = threshold_at_fp(matched, target_fp)
    used = at_target if threshold is None else float(threshold)
    point = operating_point(matched, used)
    report = {
        "fauc": fauc(matched, max_fp),
        "fauc_ci95": fauc_ci,
        "fauc_positive": fauc(positive, max_fp),
        "fauc_positive_ci95": positive_ci,
        "max_fp": max_fp,
        "n_images": matched.n_images,
        "n_positive_images": positive.n_images,
        "n_lesions": matched.n_lesions,
        "n_detections": matched.n_detections,
        "target_fp": target_fp,
        "threshold_at_target_fp": at_target,
        "threshold": used,
        "threshold_source": "target_fp" if threshold is None else "given",
        "sensitivity_at_threshold": point.sensitivity,
        "fp_rate_at_threshold": point.fp_rate,
        "lesions_found_at_threshold": point.n_lesions_found,
        "n_boot": n_boot,
        "seed": seed,
    }
    return _json_ready(report)


def _json_ready(value):
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cli.py evaluate",
        description="FAUC-x, FAUC-x+ and an operating threshold of a detector's predictions.",
    )
    parser.add_argument(
        "--predictions", type=Path, help="Parquet or CSV: image_id,x1,y1,x2,y2,score"
    )
    parser.add_argument("--ground-truth", type=Path, help="Parquet or CSV: image_id,x1,y1,x2,y2")
    parser.add_argument("--images", type=Path, help="Parquet or CSV: image_id of every image")
    parser.add_argument("--max-fp", type=float, default=1.0, help="x of FAUC-x (default 1)")
    parser.add_argument(
        "--threshold", type=float, default=None, help="report the sensitivity at this score"
    )
    parser.add_argument(
        "--target-fp",
        type=float,
        default=1.0,
        help="false positives per image that set threshold_at_target_fp (default 1)",
    )
    parser.add_argument(
        "--min-distance",
        type=float,
        default=HIT_MIN_DISTANCE,
        help=f"hit radius floor in original pixels (default {HIT_MIN_DISTANCE:g})",
    )
    parser.add_argument(
        "--inclusive",
        action="store_true",
        help="a detection at exactly the hit radius hits (DBTex's <=); default strict <",
    )
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples; 0: no CIs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None, help="write the FROC curve to this PNG")
    parser.add_argument(
        "--export-csv",
        type=Path,
        nargs="+",
        default=None,
        metavar="PATH",
        help="instead: write a CSV next to each Parquet table given (or in each folder given, "
        "e.g. a run's predictions/) and exit",
    )
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``python cli.py evaluate``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.export_csv is not None:
        for path in export_csv(args.export_csv):
            print(path)
        return 0
    if None in (args.predictions, args.ground_truth, args.images):
        parser.error("--predictions, --ground-truth and --images are required")
    for flag, value, holds, rule in (
        ("--max-fp", args.max_fp, args.max_fp > 0, "> 0"),
        ("--target-fp", args.target_fp, args.target_fp >= 0, ">= 0"),
        ("--n-boot", args.n_boot, args.n_boot >= 0, ">= 0"),
        ("--min-distance", args.min_distance, args.min_distance >= 0, ">= 0"),
    ):
        if not holds:
            parser.error(f"{flag} must be {rule}, got {value:g}")
    # the deepest the numbers below read: FAUC-x, the threshold, the plot's axis (2x)
    reach = max(args.max_fp, args.target_fp) * (2 if args.plot is not None else 1)
    floor = np.inf if args.threshold is None else args.threshold
    for fp_per_image in (reach, None):
        try:
            tables = read_evaluation_tables(
                args.predictions,
                args.ground_truth,
                args.images,
                fp_per_image=fp_per_image,
                min_score=floor,
            )
        except EvaluationInputError as error:
            print(f"evaluate: bad input\n{error}", file=sys.stderr)
            return 2
        matched = tables.match(min_distance=args.min_distance, inclusive=args.inclusive)
        try:
            report = evaluation_report(
                matched,
                max_fp=args.max_fp,
                target_fp=args.target_fp,
                threshold=args.threshold,
                n_boot=args.n_boot,
                seed=args.seed,
            )
            if args.plot is not None:
                from metrics.plot import plot_froc

                plot_froc(
                    {args.predictions.stem: matched},
                    args.plot,
                    max_fp=args.max_fp,
                    n_boot=args.n_boot,
                    seed=args.seed,
                )
                report["plot"] = str(args.plot)
            break
        except IncompleteDetections as error:
            if fp_per_image is None:
                raise
            print(f"evaluate: {error}; reading every detection", file=sys.stderr)
    report["n_detections"] = tables.n_predictions
    report["n_detections_read"] = matched.n_detections
    capped = tables.capped_above(matched, args.max_fp)
    report["images_capped_above_cut"] = capped
    if capped:
        print(cap_message(capped, args.max_fp), file=sys.stderr)
    print(json.dumps(report))
    return 0


def cap_message(images: int, max_fp: float, who: str = "evaluate") -> str:
    """The one line that says the writer's cap may have lowered FAUC-x."""
    return (
        f"{who}: on {images} image(s) the prediction writer's cap (max_detections) left "
        f"out a detection scoring at or above the lowest score FAUC-{max_fp:g} (or "
        f"FAUC-{max_fp:g}+) reads: those numbers and their CIs may be lower than with every "
        "detection; write the predictions again with a larger --predictions.max_detections"
    )


def export_csv(paths: list[Path]) -> list[Path]:
    """A CSV next to each Parquet table (``x.parquet`` -> ``x.csv``; folders: every Parquet
    file in them), floats written as float64 so that they read back to the same numbers."""
    import pyarrow.csv as csv

    tables = []
    for path in map(Path, paths):
        found = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        if path.is_dir() and not found:
            raise SystemExit(f"evaluate --export-csv: no .parquet file in {path}")
        tables += found
    written = []
    for path in tables:
        if not _is_parquet(path) or not path.is_file():
            raise SystemExit(f"evaluate --export-csv: {path} is not a Parquet file")
        table = pq.read_table(path)
        table = table.cast(
            pa.schema(
                [
                    pa.field(field.name, pa.float64())
                    if pa.types.is_floating(field.type)
                    else field
                    for field in table.schema
                ]
            )
        )
        out = path.with_suffix(".csv")
        csv.write_csv(table, out)
        written.append(out)
    return written
