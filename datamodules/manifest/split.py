"""The patient-level split: every row's split, a given one kept and the other patients cut at
the split fractions in an order fixed by the seed."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from common.defaults import SPLIT_FRACTIONS
from datamodules.manifest.schema import SPLITS


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
