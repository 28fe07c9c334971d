"""Manifest and lesion tables: reading, validation of every problem at once, exclusions and the
patient-level split."""

from __future__ import annotations

import pandas as pd
import pytest

from datamodules.manifest import (
    LESION_COLUMNS,
    MANIFEST_COLUMNS,
    ManifestError,
    assign_splits,
    load_tables,
    read_table,
    validate,
    write_tables,
)


def make_tables(
    patients: int = 20, pairs_per_patient: int = 4
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, lesions = [], []
    for patient in range(patients):
        for pair in range(pairs_per_patient):
            pair_id = f"{patient:03d}-{pair}"
            positive = pair == 0 and patient % 2 == 0
            rows.append(
                {
                    "pair_id": pair_id,
                    "patient_id": f"{patient:03d}",
                    "exam_id": f"e{patient:03d}",
                    "laterality": "LR"[pair % 2],
                    "view": ("CC", "MLO")[pair // 2 % 2],
                    "sm_path": f"images/{pair_id}-sm.dcm",
                    "ffdm_path": f"images/{pair_id}-ffdm.dcm",
                    "label": int(positive),
                    "annotated": True,
                    "density": "ABCD"[patient % 4],
                }
            )
            if positive:
                for modality in ("sm", "ffdm"):
                    lesions.append(
                        {
                            "pair_id": pair_id,
                            "modality": modality,
                            "x1": 10.0,
                            "y1": 20.0,
                            "x2": 30.5,
                            "y2": 40.0,
                            "pathology": "malignant",
                            "lesion_type": "mass",
                        }
                    )
    return pd.DataFrame(rows), pd.DataFrame(lesions)


def test_broken_manifest_reports_every_problem_with_rows_in_one_error(tmp_path):
    manifest, lesions = make_tables(patients=4, pairs_per_patient=3)
    manifest, lesions = manifest.astype(object), lesions.astype(object)
    manifest = manifest.drop(columns=["exam_id"])  # missing column
    manifest.loc[0, "laterality"] = "X"  # row 2 (header is row 1)
    manifest.loc[1, "pair_id"] = manifest.loc[0, "pair_id"]  # row 3: duplicate of row 2
    manifest.loc[2, "label"] = 3  # row 4
    manifest.loc[3, "view"] = "SIDEWAYS"  # row 5
    manifest.loc[4, "annotated"] = "maybe"  # row 6
    manifest.loc[5, "patient_id"] = ""  # row 7
    manifest["split"] = ""
    manifest.loc[6, "split"] = "train"  # rows 8 and 9: one patient in two splits
    manifest.loc[7, "split"] = "test"
    manifest.loc[8, "split"] = "holdout"  # row 10
    lesions = pd.concat([lesions, lesions.iloc[:1]], ignore_index=True)
    lesions.loc[0, "x2"] = 5.0  # lesion row 2: x2 <= x1
    lesions.loc[1, "pair_id"] = "nobody"  # lesion row 3: unknown pair
    lesions.loc[2, "modality"] = "mri"  # lesion row 4
    lesions.loc[3, "y1"] = "abc"  # lesion row 5

    write_tables(tmp_path, manifest, lesions)
    with pytest.raises(ManifestError) as caught:
        load_tables(tmp_path / "manifest.csv")
    message = str(caught.value)
    expected = [
        "manifest.csv column exam_id: missing required column",
        "manifest.csv row 2, column laterality: 'X' is not one of L, R",
        "manifest.csv row 3, column pair_id: same pair_id as row 2",
        "manifest.csv row 4, column label: 3 is not 0 or 1",
        "manifest.csv row 5, column view: 'SIDEWAYS' is not one of",
        "manifest.csv row 6, column annotated: 'maybe' is not a boolean",
        "manifest.csv row 7, column patient_id: empty value",
        "manifest.csv row 9, column split: this row's patient is in split 'test' here and in "
        "'train' at row 8",
        "manifest.csv row 10, column split: 'holdout' is not one of train, val, test",
        "lesions.csv row 2, column x2: x2=5 is not greater than x1=10",
        "lesions.csv row 3, column pair_id: pair 'nobody' is not in the manifest",
        "lesions.csv row 4, column modality: 'mri' is not one of sm, ffdm",
        "lesions.csv row 5, column y1: 'abc' is not a finite number",
        "header as row 1",
    ]
    for line in expected:
        assert line in message, f"{line!r} not in:\n{message}"
    kinds = {problem.kind for problem in caught.value.problems}
    assert len(kinds) >= 6
    assert len(caught.value.problems) == 13


def test_a_valid_table_passes_and_case_and_spaces_are_forgiven():
    manifest, lesions = make_tables()
    validate(manifest, lesions)
    manifest.loc[0, "laterality"] = " l "
    manifest.loc[1, "view"] = "mlo"
    lesions.loc[0, "pathology"] = "Malignant"
    validate(manifest, lesions)


def test_read_table_keeps_ids_as_text_from_csv_and_parquet(tmp_path):
    manifest, lesions = make_tables(patients=2)
    manifest["patient_id"] = ["007", "007", "007", "007", "NA", "NA", "NA", "NA"]
    csv_path, _ = write_tables(tmp_path, manifest, lesions)
    parquet_path = tmp_path / "manifest.parquet"
    manifest.assign(label=manifest["label"].astype("int64")).to_parquet(parquet_path)
    for path in (csv_path, parquet_path):
        table = read_table(path)
        assert list(table["patient_id"].unique()) == ["007", "NA"]
        assert list(table["pair_id"][:2]) == ["000-0", "000-1"]
        assert "density" in table.columns
    with pytest.raises(ValueError, match="unknown table format"):
        read_table(tmp_path / "x.json") if (tmp_path / "x.json").write_text("{}") else None


def test_load_tables_resolves_paths_excludes_unannotated_and_counts(tmp_path):
    manifest, lesions = make_tables(patients=10)
    manifest.loc[manifest["pair_id"] == "000-0", "annotated"] = False  # positive, 2 lesions
    manifest.loc[manifest["pair_id"] == "001-1", "annotated"] = False
    write_tables(tmp_path / "data", manifest, lesions)

    table, lesion_table, summary = load_tables(tmp_path / "data")  # a folder stands for its files
    assert summary.pairs_read == 40 and summary.pairs_kept == 38
    assert summary.excluded == {"not annotated": 2}
    assert summary.lesions_excluded == {"pair not annotated": 2}
    assert len(lesion_table) == summary.lesions_kept == len(lesions) - 2
    assert "000-0" not in set(table["pair_id"])
    assert table.loc[0, "sm_path"] == str(tmp_path / "data" / "images" / "000-1-sm.dcm")
    assert table["label"].dtype == "int64" and table["annotated"].dtype == bool
    assert {"density"} <= set(table.columns) and {"lesion_type"} <= set(lesion_table.columns)
    assert set(MANIFEST_COLUMNS) <= set(table.columns)
    assert set(LESION_COLUMNS) <= set(lesion_table.columns)
    assert set(table["split"]) <= {"train", "val", "test"}


def test_patient_level_split_is_exact_deterministic_and_never_splits_a_patient(tmp_path):
    manifest, lesions = make_tables(patients=200, pairs_per_patient=3)
    path, _ = write_tables(tmp_path, manifest, lesions)
    first = load_tables(path, seed=0)[0]
    again = load_tables(path, seed=0)[0]
    other = load_tables(path, seed=1)[0]
    assert first["split"].tolist() == again["split"].tolist()
    assert first["split"].tolist() != other["split"].tolist()
    patients = first.groupby("patient_id")["split"].nunique()
    assert (patients == 1).all()
    per_split = first.groupby("split")["patient_id"].nunique().to_dict()
    assert per_split == {"train": 120, "val": 20, "test": 60}
    # the row order does not matter
    shuffled = assign_splits(first.sample(frac=1, random_state=3).drop(columns="split"), seed=0)
    assert shuffled.sort_index().tolist() == first["split"].tolist()


def test_a_given_split_wins_and_fills_the_empty_rows_of_its_patient(tmp_path):
    manifest, lesions = make_tables(patients=50, pairs_per_patient=2)
    manifest["split"] = ""
    manifest.loc[manifest["patient_id"] == "000", "split"] = ["test", ""]
    manifest.loc[manifest["patient_id"] == "001", "split"] = ["val", "val"]
    path, _ = write_tables(tmp_path, manifest, lesions)
    table, _, summary = load_tables(path, fractions=(1.0, 0.0, 0.0))
    split_of = table.groupby("patient_id")["split"].first()
    assert split_of["000"] == "test" and split_of["001"] == "val"
    assert (table.loc[table["patient_id"] == "000", "split"] == "test").all()
    assert set(split_of.drop(["000", "001"])) == {"train"}
    assert summary.pairs_with_given_split == 3


def test_bad_fractions_are_refused():
    manifest, _ = make_tables(patients=2)
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(manifest, fractions=(0.5, 0.1, 0.1))
