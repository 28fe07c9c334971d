"""Validation of the manifest and lesion table: every problem of both at once, raised as one
`ManifestError`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.defaults import MODALITIES
from common.problems import (
    ANNOTATED_NOT_BOOLEAN,
    COORDINATE_NOT_A_NUMBER,
    DUPLICATE_FFDM_PATH,
    DUPLICATE_PAIR_ID,
    DUPLICATE_SM_PATH,
    EMPTY_VALUE,
    LABEL_NOT_0_OR_1,
    LESION_OF_UNKNOWN_PAIR,
    MISSING_COLUMN,
    PATIENT_IN_TWO_SPLITS,
    SAME_SM_AND_FFDM_PATH,
    UNKNOWN_LATERALITY,
    UNKNOWN_MODALITY,
    UNKNOWN_PATHOLOGY,
    UNKNOWN_SPLIT,
    UNKNOWN_VIEW,
    Problem,
    ProblemsError,
)
from common.tables import (
    BOX_AXES,
    BOX_COLUMNS,
    cell_text,
    file_row,
    inverted,
    inverted_kind,
    inverted_reason,
)
from datamodules.manifest.parsing import (
    _normalised,
    _parse_booleans,
    _parse_labels,
    _parse_numbers,
)
from datamodules.manifest.schema import (
    LATERALITIES,
    LESION_COLUMNS,
    MANIFEST_COLUMNS,
    PATHOLOGIES,
    SPLITS,
    VIEWS,
)


class ManifestError(ProblemsError):
    """A manifest or lesion table breaks the schema. ``problems`` lists every problem found."""

    subject = "the manifest/lesion tables"
    more = "all in ManifestError.problems"


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
            problems.add_table(column, "missing required column", MISSING_COLUMN)
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
        problems.add(empty, column, "empty value", EMPTY_VALUE)
    if "laterality" in present:
        _check_choice(manifest, "laterality", LATERALITIES, problems, UNKNOWN_LATERALITY)
    if "view" in present:
        _check_choice(manifest, "view", VIEWS, problems, UNKNOWN_VIEW)
    if "label" in present:
        _, bad = _parse_labels(manifest["label"])
        bad &= (cell_text(manifest["label"]) != "").to_numpy()
        problems.add(
            bad,
            "label",
            [f"{v!r} is not 0 or 1" for v in manifest["label"][bad]],
            LABEL_NOT_0_OR_1,
        )
    if "annotated" in present:
        _, bad = _parse_booleans(manifest["annotated"])
        bad &= (cell_text(manifest["annotated"]) != "").to_numpy()
        problems.add(
            bad,
            "annotated",
            [f"{v!r} is not a boolean (true/false/1/0)" for v in manifest["annotated"][bad]],
            ANNOTATED_NOT_BOOLEAN,
        )
    if "pair_id" in present:
        _check_duplicates(manifest["pair_id"], "pair_id", problems, DUPLICATE_PAIR_ID)
    for column, kind in (("sm_path", DUPLICATE_SM_PATH), ("ffdm_path", DUPLICATE_FFDM_PATH)):
        if column in present:
            _check_duplicates(manifest[column], column, problems, kind)
    if "sm_path" in present and "ffdm_path" in present:
        same = (manifest["sm_path"] == manifest["ffdm_path"]) & (manifest["sm_path"] != "")
        problems.add(same.to_numpy(), "ffdm_path", "same file as sm_path", SAME_SM_AND_FFDM_PATH)
    if "split" in manifest.columns:
        _check_choice(manifest, "split", SPLITS, problems, UNKNOWN_SPLIT)
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
    problems.add(positions, "split", messages, PATIENT_IN_TWO_SPLITS)


def _lesion_problems(lesions: pd.DataFrame, name: str, pair_ids: pd.Series | None) -> list[Problem]:
    problems = _Problems(name, lesions.get("pair_id"))
    present = _check_required(lesions, LESION_COLUMNS, problems)
    for column in present:
        if column in ("pair_id", "modality", "pathology"):
            problems.add((lesions[column] == "").to_numpy(), column, "empty value", EMPTY_VALUE)
    if "pair_id" in present and pair_ids is not None:
        known = set(pair_ids)  # (arrow-backed isin converts its argument element by element)
        unknown = (lesions["pair_id"] != "") & ~np.array(
            [pair_id in known for pair_id in lesions["pair_id"]], dtype=bool
        )
        problems.add(
            unknown.to_numpy(),
            "pair_id",
            [f"pair {v!r} is not in the manifest" for v in lesions["pair_id"][unknown]],
            LESION_OF_UNKNOWN_PAIR,
        )
    if "modality" in present:
        _check_choice(lesions, "modality", MODALITIES, problems, UNKNOWN_MODALITY)
    if "pathology" in present:
        _check_choice(lesions, "pathology", PATHOLOGIES, problems, UNKNOWN_PATHOLOGY)
    numbers = {}
    for column in BOX_COLUMNS:
        if column in present:
            values, bad = _parse_numbers(lesions[column])
            numbers[column] = values
            problems.add(
                bad,
                column,
                [f"{v!r} is not a finite number" for v in lesions[column][bad]],
                COORDINATE_NOT_A_NUMBER,
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
