"""``check-data`` across the tables: boxes, labels, duplicates, patients in two splits."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
from check_data_cases import edit_table, image, only, run
from dicom_factory import rewrite_dicom, write_paired_folder

from data_tools import check
from datamodules import preflight

# the ``data`` folder's pairs, rows and patients: see ``pristine`` in conftest.py


# -- boxes and labels -------------------------------------------------------------------------


def test_box_outside_its_image(data):
    def widen(lesions):
        lesions.loc[0, "x2"] = "200"  # lesion row 2: p0000's malignant SM box, image 96 wide

    edit_table(data, "lesions.csv", widen)
    problem = only(run(data), preflight.BOX_OUTSIDE)
    assert (problem.file, problem.row, problem.column) == (str(data / "lesions.csv"), 2, "x2")
    assert problem.pair_id == "p0000" and problem.path == str(image(data, "p0000", "sm"))
    assert problem.reason.endswith("is not inside its sm image (width 96, height 120 pixels)")


def test_box_of_zero_size(data):
    def flatten(lesions):
        lesions.loc[1, "y2"] = lesions.loc[1, "y1"]

    edit_table(data, "lesions.csv", flatten)
    problem = only(run(data), "y2 <= y1")
    assert (problem.file, problem.row, problem.column) == (str(data / "lesions.csv"), 3, "y2")
    assert problem.pair_id == "p0000" and "is not greater than y1=" in problem.reason


def test_label_1_without_a_malignant_lesion(data):
    def positive(manifest):
        manifest.loc[1, "label"] = "1"  # p0001 has no lesion at all

    edit_table(data, "manifest.csv", positive)
    problem = only(run(data), check.LABEL_WITHOUT_LESION)
    assert (problem.row, problem.column, problem.pair_id) == (3, "label", "p0001")
    assert problem.reason == (
        "label 1 (malignant), but the lesion table has no malignant lesion for this pair"
    )


def test_label_1_with_benign_lesions_only(data):
    edit_table(data, "lesions.csv", lambda table: table.__setitem__("pathology", "benign"))
    problems = run(data)
    assert [(p.kind, p.row, p.pair_id) for p in problems] == [
        (check.LABEL_WITHOUT_LESION, 2, "p0000"),
        (check.LABEL_WITHOUT_LESION, 5, "p0003"),
    ]


def test_malignant_lesion_with_label_0(data):
    def negative(manifest):
        manifest.loc[3, "label"] = "0"  # p0003 (row 5) has a malignant lesion

    edit_table(data, "manifest.csv", negative)
    problem = only(run(data), check.LESION_WITH_LABEL_0)
    assert (problem.row, problem.column, problem.pair_id) == (5, "label", "p0003")
    lesions = pd.read_csv(data / "lesions.csv")
    first = int(np.flatnonzero(lesions["pair_id"] == "p0003")[0]) + 2
    assert problem.reason == (
        "label 0, but the lesion table has a malignant lesion for this "
        f"pair ({data / 'lesions.csv'} row {first})"
    )


# -- duplicates and splits --------------------------------------------------------------------


def test_duplicate_pair_id(data):
    def duplicate(manifest):
        manifest.loc[2, "pair_id"] = "p0001"

    edit_table(data, "manifest.csv", duplicate)
    problems = [p for p in run(data) if p.kind == "duplicate pair_id"]
    assert [(p.row, p.column, p.pair_id, p.reason) for p in problems] == [
        (4, "pair_id", "p0001", "same pair_id as row 3")
    ]


def test_duplicate_image(data):
    # the FFDM of p0005 replaced by a copy of p0004's (same SOPInstanceUID)
    shutil.copy(image(data, "p0004", "ffdm"), image(data, "p0005", "ffdm"))
    problems = [p for p in run(data) if p.kind == check.DUPLICATE_IMAGE]
    assert [(p.row, p.column, p.pair_id) for p in problems] == [(7, "ffdm_path", "p0005")]
    assert problems[0].reason == (
        "the same DICOM image (SOPInstanceUID, compared by hash) as row 6, column ffdm_path"
    )


def test_one_exam_view_paired_twice_and_an_exam_of_two_patients(data):
    def same_exam(manifest):
        manifest.loc[4, "exam_id"] = "exam0000"  # p0004 is L CC, as p0000 of exam0000

    edit_table(data, "manifest.csv", same_exam)
    problems = run(data)
    assert sorted((p.kind, p.row, p.column, p.pair_id) for p in problems) == [
        (check.DUPLICATE_VIEW, 6, "view", "p0004"),
        (check.EXAM_OF_TWO_PATIENTS, 6, "exam_id", "p0004"),
    ]
    view = next(p for p in problems if p.kind == check.DUPLICATE_VIEW)
    assert view.reason == (
        "the same exam, laterality and view as row 2: one breast view paired twice"
    )


def test_patient_in_two_given_splits(data):
    def split(manifest):
        manifest["split"] = ["train", "test", "train", "train", "test", "test"]

    edit_table(data, "manifest.csv", split)
    problem = only(run(data), "patient in two splits")
    assert (problem.row, problem.column, problem.pair_id) == (3, "split", "p0001")
    assert "in split 'test' here and in 'train' at row 2" in problem.reason


def test_one_dicom_patient_in_two_splits_under_two_patient_ids(data):
    def split(manifest):
        manifest["split"] = ["train", "train", "train", "train", "test", "test"]

    edit_table(data, "manifest.csv", split)
    for modality in ("sm", "ffdm"):  # p0004's images are of patient0000 after all
        rewrite_dicom(image(data, "p0004", modality), PatientID="patient0000")
    problem = only(run(data), check.PATIENT_IN_TWO_SPLITS)
    assert (problem.row, problem.column, problem.pair_id) == (6, "patient_id", "p0004")
    assert problem.reason == (
        "this pair's DICOM patient (PatientID, compared by hash) is also that of row 2, which "
        "is in split 'train' while this pair is in 'test': one patient in two splits under two "
        "patient_ids"
    )


def test_an_anonymised_placeholder_patient_id_is_not_a_patient(tmp_path):
    write_paired_folder(tmp_path, pairs=14, pairs_per_patient=2)
    for path in (tmp_path / "images").glob("*.dcm"):
        rewrite_dicom(path, PatientID="ANONYMOUS")
    assert run(tmp_path) == []


def test_header_only_manifest(data):
    (data / "manifest.csv").write_text((data / "manifest.csv").read_text().splitlines()[0])
    problems = run(data)
    assert [(p.kind, p.row) for p in problems if p.kind == check.NO_ROWS] == [(check.NO_ROWS, None)]
    assert any(p.kind == "lesion of unknown pair" for p in problems)
