"""The whole `adapt embed` run: the tables and summary it writes, and the `adapt` command."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dicom_factory import breast_image, write_mammogram
from embed_copies import (
    E1,
    E2,
    E3,
    FFDM_SIZE,
    NAS2,
    P1,
    P2,
    P3,
    SM_SIZE,
    boxes_of,
    mirror,
    run_adapter,
)

import cli
from data_tools.embed import main as adapt_main
from datamodules.manifest import LESION_COLUMNS, MANIFEST_COLUMNS, load_tables, read_table, validate


def test_pairs_labels_and_boxes_in_stored_pixels(embed_copy, tmp_path, capsys):
    metadata, clinical = embed_copy
    out = tmp_path / "out"
    assert run_adapter(metadata, clinical, out) == 0
    printed = capsys.readouterr().out
    manifest = read_table(out / "manifest.csv")
    lesions = read_table(out / "lesions.csv")
    validate(manifest, lesions, "manifest.csv", "lesions.csv")  # D1's validator, for real
    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert list(lesions.columns[: len(LESION_COLUMNS)]) == list(LESION_COLUMNS)

    rows = manifest.set_index("pair_id")
    ids = [f"{E1}_L_CC", f"{E1}_R_CC", f"{E1}_R_MLO"]
    ids += [f"{E2}_L_CC", f"{E2}_R_CC", f"{E3}_L_CC"]
    assert list(manifest["pair_id"]) == ids
    assert rows["label"].tolist() == [0, 1, 1, 0, 1, 0]
    assert rows["annotated"].tolist() == [True, True, False, True, True, False]
    assert rows["annotated_basis"].tolist() == [
        "no_malignant_finding",
        "malignant_with_roi",
        "malignant_without_roi",
        "no_malignant_finding",
        "malignant_with_roi",
        "exam_not_in_clinical",
    ]
    assert rows["pathology"].tolist() == [
        "unknown", "malignant", "malignant", "benign", "malignant", "unknown"
    ]  # fmt: skip
    assert rows["asses"].fillna("").tolist() == ["B", "S", "S", "B", "M", ""]
    assert rows["n_findings"].tolist() == [1, 1, 1, 2, 3, 0]
    assert rows["density"].tolist()[:5] == [3, 3, 3, 2, 2]
    assert np.isnan(rows["density"].iloc[5])
    assert (rows["patient_id"] + rows["exam_id"]).tolist()[3] == P2 + E2
    # the ambiguous key keeps the 2D image with ROIs, not the first by path
    assert rows.loc[f"{E2}_R_CC", "ffdm_path"].endswith("/b_ffdm_rcc.dcm")
    images = (metadata.parent / "images").resolve()
    assert rows.loc[f"{E1}_R_CC", "sm_path"] == str(images / "cohort_1" / P1 / E1 / "sm_rcc.dcm")
    assert rows["ffdm_rois"].tolist() == [2, 1, 0, 0, 1, 0]
    assert rows["sm_rois"].tolist() == [1, 1, 0, 0, 1, 0]
    assert rows["ffdm_metadata_row"].tolist() == [4, 2, 6, 10, 12, 15]

    # (ymin, xmin, ymax, xmax) -> xyxy; R images (chest wall right) mirrored: x' = Columns - x
    ffdm_w, sm_w = FFDM_SIZE[1], SM_SIZE[1]
    assert boxes_of(lesions, f"{E1}_L_CC", "ffdm") == [[2, 9, 6, 12], [3, 20, 10, 26]]
    assert boxes_of(lesions, f"{E1}_L_CC", "sm") == [[1, 7, 4, 9]]
    assert boxes_of(lesions, f"{E1}_R_CC", "ffdm") == [mirror([3, 19, 6, 22], ffdm_w)]
    assert boxes_of(lesions, f"{E1}_R_CC", "ffdm") == [[42, 19, 45, 22]]
    assert boxes_of(lesions, f"{E1}_R_CC", "sm") == [[31, 12, 34, 15]]
    assert boxes_of(lesions, f"{E2}_R_CC", "ffdm") == [[28, 30, 38, 40]]
    assert boxes_of(lesions, f"{E2}_R_CC", "sm") == [mirror([8, 20, 15, 28], sm_w)]
    assert len(lesions) == 7
    by_pair = lesions.groupby("pair_id")["pathology"].agg(set).to_dict()
    assert by_pair == {
        f"{E1}_L_CC": {"unknown"},
        f"{E1}_R_CC": {"malignant"},
        f"{E2}_R_CC": {"malignant"},
    }
    assert lesions["match_level"].tolist() == [1, 1, 2, 1, 2, 1, 1]
    assert lesions["mirrored"].tolist() == [False, False, False, True, True, True, True]
    assert lesions["birads"].tolist() == [2, 2, 2, 4, 4, 5, 5]

    summary = json.loads((out / "adapter_summary.json").read_text())
    assert summary["images"] == {"2d": 10, "cview": 7, "other_type": 1}
    assert summary["excluded_images"] == {
        "image_type_not_2d_or_cview": 1,
        "spot_or_magnification_view": 1,
        "laterality_not_L_or_R": 1,
    }
    # no SeriesNumber/SeriesTime columns here: the ROIs decide (test_embed_pairing.py)
    assert summary["several_candidates"] == {
        "keys_with_several_2d": 1,
        "keys_with_several_cview": 0,
        "images_not_chosen": 1,
        "chosen_by": {"with_rois": 1},
    }
    assert summary["pair_series"] == {"same_series": 0, "other_series": 0, "series_unknown": 6}
    assert rows["pairing_basis"].tolist()[4] == "with_rois"
    assert summary["unpaired_images"] == {"2d_without_cview": 1, "cview_without_2d": 1}
    assert summary["excluded_pairs"] == {
        "path_severity_6": 0,
        "follow_up_path_severity_6": 0,
        "dicom_file_not_found": 0,
        "dicom_unreadable": 0,
    }
    assert summary["paths"] == {
        "prefix_removed": {"/mnt/NAS*/mammo/anon_dicom/": 15},
        "files_found": 15,
        "files_not_found": 0,
    }
    assert (summary["pairs"], summary["positives"], summary["patients"]) == (6, 3, 3)
    assert summary["annotated"]["true"] == 4 and summary["annotated"]["false"] == 2
    assert summary["lesions"] == {"sm": 3, "ffdm": 4}
    assert summary["rois"]["mirrored_images"] == 4
    assert summary["rois"]["unmirrored_images"] == 2
    assert summary["rois"]["outside_image_kept"] == 0
    # these DICOMs carry no PatientOrientation: EMBED's fallback mirrors R CC/MLO/ML views
    assert summary["rois"]["frame_rule"] == {"laterality_no_patient_orientation": 6}
    assert summary["image_size_from"] == {"dicom_header": 6}
    assert summary["roi_table"]["images_by_column"] == {"ROI_coords": 7}
    assert summary["roi_table"]["num_roi_differs"] == 0
    assert summary["roi_table"]["match_level_count_differs"] == 0
    assert summary["columns_read"]["num_roi"] == "num_roi"
    assert summary["columns_read"]["match_level"] == "match_level"
    assert summary["labels"]["positives_by_source"] == {
        "own_exam": 3,
        "follow_up_diagnostic": 0,
        "follow_up_ultrasound": 0,
    }
    # E2 R CC (asses M) has its pathology; no pair is BI-RADS 5/6 without one
    assert summary["labels"]["birads_5_or_6_without_pathology"] == {"pairs": 0, "exams": 0}
    assert set(lesions["frame_rule"]) == {"laterality_no_patient_orientation"}
    assert set(lesions["roi_column"]) == {"ROI_coords"}
    assert summary["conventions"]["roi_frame"] == "chest-wall-left"
    assert summary["conventions"]["stored_orientation_from"] == "embed"
    assert json.loads(printed[: printed.rindex("}") + 1]) == summary
    # anonymised patient ids stay in the tables, out of the summary and the log
    text = printed + (out / "adapter_summary.json").read_text()
    assert not any(patient in text for patient in (P1, P2, P3))

    # D1's loader takes the adapter's output as it is: the two unannotated pairs drop out
    kept, kept_lesions, load_summary = load_tables(out)
    assert len(kept) == 4 and load_summary.excluded == {"not annotated": 2}
    assert len(kept_lesions) == 7


def test_adapt_dispatch():
    assert adapt_main(["--help"]) == 0
    assert adapt_main([]) == 2
    assert adapt_main(["no-such-data-set"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["adapt", "embed", "--help"])


# A table of any size ------------------------------------------------------------------------


def write_synthetic_embed(root: Path, rows: int = 2000, size=(32, 24)) -> dict:
    """An EMBED-format copy of ``rows`` metadata rows (newer release columns: DCM_/PNG_
    ROI_coords, ROI_match_level, PNG_flipped, num_ROI, SeriesNumber/SeriesTime; the three
    path forms), its clinical table (screening exams; every fourth recalled on the R, with a
    diagnostic follow-up 20 days later, malignant every other time) and small DICOM files.
    Every fifth exam has a second 2D image of each CC view, of another series. Returns the
    counts the adapter must report."""
    root = Path(root)
    forms = (NAS2, "./images/", "images/")
    metadata, clinical = [], []
    height, width = size
    image = breast_image(height, width, "R")
    exam = 0
    while len(metadata) < rows:
        patient, accession = f"9{exam:07d}", f"5{exam:09d}"
        recalled = exam % 4 == 0
        date = pd.Timestamp("2015-01-01") + pd.Timedelta(days=exam % 900)
        for laterality in ("L", "R"):
            for view in ("CC", "MLO"):
                with_roi = recalled and laterality == "R" and view == "CC"
                roi = "[[[4, 2, 10, 8]]]" if with_roi else "[]"
                kinds = ["2D", "cview"] + (["2D"] if exam % 5 == 0 and view == "CC" else [])
                for index, kind in enumerate(kinds[: rows - len(metadata)]):
                    relative = f"cohort_1/{patient}/{accession}/{laterality}{view}_{index}.dcm"
                    write_mammogram(root / "images" / relative, image, laterality, view)
                    metadata.append(
                        {
                            "empi_anon": patient,
                            "acc_anon": accession,
                            "anon_dicom_path": forms[exam % 3] + relative,
                            "FinalImageType": kind,
                            "ImageLateralityFinal": laterality,
                            "ViewPosition": view,
                            "spot_mag": "",
                            "num_ROI": int(with_roi),
                            "DCM_ROI_coords": roi,
                            "PNG_ROI_coords": roi,
                            "ROI_match_level": "[['1']]" if with_roi else "[]",
                            "PNG_flipped": "False" if with_roi else "",
                            "SeriesNumber": 71300000 + index // 2,
                            "SeriesTime": 100000 + 100 * index,
                            "Rows": height,
                            "Columns": width,
                        }
                    )
        screening = {"empi_anon": patient, "acc_anon": accession, "bside": "", "path_severity": ""}
        screening |= {"study_date_anon": date.date().isoformat(), "desc": "MG Screening Bilateral"}
        clinical.append(screening | {"side": "R" if recalled else "", "asses": "AN"[exam % 4 > 0]})
        if recalled:
            follow_up = screening | {"acc_anon": f"6{exam:09d}", "desc": "MG Diagnostic Right"}
            follow_up["study_date_anon"] = (date + pd.Timedelta(days=20)).date().isoformat()
            severity = "0" if exam % 8 == 0 else "4"
            clinical.append(follow_up | {"side": "R", "asses": "S", "path_severity": severity})
        exam += 1
    table = pd.DataFrame(metadata)
    kinds = table.groupby(["acc_anon", "ImageLateralityFinal", "ViewPosition"])["FinalImageType"]
    ffdm, sm = kinds.agg(lambda v: (v == "2D").sum()), kinds.agg(lambda v: (v == "cview").sum())
    paired = ffdm.index[(ffdm > 0) & (sm > 0)]
    malignant = {f"5{number:09d}" for number in range(0, exam, 8)}
    root.mkdir(parents=True, exist_ok=True)
    table.to_csv(root / "metadata.csv", index=False)
    pd.DataFrame(clinical).to_csv(root / "clinical.csv", index=False)
    return {
        "pairs": len(paired),
        "several": int(((ffdm > 1) & (sm > 0)).sum()),
        # the follow-up's R cancer labels both views of the R breast
        "positives": sum(1 for key in paired if key[0] in malignant and key[1] == "R"),
        "rois": int(table.loc[table["num_ROI"] > 0].shape[0]),
    }


def test_a_synthetic_release_table_is_read_whole(tmp_path, capsys):
    expected = write_synthetic_embed(tmp_path, rows=160)
    argv = ["adapt", "embed", "--metadata", str(tmp_path / "metadata.csv"), "--clinical"]
    argv += [str(tmp_path / "clinical.csv"), "--images-root", str(tmp_path / "images")]
    assert cli.main([*argv, "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "out" / "adapter_summary.json").read_text())
    manifest = read_table(tmp_path / "out" / "manifest.csv")
    assert summary["inputs"]["metadata_rows"] == 160
    assert summary["pairs"] == expected["pairs"] == len(manifest)
    assert summary["positives"] == expected["positives"] > 0
    by_source = summary["labels"]["positives_by_source"]
    assert by_source == {
        "own_exam": 0,
        "follow_up_diagnostic": expected["positives"],
        "follow_up_ultrasound": 0,
    }
    assert summary["paths"]["files_not_found"] == 0
    assert set(summary["paths"]["prefix_removed"]) == {
        "/mnt/NAS*/mammo/anon_dicom/",
        "./images/",
        "images/",
    }
    assert summary["roi_table"]["images_by_column"] == {
        "DCM_ROI_coords": expected["rois"],
        "PNG_ROI_coords": 0,
    }
    assert set(summary["rois"]["frame_rule"]) == {"dcm_roi_coords"}
    assert summary["rois"]["mirrored_images"] == 0
    assert summary["several_candidates"]["chosen_by"] == {"same_series": expected["several"]}
    assert expected["several"] > 0
