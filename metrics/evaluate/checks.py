"""The checks of ``cli.py evaluate``'s tables: the problems found so far and the rule each row
must keep (finite numbers, scores in [0, 1], boxes in their image's pixels, no repeated row)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.problems import (
    DETECTION_OUTSIDE,
    DUPLICATE_ROW,
    EMPTY_VALUE,
    IMAGE_ID_NOT_LISTED,
    LESION_OUTSIDE,
    MISSING_COLUMN,
    NOT_A_NUMBER,
    SCORE_OUTSIDE,
    Problem,
    ProblemsError,
)
from common.tables import BOX_AXES, BOX_COLUMNS, file_row, inverted, inverted_kind, inverted_reason

_LISTED = 50  # rows listed of each problem in each column of each file; the rest counted


class EvaluationInputError(ProblemsError):
    """Bad evaluation files; ``problems`` lists every `Problem` found (file, row as a
    spreadsheet shows it, or as the CSV export of a Parquet file does, column), at most 50 rows
    of each kind in each column with a count of the rest, and the message one per line."""

    subject = "the evaluation files"
    more = "all in EvaluationInputError.problems"


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
            EMPTY_VALUE,
        )


def _has_columns(
    name: str, columns: list[str], required: tuple[str, ...], problems: _Problems
) -> bool:
    absent = [column for column in required if column not in columns]
    has = ", ".join(map(repr, columns))
    for column in absent:
        problems.whole(name, f"missing required column (has {has})", MISSING_COLUMN, column)
    return not absent


def _unlisted(name, rows, id_of, images, problems: _Problems) -> None:
    problems.rows(
        name,
        rows,
        "image_id",
        lambda row: f"{id_of(row)!r} is not listed in {images}",
        IMAGE_ID_NOT_LISTED,
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
            NOT_A_NUMBER,
        )
    if "score" in columns:
        score = columns["score"]
        outside = np.flatnonzero((score < 0) | (score > 1)) + offset
        problems.rows(
            name,
            outside,
            "score",
            lambda row: f"{score[row - offset]:g} is not in [0, 1]",
            SCORE_OUTSIDE,
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
                    LESION_OUTSIDE,
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
                    LESION_OUTSIDE,
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
        DETECTION_OUTSIDE,
    )


def _size_text(height: float, width: float) -> str:
    return "" if np.isnan(height) else f" ({width:g} x {height:g} px)"


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
        DUPLICATE_ROW,
    )


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
