"""Field parsing of the manifest and lesion table: booleans, labels and numbers with the cells
that fail, and text stripped with categories in their canonical case."""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.tables import boolean_masks, cell_text


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
