"""What every reader of a table does alike: a cell as text, a true/false field, the box rule
and the row a problem names. The manifest and lesion tables, the EMBED adapter and
``cli.py evaluate``'s files use these, so that a value each accepts and a row each names agree.

What the readers do differently stays with them: how a file is read (the manifest's sniffing
of encoding and separator, the adapter's pandas defaults, evaluate's problems for unreadable
files) and how a number is parsed (see each reader's own function).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common.problems import INVERTED_BOX

# The spellings of a boolean field, compared in lower case after stripping.
TRUE_TEXTS = ("true", "t", "yes", "y", "1", "1.0")
FALSE_TEXTS = ("false", "f", "no", "n", "0", "0.0")

# A box's columns, xyxy in pixels, and the (low, high) pairs of the box rule.
BOX_COLUMNS = ("x1", "y1", "x2", "y2")
BOX_AXES = (("x1", "x2"), ("y1", "y2"))

# The row of a file's first data row as a spreadsheet shows the file: the header is row 1
# (what every problem report says, `common.problems.ROW_CONVENTION`).
FIRST_DATA_ROW = 2


def require_file(path: Path) -> None:
    """Raise ``FileNotFoundError("<path>: no such file")`` unless ``path`` is a file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")


def cell_text(series: pd.Series) -> pd.Series:
    """Stripped text with missing values as '' (pandas' ``string`` dtype)."""
    return series.astype("string").fillna("").str.strip()


def boolean_masks(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(true, false): where a value spells true and where false (`TRUE_TEXTS`, `FALSE_TEXTS`,
    any case); a value in neither is in neither mask, an empty one too. A boolean column is
    itself: its values are true or false."""
    if pd.api.types.is_bool_dtype(series):
        values = series.to_numpy(dtype=bool)
        return values, ~values
    text = cell_text(series).str.lower()
    return text.isin(TRUE_TEXTS).to_numpy(), text.isin(FALSE_TEXTS).to_numpy()


def file_row(position) -> int:
    """The row a spreadsheet shows for data row ``position`` (0 = the first data row)."""
    return int(position) + FIRST_DATA_ROW


def file_rows(count: int) -> np.ndarray:
    """`file_row` of the positions 0 to ``count - 1``, as int64."""
    return np.arange(count, dtype=np.int64) + FIRST_DATA_ROW


def box_holds(x1, y1, x2, y2):
    """The box rule, elementwise (numbers or arrays): x2 > x1 and y2 > y1; a NaN fails it."""
    return (x2 > x1) & (y2 > y1)


def inverted(low, high) -> np.ndarray:
    """Where one axis of the box rule fails between two numbers: ``high <= low``. A NaN is in
    no such pair (a value that is not a number is reported as that, not as a box)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(high) <= np.asarray(low)


def inverted_reason(low_name: str, high_name: str, low: float, high: float) -> str:
    """What a problem of `inverted` says, e.g. ``x2=3 is not greater than x1=5``."""
    return f"{high_name}={high:g} is not greater than {low_name}={low:g}"


def inverted_kind(low_name: str, high_name: str) -> str:
    """The kind of a problem of `inverted`, e.g. ``x2 <= x1`` (`common.problems.INVERTED_BOX`)."""
    return INVERTED_BOX.format(low=low_name, high=high_name)
