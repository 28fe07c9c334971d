"""The manifest of FFDM-SM pairs and its lesion table: schema, validation, patient-level split.

A manifest has one row per pair (an FFDM and the SM of the same breast and view); the lesion
table has one row per lesion box per modality, in that modality's original DICOM pixels.
Both are CSV or Parquet (chosen by the file's suffix); extra columns are kept. Relative image
paths resolve against the manifest file's folder.
"""

from __future__ import annotations

# ROW_CONVENTION and Problem are imported from here too (the EMBED adapter, older callers).
from common.problems import ROW_CONVENTION as ROW_CONVENTION
from common.problems import Problem as Problem
from datamodules.manifest.files import (
    SEPARATORS,
    read_table,
    read_tables,
    resolve_table_paths,
    write_tables,
)
from datamodules.manifest.loading import ROW_COLUMN, LoadSummary, load_tables, prepared_tables
from datamodules.manifest.schema import (
    LATERALITIES,
    LESION_COLUMNS,
    LESIONS_FILE,
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    OPTIONAL_MANIFEST_COLUMNS,
    PATHOLOGIES,
    SPLITS,
    VIEWS,
)
from datamodules.manifest.split import assign_splits
from datamodules.manifest.validation import ManifestError, validate

__all__ = [
    "LATERALITIES",
    "LESIONS_FILE",
    "LESION_COLUMNS",
    "MANIFEST_COLUMNS",
    "MANIFEST_FILE",
    "OPTIONAL_MANIFEST_COLUMNS",
    "PATHOLOGIES",
    "ROW_COLUMN",
    "ROW_CONVENTION",
    "SEPARATORS",
    "SPLITS",
    "VIEWS",
    "LoadSummary",
    "ManifestError",
    "Problem",
    "assign_splits",
    "load_tables",
    "prepared_tables",
    "read_table",
    "read_tables",
    "resolve_table_paths",
    "validate",
    "write_tables",
]
