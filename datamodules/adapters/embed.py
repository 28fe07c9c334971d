"""EMBED (Emory Breast Imaging Dataset) open-data tables -> the paired manifest and lesion table.

``python cli.py adapt embed`` pairs each full-field 2D mammogram (FFDM) with the C-view (the
SM) of the same patient, exam, breast and view, turns EMBED's ``ROI_coords`` strings into xyxy
boxes in each image's stored DICOM pixels, labels the pairs from the clinical findings, and
writes ``manifest.csv``, ``lesions.csv`` (`datamodules.manifest`) and ``adapter_summary.json``.
``python cli.py adapt embed-check`` (``embed_check.py``) draws a sample of the written boxes
beside their mirror images, so a user sees which ROI convention their copy of EMBED follows.

Rules (also written into the summary):

- Images: ``FinalImageType`` 2D (FFDM) or cview (SM); spot and magnification views
  (``spot_mag`` set), lateralities other than L/R and views outside the manifest's list are
  excluded and counted per reason.
- Pairing key: (``empi_anon``, ``acc_anon``, ``ImageLateralityFinal``, ``ViewPosition``). When
  a key has several images of one kind, the one kept is, in order: a file that exists, one with
  ROIs, the first by path; the others are counted. Images without a partner are counted.
  ``pair_id`` is ``<acc_anon>_<laterality>_<view>`` (no patient id: pair ids name images in
  logs and prediction files), so an ``acc_anon`` seen with two patients is excluded.
- Findings: clinical rows with the exam's ``acc_anon`` and ``side`` equal to the image's
  laterality, ``B`` or empty. ``label`` 1 when one of them has ``path_severity`` 0 or 1.
- Lesion pathology: EMBED does not link an ROI to one finding, so every ROI of an image gets
  the pair's worst finding: malignant (``path_severity`` 0/1), else benign (biopsied), else
  unknown (never biopsied), with the most suspicious BI-RADS assessment kept beside it.
- ``annotated``: the exam is in the clinical table (it was read) and, for a malignant pair,
  at least one of its two images has an ROI; a malignant pair without boxes would teach the
  detector that the cancer is background.
- ROI frame: EMBED's ROIs are given in the image turned to face right (chest wall on the
  left). ``--roi-frame chest-wall-left`` (default) mirrors the boxes of images stored with the
  chest wall on the right, x' = Columns - x; ``--roi-frame stored`` takes the ROIs as stored
  pixels. Which images are stored chest wall right: laterality R (default) or, with
  ``--orientation-from pixels``, the brighter outer fifth of the pixels.
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

from datamodules.manifest import (
    LESION_COLUMNS,
    VIEWS,
    ManifestError,
    Problem,
    validate,
    write_tables,
)

METADATA_COLUMNS = (
    "empi_anon",
    "acc_anon",
    "anon_dicom_path",
    "FinalImageType",
    "ImageLateralityFinal",
    "ViewPosition",
    "spot_mag",
    "ROI_coords",
)
METADATA_OPTIONAL = ("num_roi", "match_level", "Manufacturer", "Rows", "Columns")
CLINICAL_COLUMNS = ("acc_anon", "side", "path_severity", "asses")
CLINICAL_OPTIONAL = ("tissueden",)

# The folder EMBED's anon_dicom_path values start with; stripped by default.
EMBED_PATH_PREFIX = "/mnt/NAS2/mammo/anon_dicom/"
ROI_FRAMES = ("chest-wall-left", "stored")
ORIENTATION_SOURCES = ("laterality", "pixels")
MALIGNANT_SEVERITIES = (0.0, 1.0)
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

    def __init__(self, problems):
        super().__init__(problems)
        message = str(self.args[0]).replace(
            "in the manifest/lesion tables", "in the EMBED tables", 1
        )
        self.args = (message,)


@dataclass
class EmbedOptions:
    """How to read one copy of EMBED.

    ``images_root``: where ``anon_dicom_path`` values resolve after one of ``strip_prefixes``
    is removed from their start (and any leading ``/``). ``relative_paths``: write image paths
    relative to the output folder instead of absolute.
    """

    images_root: Path
    strip_prefixes: tuple[str, ...] = (EMBED_PATH_PREFIX,)
    roi_frame: str = "chest-wall-left"
    orientation_from: str = "laterality"
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
        self.images_root = Path(self.images_root)
        self.strip_prefixes = tuple(self.strip_prefixes)


# ROI_coords ----------------------------------------------------------------------------------

_TOKENS = re.compile(
    r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<bracket>[()\[\],])|(?P<space>\s+)"
)
_CLOSING = {"(": ")", "[": "]"}


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


def parse_roi_coords(text) -> list[tuple[float, float, float, float]]:
    """The boxes of one EMBED ``ROI_coords`` value as (ymin, xmin, ymax, xmax), without eval.

    Accepts a tuple of boxes, boxes as tuples or lists nested in tuples (``'(([1, 2, 3, 4],),)'``),
    empty tuples (skipped), ``'()'`` and missing values (no box). Raises ValueError otherwise.
    """
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return []
    text = str(text).strip()
    if not text:
        return []
    tokens = _tokenize(text)
    node, index = _parse_value(tokens, 0)
    if index != len(tokens):
        raise ValueError(f"unexpected {tokens[index]!r} after the closing bracket")
    return _collect_boxes(node)


def roi_to_xyxy(
    roi: tuple[float, float, float, float], mirror_width: float | None = None
) -> tuple[float, float, float, float]:
    """(ymin, xmin, ymax, xmax) -> (x1, y1, x2, y2); mirrored as x' = width - x when given."""
    ymin, xmin, ymax, xmax = (float(v) for v in roi)
    if mirror_width is not None:
        xmin, xmax = mirror_width - xmax, mirror_width - xmin
    return xmin, ymin, xmax, ymax


# Reading the tables -------------------------------------------------------------------------


def _text(series: pd.Series) -> pd.Series:
    return series.astype("string").fillna("").str.strip()


def _ids(series: pd.Series) -> pd.Series:
    """Anonymised ids as text; ``123.0`` (a float column written by pandas) reads as ``123``."""
    return _text(series).str.replace(r"^(\d+)\.0+$", r"\1", regex=True)


def _numbers(series: pd.Series) -> pd.Series:
    return pd.to_numeric(_text(series).replace("", None), errors="coerce")


def _read_csv(path: Path, required, optional, problems: list[Problem]) -> pd.DataFrame | None:
    """The table's wanted columns as text, or None (with problems added) if columns lack."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    header = [str(column) for column in pd.read_csv(path, nrows=0).columns]
    missing = [column for column in required if column not in header]
    for column in missing:
        problems.append(
            Problem(str(path), None, column, "missing required column", "missing column")
        )
    if missing:
        return None
    wanted = set(required) | set(optional)
    return pd.read_csv(
        path, usecols=[column for column in header if column in wanted], dtype=str
    ).reset_index(drop=True)


def _add_row_problems(problems, path, column, positions, messages, kind) -> None:
    for position, message in zip(positions, messages):
        problems.append(Problem(str(path), int(position) + 2, column, message, kind))


def _check_numbers(table, column, allowed, path, problems, kind) -> pd.Series:
    """The column as floats (NaN where empty); problems for text and values outside allowed."""
    text = _text(table[column])
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


def read_metadata(path: Path, problems: list[Problem]) -> pd.DataFrame | None:
    """One row per image: ids, kind (ffdm/sm/''), laterality, view, spot, path, ROIs, extras."""
    raw = _read_csv(path, METADATA_COLUMNS, METADATA_OPTIONAL, problems)
    if raw is None:
        return None
    rois, bad_positions, bad_messages = [], [], []
    for position, value in enumerate(raw["ROI_coords"]):
        try:
            rois.append(parse_roi_coords(value))
        except ValueError as error:
            rois.append([])
            bad_positions.append(position)
            bad_messages.append(f"cannot read ROI_coords {value!r}: {error}")
    _add_row_problems(problems, path, "ROI_coords", bad_positions, bad_messages, "bad ROI_coords")
    kind = _text(raw["FinalImageType"]).str.lower().str.replace(r"[\s_-]", "", regex=True)
    spot = _text(raw["spot_mag"])
    images = pd.DataFrame(
        {
            "row": np.arange(len(raw)) + 2,
            "patient": _ids(raw["empi_anon"]),
            "exam": _ids(raw["acc_anon"]),
            "kind": kind.map(_IMAGE_TYPES).fillna(""),
            "laterality": _text(raw["ImageLateralityFinal"]).str.upper(),
            "view": _text(raw["ViewPosition"]).str.upper(),
            "spot": ~spot.isin(["", "0", "0.0"]),
            "source_path": _text(raw["anon_dicom_path"]),
        }
    )
    images["rois"] = rois
    images["n_rois"] = [len(boxes) for boxes in rois]
    for column, name, allowed in (
        ("num_roi", "num_roi", ()),
        ("match_level", "match_level", ()),
        ("Rows", "meta_rows", ()),
        ("Columns", "meta_columns", ()),
    ):
        if column in raw.columns:
            images[name] = _check_numbers(raw, column, allowed, path, problems, f"bad {column}")
        else:
            images[name] = np.nan
    images["manufacturer"] = _text(raw["Manufacturer"]) if "Manufacturer" in raw else ""
    return images


def read_clinical(path: Path, problems: list[Problem]) -> pd.DataFrame | None:
    """One row per finding: exam, side (L/R/B/''), path_severity, BI-RADS letter, density."""
    raw = _read_csv(path, CLINICAL_COLUMNS, CLINICAL_OPTIONAL, problems)
    if raw is None:
        return None
    side = _text(raw["side"]).str.upper()
    bad = ~side.isin(["L", "R", "B", ""])
    _add_row_problems(
        problems,
        path,
        "side",
        np.flatnonzero(bad.to_numpy()),
        [f"{value!r} is not L, R, B or empty" for value in side[bad]],
        "bad side",
    )
    severity = _check_numbers(
        raw, "path_severity", PATH_SEVERITIES, path, problems, "bad path_severity"
    )
    asses = _text(raw["asses"]).str.upper()
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
    return pd.DataFrame(
        {
            "exam": _ids(raw["acc_anon"]),
            "side": side,
            "path_severity": severity,
            "asses": asses.where(asses.isin(list(BIRADS)), ""),
            "density": density,
        }
    )


def finding_summary(clinical: pd.DataFrame) -> pd.DataFrame:
    """Per (exam, laterality): the joined findings' count, malignancy, biopsy, worst severity
    and most suspicious BI-RADS letter. A finding of side B or empty joins both breasts."""
    expanded = []
    for laterality in ("L", "R"):
        part = clinical[clinical["side"].isin([laterality, "B", ""])].copy()
        part["laterality"] = laterality
        expanded.append(part)
    findings = pd.concat(expanded, ignore_index=True)
    findings["malignant"] = findings["path_severity"].isin(MALIGNANT_SEVERITIES)
    findings["biopsied"] = findings["path_severity"].notna()
    findings["suspicion"] = findings["asses"].map(_SUSPICION).astype(float)
    grouped = findings.groupby(["exam", "laterality"], sort=False)
    summary = grouped.agg(
        n_findings=("side", "size"),
        malignant=("malignant", "any"),
        biopsied=("biopsied", "any"),
        path_severity=("path_severity", "min"),
        suspicion=("suspicion", "max"),
    ).reset_index()
    letters = {rank: letter for letter, rank in _SUSPICION.items()}
    summary["asses"] = summary["suspicion"].map(letters).fillna("")
    summary["birads"] = summary["asses"].map(BIRADS).astype(float)
    return summary.drop(columns="suspicion")


# Pairing ------------------------------------------------------------------------------------


def resolve_path(source: str, options: EmbedOptions) -> Path:
    """Where an ``anon_dicom_path`` lies in this copy: prefix stripped, under images_root."""
    for prefix in options.strip_prefixes:
        if prefix and source.startswith(prefix):
            source = source[len(prefix) :]
            break
    return options.images_root / source.lstrip("/")


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
_PLACED_COLUMNS = (
    "position",
    "modality",
    "x1",
    "y1",
    "x2",
    "y2",
    "match_level",
    "roi_index",
    "mirrored",
    "metadata_row",
)


def pair_images(images: pd.DataFrame, summary: dict) -> pd.DataFrame:
    """One row per key holding both kinds: ffdm_* and sm_* columns. Counts go to summary."""
    best_first = images.sort_values(
        [*KEY, "exists", "has_rois", "path_text"], ascending=[True] * 4 + [False, False, True]
    )
    chosen, several, dropped = {}, {}, 0
    for kind in ("ffdm", "sm"):
        candidates = best_first[best_first["kind"] == kind]
        sizes = candidates.groupby(KEY).size()
        several[kind] = int((sizes > 1).sum())
        chosen[kind] = candidates.drop_duplicates(KEY, keep="first")
        dropped += len(candidates) - len(chosen[kind])
    pairs = chosen["ffdm"].merge(
        chosen["sm"], on=KEY, how="outer", suffixes=("_ffdm", "_sm"), indicator=True
    )
    summary["several_candidates"] = {
        "keys_with_several_2d": several["ffdm"],
        "keys_with_several_cview": several["sm"],
        "images_not_chosen": dropped,
    }
    summary["unpaired_images"] = {
        "2d_without_cview": int((pairs["_merge"] == "left_only").sum()),
        "cview_without_2d": int((pairs["_merge"] == "right_only").sum()),
    }
    pairs = pairs[pairs["_merge"] == "both"].drop(columns="_merge")
    return pairs.sort_values(KEY).reset_index(drop=True)


def _header_size(path: Path) -> tuple[int, int]:
    """(Rows, Columns) from the DICOM header; nothing else is read."""
    import pydicom

    dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
    return int(dataset.Rows), int(dataset.Columns)


def _pixel_orientation(path: Path) -> tuple[tuple[int, int], bool]:
    """((Rows, Columns), chest wall on the right) from the pixels."""
    from datamodules.dicom import chest_wall_on_right, read_dicom, to_unit_range

    pixels, dataset = read_dicom(path)
    image = to_unit_range(pixels, dataset, window="minmax")
    return image.shape, chest_wall_on_right(image)


def _image_frame(pair: pd.Series, kind: str, options: EmbedOptions):
    """(size (Rows, Columns) or None, stored with the chest wall on the right, where the size
    came from or '') of one image of a pair, under the options' ROI frame."""
    size = (pair[f"meta_rows_{kind}"], pair[f"meta_columns_{kind}"])
    size = tuple(int(v) for v in size) if all(np.isfinite(size)) else None
    if options.roi_frame == "stored":
        return size, False, ""
    if options.orientation_from == "pixels":
        size, chest_wall_right = _pixel_orientation(pair[f"path_{kind}"])
        return size, chest_wall_right, "pixels"
    chest_wall_right = pair["laterality"] == "R"
    if size is not None:
        return size, chest_wall_right, "metadata"
    if chest_wall_right:
        return _header_size(pair[f"path_{kind}"]), True, "dicom_header"
    return None, False, ""


def place_boxes(pairs: pd.DataFrame, options: EmbedOptions, summary: dict):
    """(lesion rows: xyxy in stored pixels, each marked mirrored or not; the positions of the
    pairs with an image that could not be read). Counts go to summary."""
    lesions, unreadable = [], set()
    sources = Counter()
    stats = Counter()
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
        for kind, (size, chest_wall_right, source) in placed.items():
            if source:
                sources[source] += 1
            if source == "pixels" and chest_wall_right != (pair["laterality"] == "R"):
                stats["pixel_orientation_differs_from_laterality"] += 1
            stats["mirrored_images" if chest_wall_right else "unmirrored_images"] += 1
            row = int(pair[f"row_{kind}"])
            for index, roi in enumerate(pair[f"rois_{kind}"]):
                x1, y1, x2, y2 = roi_to_xyxy(roi, size[1] if chest_wall_right else None)
                if not (x2 > x1 and y2 > y1):
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
                        "match_level": pair[f"match_level_{kind}"],
                        "roi_index": index,
                        "mirrored": bool(chest_wall_right),
                        "metadata_row": row,
                    }
                )
    summary["rois"] = {
        "mirrored_images": stats["mirrored_images"],
        "unmirrored_images": stats["unmirrored_images"],
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


def _conventions(options: EmbedOptions) -> dict:
    if options.roi_frame == "stored":
        mirror = "none: ROI_coords are taken as the stored DICOM's pixels (--roi-frame stored)"
    else:
        side = (
            "laterality R"
            if options.orientation_from == "laterality"
            else "the brighter outer fifth of the pixels is on the right"
        )
        mirror = (
            "x' = Columns - x for images stored with the chest wall on the right "
            f"(decided by: {side})"
        )
    return {
        "roi_coords": "EMBED (ymin, xmin, ymax, xmax) -> x1=xmin, y1=ymin, x2=xmax, y2=ymax",
        "roi_frame": options.roi_frame,
        "roi_frame_meaning": (
            "ROIs given in the image turned to face right (chest wall on the left)"
            if options.roi_frame == "chest-wall-left"
            else "ROIs given in the stored image's pixels"
        ),
        "stored_orientation_from": options.orientation_from,
        "mirror": mirror,
        "lesion_boxes": "xyxy in each modality's stored DICOM pixels (before any flip)",
        "image_paths": "relative to the output folder" if options.relative_paths else "absolute",
        "images_root": os.path.abspath(options.images_root),
        "strip_prefixes": list(options.strip_prefixes),
    }


RULES = {
    "images": "FinalImageType 2D = FFDM, cview = SM; spot/magnification views excluded",
    "pairing": "key (empi_anon, acc_anon, ImageLateralityFinal, ViewPosition)",
    "several_candidates": (
        "per key and kind, keep: an existing file, then one with ROIs, then the first by path"
    ),
    "findings": "clinical rows with the exam's acc_anon and side = laterality, B or empty",
    "label": "1 if a joined finding has path_severity 0 or 1",
    "lesion_pathology": (
        "the pair's worst joined finding: malignant (path_severity 0/1), else benign "
        "(biopsied), else unknown (never biopsied); birads = most suspicious assessment"
    ),
    "annotated": (
        "the exam is in the clinical table and, for label 1, an image of the pair has an ROI"
    ),
}


def build_tables(
    metadata_path: str | os.PathLike, clinical_path: str | os.PathLike, options: EmbedOptions
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(manifest, lesions, summary) from EMBED's metadata and clinical tables.

    Raises `EmbedTableError` listing every missing column and unreadable value (file, row as
    a spreadsheet shows it, column) of both tables.
    """
    metadata_path, clinical_path = Path(metadata_path), Path(clinical_path)
    problems: list[Problem] = []
    images = read_metadata(metadata_path, problems)
    clinical = read_clinical(clinical_path, problems)
    if problems:
        raise EmbedTableError(problems)
    summary: dict = {
        "inputs": {
            "metadata": metadata_path.name,
            "metadata_rows": len(images),
            "clinical": clinical_path.name,
            "clinical_rows": len(clinical),
        },
        "images": {
            "2d": int((images["kind"] == "ffdm").sum()),
            "cview": int((images["kind"] == "sm").sum()),
            "other_type": int((images["kind"] == "").sum()),
        },
    }
    mismatch = images["num_roi"].notna() & (images["num_roi"] != images["n_rois"])
    summary["num_roi_differs_from_ROI_coords"] = int(mismatch.sum())

    reasons = _exclusions(images)
    summary["excluded_images"] = {
        reason: int(count) for reason, count in reasons[reasons != ""].value_counts().items()
    }
    images = images[reasons == ""].copy()
    images["path"] = [resolve_path(source, options) for source in images["source_path"]]
    images["path_text"] = images["path"].map(str)
    images["exists"] = [path.is_file() for path in images["path"]] if options.check_files else True
    images["has_rois"] = images["n_rois"] > 0
    pairs = pair_images(images, summary)

    excluded_pairs = Counter()
    if options.check_files:
        missing = ~(pairs["exists_ffdm"] & pairs["exists_sm"])
        excluded_pairs["dicom_file_not_found"] = int(missing.sum())
        pairs = pairs[~missing]
    pairs = pairs.reset_index(drop=True)
    pairs["position"] = pairs.index
    lesion_rows, unreadable = place_boxes(pairs, options, summary)
    excluded_pairs["dicom_unreadable"] = len(unreadable)
    summary["excluded_pairs"] = dict(excluded_pairs)
    pairs = pairs[~pairs["position"].isin(sorted(unreadable))]
    lesions = pd.DataFrame(lesion_rows, columns=list(_PLACED_COLUMNS))
    lesions = lesions[~lesions["position"].isin(sorted(unreadable))]

    pairs = pairs.merge(finding_summary(clinical), on=["exam", "laterality"], how="left")
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
    malignant = _flag(pairs["malignant"])
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
            "asses": pairs["asses"].fillna(""),
            "birads": pairs["birads"],
            "n_findings": pairs["n_findings"].fillna(0).astype(int),
            "density": pairs["exam"].map(density),
            "manufacturer": pairs["manufacturer_ffdm"].where(
                pairs["manufacturer_ffdm"] != "", pairs["manufacturer_sm"]
            ),
            "ffdm_rois": pairs["n_rois_ffdm"].astype(int),
            "sm_rois": pairs["n_rois_sm"].astype(int),
            "ffdm_match_level": pairs["match_level_ffdm"],
            "sm_match_level": pairs["match_level_sm"],
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
    summary["lesions"] = {kind: int((lesions["modality"] == kind).sum()) for kind in ("sm", "ffdm")}
    summary["lesions_by_pathology"] = {
        kind: {
            k: int(v)
            for k, v in lesions.loc[lesions["modality"] == kind, "pathology"].value_counts().items()
        }
        for kind in ("sm", "ffdm")
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
        help="folder where anon_dicom_path values resolve (after --strip-prefix)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--strip-prefix",
        action="append",
        dest="strip_prefixes",
        metavar="PREFIX",
        help=f"remove this start of anon_dicom_path (repeatable; default {EMBED_PATH_PREFIX})",
    )
    parser.add_argument(
        "--roi-frame",
        choices=ROI_FRAMES,
        default="chest-wall-left",
        help="the frame EMBED's ROI_coords are given in (default chest-wall-left: mirror the "
        "boxes of images stored with the chest wall on the right)",
    )
    parser.add_argument(
        "--orientation-from",
        choices=ORIENTATION_SOURCES,
        default="laterality",
        help="how to tell which images are stored with the chest wall on the right: "
        "laterality R (default), or the pixels of each image with ROIs (reads them)",
    )
    parser.add_argument(
        "--no-file-check",
        action="store_true",
        help="do not require the DICOM files to exist (image sizes then come from the "
        "metadata's Rows/Columns columns where boxes need mirroring)",
    )
    parser.add_argument(
        "--relative-paths",
        action="store_true",
        help="write image paths relative to --out instead of absolute",
    )
    return parser


def main(argv: list[str]) -> int:
    """``python cli.py adapt embed ...``: write the tables and print the summary."""
    args = _parser().parse_args(argv)
    options = EmbedOptions(
        images_root=Path(args.images_root),
        strip_prefixes=tuple(args.strip_prefixes or (EMBED_PATH_PREFIX,)),
        roi_frame=args.roi_frame,
        orientation_from=args.orientation_from,
        check_files=not args.no_file_check,
        relative_paths=args.relative_paths,
    )
    try:
        summary = adapt(args.metadata, args.clinical, args.out, options)
    except (ManifestError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    print(
        f"wrote {Path(args.out) / 'manifest.csv'}, lesions.csv and {SUMMARY_FILE}; check the ROI "
        f"convention with: python cli.py adapt embed-check --out {args.out}"
    )
    return 0
