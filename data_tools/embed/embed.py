"""EMBED (Emory Breast Imaging Dataset) open-data tables -> the paired manifest and lesion table.

``python cli.py adapt embed`` pairs each full-field 2D mammogram (FFDM) with the C-view (the
SM) of the same patient, exam, breast and view, turns EMBED's ROI columns into xyxy boxes in
each image's stored DICOM pixels, labels the pairs from the clinical table (carrying pathology
back from the diagnostic follow-up, as EMBED's own labelling notebook does), and writes
``manifest.csv``, ``lesions.csv`` (`datamodules.manifest`) and ``adapter_summary.json``.
``python cli.py adapt embed-check`` (``embed_check.py``) draws a sample of the written boxes
beside their mirror images, so a user sees whether the ROI frame was read right.

The rules follow EMBED's public repository, Emory-HITI/EMBED_Open_Data (cited below by path):
``README.md`` sections VII-IX, ``resources/EMBED ROI Reference v1_2.pdf`` (the "ROI
reference"), ``resources/notebooks/{Sample_Notebook,DCM_to_PNG,screening_label_assignment}
.ipynb``, ``resources/datathon_notebooks/NUS_{roi_reference,example_pipeline}.ipynb`` and its
issue #9. Every rule is also written into the summary (``rules``, ``conventions``).

- Images: ``FinalImageType`` 2D (FFDM) or cview (SM); spot and magnification views
  (``spot_mag`` set), lateralities other than L/R and views outside the manifest's list are
  excluded and counted per reason.
- Paths: ``anon_dicom_path`` appears as ``/mnt/NAS2/mammo/anon_dicom/...`` (README),
  ``/mnt/NAS3/mammo/anon_dicom/...`` (NUS_roi_reference.ipynb), ``./images/...``
  (Sample_Notebook.ipynb) or ``images/...``; each known start is removed and the rest resolved
  under ``--images-root``. When none of the listed files exists the run stops.
- Pairing key: (``empi_anon``, ``acc_anon``, ``ImageLateralityFinal``, ``ViewPosition``). When
  a key has several images of a kind, the (2D, C-view) combination kept is, in order: both
  files exist, same ``SeriesNumber``, nearest ``SeriesTime`` (the 2D and C-view of one
  compression share both: NUS_roi_reference.ipynb), more images with ROIs, first by path; the
  deciding criterion of every choice is counted.
- ROIs: ``DCM_ROI_coords`` (stored DICOM pixels) where present, else ``PNG_ROI_coords``, else
  ``ROI_coords`` (both in the frame of EMBED's PNGs, turned to face right). A PNG-frame box is
  mirrored, x' = Columns - x, when EMBED flipped that image: ``PNG_flipped`` where the table
  has it, else EMBED's rule from the DICOM header (``PatientOrientation`` first value 'P', CC,
  MLO and ML views only: DCM_to_PNG.ipynb). Match levels are per ROI (``ROI_match_level`` or
  ``match_level``); ``num_roi``/``num_ROI`` is checked against the ROIs read.
- Labels: clinical rows join the image's breast by ``side`` (L/R, B or empty join both: README
  VIII); a pathology result joins the breast of ``bside`` where set. A screening exam also
  takes the pathology of the first diagnostic (or ultrasound) exam of the same patient and
  breast within 180 days after a BI-RADS 0 and 365 after a 1/2 (README IX,
  screening_label_assignment.ipynb). ``label`` 1 for ``path_severity`` 0 or 1; exams with a
  ``path_severity`` 6 (non-breast cancer) are excluded (NUS_example_pipeline.ipynb).
- Lesion pathology: EMBED does not link an ROI to one finding, so every ROI of an image gets
  the pair's worst pathology: malignant, else benign (biopsied), else unknown, with the most
  suspicious BI-RADS assessment kept beside it.
- ``annotated``: the exam is in the clinical table (it was read) and, for a malignant pair,
  at least one of its two images has an ROI; a malignant pair without boxes would teach the
  detector that the cancer is background.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.defaults import MODALITIES
from common.tables import boolean_masks, box_holds, cell_text, file_row, file_rows, require_file
from datamodules.manifest import (
    LESION_COLUMNS,
    VIEWS,
    ManifestError,
    validate,
    write_tables,
)
from datamodules.problems import Problem

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
DICOM_FRAME_COLUMNS = ("DCM_ROI_coords",)
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

# The folder EMBED's README gives for anon_dicom_path; kept for callers that name it.
EMBED_PATH_PREFIX = "/mnt/NAS2/mammo/anon_dicom/"
# The starts of anon_dicom_path seen in EMBED's documents, removed by default: (pattern, name).
KNOWN_PATH_PREFIXES = (
    # README and this copy: /mnt/NAS2/...; NUS_roi_reference.ipynb shows /mnt/NAS3/...
    (re.compile(r"/mnt/NAS\d*/mammo/anon_dicom/"), "/mnt/NAS*/mammo/anon_dicom/"),
    # Sample_Notebook.ipynb: './images/cohort_1/<patient>/<study>/...'
    (re.compile(r"\./images/"), "./images/"),
    (re.compile(r"images/"), "images/"),
)
ROI_FRAMES = ("chest-wall-left", "stored")
ORIENTATION_SOURCES = ("embed", "laterality", "pixels")
# DCM_to_PNG.ipynb (check_dcm) flips only these views; others are never flipped.
FLIPPED_VIEWS = ("CC", "MLO", "ML")
DEFAULT_LABEL_WINDOW = (180, 365)
MALIGNANT_SEVERITIES = (0.0, 1.0)
# README VI: path_severity 6 is a non-breast cancer. NUS_example_pipeline.ipynb: "Other
# Cancers ... should generally be excluded as they fall outside the standard screening-risk
# profile".
OTHER_CANCER_SEVERITY = 6.0
PATH_SEVERITIES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
# EMBED's BI-RADS letters -> category. X (no assessment) is treated as missing.
BIRADS = {"A": 0, "N": 1, "B": 2, "P": 3, "S": 4, "M": 5, "K": 6}
# Order of suspicion for "the most suspicious assessment": an incomplete screen (A, recall)
# ranks above negative (N) and benign (B), below probably benign (P) and up.
_SUSPICION = {"N": 0, "B": 1, "A": 2, "P": 3, "S": 4, "M": 5, "K": 6}
_IMAGE_TYPES = {"2d": "ffdm", "cview": "sm"}
SUMMARY_FILE = "adapter_summary.json"
_MAX_LISTED_ROWS = 20


class EmbedTableError(ManifestError):
    """EMBED's metadata or clinical table is not as expected; ``problems`` lists every one."""

    subject = "the EMBED tables"
    more = "all in EmbedTableError.problems"


class EmbedPathError(FileNotFoundError):
    """None of the image files the metadata lists was found under ``--images-root``;
    ``problems`` holds the one `Problem` the message states."""

    def __init__(self, problem: Problem):
        self.problems = [problem]
        super().__init__(str(problem))


@dataclass
class EmbedOptions:
    """How to read one copy of EMBED.

    ``images_root``: where ``anon_dicom_path`` values resolve once a start is removed: one of
    ``strip_prefixes`` (tried first) or of `KNOWN_PATH_PREFIXES`. ``roi_frame`` and
    ``orientation_from`` say how PNG-frame ROIs (``PNG_ROI_coords``, ``ROI_coords``) reach the
    stored pixels; ``DCM_ROI_coords`` are always stored pixels. ``label_window``: days after a
    screening BI-RADS 0 and after a 1/2 within which a follow-up's pathology is carried back
    (one number for both; 0 switches the rule off). ``relative_paths``: write image paths
    relative to the output folder instead of absolute.
    """

    images_root: Path
    strip_prefixes: tuple[str, ...] = ()
    roi_frame: str = "chest-wall-left"
    orientation_from: str = "embed"
    label_window: tuple[int, int] | int = DEFAULT_LABEL_WINDOW
    check_files: bool = True
    relative_paths: bool = False

    def __post_init__(self) -> None:
        if self.roi_frame not in ROI_FRAMES:
            raise ValueError(f"roi_frame must be one of {ROI_FRAMES}, got {self.roi_frame!r}")
        if self.orientation_from not in ORIENTATION_SOURCES:
            raise ValueError(
                f"orientation_from must be one of {ORIENTATION_SOURCES}, "
                f"got {self.orientation_from!r}"
            )
        window = self.label_window
        window = (window, window) if isinstance(window, (int, np.integer)) else tuple(window)
        if len(window) == 1:
            window = (window[0], window[0])
        if len(window) != 2 or any(int(days) != days or days < 0 for days in window):
            raise ValueError(
                "label_window must be one or two whole numbers of days >= 0, "
                f"got {self.label_window!r}"
            )
        self.label_window = (int(window[0]), int(window[1]))
        self.images_root = Path(self.images_root)
        self.strip_prefixes = tuple(self.strip_prefixes)

    @property
    def follow_up(self) -> bool:
        """Whether the follow-up label rule is on (a window above 0 days)."""
        return max(self.label_window) > 0


# ROI_coords, DCM_ROI_coords, PNG_ROI_coords, match levels -------------------------------------

_TOKENS = re.compile(
    r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<bracket>[()\[\],])|(?P<space>\s+)"
)
_CLOSING = {"(": ")", "[": "]"}
_EMPTY_ROI_TEXTS = {"", "()", "[]", "[[]]", "(())", "[[[]]]", "nan"}


def _tokenize(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKENS.match(text, position)
        if match is None:
            raise ValueError(f"unexpected character {text[position]!r} at position {position}")
        if match.lastgroup != "space":
            tokens.append(match.group())
        position = match.end()
    return tokens


def _parse_value(tokens: list[str], index: int):
    """(value, next index): a float or a list of values."""
    if index >= len(tokens):
        raise ValueError("the text ends before its brackets close")
    token = tokens[index]
    if token not in "()[],":
        return float(token), index + 1
    if token not in _CLOSING:
        raise ValueError(f"unexpected {token!r}")
    closing, items, index = _CLOSING[token], [], index + 1
    while True:
        if index >= len(tokens):
            raise ValueError(f"a {token!r} is never closed")
        if tokens[index] == closing:
            return items, index + 1
        item, index = _parse_value(tokens, index)
        items.append(item)
        if index < len(tokens) and tokens[index] == ",":
            index += 1
        elif index < len(tokens) and tokens[index] != closing:
            raise ValueError(f"expected ',' or {closing!r}, got {tokens[index]!r}")


def _collect_boxes(node) -> list[tuple[float, float, float, float]]:
    if not isinstance(node, list):
        raise ValueError("a number outside any box")
    if not node:
        return []  # an empty tuple: no box
    numbers = [isinstance(item, float) for item in node]
    if all(numbers):
        if len(node) != 4:
            raise ValueError(f"a box needs 4 numbers (ymin, xmin, ymax, xmax), got {len(node)}")
        return [tuple(node)]
    if any(numbers):
        raise ValueError("a box mixes numbers and brackets")
    return [box for item in node for box in _collect_boxes(item)]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def parse_roi_coords(text) -> list[tuple[float, float, float, float]]:
    """The boxes of one EMBED ROI value as (ymin, xmin, ymax, xmax), without eval.

    Reads ``ROI_coords`` (tuples: ``'((1, 2, 3, 4),)'``, boxes as lists nested in tuples
    ``'(([1, 2, 3, 4],),)'``) and ``DCM_ROI_coords``/``PNG_ROI_coords`` (lists nested by source
    image, ``'[[[1, 2, 3, 4]], [[5, 6, 7, 8]]]'``: ROI reference v1.2); empty tuples and lists
    are skipped, ``'()'`` and missing values have no box. Raises ValueError otherwise.
    """
    if _missing(text):
        return []
    text = str(text).strip()
    if text in _EMPTY_ROI_TEXTS:
        return []
    tokens = _tokenize(text)
    node, index = _parse_value(tokens, 0)
    if index != len(tokens):
        raise ValueError(f"unexpected {tokens[index]!r} after the closing bracket")
    return _collect_boxes(node)


def _flatten(node) -> list[float]:
    if isinstance(node, float):
        return [node]
    return [value for item in node for value in _flatten(item)]


def parse_match_levels(text) -> list[float]:
    """The match level of each ROI of one image, in order, without eval.

    Reads ``ROI_match_level`` as the ROI reference v1.2 writes it (nested like the coordinates,
    levels quoted: ``"[['1', '2'], ['2']]"``) and ``match_level`` as a list, a tuple or one
    number (``'[1, 2]'``, ``'2'``, ``'2.0'``). Missing and empty values have no level.
    """
    if _missing(text):
        return []
    # the reference's own parser drops the quotes ("][',") before reading the numbers
    text = str(text).replace("'", "").replace('"', "").strip()
    if text in _EMPTY_ROI_TEXTS:
        return []
    tokens = _tokenize(text)
    node, index = _parse_value(tokens, 0)
    if index != len(tokens):
        raise ValueError(f"unexpected {tokens[index]!r} after the closing bracket")
    return _flatten(node)


def roi_to_xyxy(
    roi: tuple[float, float, float, float], mirror_width: float | None = None
) -> tuple[float, float, float, float]:
    """(ymin, xmin, ymax, xmax) -> (x1, y1, x2, y2); mirrored as x' = width - x when given."""
    ymin, xmin, ymax, xmax = (float(v) for v in roi)
    if mirror_width is not None:
        xmin, xmax = mirror_width - xmax, mirror_width - xmin
    return xmin, ymin, xmax, ymax


def embed_png_flip(orientation, view: str, laterality: str) -> tuple[bool, str]:
    """(whether EMBED's DICOM-to-PNG conversion mirrored the image, the rule that decided).

    ``check_dcm`` of DCM_to_PNG.ipynb flips a CC, MLO or ML view horizontally when the first
    value of ``PatientOrientation`` (the patient direction of the image rows) is 'P', i.e. the
    chest wall is on the right; other views are never flipped. Without the tag the notebook's
    fallback branch flips R CC/ML/MLO views (that branch is unreachable in the notebook, whose
    ``~pd.isnull(...)`` is always true; its stated intent is used here).
    """
    view = (view or "").strip().upper()
    values = [str(value).strip().upper() for value in (orientation or ()) if str(value).strip()]
    if values:
        return view in FLIPPED_VIEWS and values[0] == "P", "patient_orientation"
    return view in FLIPPED_VIEWS and laterality == "R", "laterality_no_patient_orientation"


# Reading the tables -------------------------------------------------------------------------


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
        problems.append(Problem(str(path), None, column, message, "missing column"))
    if one_of and not any(column in header for column in one_of):
        others = " or ".join(one_of[:-1])
        problems.append(
            Problem(
                str(path),
                None,
                one_of[-1],
                f"missing required column (or {others})",
                "missing column",
            )
        )
        missing.append(one_of[-1])
    if missing:
        return None
    wanted = set(required) | set(optional) | set(one_of)
    return pd.read_csv(
        path, usecols=[column for column in header if column in wanted], dtype=str
    ).reset_index(drop=True)


def _add_row_problems(problems, path, column, positions, messages, kind) -> None:
    for position, message in zip(positions, messages):
        problems.append(Problem(str(path), file_row(position), column, message, kind))


def _check_numbers(table, column, allowed, path, problems, kind) -> pd.Series:
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
        kind,
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
    _add_row_problems(problems, path, column, positions, messages, f"bad {column}")
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
        f"bad {column}",
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
        "bad SeriesTime",
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
        _check_numbers(raw, num_column, (), path, problems, f"bad {num_column}")
        if num_column
        else np.nan
    )
    images["png_flipped"] = (
        _check_booleans(raw, "PNG_flipped", path, problems)
        if "PNG_flipped" in raw.columns
        else np.nan
    )
    images["series_number"] = (
        _check_numbers(raw, "SeriesNumber", (), path, problems, "bad SeriesNumber")
        if "SeriesNumber" in raw.columns
        else np.nan
    )
    images["series_time"] = (
        _series_seconds(raw, path, problems) if "SeriesTime" in raw.columns else np.nan
    )
    for column, name in (("Rows", "meta_rows"), ("Columns", "meta_columns")):
        images[name] = (
            _check_numbers(raw, column, (), path, problems, f"bad {column}")
            if column in raw.columns
            else np.nan
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
        f"bad {column}",
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
    severity = _check_numbers(
        raw, "path_severity", PATH_SEVERITIES, path, problems, "bad path_severity"
    )
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
        "bad asses",
    )
    density = (
        _check_numbers(raw, "tissueden", (), path, problems, "bad tissueden")
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
            "bad study_date_anon",
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


# Labels -------------------------------------------------------------------------------------


def _pathology_side(clinical: pd.DataFrame) -> pd.Series:
    """The breast(s) a row's pathology belongs to: ``bside`` ("laterality of any pathology
    result", README VI) where set, else the finding's ``side``."""
    has_result = clinical["path_severity"].notna() & (clinical["bside"] != "")
    return clinical["bside"].where(has_result, clinical["side"])


def finding_summary(clinical: pd.DataFrame) -> pd.DataFrame:
    """Per (exam, laterality): the joined findings' count, malignancy, biopsy, worst severity,
    non-breast cancer and most suspicious BI-RADS letter.

    A finding joins by ``side`` and a pathology result by `_pathology_side`; side B or empty
    joins both breasts (README VIII).
    """
    path_side = _pathology_side(clinical)
    suspicion = clinical["asses"].map(_SUSPICION).astype(float)
    parts = []
    for laterality in ("L", "R"):
        finding = clinical["side"].isin([laterality, "B", ""])
        result = path_side.isin([laterality, "B", ""])
        keep = (finding | result).to_numpy()
        parts.append(
            pd.DataFrame(
                {
                    "exam": clinical["exam"].to_numpy()[keep],
                    "laterality": laterality,
                    "finding": finding.to_numpy()[keep],
                    "severity": clinical["path_severity"].where(result).to_numpy()[keep],
                    "suspicion": suspicion.where(finding).to_numpy()[keep],
                }
            )
        )
    findings = pd.concat(parts, ignore_index=True)
    findings["other_cancer"] = findings["severity"] == OTHER_CANCER_SEVERITY
    summary = (
        findings.groupby(["exam", "laterality"], sort=False)
        .agg(
            n_findings=("finding", "sum"),
            path_severity=("severity", "min"),
            other_cancer=("other_cancer", "any"),
            suspicion=("suspicion", "max"),
        )
        .reset_index()
    )
    summary["malignant"] = summary["path_severity"].isin(MALIGNANT_SEVERITIES)
    summary["biopsied"] = summary["path_severity"].notna()
    letters = {rank: letter for letter, rank in _SUSPICION.items()}
    summary["asses"] = summary["suspicion"].map(letters).fillna("")
    summary["birads"] = summary["asses"].map(BIRADS).astype(float)
    return summary.drop(columns="suspicion")


def exam_laterality(desc: pd.Series) -> pd.Series:
    """B/L/R from an exam description ('bilat', 'left', 'right'), '' when it says none
    (screening_label_assignment.ipynb, 0.3); '' is taken to cover both breasts."""
    lower = desc.str.lower()
    return pd.Series(
        np.select(
            [lower.str.contains("bilat"), lower.str.contains("left"), lower.str.contains("right")],
            ["B", "L", "R"],
            "",
        ),
        index=desc.index,
    )


FOLLOW_UP_KINDS = ("diagnostic", "ultrasound")


def follow_up_labels(
    clinical: pd.DataFrame, findings: pd.DataFrame, window: tuple[int, int]
) -> pd.DataFrame:
    """Per (screening exam, laterality): the follow-up whose pathology is carried back.

    screening_label_assignment.ipynb: a screening exam (``desc`` has 'screen') of exam-level
    BI-RADS 0 (any finding A; also N/B exams with a pathology, addended to A, section 0.6)
    looks ``window[0]`` days ahead, one of BI-RADS 1/2 (N, B) ``window[1]`` days. Its follow-up
    is the first diagnostic (``desc`` has 'diag') and the first ultrasound (a word 'US') exam
    of the same patient covering the breast (exam laterality B, the same or none) from 0 days
    on (section 1.2); the diagnostic's pathology is used unless the ultrasound's is more
    severe (section 1.4). The pathology is the follow-up's worst on that breast
    (`finding_summary`: by ``bside``, else ``side``), NaN when it has none.
    """
    columns = [
        "exam",
        "laterality",
        "fu_exam",
        "fu_kind",
        "fu_days",
        "fu_severity",
        "fu_other_cancer",
    ]
    exams = clinical.groupby("exam", sort=False).agg(
        patient=("patient", "first"), date=("date", "min"), desc=("desc", "first")
    )

    def any_per_exam(mask: pd.Series) -> pd.Series:
        return mask.groupby(clinical["exam"]).any().reindex(exams.index)

    has_recall = any_per_exam(clinical["asses"] == "A")
    has_negative = any_per_exam(clinical["asses"].isin(["N", "B"]))
    has_result = any_per_exam(clinical["path_severity"].notna())
    screen = exams["desc"].str.contains("screen", case=False)
    diagnostic = ~screen & exams["desc"].str.contains("diag", case=False)
    ultrasound = ~screen & ~diagnostic & exams["desc"].str.contains(r"\bUS\b")
    recall = has_recall | (has_negative & has_result)
    days = np.where(recall, window[0], np.where(has_negative, window[1], 0))
    exams["window"] = days
    valid = exams["date"].notna() & (exams["patient"] != "")
    screening = exams[screen & valid & (exams["window"] > 0)]
    follow_ups = exams[(diagnostic | ultrasound) & valid].assign(
        fu_kind=np.where(diagnostic[(diagnostic | ultrasound) & valid], *FOLLOW_UP_KINDS),
        covers=lambda table: exam_laterality(table["desc"]),
    )
    if not len(screening) or not len(follow_ups):
        empty = pd.DataFrame({column: pd.Series([], dtype=object) for column in columns})
        return empty.astype({"fu_days": float, "fu_severity": float, "fu_other_cancer": bool})
    breasts = []
    for laterality in ("L", "R"):
        part = follow_ups[follow_ups["covers"].isin([laterality, "B", ""])]
        breasts.append(part.assign(laterality=laterality))
    follow_ups = pd.concat(breasts).rename_axis("fu_exam").reset_index()
    follow_ups = follow_ups.merge(
        findings[["exam", "laterality", "path_severity", "other_cancer"]].rename(
            columns={"exam": "fu_exam"}
        ),
        on=["fu_exam", "laterality"],
        how="left",
    )
    screening = (
        pd.concat([screening.assign(laterality=laterality) for laterality in ("L", "R")])
        .rename_axis("exam")
        .reset_index()
    )
    merged = screening[["exam", "patient", "laterality", "date", "window"]].merge(
        follow_ups[
            ["fu_exam", "patient", "laterality", "date", "fu_kind", "path_severity", "other_cancer"]
        ],
        on=["patient", "laterality"],
        suffixes=("", "_fu"),
    )
    merged["fu_days"] = (merged["date_fu"] - merged["date"]).dt.days
    merged = merged[(merged["fu_days"] >= 0) & (merged["fu_days"] <= merged["window"])]
    first = merged.sort_values(["fu_days", "fu_exam"]).drop_duplicates(
        ["exam", "laterality", "fu_kind"]
    )
    diagnostic_first = first[first["fu_kind"] == "diagnostic"].set_index(["exam", "laterality"])
    ultrasound_first = first[first["fu_kind"] == "ultrasound"].set_index(["exam", "laterality"])
    both = diagnostic_first.join(ultrasound_first, how="outer", lsuffix="_dx", rsuffix="_us")
    # missing severities rank last, so an ultrasound's result is not hidden by a diagnostic
    # exam that has none (the notebook's NaN comparison would keep the diagnostic's)
    use_us = both["fu_exam_dx"].isna() | (
        both["path_severity_us"].fillna(99) < both["path_severity_dx"].fillna(99)
    )
    result = pd.DataFrame(index=both.index)
    for name, source in (
        ("fu_exam", "fu_exam"),
        ("fu_kind", "fu_kind"),
        ("fu_days", "fu_days"),
        ("fu_severity", "path_severity"),
        ("fu_other_cancer", "other_cancer"),
    ):
        result[name] = both[f"{source}_us"].where(use_us, both[f"{source}_dx"])
    result["fu_other_cancer"] = result["fu_other_cancer"].astype("boolean").fillna(False)
    return result.reset_index()[columns]


def label_pairs(
    pairs: pd.DataFrame, clinical: pd.DataFrame, options: EmbedOptions, summary: dict
) -> pd.DataFrame:
    """The pairs with their findings, follow-up and label; exams with a non-breast cancer are
    dropped. Counts go to summary."""
    findings = finding_summary(clinical)
    pairs = pairs.merge(findings, on=["exam", "laterality"], how="left")
    if options.follow_up:
        follow_up = follow_up_labels(clinical, findings, options.label_window)
        pairs = pairs.merge(follow_up, on=["exam", "laterality"], how="left")
    else:
        for column in ("fu_exam", "fu_kind"):
            pairs[column] = ""
        pairs["fu_days"] = pairs["fu_severity"] = np.nan
        pairs["fu_other_cancer"] = False
    pairs["fu_exam"] = pairs["fu_exam"].fillna("")
    pairs["fu_kind"] = pairs["fu_kind"].fillna("")
    other_exams = set(clinical.loc[clinical["path_severity"] == OTHER_CANCER_SEVERITY, "exam"])
    on_exam = pairs["exam"].isin(other_exams).to_numpy(dtype=bool)
    on_follow_up = _flag(pairs["fu_other_cancer"]) & ~on_exam
    summary["excluded_pairs"]["path_severity_6"] = int(on_exam.sum())
    summary["excluded_pairs"]["follow_up_path_severity_6"] = int(on_follow_up.sum())
    summary["excluded_exams"] = {
        "path_severity_6": int(pairs.loc[on_exam, "exam"].nunique()),
        "path_severity_6_in_clinical": len(other_exams),
    }
    pairs = pairs[~(on_exam | on_follow_up)].copy()

    own = _flag(pairs["malignant"])
    carried = pairs["fu_severity"].isin(MALIGNANT_SEVERITIES).to_numpy(dtype=bool)
    pairs["label"] = (own | carried).astype(int)
    pairs["label_source"] = np.where(
        own, "own_exam", np.where(carried, "follow_up_" + pairs["fu_kind"].astype(str), "")
    )
    pairs["biopsied"] = _flag(pairs["biopsied"]) | pairs["fu_severity"].notna().to_numpy()
    pairs["path_severity"] = np.fmin(
        pairs["path_severity"].to_numpy(dtype=float), pairs["fu_severity"].to_numpy(dtype=float)
    )
    unproven = pairs["asses"].isin(["M", "K"]).to_numpy(dtype=bool) & ~pairs["biopsied"]
    summary["labels"] = {
        "positives_by_source": {
            source: int((pairs["label_source"] == source).sum())
            for source in ("own_exam", "follow_up_diagnostic", "follow_up_ultrasound")
        },
        "screening_pairs_with_follow_up": int((pairs["fu_exam"] != "").sum()),
        "birads_5_or_6_without_pathology": {
            "pairs": int(unproven.sum()),
            "exams": int(pairs.loc[unproven, "exam"].nunique()),
        },
    }
    return pairs


# Pairing ------------------------------------------------------------------------------------


def strip_path_prefix(source: str, prefixes: tuple[str, ...] = ()) -> tuple[str, str]:
    """(the rest of an ``anon_dicom_path`` relative to the images root, the start removed or
    '' if none): a given prefix first, else one of `KNOWN_PATH_PREFIXES`."""
    for prefix in prefixes:
        if prefix and source.startswith(prefix):
            return source[len(prefix) :].lstrip("/"), prefix
    for pattern, name in KNOWN_PATH_PREFIXES:
        match = pattern.match(source)
        if match:
            return source[match.end() :].lstrip("/"), name
    rest = source[2:] if source.startswith("./") else source
    return rest.lstrip("/"), ""


def resolve_path(source: str, options: EmbedOptions) -> Path:
    """Where an ``anon_dicom_path`` lies in this copy: its start removed, under images_root."""
    return options.images_root / strip_path_prefix(source, options.strip_prefixes)[0]


def _exclusions(images: pd.DataFrame) -> pd.Series:
    """The first reason each image cannot be paired ('' if none)."""
    reasons = pd.Series("", index=images.index, dtype=object)
    # pair ids are built from the exam, so an exam id must belong to one patient
    patients_per_exam = images.groupby("exam")["patient"].nunique()
    shared = images["exam"].map(patients_per_exam).gt(1) & (images["exam"] != "")
    checks = (
        (images["kind"] == "", "image_type_not_2d_or_cview"),
        (images["spot"], "spot_or_magnification_view"),
        ((images["patient"] == "") | (images["exam"] == ""), "patient_or_exam_id_missing"),
        (shared, "exam_id_shared_by_patients"),
        (~images["laterality"].isin(["L", "R"]), "laterality_not_L_or_R"),
        (images["view"] == "", "view_missing"),
        (~images["view"].isin(VIEWS), "view_not_a_manifest_view"),
        (images["source_path"] == "", "dicom_path_missing"),
    )
    for mask, reason in checks:
        reasons[(reasons == "") & mask] = reason
    return reasons


KEY = ["patient", "exam", "laterality", "view"]
# (combination column, best first: descending?, the reason counted when it decides)
_CHOICE_CRITERIA = (
    ("n_exist", False, "file_exists"),
    ("same_series", False, "same_series"),
    ("series_gap", True, "nearest_series_time"),
    ("n_with_rois", False, "with_rois"),
)
_PLACED_COLUMNS = (
    "position",
    "modality",
    "x1",
    "y1",
    "x2",
    "y2",
    "match_level",
    "roi_index",
    "roi_column",
    "frame_rule",
    "mirrored",
    "metadata_row",
)


def pair_images(images: pd.DataFrame, summary: dict) -> pd.DataFrame:
    """One row per key holding both kinds: ffdm_* and sm_* columns and ``pairing_basis``
    (the criterion that chose among several combinations). Counts go to summary."""
    several, dropped, keys = {}, 0, {}
    for kind in ("ffdm", "sm"):
        candidates = images[images["kind"] == kind]
        sizes = candidates.groupby(KEY).size()
        several[kind] = int((sizes > 1).sum())
        dropped += len(candidates) - len(sizes)
        keys[kind] = sizes.index.to_frame(index=False)
    both_kinds = keys["ffdm"].merge(keys["sm"], on=KEY, how="outer", indicator=True)
    combos = images[images["kind"] == "ffdm"].merge(
        images[images["kind"] == "sm"], on=KEY, suffixes=("_ffdm", "_sm")
    )
    combos["n_exist"] = combos["exists_ffdm"].astype(int) + combos["exists_sm"].astype(int)
    combos["same_series"] = combos["series_number_ffdm"].notna() & (
        combos["series_number_ffdm"] == combos["series_number_sm"]
    )
    combos["series_gap"] = (
        (combos["series_time_ffdm"] - combos["series_time_sm"]).abs().fillna(np.inf)
    )
    combos["n_with_rois"] = combos["has_rois_ffdm"].astype(int) + combos["has_rois_sm"].astype(int)
    order = [*KEY, *(name for name, _, _ in _CHOICE_CRITERIA), "path_text_ffdm", "path_text_sm"]
    ascending = [True] * len(KEY) + [best for _, best, _ in _CHOICE_CRITERIA] + [True, True]
    ranked = combos.sort_values(order, ascending=ascending, kind="stable")
    rank = ranked.groupby(KEY, sort=False).cumcount()
    pairs = ranked[rank == 0]
    runners_up = ranked[rank == 1].set_index(KEY)
    chosen = pairs.set_index(KEY).loc[runners_up.index]
    basis = pd.Series("first_by_path", index=runners_up.index, dtype=object)
    decided = pd.Series(False, index=runners_up.index)
    for name, _, reason in _CHOICE_CRITERIA:
        differs = (chosen[name] != runners_up[name]) & ~decided
        basis[differs] = reason
        decided |= differs
    pairs = pairs.set_index(KEY)
    pairs["pairing_basis"] = "one_candidate_each"
    pairs.loc[basis.index, "pairing_basis"] = basis
    pairs = pairs.reset_index()
    known = pairs["series_number_ffdm"].notna() & pairs["series_number_sm"].notna()
    summary["several_candidates"] = {
        "keys_with_several_2d": several["ffdm"],
        "keys_with_several_cview": several["sm"],
        "images_not_chosen": dropped,
        "chosen_by": {reason: int((basis == reason).sum()) for reason in sorted(set(basis))},
    }
    summary["pair_series"] = {
        "same_series": int(pairs["same_series"].sum()),
        "other_series": int((known & ~pairs["same_series"]).sum()),
        "series_unknown": int((~known).sum()),
    }
    summary["unpaired_images"] = {
        "2d_without_cview": int((both_kinds["_merge"] == "left_only").sum()),
        "cview_without_2d": int((both_kinds["_merge"] == "right_only").sum()),
    }
    return pairs.sort_values(KEY).reset_index(drop=True)


# ROI frames ---------------------------------------------------------------------------------

_HEADER_TAGS = ["Rows", "Columns", "PatientOrientation", "ViewPosition", "ImageLaterality"]


def read_header(path: Path) -> dict:
    """Rows, Columns, PatientOrientation (a list, [] if absent), ViewPosition and
    ImageLaterality ('' if absent) from the DICOM header; the pixel data is not read."""
    import pydicom

    dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    orientation = dataset.get("PatientOrientation")
    if orientation is None or orientation == "":
        values = []
    elif isinstance(orientation, str):
        values = orientation.split("\\")
    else:
        values = [str(value) for value in orientation]
    return {
        "size": (int(dataset.Rows), int(dataset.Columns)),
        "orientation": [value.strip() for value in values if value.strip()],
        "view": str(dataset.get("ViewPosition", "") or ""),
        "laterality": str(dataset.get("ImageLaterality", "") or ""),
    }


def _pixel_orientation(path: Path) -> tuple[tuple[int, int], bool]:
    """((Rows, Columns), chest wall on the right) from the pixels."""
    from datamodules.dicom import chest_wall_on_right, read_dicom, to_unit_range

    pixels, dataset = read_dicom(path)
    image = to_unit_range(pixels, dataset, window="minmax")
    return image.shape, chest_wall_on_right(image)


def _image_frame(pair: pd.Series, kind: str, options: EmbedOptions):
    """(size (Rows, Columns) or None, mirror the boxes, the rule that decided, where the size
    came from or '') of one image of a pair."""
    size = (pair[f"meta_rows_{kind}"], pair[f"meta_columns_{kind}"])
    size = tuple(int(v) for v in size) if all(np.isfinite(size)) else None
    source = "metadata" if size is not None else ""
    path = pair[f"path_{kind}"]
    if pair[f"roi_column_{kind}"] in DICOM_FRAME_COLUMNS:
        return size, False, "dcm_roi_coords", source
    if options.roi_frame == "stored":
        return size, False, "roi_frame_stored", source
    if options.orientation_from == "pixels":
        size, mirror = _pixel_orientation(path)
        return size, mirror, "pixels", "pixels"
    if options.orientation_from == "laterality":
        mirror, rule = pair["laterality"] == "R", "laterality"
    elif np.isfinite(pair[f"png_flipped_{kind}"]):
        mirror, rule = bool(pair[f"png_flipped_{kind}"]), "png_flipped"
    else:
        header = read_header(path)
        mirror, rule = embed_png_flip(
            header["orientation"],
            header["view"] or pair["view"],
            header["laterality"].upper() or pair["laterality"],
        )
        if size is None:
            return header["size"], mirror, rule, "dicom_header"
        return size, mirror, rule, source
    if size is None and mirror:
        return read_header(path)["size"], mirror, rule, "dicom_header"
    return size, mirror, rule, source


def place_boxes(pairs: pd.DataFrame, options: EmbedOptions, summary: dict):
    """(lesion rows: xyxy in stored pixels, each with its ROI column, frame rule and mirrored
    or not; the positions of the pairs with an image that could not be read). Counts go to
    summary."""
    lesions, unreadable = [], set()
    sources, rules, stats = Counter(), Counter(), Counter()
    degenerate_rows, outside_rows = [], []
    with_rois = pairs[(pairs["n_rois_ffdm"] + pairs["n_rois_sm"]) > 0]
    for _, pair in with_rois.iterrows():
        position = int(pair["position"])
        # both images of a pair are placed before either counts: an unreadable one drops both
        placed = {}
        try:
            for kind in ("ffdm", "sm"):
                if pair[f"rois_{kind}"]:
                    placed[kind] = _image_frame(pair, kind, options)
        except Exception:  # noqa: BLE001 - counted; the file's name is not logged
            unreadable.add(position)
            continue
        for kind, (size, mirror, rule, source) in placed.items():
            if source:
                sources[source] += 1
            rules[rule] += 1
            if rule == "pixels" and mirror != (pair["laterality"] == "R"):
                stats["pixel_orientation_differs_from_laterality"] += 1
            stats["mirrored_images" if mirror else "unmirrored_images"] += 1
            row = int(pair[f"row_{kind}"])
            levels = pair[f"roi_levels_{kind}"]
            for index, roi in enumerate(pair[f"rois_{kind}"]):
                x1, y1, x2, y2 = roi_to_xyxy(roi, size[1] if mirror else None)
                if not box_holds(x1, y1, x2, y2):
                    degenerate_rows.append(row)
                    continue
                if size is not None and (x1 < 0 or y1 < 0 or x2 > size[1] or y2 > size[0]):
                    outside_rows.append(row)
                lesions.append(
                    {
                        "position": position,
                        "modality": kind,
                        "x1": x1,
                        "y1": y1,
                        "x2": x2,
                        "y2": y2,
                        "match_level": levels[index] if index < len(levels) else np.nan,
                        "roi_index": index,
                        "roi_column": pair[f"roi_column_{kind}"],
                        "frame_rule": rule,
                        "mirrored": bool(mirror),
                        "metadata_row": row,
                    }
                )
    summary["rois"] = {
        "mirrored_images": stats["mirrored_images"],
        "unmirrored_images": stats["unmirrored_images"],
        "frame_rule": dict(sorted(rules.items())),
        "degenerate_dropped": len(degenerate_rows),
        "degenerate_metadata_rows": sorted(set(degenerate_rows))[:_MAX_LISTED_ROWS],
        "outside_image_kept": len(outside_rows),
        "outside_image_metadata_rows": sorted(set(outside_rows))[:_MAX_LISTED_ROWS],
    }
    if options.orientation_from == "pixels" and options.roi_frame == "chest-wall-left":
        summary["rois"]["pixel_orientation_differs_from_laterality"] = stats[
            "pixel_orientation_differs_from_laterality"
        ]
    summary["image_size_from"] = dict(sources)
    return lesions, unreadable


# The whole adapter --------------------------------------------------------------------------

_FRAME_RULES = {
    "dcm_roi_coords": "DCM_ROI_coords: stored DICOM pixels, never mirrored",
    "png_flipped": "mirrored where the table's PNG_flipped is true",
    "patient_orientation": (
        "mirrored where EMBED's DICOM-to-PNG conversion flipped the image: PatientOrientation "
        "(DICOM header) first value 'P', views CC/MLO/ML"
    ),
    "laterality_no_patient_orientation": (
        "no PatientOrientation in the header: mirrored for laterality R, views CC/MLO/ML"
    ),
    "laterality": "mirrored for laterality R (--orientation-from laterality)",
    "pixels": "mirrored where the brighter outer fifth of the pixels is on the right",
    "roi_frame_stored": "PNG_ROI_coords/ROI_coords taken as stored pixels (--roi-frame stored)",
}


def _conventions(options: EmbedOptions) -> dict:
    if options.roi_frame == "stored":
        mirror = "none: PNG-frame ROIs are taken as the stored DICOM's pixels (--roi-frame stored)"
    else:
        mirror = {
            "embed": "as EMBED flipped the image: PNG_flipped, else PatientOrientation",
            "laterality": "laterality R",
            "pixels": "the brighter outer fifth of the pixels is on the right",
        }[options.orientation_from]
        mirror = f"x' = Columns - x for the images EMBED's PNGs mirror (decided by: {mirror})"
    window = options.label_window
    return {
        "roi_coords": "EMBED (ymin, xmin, ymax, xmax) -> x1=xmin, y1=ymin, x2=xmax, y2=ymax",
        "roi_columns_preferred": list(ROI_COLUMNS),
        "roi_frame": options.roi_frame,
        "roi_frame_meaning": (
            "PNG_ROI_coords/ROI_coords are in EMBED's PNGs, turned to face right (chest wall on "
            "the left); DCM_ROI_coords in the stored DICOM"
            if options.roi_frame == "chest-wall-left"
            else "all ROI columns are taken as the stored image's pixels"
        ),
        "stored_orientation_from": options.orientation_from,
        "mirror": mirror,
        "frame_rules": dict(_FRAME_RULES),
        "lesion_boxes": "xyxy in each modality's stored DICOM pixels (before any flip)",
        "image_paths": "relative to the output folder" if options.relative_paths else "absolute",
        "images_root": os.path.abspath(options.images_root),
        "strip_prefixes": list(options.strip_prefixes),
        "known_path_prefixes": [name for _, name in KNOWN_PATH_PREFIXES],
        "label_window_days": (
            {"after_birads_0": window[0], "after_birads_1_2": window[1]} if options.follow_up else 0
        ),
    }


RULES = {
    "images": "FinalImageType 2D = FFDM, cview = SM; spot/magnification views excluded",
    "pairing": "key (empi_anon, acc_anon, ImageLateralityFinal, ViewPosition)",
    "several_candidates": (
        "per key, keep the (2D, C-view) combination with: both files existing, then the same "
        "SeriesNumber, then the nearest SeriesTime, then more images with ROIs, then the first "
        "by path"
    ),
    "rois": (
        "DCM_ROI_coords where present, else PNG_ROI_coords, else ROI_coords; one match level "
        "per ROI (ROI_match_level, else match_level)"
    ),
    "findings": (
        "clinical rows with the exam's acc_anon and side = laterality, B or empty; a pathology "
        "result by bside where set"
    ),
    "follow_up": (
        "a screening exam takes the pathology of its first diagnostic (or more severe "
        "ultrasound) exam of the same patient and breast within the label window after a "
        "BI-RADS 0 (first number) or 1/2 (second number)"
    ),
    "label": "1 if the breast's own or carried-back pathology has path_severity 0 or 1",
    "excluded_exams": "exams with a path_severity 6 (non-breast cancer), own or carried back",
    "lesion_pathology": (
        "the pair's worst pathology: malignant (path_severity 0/1), else benign (biopsied), "
        "else unknown (never biopsied); birads = most suspicious assessment"
    ),
    "annotated": (
        "the exam is in the clinical table and, for label 1, an image of the pair has an ROI"
    ),
}


def _resolve_paths(images: pd.DataFrame, metadata_path: Path, options: EmbedOptions, summary):
    """Paths, existence and the prefix counts; `EmbedPathError` when no listed file exists."""
    prefixes = options.strip_prefixes
    stripped = [strip_path_prefix(source, prefixes) for source in images["source_path"]]
    images["path"] = [options.images_root / rest for rest, _ in stripped]
    images["path_text"] = images["path"].map(str)
    prefixes = Counter(name or "none" for _, name in stripped)
    images["exists"] = [path.is_file() for path in images["path"]] if options.check_files else True
    summary["paths"] = {"prefix_removed": dict(sorted(prefixes.items()))}
    if not options.check_files:
        return images
    found = int(images["exists"].sum())
    summary["paths"].update(files_found=found, files_not_found=len(images) - found)
    if len(images) and not found:
        first = images.iloc[0]
        reason = (
            f"none of the {len(images)} image files listed was found. The first, "
            f"{first['source_path']!r}, was looked for as {first['path']} in the folder "
            f"{os.path.abspath(options.images_root)} (--images-root). Set --images-root to the "
            "folder that holds the cohort_1/... folders, or name the start of anon_dicom_path "
            "to remove with --strip-prefix."
        )
        raise EmbedPathError(
            Problem(str(metadata_path), int(first["row"]), "anon_dicom_path", reason,
                    "no image file found")
        )
    return images


def build_tables(
    metadata_path: str | os.PathLike, clinical_path: str | os.PathLike, options: EmbedOptions
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(manifest, lesions, summary) from EMBED's metadata and clinical tables.

    Raises `EmbedTableError` listing every missing column and unreadable value (file, row as
    a spreadsheet shows it, column) of both tables, and `EmbedPathError` when none of the
    listed image files exists (with ``check_files``).
    """
    metadata_path, clinical_path = Path(metadata_path), Path(clinical_path)
    problems: list[Problem] = []
    images = read_metadata(metadata_path, problems)
    clinical = read_clinical(clinical_path, problems, follow_up=options.follow_up)
    if problems:
        raise EmbedTableError(problems)
    columns = images.attrs["columns"]
    summary: dict = {
        "inputs": {
            "metadata": metadata_path.name,
            "metadata_rows": len(images),
            "clinical": clinical_path.name,
            "clinical_rows": len(clinical),
        },
        "columns_read": {**columns, "bside": bool((clinical["bside"] != "").any())},
        "images": {
            "2d": int((images["kind"] == "ffdm").sum()),
            "cview": int((images["kind"] == "sm").sum()),
            "other_type": int((images["kind"] == "").sum()),
        },
    }
    differs = images["num_roi"].notna() & (images["num_roi"] != images["n_rois"])
    with_rois = images[images["roi_column"] != ""]
    summary["roi_table"] = {
        "images_by_column": {
            column: int((with_rois["roi_column"] == column).sum()) for column in columns["roi"]
        },
        "num_roi_differs": int(differs.sum()),
        "num_roi_differs_metadata_rows": images.loc[differs, "row"].tolist()[:_MAX_LISTED_ROWS],
        "match_level_count_differs": int(images["levels_differ"].sum()),
        "match_level_count_differs_metadata_rows": images.loc[
            images["levels_differ"], "row"
        ].tolist()[:_MAX_LISTED_ROWS],
    }

    reasons = _exclusions(images)
    summary["excluded_images"] = {
        reason: int(count) for reason, count in reasons[reasons != ""].value_counts().items()
    }
    images = images[reasons == ""].copy()
    images = _resolve_paths(images, metadata_path, options, summary)
    images["has_rois"] = images["n_rois"] > 0
    pairs = pair_images(images, summary)

    summary["excluded_pairs"] = {}
    pairs = label_pairs(pairs, clinical, options, summary)
    if options.check_files:
        missing = ~(pairs["exists_ffdm"] & pairs["exists_sm"])
        summary["excluded_pairs"]["dicom_file_not_found"] = int(missing.sum())
        pairs = pairs[~missing]
    pairs = pairs.reset_index(drop=True)
    pairs["position"] = pairs.index
    lesion_rows, unreadable = place_boxes(pairs, options, summary)
    summary["excluded_pairs"]["dicom_unreadable"] = len(unreadable)
    pairs = pairs[~pairs["position"].isin(sorted(unreadable))]
    lesions = pd.DataFrame(lesion_rows, columns=list(_PLACED_COLUMNS))
    lesions = lesions[~lesions["position"].isin(sorted(unreadable))]

    density = clinical.groupby("exam")["density"].max()
    manifest = _manifest(pairs, set(clinical["exam"]), density)
    lesions = _lesions(lesions, manifest)
    _count(summary, manifest, lesions, options)
    return manifest.reset_index(drop=True), lesions, summary


def _flag(series: pd.Series) -> np.ndarray:
    """A boolean column of a left join as numpy: missing (no joined finding) is False."""
    return series.astype("boolean").fillna(False).to_numpy(dtype=bool)


def _manifest(pairs: pd.DataFrame, read_exams: set, density: pd.Series) -> pd.DataFrame:
    """Manifest rows (indexed by the pairs' positions) with EMBED's extra columns."""
    malignant = pairs["label"].to_numpy(dtype=int) == 1
    biopsied = _flag(pairs["biopsied"])
    has_rois = ((pairs["n_rois_ffdm"] + pairs["n_rois_sm"]) > 0).to_numpy(dtype=bool)
    in_clinical = pairs["exam"].isin(read_exams).to_numpy(dtype=bool)
    basis = np.select(
        [~in_clinical, malignant & ~has_rois, malignant],
        ["exam_not_in_clinical", "malignant_without_roi", "malignant_with_roi"],
        "no_malignant_finding",
    )
    manifest = pd.DataFrame(
        {
            # no patient id in the pair id: it names images in logs and prediction files
            "pair_id": pairs["exam"].str.cat([pairs["laterality"], pairs["view"]], sep="_"),
            "patient_id": pairs["patient"],
            "exam_id": pairs["exam"],
            "laterality": pairs["laterality"],
            "view": pairs["view"],
            "sm_path": [os.path.abspath(path) for path in pairs["path_sm"]],
            "ffdm_path": [os.path.abspath(path) for path in pairs["path_ffdm"]],
            "label": malignant.astype(int),
            "annotated": np.isin(basis, ["malignant_with_roi", "no_malignant_finding"]),
            "annotated_basis": basis,
            "pathology": np.where(malignant, "malignant", np.where(biopsied, "benign", "unknown")),
            "path_severity": pairs["path_severity"],
            "label_source": pairs["label_source"],
            "follow_up_exam_id": pairs["fu_exam"],
            "follow_up_days": pairs["fu_days"],
            "asses": pairs["asses"].fillna(""),
            "birads": pairs["birads"],
            "n_findings": pairs["n_findings"].fillna(0).astype(int),
            "density": pairs["exam"].map(density),
            "manufacturer": pairs["manufacturer_ffdm"].where(
                pairs["manufacturer_ffdm"] != "", pairs["manufacturer_sm"]
            ),
            "pairing_basis": pairs["pairing_basis"],
            "ffdm_rois": pairs["n_rois_ffdm"].astype(int),
            "sm_rois": pairs["n_rois_sm"].astype(int),
            "ffdm_metadata_row": pairs["row_ffdm"].astype(int),
            "sm_metadata_row": pairs["row_sm"].astype(int),
        }
    )
    manifest.index = pairs["position"].to_numpy()
    return manifest


def _lesions(lesions: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    columns = [
        *LESION_COLUMNS,
        "match_level",
        "birads",
        "path_severity",
        "roi_index",
        "roi_column",
        "frame_rule",
        "mirrored",
        "metadata_row",
    ]
    if not len(lesions):
        return pd.DataFrame({column: [] for column in columns})
    pair = manifest.loc[lesions["position"]]
    lesions = lesions.assign(
        pair_id=pair["pair_id"].to_numpy(),
        pathology=pair["pathology"].to_numpy(),
        birads=pair["birads"].to_numpy(),
        path_severity=pair["path_severity"].to_numpy(),
    )
    lesions = lesions.assign(modality_order=lesions["modality"].map({"ffdm": 0, "sm": 1}))
    lesions = lesions.sort_values(["position", "modality_order", "roi_index"])
    return lesions[columns].reset_index(drop=True)


def _count(summary: dict, manifest: pd.DataFrame, lesions: pd.DataFrame, options) -> None:
    summary["pairs"] = len(manifest)
    summary["patients"] = int(manifest["patient_id"].nunique())
    summary["exams"] = int(manifest["exam_id"].nunique())
    summary["positives"] = int(manifest["label"].sum())
    summary["annotated"] = {
        "true": int(manifest["annotated"].sum()),
        "false": int((~manifest["annotated"]).sum()),
        "by_basis": {k: int(v) for k, v in manifest["annotated_basis"].value_counts().items()},
    }
    summary["pairs_by_pathology"] = {
        k: int(v) for k, v in manifest["pathology"].value_counts().items()
    }
    summary["lesions"] = {kind: int((lesions["modality"] == kind).sum()) for kind in MODALITIES}
    summary["lesions_by_pathology"] = {
        kind: {
            k: int(v)
            for k, v in lesions.loc[lesions["modality"] == kind, "pathology"].value_counts().items()
        }
        for kind in MODALITIES
    }
    levels = lesions["match_level"].map(lambda v: "missing" if pd.isna(v) else f"{v:g}")
    summary["lesions_by_match_level"] = {k: int(v) for k, v in levels.value_counts().items()}
    summary["conventions"] = _conventions(options)
    summary["rules"] = dict(RULES)


def adapt(
    metadata_path: str | os.PathLike,
    clinical_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: EmbedOptions,
) -> dict:
    """Build, validate (`datamodules.manifest.validate`) and write the tables and the summary;
    return the summary."""
    out_dir = Path(out_dir)
    manifest, lesions, summary = build_tables(metadata_path, clinical_path, options)
    if options.relative_paths:
        for column in ("sm_path", "ffdm_path"):
            manifest[column] = [
                os.path.relpath(path, os.path.abspath(out_dir)) for path in manifest[column]
            ]
    manifest = manifest.reset_index(drop=True)
    validate(
        manifest,
        lesions,
        manifest_name=str(out_dir / "manifest.csv"),
        lesions_name=str(out_dir / "lesions.csv"),
    )
    manifest_file, lesions_file = write_tables(out_dir, manifest, lesions)
    summary["outputs"] = {"manifest": manifest_file.name, "lesions": lesions_file.name}
    with open(out_dir / SUMMARY_FILE, "w") as stream:
        json.dump(summary, stream, indent=2)
        stream.write("\n")
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python cli.py adapt embed",
        description="EMBED open-data tables -> manifest.csv, lesions.csv, adapter_summary.json",
    )
    parser.add_argument("--metadata", required=True, help="EMBED_OpenData_metadata.csv")
    parser.add_argument("--clinical", required=True, help="EMBED_OpenData_clinical.csv")
    parser.add_argument(
        "--images-root",
        required=True,
        help="folder where anon_dicom_path values resolve once their start is removed",
    )
    parser.add_argument("--out", required=True, help="output folder")
    known = ", ".join(name for _, name in KNOWN_PATH_PREFIXES)
    parser.add_argument(
        "--strip-prefix",
        action="append",
        dest="strip_prefixes",
        metavar="PREFIX",
        help=f"remove this start of anon_dicom_path (repeatable; tried before the known starts "
        f"{known}, which are always removed)",
    )
    parser.add_argument(
        "--roi-frame",
        choices=ROI_FRAMES,
        default="chest-wall-left",
        help="the frame of PNG_ROI_coords/ROI_coords (default chest-wall-left: EMBED's PNGs, "
        "turned to face right; stored: the DICOM's own pixels). DCM_ROI_coords are always "
        "stored pixels",
    )
    parser.add_argument(
        "--orientation-from",
        choices=ORIENTATION_SOURCES,
        default="embed",
        help="which images to mirror under chest-wall-left: embed (default; the table's "
        "PNG_flipped, else EMBED's rule on the DICOM header's PatientOrientation), laterality "
        "(every R image), or pixels (the brighter side of each image with ROIs; reads them)",
    )
    parser.add_argument(
        "--label-window",
        type=int,
        nargs="+",
        default=list(DEFAULT_LABEL_WINDOW),
        metavar="DAYS",
        help="carry a follow-up exam's pathology back to the screening exam within DAYS after "
        "a BI-RADS 0 and after a 1/2 (default 180 365, as EMBED's labelling notebook; one "
        "number sets both; 0 switches the rule off)",
    )
    parser.add_argument(
        "--no-file-check",
        action="store_true",
        help="do not require the DICOM files to exist (image sizes then come from the "
        "metadata's Rows/Columns columns; the embed orientation rule still reads the headers "
        "of PNG-frame images without PNG_flipped)",
    )
    parser.add_argument(
        "--relative-paths",
        action="store_true",
        help="write image paths relative to --out instead of absolute",
    )
    return parser


def main(argv: list[str]) -> int:
    """``python cli.py adapt embed ...``: write the tables and print the summary."""
    parser = _parser()
    args = parser.parse_args(argv)
    if len(args.label_window) > 2:
        parser.error("--label-window takes one or two numbers of days")
    try:
        options = EmbedOptions(
            images_root=Path(args.images_root),
            strip_prefixes=tuple(args.strip_prefixes or ()),
            roi_frame=args.roi_frame,
            orientation_from=args.orientation_from,
            label_window=tuple(args.label_window),
            check_files=not args.no_file_check,
            relative_paths=args.relative_paths,
        )
    except ValueError as error:
        parser.error(str(error))
    try:
        summary = adapt(args.metadata, args.clinical, args.out, options)
    except (ManifestError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    print(
        f"wrote {Path(args.out) / 'manifest.csv'}, lesions.csv and {SUMMARY_FILE}; check the ROI "
        f"frame with: python cli.py adapt embed-check --out {args.out}"
    )
    return 0
