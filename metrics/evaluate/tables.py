"""Reading the predictions, ground-truth and images tables (CSV or Parquet, the Parquet
predictions a row group at a time) into `EvaluationTables`, checked and pruned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.problems import (
    DUPLICATE_IMAGE_ID,
    EMPTY_FILE,
    EMPTY_VALUE,
    FILE_NOT_FOUND,
    NO_DETECTIONS,
    NO_IMAGES,
    UNREADABLE_FILE,
)
from common.tables import BOX_COLUMNS, cell_text, file_row
from metrics.evaluate.checks import (
    EvaluationInputError,
    _check_duplicates,
    _check_numbers,
    _check_prediction_duplicates,
    _has_columns,
    _Problems,
    _unlisted,
)
from metrics.evaluate.evaluation import EvaluationTables
from metrics.froc import prune_detections

PREDICTION_COLUMNS = ("image_id", *BOX_COLUMNS, "score")
GROUND_TRUTH_COLUMNS = ("image_id", *BOX_COLUMNS)
IMAGE_COLUMNS = ("image_id",)
PARQUET_SUFFIXES = (".parquet", ".pq")
_BATCH_ROWS = 1 << 20  # rows of a Parquet file read at a time


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
                DUPLICATE_IMAGE_ID,
            )
        elif ids.empty:
            image_problems.whole(str(images), "no images listed", NO_IMAGES)
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
        problems.whole(name, "file not found", FILE_NOT_FOUND)
        return None
    except pd.errors.EmptyDataError:
        problems.whole(name, "empty file (no header line)", EMPTY_FILE)
        return None
    except (pd.errors.ParserError, UnicodeDecodeError, pa.ArrowException, OSError) as error:
        kind = "Parquet" if _is_parquet(path) else "CSV"
        problems.whole(name, f"not a readable {kind} file ({error})", UNREADABLE_FILE)
        return None
    if not _has_columns(name, list(table.columns), required, problems):
        return None
    table = table.reset_index(drop=True)
    table["image_id"] = _text(table["image_id"])
    return table


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
        problems.whole(name, "no detections (a header and no rows)", NO_DETECTIONS)
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
        problems.whole(name, "file not found", FILE_NOT_FOUND)
        return None
    except (pa.ArrowException, OSError) as error:
        problems.whole(name, f"not a readable Parquet file ({error})", UNREADABLE_FILE)
        return None
    columns = parquet.schema_arrow.names
    if not _has_columns(name, columns, PREDICTION_COLUMNS, problems):
        return None
    before = len(problems)
    n_rows = parquet.metadata.num_rows
    if n_rows == 0:
        problems.whole(name, "no detections (the table has no rows)", NO_DETECTIONS)
    ids, codes = _parquet_ids(path, parquet)
    empty = ids == ""
    problems.rows(name, np.flatnonzero(empty[codes]), "image_id", "empty value", EMPTY_VALUE)
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
