"""Reading EMBED's tables: the ROI text, match levels per ROI, bad values and missing columns."""

from pathlib import Path

import pandas as pd
import pytest
from embed_copies import EmbedCopy, assert_on_markers, run_adapter, write_embed_copy
from hypothesis import given, settings
from hypothesis import strategies as st

from data_tools.embed.adapter import build_tables
from data_tools.embed.options import EmbedOptions
from data_tools.embed.roi_text import parse_match_levels, parse_roi_coords
from data_tools.embed.tables import EmbedTableError

# ROI text -----------------------------------------------------------------------------------


def test_every_roi_coords_form_of_the_issue_parses_without_eval():
    assert parse_roi_coords("((1951, 347, 2244, 626),)") == [(1951, 347, 2244, 626)]
    assert parse_roi_coords("((992, 202, 1276, 647), (2098, 302, 2647, 1089))") == [
        (992, 202, 1276, 647),
        (2098, 302, 2647, 1089),
    ]
    assert parse_roi_coords("((825, 563, 1343, 890), ())") == [(825, 563, 1343, 890)]
    assert parse_roi_coords("(([1224, 172, 1457, 559],),)") == [(1224, 172, 1457, 559)]
    assert parse_roi_coords("()") == []
    assert parse_roi_coords("") == []
    assert parse_roi_coords(float("nan")) == []
    assert parse_roi_coords(" ( (1.5, 2, 3e1, 4) , ) ") == [(1.5, 2.0, 30.0, 4.0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("((1, 2, 3),)", "needs 4 numbers"),
        ("((1, 2, 3, 4)", "never closed"),
        ("((1, 2, x, 4),)", "unexpected character 'x'"),
        ("((1, 2, 3, 4),) 5", "after the closing bracket"),
        ("((1, 2, 3, 4], )", "expected ',' or ')'"),
        ("(1, (2, 3, 4, 5))", "mixes numbers and brackets"),
        ("__import__('os')", "unexpected character '_'"),
        ("(,)", "unexpected ','"),
    ],
)
def test_malformed_roi_coords_raise(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_roi_coords(text)


box = st.tuples(*[st.integers(0, 5000)] * 4)


@settings(max_examples=60, deadline=None)
@given(
    boxes=st.lists(box, max_size=4),
    as_list=st.lists(st.booleans(), min_size=4, max_size=4),
    wrapped=st.lists(st.booleans(), min_size=4, max_size=4),
    empties=st.integers(0, 2),
)
def test_written_forms_parse_back(boxes, as_list, wrapped, empties):
    parts = []
    for box_, listed, wrap in zip(boxes, as_list, wrapped):
        text = str(list(box_)) if listed else str(tuple(box_))
        parts.append(f"({text},)" if wrap else text)
    parts += ["()"] * empties
    text = "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    assert parse_roi_coords(text) == [tuple(float(v) for v in b) for b in boxes]


def test_the_roi_reference_forms_parse():
    # ROI reference v1.2 and NUS_roi_reference.ipynb: nested by source image, levels quoted
    assert parse_roi_coords("[[[1165, 822, 1294, 1000]]]") == [(1165, 822, 1294, 1000)]
    assert parse_roi_coords("[[[1, 2, 3, 4], [5, 6, 7, 8]], [[9, 10, 11, 12]]]") == [
        (1, 2, 3, 4),
        (5, 6, 7, 8),
        (9, 10, 11, 12),
    ]
    assert parse_roi_coords("[]") == [] and parse_roi_coords("[[]]") == []
    assert parse_match_levels("[['1']]") == [1.0]
    assert parse_match_levels("[['1', '2'], ['2']]") == [1.0, 2.0, 2.0]
    assert parse_match_levels("[1, 2]") == [1.0, 2.0]
    assert parse_match_levels("(1, 2)") == [1.0, 2.0]
    assert parse_match_levels("2.0") == [2.0]
    assert parse_match_levels("") == [] and parse_match_levels(float("nan")) == []
    with pytest.raises(ValueError, match="unexpected character 'x'"):
        parse_match_levels("[x]")


# Match levels -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "levels", "count_column"),
    [
        (("ROI_coords",), {"match_level": ["[1, 2]", "(2,)"]}, "num_roi"),
        (("DCM_ROI_coords",), {"ROI_match_level": ["[['1', '2']]", "[['2']]"]}, "num_ROI"),
    ],
    ids=["match_level", "ROI_match_level"],
)
def test_match_levels_are_read_per_roi(tmp_path, columns, levels, count_column):
    copy = EmbedCopy(tmp_path)
    lesions = [(0.3, 0.3), (0.4, 0.7)]
    name = next(iter(levels))
    for kind, level, count in zip(("2D", "cview"), levels[name], (2, 1)):
        rois = lesions[:count]
        copy.image("p1", "e1", f"{kind.lower()}_RCC", kind, lesions=rois, columns=columns)
        copy.metadata[-1][name] = level
    copy.image("p1", "e1", "2d_LCC", "2D", "L", lesions=[(0.3, 0.5)], columns=columns)
    copy.image("p1", "e1", "cview_LCC", "cview", "L", lesions=[(0.3, 0.5)], columns=columns)
    for row in copy.metadata:
        row[count_column] = row.pop("num_roi")
    copy.metadata[-1][count_column] = 3  # says 3, holds 1: counted, not fatal
    copy.metadata[-2][name] = "[1, 1, 2]"  # 3 levels for 1 ROI: the level is left missing
    copy.finding("p1", "e1", "2019-01-02", "MG Screening Bilateral", asses="N")
    manifest, written, summary = copy.build()

    # lesions run pair by pair (L CC, then R CC), FFDM before SM
    assert written["match_level"].fillna(0).tolist() == [0, 0, 1, 2, 2]
    assert written["roi_column"].tolist() == [columns[0]] * 5
    assert manifest["label"].tolist() == [0, 0]
    assert_on_markers(copy, manifest, written, "e1", "R", "CC")
    assert_on_markers(copy, manifest, written, "e1", "L", "CC")
    assert summary["columns_read"]["match_level"] == name
    assert summary["columns_read"]["num_roi"] == count_column
    assert summary["lesions_by_match_level"] == {"2": 2, "1": 1, "missing": 2}
    assert summary["roi_table"]["match_level_count_differs"] == 1
    assert summary["roi_table"]["match_level_count_differs_metadata_rows"] == [4]
    assert summary["roi_table"]["num_roi_differs"] == 1
    assert summary["roi_table"]["num_roi_differs_metadata_rows"] == [5]


# Errors -------------------------------------------------------------------------------------


def test_malformed_values_are_all_reported_with_row_and_column(tmp_path, capsys):
    metadata, clinical = write_embed_copy(tmp_path, write_images=False)
    table = pd.read_csv(metadata, dtype=str)
    table.loc[4, "ROI_coords"] = "((1, 2, 3),)"
    table.loc[9, "ROI_coords"] = "((4, 5, 6, 7)"
    table.to_csv(metadata, index=False)
    findings = pd.read_csv(clinical, dtype=str)
    findings.loc[2, "side"] = "Q"
    findings.loc[0, "path_severity"] = "7"
    findings.to_csv(clinical, index=False)

    with pytest.raises(EmbedTableError) as caught:
        build_tables(metadata, clinical, EmbedOptions(images_root=tmp_path))
    where = [(Path(p.file).name, p.row, p.column) for p in caught.value.problems]
    assert where == [
        ("metadata.csv", 6, "ROI_coords"),
        ("metadata.csv", 11, "ROI_coords"),
        ("clinical.csv", 4, "side"),
        ("clinical.csv", 2, "path_severity"),
    ]
    message = str(caught.value)
    assert "4 problem(s) in the EMBED tables" in message
    assert f"{metadata} row 6, column ROI_coords: cannot read ROI_coords '((1, 2, 3),)'" in message
    assert "a box needs 4 numbers" in message and "is never closed" in message

    assert run_adapter(metadata, clinical, tmp_path / "out") == 1
    assert f"{metadata} row 11, column ROI_coords" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_missing_columns_are_all_reported_with_file_and_column(tmp_path):
    metadata, clinical = write_embed_copy(tmp_path, write_images=False)
    pd.read_csv(metadata).drop(columns=["ROI_coords", "ViewPosition"]).to_csv(metadata, index=False)
    pd.read_csv(clinical).drop(columns=["path_severity"]).to_csv(clinical, index=False)
    with pytest.raises(EmbedTableError) as caught:
        build_tables(metadata, clinical, EmbedOptions(images_root=tmp_path))
    where = [(Path(p.file).name, p.row, p.column) for p in caught.value.problems]
    assert where == [
        ("metadata.csv", None, "ViewPosition"),
        ("metadata.csv", None, "ROI_coords"),
        ("clinical.csv", None, "path_severity"),
    ]
    assert f"{clinical} column path_severity: missing required column" in str(caught.value)
