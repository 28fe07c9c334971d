"""The tables' files: reading a CSV or Parquet table (encoding and separator sniffed), finding
the manifest and its lesion table, and writing both."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd

from common.io import atomic_path
from common.tables import require_file
from datamodules.manifest.schema import LESION_COLUMNS, LESIONS_FILE, MANIFEST_FILE

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


def read_tables(
    manifest_path: str | os.PathLike, lesions_path: str | os.PathLike | None = None
) -> tuple[Path, Path | None, pd.DataFrame, pd.DataFrame | None]:
    """(manifest file, lesion file or None, raw manifest, raw lesions or None), unvalidated;
    the files are found as `resolve_table_paths` says."""
    manifest_file, lesions_file = resolve_table_paths(manifest_path, lesions_path)
    raw_manifest = read_table(manifest_file)
    raw_lesions = read_table(lesions_file) if lesions_file is not None else None
    return manifest_file, lesions_file, raw_manifest, raw_lesions
