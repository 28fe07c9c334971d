"""Loading the tables for training: read, validate, exclude the pairs not annotated and split,
with a `LoadSummary` of what was kept."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from common.defaults import SPLIT_FRACTIONS
from common.tables import BOX_COLUMNS, file_rows
from datamodules.manifest.files import read_tables
from datamodules.manifest.parsing import _normalised, _parse_booleans, _parse_labels, _parse_numbers
from datamodules.manifest.schema import LESION_COLUMNS, SPLITS
from datamodules.manifest.split import assign_splits
from datamodules.manifest.validation import validate

logger = logging.getLogger(__name__)


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


ROW_COLUMN = "source_row"


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
