"""The EMBED adapter on EMBED-format tables and small real DICOM files written with pydicom.

The fixture follows the facts of EMBED's open-data tables: every ROI_coords form seen, both
lateralities, a spot view, a 2D image without its C-view (and the reverse), two 2D candidates
for one key, a finding with side B and one with no side, an exam missing from the clinical
table, a secondary-capture image type and an image without laterality.
"""

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from dicom_factory import breast_image, write_mammogram
from hypothesis import given, settings
from hypothesis import strategies as st

import cli
from data_tools.embed import main as adapt_main
from data_tools.embed.adapter import build_tables
from data_tools.embed.check import render_check
from data_tools.embed.options import EmbedOptions
from data_tools.embed.roi_text import parse_roi_coords
from data_tools.embed.tables import EmbedTableError
from datamodules.manifest import LESION_COLUMNS, MANIFEST_COLUMNS, load_tables, read_table, validate

REPO = Path(__file__).resolve().parents[2]
PREFIX = "/mnt/NAS2/mammo/anon_dicom/"
P1, P2, P3 = "30000011", "30000012", "30000013"
E1, E2, E3 = "7000101", "7000202", "7000303"
FFDM_SIZE, SM_SIZE = (64, 48), (48, 36)  # (Rows, Columns)

# name, patient, exam, FinalImageType, laterality, view, spot_mag, ROI_coords, num_roi, match
IMAGES = [
    ("ffdm_rcc", P1, E1, "2D", "R", "CC", "", "((19, 3, 22, 6),)", 1, 1),
    ("sm_rcc", P1, E1, "cview", "R", "CC", "", "((12, 2, 15, 5), ())", 1, 2),
    ("ffdm_lcc", P1, E1, "2D", "L", "CC", "", "((9, 2, 12, 6), (20, 3, 26, 10))", 2, 1),
    ("sm_lcc", P1, E1, "cview", "L", "CC", "", "(([7, 1, 9, 4],),)", 1, 2),
    ("ffdm_rmlo", P1, E1, "2D", "R", "MLO", "", "()", 0, ""),
    ("sm_rmlo", P1, E1, "cview", "R", "MLO", "", "", "", ""),
    ("spot_rcc", P1, E1, "2D", "R", "CC", "1", "((5, 5, 9, 9),)", 1, 1),
    ("ffdm_lmlo", P1, E1, "2D", "L", "MLO", "", "", "", ""),
    ("ffdm_lcc", P2, E2, "2D", "L", "CC", "", "", "", ""),
    ("sm_lcc", P2, E2, "cview", "L", "CC", "", "", "", ""),
    ("b_ffdm_rcc", P2, E2, "2D", "R", "CC", "", "((30, 10, 40, 20),)", 1, 1),
    ("a_ffdm_rcc", P2, E2, "2D", "R", "CC", "", "()", 0, ""),
    ("sm_rcc", P2, E2, "cview", "R", "CC", "", "((20, 8, 28, 15),)", 1, 1),
    ("ffdm_lcc", P3, E3, "2D", "L", "CC", "", "", "", ""),
    ("sm_lcc", P3, E3, "C-view", "L", "CC", "", "", "", ""),
    ("sm_rcc", P3, E3, "cview", "R", "CC", "", "", "", ""),
    ("ssc_lcc", P3, E3, "ROI_SSC", "L", "CC", "", "", "", ""),
    ("ffdm_xcc", P3, E3, "2D", "", "CC", "", "", "", ""),
]
# empi_anon, acc_anon, side, path_severity, asses, tissueden (one id written as a float),
# study_date_anon, desc: diagnostic exams, so the follow-up rule (test_embed_release.py)
# carries nothing back here
FINDINGS = [
    (P1, E1, "R", "0", "S", "3", "2016-03-01", "MG Diagnostic Mammo Bilateral"),
    (P1, E1, "L", "", "B", "3", "2016-03-01", "MG Diagnostic Mammo Bilateral"),
    (P2, E2, "B", "4", "B", "2", "2017-05-02", "MG Diagnostic Mammo Bilateral"),
    (P2, E2 + ".0", "R", "1.0", "M", "2", "2017-05-02", "MG Diagnostic Mammo Bilateral"),
    (P2, E2, "", "", "N", "2", "2017-05-02", "MG Diagnostic Mammo Bilateral"),
]
CLINICAL_FIELDS = (
    "empi_anon", "acc_anon", "side", "path_severity", "asses", "tissueden", "study_date_anon",
    "desc",
)  # fmt: skip


def source_path(patient, exam, name):
    return f"{PREFIX}cohort_1/{patient}/{exam}/{name}.dcm"


def write_embed_copy(root: Path, chest_wall_left=(), size_columns=None, write_images=True):
    """EMBED's two tables and the DICOMs under root/images. Images are stored with the chest
    wall on the DICOM side of their laterality, except the names in ``chest_wall_left``
    (already turned to face right). ``size_columns``: (ffdm, sm) Columns to write as the
    metadata's Rows/Columns columns."""
    metadata = []
    for name, patient, exam, kind, side, view, spot, rois, num_roi, match in IMAGES:
        rows, columns = FFDM_SIZE if kind == "2D" else SM_SIZE
        if write_images and kind in ("2D", "cview", "C-view") and side:
            stored_side = "L" if (patient, name) in chest_wall_left else side
            image = breast_image(rows, columns, laterality=stored_side)
            path = root / "images" / source_path(patient, exam, name).removeprefix(PREFIX)
            write_mammogram(path, image, laterality=side, view=view)
        row = {
            "empi_anon": patient,
            "acc_anon": exam,
            "anon_dicom_path": source_path(patient, exam, name),
            "FinalImageType": kind,
            "ImageLateralityFinal": side,
            "ViewPosition": view,
            "spot_mag": spot,
            "num_roi": num_roi,
            "ROI_coords": rois,
            "match_level": match,
            "Manufacturer": "HOLOGIC, Inc.",
            "WindowCenter": "2047",
            "WindowWidth": "4096",
            "SeriesDescription": f"{side}{view}",
        }
        if size_columns is not None:
            row["Rows"] = rows
            row["Columns"] = size_columns[0] if kind == "2D" else size_columns[1]
        metadata.append(row)
    clinical = [dict(zip(CLINICAL_FIELDS, f)) | {"numfind": 1} for f in FINDINGS]
    root.mkdir(parents=True, exist_ok=True)
    metadata_path, clinical_path = root / "metadata.csv", root / "clinical.csv"
    pd.DataFrame(metadata).to_csv(metadata_path, index=False)
    pd.DataFrame(clinical).to_csv(clinical_path, index=False)
    return metadata_path, clinical_path


@pytest.fixture(scope="module")
def embed_copy(tmp_path_factory):
    return write_embed_copy(tmp_path_factory.mktemp("embed"))


def run_adapter(metadata, clinical, out, *options, images_root=None):
    root = images_root or metadata.parent / "images"
    argv = ["adapt", "embed", "--metadata", str(metadata), "--clinical", str(clinical)]
    return cli.main([*argv, "--images-root", str(root), "--out", str(out), *options])


def boxes_of(lesions, pair_id, modality):
    mine = lesions[(lesions["pair_id"] == pair_id) & (lesions["modality"] == modality)]
    return mine[["x1", "y1", "x2", "y2"]].to_numpy(dtype=float).tolist()


def mirror(box, columns):
    x1, y1, x2, y2 = box
    return [columns - x2, y1, columns - x1, y2]


# ROI_coords --------------------------------------------------------------------------------


def test_every_roi_coords_form_of_the_issue_parses_without_eval():
    assert parse_roi_coords("((1951, 347, 2244, 626),)") == [(1951, 347, 2244, 626)]
    assert parse_roi_coords("((992, 202, 1276, 647), (2098, 302, 2647, 1089))") == [
        (992, 202, 1276, 647),
        (2098, 302, 2647, 1089),
    ]
    assert parse_roi_coords("((825, 563, 1343, 890), ())") == [(825, 563, 1343, 890)]
    assert parse_roi_coords("(([1224, 172, 1457, 559],),)") == [(1224, 172, 1457, 559)]
    assert parse_roi_coords("()") == []
    assert parse_roi_coords("") == []
    assert parse_roi_coords(float("nan")) == []
    assert parse_roi_coords(" ( (1.5, 2, 3e1, 4) , ) ") == [(1.5, 2.0, 30.0, 4.0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("((1, 2, 3),)", "needs 4 numbers"),
        ("((1, 2, 3, 4)", "never closed"),
        ("((1, 2, x, 4),)", "unexpected character 'x'"),
        ("((1, 2, 3, 4),) 5", "after the closing bracket"),
        ("((1, 2, 3, 4], )", "expected ',' or ')'"),
        ("(1, (2, 3, 4, 5))", "mixes numbers and brackets"),
        ("__import__('os')", "unexpected character '_'"),
        ("(,)", "unexpected ','"),
    ],
)
def test_malformed_roi_coords_raise(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_roi_coords(text)


box = st.tuples(*[st.integers(0, 5000)] * 4)


@settings(max_examples=60, deadline=None)
@given(
    boxes=st.lists(box, max_size=4),
    as_list=st.lists(st.booleans(), min_size=4, max_size=4),
    wrapped=st.lists(st.booleans(), min_size=4, max_size=4),
    empties=st.integers(0, 2),
)
def test_written_forms_parse_back(boxes, as_list, wrapped, empties):
    parts = []
    for box_, listed, wrap in zip(boxes, as_list, wrapped):
        text = str(list(box_)) if listed else str(tuple(box_))
        parts.append(f"({text},)" if wrap else text)
    parts += ["()"] * empties
    text = "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    assert parse_roi_coords(text) == [tuple(float(v) for v in b) for b in boxes]


# The adapter on the fixture ----------------------------------------------------------------


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
    # no SeriesNumber/SeriesTime columns here: the ROIs decide (test_embed_release.py)
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


def test_stored_frame_keeps_the_rois_unmirrored(embed_copy, tmp_path):
    metadata, clinical = embed_copy
    out = tmp_path / "out"
    assert run_adapter(metadata, clinical, out, "--roi-frame", "stored", "--relative-paths") == 0
    lesions = read_table(out / "lesions.csv")
    manifest = read_table(out / "manifest.csv")
    assert boxes_of(lesions, f"{E1}_R_CC", "ffdm") == [[3, 19, 6, 22]]
    assert boxes_of(lesions, f"{E1}_R_CC", "sm") == [[2, 12, 5, 15]]
    assert boxes_of(lesions, f"{E2}_R_CC", "ffdm") == [[10, 30, 20, 40]]
    assert boxes_of(lesions, f"{E2}_R_CC", "sm") == [[8, 20, 15, 28]]
    assert boxes_of(lesions, f"{E1}_L_CC", "ffdm") == [[2, 9, 6, 12], [3, 20, 10, 26]]
    assert not lesions["mirrored"].any()
    path = manifest.loc[manifest["pair_id"] == f"{E1}_R_CC", "sm_path"].item()
    assert not Path(path).is_absolute()
    expected = metadata.parent / "images" / "cohort_1" / P1 / E1 / "sm_rcc.dcm"
    assert (out / path).resolve() == expected.resolve()
    summary = json.loads((out / "adapter_summary.json").read_text())
    assert summary["conventions"]["roi_frame"] == "stored"
    assert summary["image_size_from"] == {}


def test_pixel_orientation_follows_how_each_image_is_stored(tmp_path):
    # the R CC FFDM of the first exam is stored already turned (chest wall on the left)
    metadata, clinical = write_embed_copy(tmp_path / "embed", chest_wall_left={(P1, "ffdm_rcc")})
    options = EmbedOptions(images_root=tmp_path / "embed" / "images", orientation_from="pixels")
    manifest, lesions, summary = build_tables(metadata, clinical, options)
    assert boxes_of(lesions, f"{E1}_R_CC", "ffdm") == [[3, 19, 6, 22]]
    assert boxes_of(lesions, f"{E1}_R_CC", "sm") == [[31, 12, 34, 15]]
    assert boxes_of(lesions, f"{E2}_R_CC", "ffdm") == [[28, 30, 38, 40]]
    assert boxes_of(lesions, f"{E1}_L_CC", "ffdm") == [[2, 9, 6, 12], [3, 20, 10, 26]]
    assert summary["rois"]["pixel_orientation_differs_from_laterality"] == 1
    assert summary["rois"]["mirrored_images"] == 3
    assert summary["image_size_from"] == {"pixels": 6}


def test_sizes_from_metadata_columns_without_the_files(tmp_path):
    metadata, clinical = write_embed_copy(tmp_path, size_columns=(100, 80), write_images=False)
    # without the files there is no header to read PatientOrientation from: say laterality
    options = EmbedOptions(
        images_root=tmp_path / "nowhere", check_files=False, orientation_from="laterality"
    )
    manifest, lesions, summary = build_tables(metadata, clinical, options)
    assert len(manifest) == 6
    assert boxes_of(lesions, f"{E1}_R_CC", "ffdm") == [[94, 19, 97, 22]]
    assert boxes_of(lesions, f"{E1}_R_CC", "sm") == [[75, 12, 78, 15]]
    assert summary["image_size_from"] == {"metadata": 6}
    assert summary["rois"]["frame_rule"] == {"laterality": 6}
    assert "files_found" not in summary["paths"]


def test_missing_files_exclude_their_pair_and_are_counted(tmp_path):
    metadata, clinical = write_embed_copy(tmp_path)
    (tmp_path / "images" / "cohort_1" / P3 / E3 / "sm_lcc.dcm").unlink()
    # without the file of the chosen candidate, the other 2D image of that key is taken
    (tmp_path / "images" / "cohort_1" / P2 / E2 / "b_ffdm_rcc.dcm").unlink()
    options = EmbedOptions(images_root=tmp_path / "images")
    manifest, lesions, summary = build_tables(metadata, clinical, options)
    assert f"{E3}_L_CC" not in set(manifest["pair_id"])
    assert summary["excluded_pairs"]["dicom_file_not_found"] == 1
    row = manifest[manifest["pair_id"] == f"{E2}_R_CC"].iloc[0]
    assert row["ffdm_path"].endswith("a_ffdm_rcc.dcm") and row["ffdm_rois"] == 0
    assert boxes_of(lesions, f"{E2}_R_CC", "ffdm") == []
    assert boxes_of(lesions, f"{E2}_R_CC", "sm") == [[21, 20, 28, 28]]


def test_an_unreadable_image_drops_its_pair_and_is_counted(tmp_path):
    metadata, clinical = write_embed_copy(tmp_path)
    (tmp_path / "images" / "cohort_1" / P2 / E2 / "sm_rcc.dcm").unlink()
    options = EmbedOptions(images_root=tmp_path / "images", check_files=False)
    manifest, lesions, summary = build_tables(metadata, clinical, options)
    assert summary["excluded_pairs"] == {
        "path_severity_6": 0,
        "follow_up_path_severity_6": 0,
        "dicom_unreadable": 1,
    }
    assert f"{E2}_R_CC" not in set(manifest["pair_id"]) and len(manifest) == 5
    assert set(lesions["pair_id"]) == {f"{E1}_L_CC", f"{E1}_R_CC"}
    assert summary["rois"]["mirrored_images"] == 2


def test_an_exam_id_of_two_patients_is_excluded_not_merged(tmp_path):
    metadata, clinical = write_embed_copy(tmp_path, size_columns=(48, 36), write_images=False)
    table = pd.read_csv(metadata, dtype=str)
    stray = table.iloc[[0]].assign(empi_anon=P2, anon_dicom_path=source_path(P2, E1, "x"))
    pd.concat([table, stray]).to_csv(metadata, index=False)
    options = EmbedOptions(images_root=tmp_path, check_files=False, orientation_from="laterality")
    manifest, lesions, summary = build_tables(metadata, clinical, options)
    assert summary["excluded_images"]["exam_id_shared_by_patients"] == 8  # + 1 spot view
    assert list(manifest["pair_id"]) == [f"{E2}_L_CC", f"{E2}_R_CC", f"{E3}_L_CC"]
    assert set(lesions["pair_id"]) == {f"{E2}_R_CC"}


# Errors ------------------------------------------------------------------------------------


def test_malformed_values_are_all_reported_with_row_and_column(tmp_path, capsys):
    metadata, clinical = write_embed_copy(tmp_path, write_images=False)
    table = pd.read_csv(metadata, dtype=str)
    table.loc[4, "ROI_coords"] = "((1, 2, 3),)"
    table.loc[9, "ROI_coords"] = "((4, 5, 6, 7)"
    table.to_csv(metadata, index=False)
    findings = pd.read_csv(clinical, dtype=str)
    findings.loc[2, "side"] = "Q"
    findings.loc[0, "path_severity"] = "7"
    findings.to_csv(clinical, index=False)

    with pytest.raises(EmbedTableError) as caught:
        build_tables(metadata, clinical, EmbedOptions(images_root=tmp_path))
    where = [(Path(p.file).name, p.row, p.column) for p in caught.value.problems]
    assert where == [
        ("metadata.csv", 6, "ROI_coords"),
        ("metadata.csv", 11, "ROI_coords"),
        ("clinical.csv", 4, "side"),
        ("clinical.csv", 2, "path_severity"),
    ]
    message = str(caught.value)
    assert "4 problem(s) in the EMBED tables" in message
    assert f"{metadata} row 6, column ROI_coords: cannot read ROI_coords '((1, 2, 3),)'" in message
    assert "a box needs 4 numbers" in message and "is never closed" in message

    assert run_adapter(metadata, clinical, tmp_path / "out") == 1
    assert f"{metadata} row 11, column ROI_coords" in capsys.readouterr().err
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_missing_columns_are_all_reported_with_file_and_column(tmp_path):
    metadata, clinical = write_embed_copy(tmp_path, write_images=False)
    pd.read_csv(metadata).drop(columns=["ROI_coords", "ViewPosition"]).to_csv(metadata, index=False)
    pd.read_csv(clinical).drop(columns=["path_severity"]).to_csv(clinical, index=False)
    with pytest.raises(EmbedTableError) as caught:
        build_tables(metadata, clinical, EmbedOptions(images_root=tmp_path))
    where = [(Path(p.file).name, p.row, p.column) for p in caught.value.problems]
    assert where == [
        ("metadata.csv", None, "ViewPosition"),
        ("metadata.csv", None, "ROI_coords"),
        ("clinical.csv", None, "path_severity"),
    ]
    assert f"{clinical} column path_severity: missing required column" in str(caught.value)


# The check picture, the dispatcher and the config ------------------------------------------


def test_check_draws_written_and_mirrored_boxes(embed_copy, tmp_path):
    metadata, clinical = embed_copy
    out = tmp_path / "out"
    assert run_adapter(metadata, clinical, out) == 0
    assert cli.main(["adapt", "embed-check", "--out", str(out), "--samples", "3"]) == 0
    picture = matplotlib.image.imread(out / "roi_check.png")
    assert picture.shape[:2] == (3 * 360, 700)  # 3 images, written and mirrored side by side
    green = (picture[..., 1] > 0.8) & (picture[..., 0] < 0.3) & (picture[..., 2] < 0.3)
    orange = (picture[..., 0] > 0.9) & (picture[..., 1] > 0.5) & (picture[..., 2] < 0.2)
    assert green[:, :350].sum() > 20 and green[:, 350:].sum() == 0
    assert orange[:, 350:].sum() > 20 and orange[:, :350].sum() == 0

    png, drawn = render_check(out, tmp_path / "again.png", samples=4, seed=0)
    assert png.is_file()
    assert [item["laterality"] for item in drawn] == ["R", "L", "R", "L"]
    lesions = read_table(out / "lesions.csv")
    for item in drawn:
        written = boxes_of(lesions, item["pair_id"], item["modality"])
        columns = (FFDM_SIZE if item["modality"] == "ffdm" else SM_SIZE)[1]
        assert item["size"] == (FFDM_SIZE if item["modality"] == "ffdm" else SM_SIZE)
        assert item["written"].tolist() == written
        assert item["mirrored"].tolist() == [mirror(b, columns) for b in written]


def test_adapt_dispatch():
    assert adapt_main(["--help"]) == 0
    assert adapt_main([]) == 2
    assert adapt_main(["no-such-data-set"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["adapt", "embed", "--help"])
