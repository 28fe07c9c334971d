"""The checks only a whole data set allows: labels against the lesion
table, one exam view paired twice, an exam of two patients (``_table_problems``), and the DICOM
identities across pairs and splits (``_identity_problems``)."""

from __future__ import annotations

import pandas as pd

from common.problems import (
    DUPLICATE_IMAGE,
    DUPLICATE_VIEW,
    EXAM_OF_TWO_PATIENTS,
    LABEL_WITHOUT_LESION,
    LESION_WITH_LABEL_0,
    PATIENT_DIFFERS,
    PATIENT_IN_TWO_SPLITS,
    STUDY_DIFFERS,
    Problem,
)
from datamodules.manifest import ROW_COLUMN
from datamodules.preflight.pair_checks import _PairOutcome

# A DICOM PatientID shared by more manifest patients than this is a placeholder of an
# anonymisation ("ANONYMOUS"), not a patient: it is not used to find patients in two splits.
PLACEHOLDER_PATIENTS = 5


# -- table checks -----------------------------------------------------------------------------
def _table_problems(
    manifest: pd.DataFrame,
    lesions: pd.DataFrame,
    manifest_file: str,
    lesions_file: str | None,
    skip_label_rows: set[int],
) -> list[Problem]:
    """Labels against the lesion table, one exam view paired twice, an exam of two patients
    (annotated pairs only)."""
    problems = []
    malignant = lesions[lesions["pathology"] == "malignant"]
    first_malignant = dict(zip(malignant["pair_id"][::-1], malignant[ROW_COLUMN][::-1]))
    lesion_name = lesions_file or "the lesion table"
    seen_view: dict[tuple[str, str, str], int] = {}
    exam_patient: dict[str, tuple[str, int]] = {}
    for pair_id, row, label, exam, patient, laterality, view in zip(
        manifest["pair_id"],
        manifest[ROW_COLUMN],
        manifest["label"],
        manifest["exam_id"],
        manifest["patient_id"],
        manifest["laterality"],
        manifest["view"],
    ):
        row = int(row)
        if row not in skip_label_rows:
            if label == 1 and pair_id not in first_malignant:
                problems.append(
                    Problem(
                        manifest_file,
                        row,
                        "label",
                        "label 1 (malignant), but the lesion table has "
                        "no malignant lesion for this pair",
                        LABEL_WITHOUT_LESION,
                        pair_id,
                    )
                )
            elif label == 0 and pair_id in first_malignant:
                problems.append(
                    Problem(
                        manifest_file,
                        row,
                        "label",
                        "label 0, but the lesion table has a malignant "
                        f"lesion for this pair ({lesion_name} row {first_malignant[pair_id]})",
                        LESION_WITH_LABEL_0,
                        pair_id,
                    )
                )
        if exam and laterality and view:
            key = (exam, laterality, view)
            if key in seen_view:
                problems.append(
                    Problem(
                        manifest_file,
                        row,
                        "view",
                        f"the same exam, laterality and view as row "
                        f"{seen_view[key]}: one breast view paired twice",
                        DUPLICATE_VIEW,
                        pair_id,
                    )
                )
            else:
                seen_view[key] = row
        if exam and patient:
            if exam in exam_patient and exam_patient[exam][0] != patient:
                problems.append(
                    Problem(
                        manifest_file,
                        row,
                        "exam_id",
                        f"the same exam_id as row "
                        f"{exam_patient[exam][1]}, whose patient_id differs: an exam belongs "
                        "to one "
                        "patient",
                        EXAM_OF_TWO_PATIENTS,
                        pair_id,
                    )
                )
            exam_patient.setdefault(exam, (patient, row))
    return problems


def _identity_problems(
    outcomes: list[_PairOutcome],
    manifest: pd.DataFrame,
    manifest_file: str,
    paths: dict[tuple[str, str], str],
) -> list[Problem]:
    """SM and FFDM of one pair from different patients or studies; one image in two rows; one
    DICOM patient in two splits. Identifiers are compared by hash and never shown."""
    problems = []
    split_of = dict(zip(manifest["pair_id"], manifest["split"]))
    patient_of = dict(zip(manifest["pair_id"], manifest["patient_id"]))
    seen_image: dict[str, tuple[int | None, str]] = {}
    manifest_patients: dict[str, set[str]] = {}
    for outcome in outcomes:
        for facts in outcome.facts.values():
            if facts.patient:
                manifest_patients.setdefault(facts.patient, set()).add(patient_of[outcome.pair_id])
    patient_split: dict[str, tuple[str, int | None, str]] = {}
    leaked: set[str] = set()
    for outcome in sorted(outcomes, key=lambda o: o.row or 0):
        sm, ffdm = outcome.facts.get("sm"), outcome.facts.get("ffdm")
        both = f"{paths.get((outcome.pair_id, 'sm'))} and {paths.get((outcome.pair_id, 'ffdm'))}"
        if sm and ffdm:
            for attribute, tag, kind in (
                ("patient", "PatientID", PATIENT_DIFFERS),
                ("study", "StudyInstanceUID", STUDY_DIFFERS),
            ):
                first, second = getattr(sm, attribute), getattr(ffdm, attribute)
                if first and second and first != second:
                    problems.append(
                        Problem(
                            manifest_file,
                            outcome.row,
                            None,
                            f"the SM's and the FFDM's DICOM {tag} "
                            "differ (compared by hash; not shown): the two images are not of one "
                            "breast view",
                            kind,
                            outcome.pair_id,
                            both,
                        )
                    )
        for modality, facts in outcome.facts.items():
            column = f"{modality}_path"
            if facts.image:
                if facts.image in seen_image:
                    row, other = seen_image[facts.image]
                    problems.append(
                        Problem(
                            manifest_file,
                            outcome.row,
                            column,
                            "the same DICOM image "
                            f"(SOPInstanceUID, compared by hash) as row {row}, column {other}",
                            DUPLICATE_IMAGE,
                            outcome.pair_id,
                            paths.get((outcome.pair_id, modality)),
                        )
                    )
                else:
                    seen_image[facts.image] = (outcome.row, column)
            patient = facts.patient
            if not patient or len(manifest_patients[patient]) > PLACEHOLDER_PATIENTS:
                continue
            split = split_of[outcome.pair_id]
            first = patient_split.setdefault(patient, (split, outcome.row, outcome.pair_id))
            if (
                first[0] != split
                and patient_of[first[2]] != patient_of[outcome.pair_id]
                and outcome.pair_id not in leaked
            ):
                leaked.add(outcome.pair_id)  # once per pair, not per image
                problems.append(
                    Problem(
                        manifest_file,
                        outcome.row,
                        "patient_id",
                        "this pair's DICOM patient "
                        f"(PatientID, compared by hash) is also that of row {first[1]}, which "
                        "is in "
                        f"split {first[0]!r} while this pair is in {split!r}: one patient in two "
                        "splits under two patient_ids",
                        PATIENT_IN_TWO_SPLITS,
                        outcome.pair_id,
                        paths.get((outcome.pair_id, modality)),
                    )
                )
    return problems
