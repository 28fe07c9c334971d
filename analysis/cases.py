"""Per-case comparisons of detectors at their operating points: the paper's Section 3 buckets
(Figure 2) and Section 6 questions.

Each model gets its own threshold, the score giving 1 false positive per image on validation;
at that threshold, on test, a lesion is *found* when a detection above it hits it, and an
image *misses lesions* when one of its lesions is not found. Images are pairs (the same
``image_id`` for every model), so models on the SM and on the FFDM compare image by image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from metrics.froc import MatchedDetections, image_outcomes, lesions_found, threshold_at_fp


@dataclass(frozen=True)
class Outcomes:
    """One model at its validation threshold, on test."""

    threshold: float
    lesions: pd.DataFrame  # one row per test lesion: image_id, found, and its attributes
    false_positives: pd.Series  # per image id: false positives above the threshold
    missed: pd.Series  # per image id: lesions missed

    @property
    def missing_images(self) -> set[str]:
        return set(self.missed.index[self.missed > 0])

    @property
    def false_images(self) -> set[str]:
        return set(self.false_positives.index[self.false_positives > 0])


def outcomes(
    val: MatchedDetections,
    test: MatchedDetections,
    test_lesions: pd.DataFrame,
    target_fp: float = 1.0,
) -> Outcomes:
    """The model's outcomes on test at its ``target_fp`` validation threshold."""
    threshold = threshold_at_fp(val, target_fp)
    false_positives, missed = image_outcomes(test, threshold)
    ids = test.image_ids if test.image_ids is not None else np.arange(test.n_images).astype(str)
    lesions = test_lesions.assign(found=lesions_found(test, threshold))
    return Outcomes(
        threshold, lesions, pd.Series(false_positives, index=ids), pd.Series(missed, index=ids)
    )


def section6_counts(sm: Outcomes, ffdm: Outcomes, fused: Outcomes) -> dict[str, int]:
    """Section 6's per-image counts, on test images with lesions."""
    miss_sm, miss_ffdm, miss_fused = sm.missing_images, ffdm.missing_images, fused.missing_images
    both = miss_sm & miss_ffdm
    fused_misses_not_all = miss_fused - both
    return {
        "missed by Model_SM": len(miss_sm),
        "missed by Model_FFDM": len(miss_ffdm),
        "missed by both": len(both),
        "missed by the fused model": len(miss_fused),
        "recovered by the fused model from Model_SM's misses": len(miss_sm - miss_fused),
        "of which found by Model_FFDM": len((miss_sm - miss_ffdm) - miss_fused),
        "recovered by the fused model from both's misses": len(both - miss_fused),
        "missed by all three": len(miss_fused & both),
        "newly missed by the fused model (Model_SM found them)": len(miss_fused - miss_sm),
        "fused misses found by Model_SM only": len(fused_misses_not_all & miss_ffdm),
        "fused misses found by Model_FFDM only": len(fused_misses_not_all & miss_sm),
        "fused misses found by both": len(fused_misses_not_all - miss_sm - miss_ffdm),
    }


BUCKETS = ("missed in FFDM", "missed in SM", "false detections in FFDM", "false detections in SM")


def section3_buckets(sm: Outcomes, ffdm: Outcomes) -> dict[str, list[str]]:
    """Figure 2's buckets of test images, Model_SM against Model_FFDM:

    * missed in FFDM: a lesion Model_SM finds and Model_FFDM misses (by ``lesion_id`` where
      the lesion table links a lesion's SM and FFDM rows, else: the image's lesions are all
      found by one model and not by the other);
    * missed in SM: the other way round;
    * false detections in FFDM (SM): false positives above threshold from Model_FFDM
      (Model_SM) on an image where the other model has none.
    """
    buckets = {}
    for name, loser, winner in (("missed in FFDM", ffdm, sm), ("missed in SM", sm, ffdm)):
        buckets[name] = sorted(_missed_by_only(loser, winner))
    buckets["false detections in FFDM"] = sorted(ffdm.false_images - sm.false_images)
    buckets["false detections in SM"] = sorted(sm.false_images - ffdm.false_images)
    return buckets


def _missed_by_only(loser: Outcomes, winner: Outcomes) -> set[str]:
    key = "lesion_id" if {"lesion_id"} <= set(loser.lesions) & set(winner.lesions) else None
    if key is None:
        return loser.missing_images - winner.missing_images
    missed = loser.lesions.loc[~loser.lesions["found"], ["image_id", key]]
    found = set(winner.lesions.loc[winner.lesions["found"], key])
    return set(missed.loc[missed[key].isin(found), "image_id"])


def bucket_breakdown(
    bucket: str, images: list[str], sm: Outcomes, ffdm: Outcomes, manifest: pd.DataFrame
) -> dict[str, dict[str, int]]:
    """Counts in one bucket by lesion kind (missed buckets: the lesions missed) and by breast
    density (the images), where the tables have those columns."""
    breakdown: dict[str, dict[str, int]] = {}
    if bucket.startswith("missed"):
        loser, winner = (ffdm, sm) if bucket.endswith("FFDM") else (sm, ffdm)
        lesions = loser.lesions[loser.lesions["image_id"].isin(images) & ~loser.lesions["found"]]
        if "lesion_id" in lesions.columns and "lesion_id" in winner.lesions.columns:
            found = set(winner.lesions.loc[winner.lesions["found"], "lesion_id"])
            lesions = lesions[lesions["lesion_id"].isin(found)]
        if "lesion_type" in lesions.columns:
            counts = lesions["lesion_type"].fillna("unknown").astype(str).value_counts()
            breakdown["lesion kind"] = {str(k): int(v) for k, v in sorted(counts.items())}
    if "density" in manifest.columns:
        densities = manifest.set_index("pair_id")["density"].reindex(images)
        counts = densities.fillna("unknown").astype(str).value_counts()
        breakdown["density"] = {str(k): int(v) for k, v in sorted(counts.items())}
    return breakdown


def section6_cases(sm: Outcomes, ffdm: Outcomes, fused: Outcomes) -> dict[str, list[str]]:
    """The images behind Figure S4's three panels."""
    miss_sm, miss_ffdm, miss_fused = sm.missing_images, ffdm.missing_images, fused.missing_images
    return {
        "fused finds what Model_SM misses and Model_FFDM finds (S4 A)": sorted(
            (miss_sm - miss_ffdm) - miss_fused
        ),
        "fused finds what both baselines miss (S4 B)": sorted((miss_sm & miss_ffdm) - miss_fused),
        "fused misses what both baselines find (S4 C)": sorted(miss_fused - miss_sm - miss_ffdm),
    }
