"""Reading EMBED's metadata and clinical CSVs: one row per image and one per finding, with every
missing column and unreadable value of both tables reported at once (`EmbedTableError`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common.problems import BAD_VALUE, MISSING_COLUMN, Problem
from common.tables import boolean_masks, cell_text, file_row, file_rows, require_file
from data_tools.embed.roi_text import parse_match_levels, parse_roi_coords
from datamodules.manifest import ManifestError

METADATA_COLUMNS = (
    "empi_anon",
    "acc_anon",
    "anon_dicom_path",
    "FinalImageType",
    "ImageLateralityFinal",
    "ViewPosition",
    "spot_mag",
)
# The ROI columns in the order they are preferred. DCM_ROI_coords are in the stored DICOM's
# pixels; PNG_ROI_coords in EMBED's PNGs, which were turned to face right (NUS_roi_reference
# .ipynb: "the only difference between these two columns is the horizontal alignment").
# ROI_coords, the only column of older releases (issue #9), is drawn on the flipped image in
# Sample_Notebook.ipynb, so it is read in the PNG frame too.
ROI_COLUMNS = ("DCM_ROI_coords", "PNG_ROI_coords", "ROI_coords")
# README VII writes num_roi; the ROI pages of docs.hitilab.com write num_ROI.
NUM_ROI_COLUMNS = ("num_roi", "num_ROI")
# ROI reference v1.2: ROI_match_level, nested like the coordinates; README VII: match_level,
# "a vector matching the length of ROI_coords".
MATCH_LEVEL_COLUMNS = ("ROI_match_level", "match_level")
SERIES_COLUMNS = ("SeriesNumber", "SeriesTime")
METADATA_OPTIONAL = (
    *ROI_COLUMNS,
    *NUM_ROI_COLUMNS,
    *MATCH_LEVEL_COLUMNS,
    "PNG_flipped",
    *SERIES_COLUMNS,
    "Manufacturer",
    "Rows",
    "Columns",
)
CLINICAL_COLUMNS = ("acc_anon", "side", "path_severity", "asses")
# What the follow-up label rule needs (screening_label_assignment.ipynb, sections 0-1).
FOLLOW_UP_COLUMNS = ("empi_anon", "study_date_anon", "desc")
CLINICAL_OPTIONAL = ("bside", "tissueden", *FOLLOW_UP_COLUMNS)
PATH_SEVERITIES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
# EMBED's BI-RADS letters -> category. X (no assessment) is treated as missing.
BIRADS = {"A": 0, "N": 1, "B": 2, "P": 3, "S": 4, "M": 5, "K": 6}
_IMAGE_TYPES = {"2d": "ffdm", "cview": "sm"}
_MAX_LISTED_ROWS = 20


class EmbedTableError(ManifestError):
    """EMBED's metadata or clinical table is not as expected; ``problems`` lists every one."""

    subject = "the EMBED tables"
    more = "all in EmbedTableError.problems"


def _ids(series: pd.Series) -> pd.Series:
    """Anonymised ids as text; ``123.0`` (a float column written by pandas) reads as ``123``."""
    return cell_text(series).str.replace(r"^(\d+)\.0+$", r"\1", regex=True)


def _numbers(series: pd.Series) -> pd.Series:
    return pd.to_numeric(cell_text(series).replace("", None), errors="coerce")


_FOLLOW_UP_MISSING = (
    "missing required column (the follow-up label rule needs it; --label-window 0 switches "
    "the rule off)"
)


def _read_csv(
    path: Path, required, optional, problems: list[Problem], one_of=(), messages=None
) -> pd.DataFrame | None:
    """The table's wanted columns as text, or None (with problems added) if columns lack.

    ``one_of``: columns of which at least one must be there (reported under the last one).
    """
    require_file(path)
    header = [str(column) for column in pd.read_csv(path, nrows=0).columns]
    messages = messages or {}
    missing = [column for column in required if column not in header]
    for column in missing:
        message = messages.get(column, "missing required column")
        problems.append(Problem(str(path), None, column, message, MISSING_COLUMN))
    if one_of and not any(column in header for column in one_of):
        others = " or ".join(one_of[:-1])
        problems.append(
            Problem(
                str(path),
                None,
                one_of[-1],
                f"missing required column (or {others})",
                MISSING_COLUMN,
            )
        )
        missing.append(one_of[-1])
    if missing:
        return None
    wanted = set(required) | set(optional) | set(one_of)
    return pd.read_csv(
        path, usecols=[column for column in header if column in wanted], dtype=str
    ).reset_index(drop=True)


def _add_row_problems(problems, path, column, positions, messages) -> None:
    """A problem per position, of the kind "bad <column>" (`common.problems.BAD_VALUE`)."""
    kind = BAD_VALUE.format(column=column)
    for position, message in zip(positions, messages):
        problems.append(Problem(str(path), file_row(position), column, message, kind))


def _check_numbers(table, column, allowed, path, problems) -> pd.Series:
    """The column as floats (NaN where empty); problems for text and values outside allowed."""
    text = cell_text(table[column])
    values = _numbers(table[column])
    bad = (text != "") & (values.isna() | (~values.isin(allowed) if allowed else False))
    _add_row_problems(
        problems,
        path,
        column,
        np.flatnonzero(bad.to_numpy()),
        [f"{value!r} is not one of {', '.join(f'{v:g}' for v in allowed)}" for value in text[bad]]
        if allowed
        else [f"{value!r} is not a number" for value in text[bad]],
    )
    return values.where(~bad)


def _parse_column(raw, column, parse, path, problems, what) -> list:
    """``parse`` applied to each value of a column; problems (row, column) for those that fail."""
    values, positions, messages = [], [], []
    for position, value in enumerate(raw[column].to_numpy(dtype=object)):
        try:
            values.append(parse(value))
        except ValueError as error:
            values.append([])
            positions.append(position)
            messages.append(f"cannot read {what} {value!r}: {error}")
    _add_row_problems(problems, path, column, positions, messages)
    return values


def _check_booleans(raw, column, path, problems) -> pd.Series:
    """1.0/0.0 for true/false (any case, 1/0, yes/no), NaN where empty; problems otherwise."""
    text = cell_text(raw[column]).str.lower()
    true, false = boolean_masks(raw[column])
    values = pd.Series(np.nan, index=raw.index)
    values[true] = 1.0
    values[false] = 0.0
    bad = (text != "") & values.isna()
    _add_row_problems(
        problems,
        path,
        column,
        np.flatnonzero(bad.to_numpy()),
        [f"{value!r} is not true or false" for value in text[bad]],
    )
    return values


def _series_seconds(raw, path, problems) -> pd.Series:
    """DICOM SeriesTime (HHMMSS.frac, or a number that lost its leading zero in a float
    column: 93714.0 is 09:37:14) as seconds after midnight; NaN where empty."""
    text = cell_text(raw["SeriesTime"])
    values = _numbers(raw["SeriesTime"])
    hours, minutes = values // 10000, values // 100 % 100
    seconds = hours * 3600 + minutes * 60 + values % 100
    bad = (text != "") & (values.isna() | (hours > 23) | (minutes > 59) | (values % 100 >= 61))
    _add_row_problems(
        problems,
        path,
        "SeriesTime",
        np.flatnonzero(bad.to_numpy()),
        [f"{value!r} is not a time HHMMSS" for value in text[bad]],
    )
    return seconds.where(~bad)


def _first_present(columns, header) -> str | None:
    return next((column for column in columns if column in header), None)


def _align_levels(levels: list[float], count: int) -> tuple[list[float], bool]:
    """(one level per ROI, whether the counts disagreed). One level for several ROIs is taken
    for all of them; any other disagreement leaves the levels missing."""
    if count == 0:
        return [], False
    if len(levels) == count:
        return list(levels), False
    if len(levels) == 1:
        return list(levels) * count, False
    return [np.nan] * count, bool(levels)


def read_metadata(path: Path, problems: list[Problem]) -> pd.DataFrame | None:
    """One row per image: ids, kind (ffdm/sm/''), laterality, view, spot, path, ROIs (with the
    column they came from and a match level each), PNG_flipped, series and size extras."""
    raw = _read_csv(path, METADATA_COLUMNS, METADATA_OPTIONAL, problems, one_of=ROI_COLUMNS)
    if raw is None:
        return None
    count = len(raw)
    parsed = {
        column: _parse_column(raw, column, parse_roi_coords, path, problems, column)
        for column in ROI_COLUMNS
        if column in raw.columns
    }
    rois, sources = [[] for _ in range(count)], [""] * count
    for column, boxes in parsed.items():  # in ROI_COLUMNS order: the first with boxes wins
        for position, found in enumerate(boxes):
            if found and not sources[position]:
                rois[position], sources[position] = found, column
    kind = cell_text(raw["FinalImageType"]).str.lower().str.replace(r"[\s_-]", "", regex=True)
    spot = cell_text(raw["spot_mag"])
    images = pd.DataFrame(
        {
            "row": file_rows(count),
            "patient": _ids(raw["empi_anon"]),
            "exam": _ids(raw["acc_anon"]),
            "kind": kind.map(_IMAGE_TYPES).fillna(""),
            "laterality": cell_text(raw["ImageLateralityFinal"]).str.upper(),
            "view": cell_text(raw["ViewPosition"]).str.upper(),
            "spot": ~spot.isin(["", "0", "0.0"]),
            "source_path": cell_text(raw["anon_dicom_path"]),
        }
    )
    images["rois"] = rois
    images["roi_column"] = sources
    images["n_rois"] = [len(boxes) for boxes in rois]

    level_column = _first_present(MATCH_LEVEL_COLUMNS, raw.columns)
    levels = (
        _parse_column(raw, level_column, parse_match_levels, path, problems, level_column)
        if level_column
        else [[] for _ in range(count)]
    )
    aligned = [_align_levels(found, n) for found, n in zip(levels, images["n_rois"])]
    images["roi_levels"] = [per_roi for per_roi, _ in aligned]
    images["levels_differ"] = [differs for _, differs in aligned]

    num_column = _first_present(NUM_ROI_COLUMNS, raw.columns)
    images["num_roi"] = (
        _check_numbers(raw, num_column, (), path, problems) if num_column else np.nan
    )
    images["png_flipped"] = (
        _check_booleans(raw, "PNG_flipped", path, problems)
        if "PNG_flipped" in raw.columns
        else np.nan
    )
    images["series_number"] = (
        _check_numbers(raw, "SeriesNumber", (), path, problems)
        if "SeriesNumber" in raw.columns
        else np.nan
    )
    images["series_time"] = (
        _series_seconds(raw, path, problems) if "SeriesTime" in raw.columns else np.nan
    )
    for column, name in (("Rows", "meta_rows"), ("Columns", "meta_columns")):
        images[name] = (
            _check_numbers(raw, column, (), path, problems) if column in raw.columns else np.nan
        )
    images["manufacturer"] = cell_text(raw["Manufacturer"]) if "Manufacturer" in raw else ""
    images.attrs["columns"] = {
        "roi": [column for column in ROI_COLUMNS if column in raw.columns],
        "num_roi": num_column,
        "match_level": level_column,
        "png_flipped": "PNG_flipped" in raw.columns,
        "series": [column for column in SERIES_COLUMNS if column in raw.columns],
    }
    return images


def _check_side(raw, column, path, problems) -> pd.Series:
    side = cell_text(raw[column]).str.upper()
    bad = ~side.isin(["L", "R", "B", ""])
    _add_row_problems(
        problems,
        path,
        column,
        np.flatnonzero(bad.to_numpy()),
        [f"{value!r} is not L, R, B or empty" for value in side[bad]],
    )
    return side.where(~bad, "")


def read_clinical(
    path: Path, problems: list[Problem], follow_up: bool = True
) -> pd.DataFrame | None:
    """One row per finding: exam, patient, side and pathology side (L/R/B/''), path_severity,
    BI-RADS letter, density, study date and description. ``follow_up``: the columns of the
    follow-up label rule (`FOLLOW_UP_COLUMNS`) are required."""
    required = CLINICAL_COLUMNS + (FOLLOW_UP_COLUMNS if follow_up else ())
    messages = {column: _FOLLOW_UP_MISSING for column in FOLLOW_UP_COLUMNS}
    raw = _read_csv(path, required, CLINICAL_OPTIONAL, problems, messages=messages)
    if raw is None:
        return None
    side = _check_side(raw, "side", path, problems)
    bside = _check_side(raw, "bside", path, problems) if "bside" in raw.columns else ""
    severity = _check_numbers(raw, "path_severity", PATH_SEVERITIES, path, problems)
    asses = cell_text(raw["asses"]).str.upper()
    digits = {str(category): letter for letter, category in BIRADS.items()}
    asses = asses.map(lambda value: digits.get(value.removesuffix(".0"), value))
    bad = ~asses.isin([*BIRADS, "X", ""])
    _add_row_problems(
        problems,
        path,
        "asses",
        np.flatnonzero(bad.to_numpy()),
        [f"{value!r} is not a BI-RADS letter (A N B P S M K X) or 0-6" for value in asses[bad]],
    )
    density = (
        _check_numbers(raw, "tissueden", (), path, problems)
        if "tissueden" in raw.columns
        else pd.Series(np.nan, index=raw.index)
    )
    if "study_date_anon" in raw.columns:
        text = cell_text(raw["study_date_anon"])
        date = pd.to_datetime(text.replace("", None), errors="coerce", format="ISO8601")
        bad = (text != "") & date.isna()
        _add_row_problems(
            problems,
            path,
            "study_date_anon",
            np.flatnonzero(bad.to_numpy()),
            [f"{value!r} is not a date (YYYY-MM-DD)" for value in text[bad]],
        )
    else:
        date = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us]")
    return pd.DataFrame(
        {
            "exam": _ids(raw["acc_anon"]),
            "patient": _ids(raw["empi_anon"]) if "empi_anon" in raw.columns else "",
            "side": side,
            "bside": bside,
            "path_severity": severity,
            "asses": asses.where(asses.isin(list(BIRADS)), ""),
            "density": density,
            "date": date,
            "desc": cell_text(raw["desc"]) if "desc" in raw.columns else "",
        }
    )
