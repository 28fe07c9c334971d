"""The manifest of FFDM-SM pairs and its lesion table: schema, validation, patient-level split.

A manifest has one row per pair (an FFDM and the SM of the same breast and view); the lesion
table has one row per lesion box per modality, in that modality's original DICOM pixels.
Both are CSV or Parquet (chosen by the file's suffix); extra columns are kept. Relative image
paths resolve against the manifest file's folder.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common.defaults import MODALITIES, SPLIT_FRACTIONS
from common.io import atomic_path

# ROW_CONVENTION and Problem are imported from here too (the EMBED adapter, older callers).
from common.problems import ROW_CONVENTION as ROW_CONVENTION
from common.problems import Problem, ProblemsError
from common.tables import (
    BOX_AXES,
    BOX_COLUMNS,
    boolean_masks,
    cell_text,
    file_row,
    file_rows,
    inverted,
    inverted_kind,
    inverted_reason,
    require_file,
)

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = (
    "pair_id",
    "patient_id",
    "exam_id",
    "laterality",
    "view",
    "sm_path",
    "ffdm_path",
    "label",
    "annotated",
)
OPTIONAL_MANIFEST_COLUMNS = ("split",)
LESION_COLUMNS = ("pair_id", "modality", *BOX_COLUMNS, "pathology")

LATERALITIES = ("L", "R")
# ACR/DICOM view codes of mammography (ViewCodeSequence abbreviations).
VIEWS = ("CC", "MLO", "ML", "LM", "LMO", "FB", "SIO", "XCCL", "XCCM", "AT", "CV")
SPLITS = ("train", "val", "test")
PATHOLOGIES = ("malignant", "benign", "unknown")
MANIFEST_FILE = "manifest.csv"
LESIONS_FILE = "lesions.csv"

# Columns read as text whatever they look like: ids such as "007" must keep their zeros.
_TEXT_COLUMNS = (
    "pair_id",
    "patient_id",
    "exam_id",
    "laterality",
    "view",
    "sm_path",
    "ffdm_path",
    "split",
    "modality",
    "pathology",
)


class ManifestError(ProblemsError):
    """A manifest or lesion table breaks the schema. ``problems`` lists every problem found."""

    subject = "the manifest/lesion tables"
    more = "all in ManifestError.problems"


@dataclass
class LoadSummary:
    """What `load_tables` kept, excluded (counts per reason) and how it split the pairs."""

    pairs_read: int = 0
    pairs_kept: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    lesions_read: int = 0
    lesions_kept: int = 0
    lesions_excluded: dict[str, int] = field(default_factory=dict)
    pairs_per_split: dict[str, int] = field(default_factory=dict)
    patients_per_split: dict[str, int] = field(default_factory=dict)
    pairs_with_given_split: int = 0
    # pair id -> reason, of the pairs a data module with on_bad_sample="skip" left out
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def pairs_skipped(self) -> int:
        """Pairs left out because a file could not be read or a box did not fit its image."""
        return len(self.skipped)

    def to_dict(self) -> dict:
        return {**self.__dict__, "skipped": dict(self.skipped), "pairs_skipped": self.pairs_skipped}

    def __str__(self) -> str:
        excluded = ", ".join(f"{n} {reason}" for reason, n in self.excluded.items()) or "none"
        splits = ", ".join(
            f"{name} {self.pairs_per_split.get(name, 0)} pairs/"
            f"{self.patients_per_split.get(name, 0)} patients"
            for name in SPLITS
        )
        return (
            f"{self.pairs_kept} of {self.pairs_read} pairs kept (excluded: {excluded}); "
            f"{self.lesions_kept} of {self.lesions_read} lesions kept; {splits}; "
            f"{self.pairs_with_given_split} pairs had their split given"
            + (f"; {self.pairs_skipped} pairs skipped (bad samples)" if self.skipped else "")
        )


# Separators a table exported from a spreadsheet may use (a semicolon where the decimal mark
# is a comma, a tab for "text" exports); the header line says which.
SEPARATORS = (",", ";", "\t", "|")
_TEXT_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt")


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.tsv``, ``.txt``, gzipped or not) or Parquet (``.parquet``,
    ``.pq``) table.

    A text table's encoding, byte-order mark and separator are sniffed: UTF-8 with or without
    a BOM, UTF-16 with one (a spreadsheet's "Unicode text"); the separator of `SEPARATORS`
    the header line holds most of (with a semicolon, a decimal comma). Any other encoding is
    refused naming the line and byte that are not UTF-8. Id, path and category columns are
    read as text (so ``007`` stays ``007``); only empty cells are missing values (a patient
    id ``NA`` stays a string). Errors are ValueErrors starting with the path.
    """
    path = Path(path)
    name = path.name.lower()
    require_file(path)
    if name.endswith(_TEXT_SUFFIXES):
        text = _decoded(path)
        if not text.strip():
            raise ValueError(f"{path}: empty file (no header line)")
        header = text.split("\n", 1)[0]
        separator = max(
            SEPARATORS, key=lambda candidate: (header.count(candidate), candidate == ",")
        )
        try:
            return pd.read_csv(
                io.StringIO(text),
                sep=separator,
                decimal="," if separator == ";" else ".",
                dtype={column: str for column in _TEXT_COLUMNS},
                keep_default_na=False,
                na_values=[""],
            )
        except pd.errors.ParserError as error:
            raise ValueError(
                f"{path}: cannot be read as a table separated by {separator!r} ({error})"
            ) from None
    if name.endswith((".parquet", ".pq")):
        try:
            table = pd.read_parquet(path)
        except Exception as error:  # noqa: BLE001 - pyarrow's errors have no common type
            raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
        for column in _TEXT_COLUMNS:
            if column in table.columns:
                values = table[column]
                table[column] = values.where(values.isna(), values.astype(str))
        return table
    raise ValueError(
        f"{path}: unknown table format; use .csv, .tsv, .txt (gzipped or not), .parquet or .pq"
    )


def _decoded(path: Path) -> str:
    """The text of a (gzipped) table: UTF-8 (a BOM dropped) or UTF-16 with its BOM."""
    import codecs
    import gzip

    data = (
        gzip.decompress(path.read_bytes())
        if path.name.lower().endswith(".gz")
        else path.read_bytes()
    )
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ValueError(
            f"{path}: not {'UTF-16' if encoding == 'utf-16' else 'UTF-8'} text: byte "
            f"0x{data[error.start]:02x} at line {line}, column {column} cannot be decoded (saved "
            "as Latin-1 or Windows-1252? save the table as UTF-8)"
        ) from None


def _parse_booleans(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values, bad): accepts booleans, 0/1 and true/false/yes/no in any case."""
    true, false = boolean_masks(series)
    return true, ~(true | false)


def _parse_labels(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values, bad): labels must be 0 or 1."""
    numbers, _ = _parse_numbers(series)
    bad = ~np.isin(numbers, (0.0, 1.0))
    return np.where(bad, 0, numbers).astype(np.int64), bad


def _parse_numbers(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values, bad): float64, NaN where empty or not a number; bad where not finite."""
    numbers = pd.to_numeric(
        series if pd.api.types.is_numeric_dtype(series) else cell_text(series), errors="coerce"
    ).to_numpy(dtype=float)
    return numbers, ~np.isfinite(numbers)


def _normalised(manifest: pd.DataFrame, lesions: pd.DataFrame | None):
    """Copies with text stripped and categories in their canonical case (L/R, CC, sm, benign)."""
    manifest = manifest.reset_index(drop=True).copy()
    for column in ("pair_id", "patient_id", "exam_id", "sm_path", "ffdm_path"):
        if column in manifest.columns:
            manifest[column] = cell_text(manifest[column])
    for column in ("laterality", "view"):
        if column in manifest.columns:
            manifest[column] = cell_text(manifest[column]).str.upper()
    if "split" in manifest.columns:
        manifest["split"] = cell_text(manifest["split"]).str.lower()
    if lesions is not None:
        lesions = lesions.reset_index(drop=True).copy()
        if "pair_id" in lesions.columns:
            lesions["pair_id"] = cell_text(lesions["pair_id"])
        for column in ("modality", "pathology"):
            if column in lesions.columns:
                lesions[column] = cell_text(lesions[column]).str.lower()
    return manifest, lesions


class _Problems:
    """Collects problems of one table; rows are positions, reported as the user sees them."""

    def __init__(self, file: str, pair_ids: pd.Series | None = None):
        self.file = file
        self.pair_ids = None if pair_ids is None else pair_ids.tolist()
        self.items: list[Problem] = []

    def add(self, positions, column: str | None, messages, kind: str) -> None:
        positions = np.flatnonzero(positions) if np.asarray(positions).dtype == bool else positions
        if isinstance(messages, str):
            messages = [messages] * len(positions)
        for position, message in zip(positions, messages):
            pair_id = self.pair_ids[int(position)] if self.pair_ids is not None else None
            self.items.append(
                Problem(self.file, file_row(position), column, message, kind, pair_id or None)
            )

    def add_table(self, column: str | None, message: str, kind: str) -> None:
        self.items.append(Problem(self.file, None, column, message, kind))


def _check_required(table: pd.DataFrame, columns, problems: _Problems) -> list[str]:
    present = []
    for column in columns:
        if column not in table.columns:
            problems.add_table(column, "missing required column", "missing column")
        else:
            present.append(column)
    return present


def _check_choice(table, column, choices, problems: _Problems, kind: str) -> None:
    values = table[column]
    bad = (values != "") & ~values.isin(choices)
    shown = ", ".join(choices)
    problems.add(
        bad.to_numpy(), column, [f"{v!r} is not one of {shown}" for v in values[bad]], kind
    )


def _check_duplicates(values: pd.Series, column: str, problems: _Problems, kind: str) -> None:
    filled = values[values != ""]
    duplicated = filled.duplicated(keep="first")
    if not duplicated.any():
        return
    first = {}
    for position, value in filled.items():
        first.setdefault(value, position)
    positions = filled.index[duplicated]
    messages = [f"same {column} as row {file_row(first[filled[p]])}" for p in positions]
    problems.add(positions.to_numpy(), column, messages, kind)


def _manifest_problems(manifest: pd.DataFrame, name: str) -> list[Problem]:
    problems = _Problems(name, manifest.get("pair_id"))
    present = _check_required(manifest, MANIFEST_COLUMNS, problems)
    for column in present:
        if column in ("label", "annotated"):
            empty = (
                manifest[column].isna().to_numpy() | (cell_text(manifest[column]) == "").to_numpy()
            )
        else:
            empty = (manifest[column] == "").to_numpy()
        problems.add(empty, column, "empty value", "empty value")
    if "laterality" in present:
        _check_choice(manifest, "laterality", LATERALITIES, problems, "unknown laterality")
    if "view" in present:
        _check_choice(manifest, "view", VIEWS, problems, "unknown view")
    if "label" in present:
        _, bad = _parse_labels(manifest["label"])
        bad &= (cell_text(manifest["label"]) != "").to_numpy()
        problems.add(
            bad,
            "label",
            [f"{v!r} is not 0 or 1" for v in manifest["label"][bad]],
            "label not 0/1",
        )
    if "annotated" in present:
        _, bad = _parse_booleans(manifest["annotated"])
        bad &= (cell_text(manifest["annotated"]) != "").to_numpy()
        problems.add(
            bad,
            "annotated",
            [f"{v!r} is not a boolean (true/false/1/0)" for v in manifest["annotated"][bad]],
            "annotated not boolean",
        )
    if "pair_id" in present:
        _check_duplicates(manifest["pair_id"], "pair_id", problems, "duplicate pair_id")
    for column in ("sm_path", "ffdm_path"):
        if column in present:
            _check_duplicates(manifest[column], column, problems, f"duplicate {column}")
    if "sm_path" in present and "ffdm_path" in present:
        same = (manifest["sm_path"] == manifest["ffdm_path"]) & (manifest["sm_path"] != "")
        problems.add(same.to_numpy(), "ffdm_path", "same file as sm_path", "sm_path = ffdm_path")
    if "split" in manifest.columns:
        _check_choice(manifest, "split", SPLITS, problems, "unknown split")
        if "patient_id" in present:
            _check_patient_splits(manifest, problems)
    return problems.items


def _check_patient_splits(manifest: pd.DataFrame, problems: _Problems) -> None:
    """A given split must keep each patient in one split. Messages name rows, not patients."""
    given = manifest[manifest["split"].isin(SPLITS) & (manifest["patient_id"] != "")]
    first: dict[str, tuple[int, str]] = {}
    positions, messages = [], []
    for position, patient, split in zip(given.index, given["patient_id"], given["split"]):
        if patient not in first:
            first[patient] = (position, split)
        elif first[patient][1] != split:
            row, other = file_row(first[patient][0]), first[patient][1]
            positions.append(position)
            messages.append(
                f"this row's patient is in split {split!r} here and in {other!r} at row {row}; "
                "a patient must be in one split"
            )
    problems.add(positions, "split", messages, "patient in two splits")


def _lesion_problems(lesions: pd.DataFrame, name: str, pair_ids: pd.Series | None) -> list[Problem]:
    problems = _Problems(name, lesions.get("pair_id"))
    present = _check_required(lesions, LESION_COLUMNS, problems)
    for column in present:
        if column in ("pair_id", "modality", "pathology"):
            problems.add((lesions[column] == "").to_numpy(), column, "empty value", "empty value")
    if "pair_id" in present and pair_ids is not None:
        known = set(pair_ids)  # (arrow-backed isin converts its argument element by element)
        unknown = (lesions["pair_id"] != "") & ~np.array(
            [pair_id in known for pair_id in lesions["pair_id"]], dtype=bool
        )
        problems.add(
            unknown.to_numpy(),
            "pair_id",
            [f"pair {v!r} is not in the manifest" for v in lesions["pair_id"][unknown]],
            "lesion of unknown pair",
        )
    if "modality" in present:
        _check_choice(lesions, "modality", MODALITIES, problems, "unknown modality")
    if "pathology" in present:
        _check_choice(lesions, "pathology", PATHOLOGIES, problems, "unknown pathology")
    numbers = {}
    for column in BOX_COLUMNS:
        if column in present:
            values, bad = _parse_numbers(lesions[column])
            numbers[column] = values
            problems.add(
                bad,
                column,
                [f"{v!r} is not a finite number" for v in lesions[column][bad]],
                "coordinate not a number",
            )
    for low, high in BOX_AXES:
        if low in numbers and high in numbers:
            bad = inverted(numbers[low], numbers[high])
            problems.add(
                bad,
                high,
                [
                    inverted_reason(low, high, a, b)
                    for a, b in zip(numbers[low][bad], numbers[high][bad])
                ],
                inverted_kind(low, high),
            )
    problems.items.sort(key=lambda p: p.row or 0)
    return problems.items


def validate(
    manifest: pd.DataFrame,
    lesions: pd.DataFrame | None,
    manifest_name: str = "manifest",
    lesions_name: str = "lesions",
) -> None:
    """Raise a `ManifestError` listing every problem of the two tables, or return None.

    Text is compared stripped, laterality and view in upper case, split, modality and
    pathology in lower case (what `load_tables` normalises to). Each problem reads
    ``"<file> row N, column C: message"`` with N counted as a spreadsheet shows the file
    (header = row 1).
    """
    manifest, lesions = _normalised(manifest, lesions)
    problems = _manifest_problems(manifest, manifest_name)
    problems.sort(key=lambda p: p.row or 0)
    if lesions is not None:
        pair_ids = manifest["pair_id"] if "pair_id" in manifest.columns else None
        problems += _lesion_problems(lesions, lesions_name, pair_ids)
    if problems:
        raise ManifestError(problems)


def write_tables(
    out_dir: str | os.PathLike, manifest: pd.DataFrame, lesions: pd.DataFrame | None
) -> tuple[Path, Path]:
    """Write ``manifest.csv`` and ``lesions.csv`` into out_dir (atomically); return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if lesions is None:
        lesions = pd.DataFrame(columns=list(LESION_COLUMNS))
    paths = out_dir / MANIFEST_FILE, out_dir / LESIONS_FILE
    for table, path in zip((manifest, lesions), paths):
        with atomic_path(path) as temporary, open(temporary, "w", newline="") as stream:
            table.to_csv(stream, index=False)
    return paths


def resolve_table_paths(
    manifest: str | os.PathLike, lesions: str | os.PathLike | None = None
) -> tuple[Path, Path | None]:
    """(manifest file, lesion file or None). A folder stands for its ``manifest.csv``; with no
    lesion file named, ``lesions.csv`` beside the manifest is used when it exists."""
    manifest = Path(manifest)
    if manifest.is_dir():
        manifest = manifest / MANIFEST_FILE
    if lesions is not None:
        return manifest, Path(lesions)
    beside = manifest.parent / LESIONS_FILE
    return manifest, beside if beside.is_file() else None


def _unit_hash(seed: int, text: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign_splits(
    manifest: pd.DataFrame, seed: int = 0, fractions: Sequence[float] = SPLIT_FRACTIONS
) -> pd.Series:
    """The split of every row, at patient level; a given ``split`` value wins.

    - A patient with a given split in some rows gets it in its empty rows too.
    - Patients with no given split are ordered by a hash of (seed, patient_id) and cut at the
      cumulative fractions: exact fractions of those patients, the same result for the same
      seed whatever the row order, and adding patients moves others by at most one place.
    """
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or abs(fractions.sum() - 1) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    patients = manifest["patient_id"]
    given = manifest["split"] if "split" in manifest.columns else pd.Series("", manifest.index)
    given = given.where(given.isin(SPLITS), "")
    patient_split = dict(zip(patients[given != ""], given[given != ""]))
    free = sorted(set(patients) - set(patient_split), key=lambda p: (_unit_hash(seed, p), p))
    cuts = np.rint(np.cumsum(fractions) * len(free)).astype(int)
    for position, patient in enumerate(free):
        patient_split[patient] = SPLITS[int(np.searchsorted(cuts, position, side="right"))]
    return patients.map(patient_split).astype(str)


ROW_COLUMN = "source_row"


def read_tables(
    manifest_path: str | os.PathLike, lesions_path: str | os.PathLike | None = None
) -> tuple[Path, Path | None, pd.DataFrame, pd.DataFrame | None]:
    """(manifest file, lesion file or None, raw manifest, raw lesions or None), unvalidated;
    the files are found as `resolve_table_paths` says."""
    manifest_file, lesions_file = resolve_table_paths(manifest_path, lesions_path)
    raw_manifest = read_table(manifest_file)
    raw_lesions = read_table(lesions_file) if lesions_file is not None else None
    return manifest_file, lesions_file, raw_manifest, raw_lesions


def load_tables(
    manifest_path: str | os.PathLike,
    lesions_path: str | os.PathLike | None = None,
    seed: int = 0,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    row_numbers: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, LoadSummary]:
    """Read, validate, exclude and split: (manifest, lesions, summary).

    ``manifest_path`` may be a folder holding ``manifest.csv``; with no ``lesions_path``,
    ``lesions.csv`` beside the manifest is read when it exists (else there are no lesions).
    Pairs with ``annotated`` false are excluded (and their lesions); the returned manifest has
    absolute image paths, ``label`` int64, ``annotated`` bool and a filled ``split`` column
    (see `assign_splits`). ``row_numbers`` adds a ``source_row`` column to both tables: each
    row's number in its file as a spreadsheet shows it (for reports of later checks). Raises
    `ManifestError` listing every problem.
    """
    manifest_file, lesions_file, raw_manifest, raw_lesions = read_tables(
        manifest_path, lesions_path
    )
    validate(
        raw_manifest,
        raw_lesions,
        manifest_name=str(manifest_file),
        lesions_name=str(lesions_file) if lesions_file else "lesions",
    )
    if raw_lesions is None:
        logger.warning("%s: no lesion table beside it; every pair has no boxes", manifest_file)
    return prepared_tables(
        raw_manifest, raw_lesions, manifest_file, seed, fractions, row_numbers=row_numbers
    )


def prepared_tables(
    raw_manifest: pd.DataFrame,
    raw_lesions: pd.DataFrame | None,
    manifest_file: str | os.PathLike,
    seed: int = 0,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    row_numbers: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, LoadSummary]:
    """`load_tables` after validation: normalise, parse, resolve paths, exclude and split.

    Tables that failed `validate` in single values (not in their columns) still come out,
    with unparsable labels as 0, ``annotated`` as false and coordinates as NaN: what
    ``check-data`` needs to go on checking the files of the other rows.
    """
    if raw_lesions is None:
        raw_lesions = pd.DataFrame({column: [] for column in LESION_COLUMNS})
    manifest, lesions = _normalised(raw_manifest, raw_lesions)
    if row_numbers:
        manifest[ROW_COLUMN] = file_rows(len(manifest))
        lesions[ROW_COLUMN] = file_rows(len(lesions))
    manifest["label"] = _parse_labels(manifest["label"])[0]
    manifest["annotated"] = _parse_booleans(manifest["annotated"])[0]
    root = str(Path(manifest_file).resolve().parent) + os.sep
    for column in ("sm_path", "ffdm_path"):
        paths = manifest[column]
        manifest[column] = paths.where(paths.str.startswith(os.sep), root + paths)
    for column in BOX_COLUMNS:
        lesions[column] = _parse_numbers(lesions[column])[0]

    summary = LoadSummary(pairs_read=len(manifest), lesions_read=len(lesions))
    kept = manifest["annotated"].to_numpy()
    summary.excluded = {"not annotated": int((~kept).sum())}
    excluded_ids = set(manifest.loc[~kept, "pair_id"])
    manifest = manifest[kept].reset_index(drop=True)
    lesion_kept = ~lesions["pair_id"].isin(excluded_ids)
    summary.lesions_excluded = {"pair not annotated": int((~lesion_kept).sum())}
    lesions = lesions[lesion_kept].reset_index(drop=True)

    given = manifest["split"].isin(SPLITS) if "split" in manifest.columns else None
    summary.pairs_with_given_split = int(given.sum()) if given is not None else 0
    manifest["split"] = assign_splits(manifest, seed=seed, fractions=fractions)
    summary.pairs_kept, summary.lesions_kept = len(manifest), len(lesions)
    summary.pairs_per_split = {s: int((manifest["split"] == s).sum()) for s in SPLITS}
    summary.patients_per_split = {
        s: int(manifest.loc[manifest["split"] == s, "patient_id"].nunique()) for s in SPLITS
    }
    return manifest, lesions, summary
