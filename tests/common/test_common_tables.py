"""``common.tables``: a cell as text, the true/false spellings, the row a problem names and the
box rule, which the manifest reader, the EMBED adapter and ``cli.py evaluate`` share."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common import tables
from datamodules.manifest import ManifestError, validate


def test_a_row_is_counted_as_a_spreadsheet_shows_the_file():
    assert tables.FIRST_DATA_ROW == 2
    assert tables.file_row(0) == 2  # the header is row 1
    assert tables.file_row(np.int64(9)) == 11
    assert type(tables.file_row(np.int64(9))) is int  # prints as 11 in a message, never np.int64
    numbers = tables.file_rows(3)
    assert numbers.tolist() == [2, 3, 4] and numbers.dtype == np.int64
    assert tables.file_rows(0).tolist() == []


def test_a_cell_is_stripped_text_and_a_missing_one_is_empty():
    values = tables.cell_text(pd.Series([" a ", None, np.nan, "007", 5, "\tNA "], dtype=object))
    assert values.tolist() == ["a", "", "", "007", "5", "NA"]
    assert values.dtype == "string"


def test_the_true_and_false_spellings():
    assert tables.TRUE_TEXTS == ("true", "t", "yes", "y", "1", "1.0")
    assert tables.FALSE_TEXTS == ("false", "f", "no", "n", "0", "0.0")
    true, false = tables.boolean_masks(pd.Series(["TRUE", " t", "Yes ", "y", "1", "1.0"]))
    assert true.tolist() == [True] * 6 and false.tolist() == [False] * 6
    true, false = tables.boolean_masks(pd.Series(["False", "F", "NO", "n", " 0 ", "0.0"]))
    assert true.tolist() == [False] * 6 and false.tolist() == [True] * 6
    # neither: empty, missing, other numbers and words
    neither = pd.Series(["", None, "maybe", "2", "1.00", "on"], dtype=object)
    true, false = tables.boolean_masks(neither)
    assert true.tolist() == [False] * 6 and false.tolist() == [False] * 6
    true, false = tables.boolean_masks(pd.Series([True, False]))  # a boolean column is itself
    assert true.tolist() == [True, False] and false.tolist() == [False, True]


def test_the_box_rule():
    assert tables.BOX_COLUMNS == ("x1", "y1", "x2", "y2")
    assert tables.BOX_AXES == (("x1", "x2"), ("y1", "y2"))
    assert tables.box_holds(0.0, 0.0, 1.0, 1.0)
    assert not tables.box_holds(0.0, 0.0, 0.0, 1.0)  # x2 = x1
    assert not tables.box_holds(0.0, 2.0, 1.0, 1.0)  # y2 < y1
    assert not tables.box_holds(0.0, 0.0, np.nan, 1.0)  # a NaN fails it
    holds = tables.box_holds(*(np.array(values) for values in ([0, 0], [0, 0], [1, 1], [1, 0])))
    assert holds.tolist() == [True, False]
    low = np.array([1.0, 5.0, np.nan, 2.0, 7.0, np.inf])
    high = np.array([2.0, 5.0, 3.0, np.nan, 6.0, np.inf])
    # NaN is in no inverted pair (it is reported as not a number); infinities compare
    assert tables.inverted(low, high).tolist() == [False, True, False, False, True, True]
    assert tables.inverted(3.0, 1.0).tolist() is True


def test_an_inverted_box_is_named_as_the_readers_name_it():
    assert tables.inverted_reason("x1", "x2", 10.0, 5.0) == "x2=5 is not greater than x1=10"
    assert tables.inverted_reason("y1", "y2", np.float64(2.5), np.float64(0.25)) == (
        "y2=0.25 is not greater than y1=2.5"
    )
    assert tables.inverted_kind("y1", "y2") == "y2 <= y1"


def test_a_missing_file_is_refused_naming_it(tmp_path):
    table = tmp_path / "table.csv"
    with pytest.raises(FileNotFoundError) as caught:
        tables.require_file(table)
    assert str(caught.value) == f"{table}: no such file"
    with pytest.raises(FileNotFoundError):
        tables.require_file(tmp_path)  # a folder is no table
    table.write_text("a\n1\n")
    assert tables.require_file(table) is None


def test_a_caller_names_file_row_and_column_of_a_bad_value():
    manifest = pd.DataFrame(
        {
            "pair_id": ["p0", "p1"],
            "patient_id": ["a", "b"],
            "exam_id": ["e0", "e1"],
            "laterality": ["L", "R"],
            "view": ["CC", "MLO"],
            "sm_path": ["s0", "s1"],
            "ffdm_path": ["f0", "f1"],
            "label": ["0", "1"],
            "annotated": [" Yes", "sometimes"],
        }
    )
    lesions = pd.DataFrame(
        {
            "pair_id": ["p0", "p1"],
            "modality": ["sm", "ffdm"],
            "x1": ["1", "10"],
            "y1": ["abc", "1"],
            "x2": ["4", "5"],
            "y2": ["4", "4"],
            "pathology": ["benign"] * 2,
        }
    )
    with pytest.raises(ManifestError) as caught:
        validate(manifest, lesions, "manifest.csv", "lesions.csv")
    assert [str(problem) for problem in caught.value.problems] == [
        f"manifest.csv row {tables.file_row(1)}, column annotated: 'sometimes' is not a boolean "
        "(true/false/1/0) (pair p1)",
        f"lesions.csv row {tables.file_row(0)}, column y1: 'abc' is not a finite number (pair p0)",
        f"lesions.csv row {tables.file_row(1)}, column x2: "
        f"{tables.inverted_reason('x1', 'x2', 10, 5)} (pair p1)",
    ]
    assert [problem.row for problem in caught.value.problems] == [3, 2, 3]
    assert caught.value.problems[-1].kind == tables.inverted_kind("x1", "x2") == "x2 <= x1"
