"""Pairing each FFDM with the C-view of the same (patient, exam, laterality, view): the images
that cannot be paired, and the combination kept where a key has several candidates."""

from __future__ import annotations

import numpy as np
import pandas as pd

from datamodules.manifest import VIEWS


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
