"""The boxes' stored frame: ROI column, flip rule, orientation and image size per image."""

import json
from pathlib import Path

import pytest
from embed_copies import (
    E1,
    E2,
    P1,
    SIZES,
    EmbedCopy,
    assert_on_markers,
    boxes_of,
    run_adapter,
    write_embed_copy,
)

from data_tools.embed.adapter import build_tables
from data_tools.embed.frames import embed_png_flip
from data_tools.embed.options import EmbedOptions
from datamodules.manifest import read_table


def test_embeds_flip_rule_follows_patient_orientation_not_laterality():
    # DCM_to_PNG.ipynb, check_dcm: flip CC/MLO/ML when PatientOrientation[0] is 'P'
    assert embed_png_flip(["P", "L"], "CC", "R") == (True, "patient_orientation")
    assert embed_png_flip(["A", "R"], "CC", "R") == (False, "patient_orientation")
    assert embed_png_flip(["P", "F"], "MLO", "L") == (True, "patient_orientation")
    assert embed_png_flip(["P", "L"], "XCCL", "R") == (False, "patient_orientation")
    assert embed_png_flip([], "ML", "R") == (True, "laterality_no_patient_orientation")
    assert embed_png_flip([], "CC", "L") == (False, "laterality_no_patient_orientation")


# Each ROI column on its markers -------------------------------------------------------------

FRAME_TABLES = {
    "DCM_ROI_coords": dict(columns=("DCM_ROI_coords",)),
    "PNG_ROI_coords+PNG_flipped": dict(columns=("PNG_ROI_coords",), png_flipped=True),
    "ROI_coords": dict(columns=("ROI_coords",)),
}
SIZES_FROM = {
    "DCM_ROI_coords": {},
    "PNG_ROI_coords+PNG_flipped": {"dicom_header": 4},
    "ROI_coords": {"dicom_header": 6},
}
FRAME_RULES = {
    "DCM_ROI_coords": {"dcm_roi_coords": 6},
    "PNG_ROI_coords+PNG_flipped": {"png_flipped": 6},
    "ROI_coords": {"patient_orientation": 6},
}


def frame_copy(root: Path, table: str) -> EmbedCopy:
    """Three pairs: an R CC stored with the chest wall on the right (PatientOrientation P\\L),
    an R CC stored already turned, chest wall on the left (A\\R: issue #9's case), and an L
    MLO stored with the chest wall on the right (P\\F), as EMBED's NUS_roi_reference.ipynb
    shows for an L MLO C-view."""
    copy = EmbedCopy(root)
    options = FRAME_TABLES[table]
    copy.pair("p1", "e1", "R", "CC", lesions=[(0.25, 0.3), (0.4, 0.6)], **options)
    copy.pair("p2", "e2", "R", "CC", lesions=[(0.3, 0.45)], chest_wall="L", **options)
    copy.pair("p3", "e3", "L", "MLO", lesions=[(0.35, 0.55)], chest_wall="R", **options)
    copy.finding("p1", "e1", "2018-01-01", "MG Diagnostic Right", "R", "S", "0")
    copy.finding("p2", "e2", "2018-01-01", "MG Diagnostic Right", "R", "S", "4")
    copy.finding("p3", "e3", "2018-01-01", "MG Diagnostic Left", "L", "M", "1")
    return copy


@pytest.mark.parametrize("table", list(FRAME_TABLES))
def test_each_roi_column_lands_on_its_marker(tmp_path, table):
    copy = frame_copy(tmp_path, table)
    manifest, lesions, summary = copy.build()

    assert list(manifest.index) == ["e1_R_CC", "e2_R_CC", "e3_L_MLO"]
    assert manifest["label"].tolist() == [1, 0, 1]
    assert manifest["pathology"].tolist() == ["malignant", "benign", "malignant"]
    for exam, laterality, view in (("e1", "R", "CC"), ("e2", "R", "CC"), ("e3", "L", "MLO")):
        assert_on_markers(copy, manifest, lesions, exam, laterality, view)
    assert summary["rois"]["frame_rule"] == FRAME_RULES[table]
    dicom_frame = table == "DCM_ROI_coords"
    assert summary["rois"]["mirrored_images"] == (0 if dicom_frame else 4)
    assert summary["rois"]["unmirrored_images"] == (6 if dicom_frame else 2)
    assert summary["rois"]["outside_image_kept"] == 0
    assert summary["roi_table"]["images_by_column"] == {FRAME_TABLES[table]["columns"][0]: 6}
    assert summary["lesions"] == {"sm": 4, "ffdm": 4}
    # a header is read only where the table does not say how EMBED flipped the image (all six)
    # or where a mirrored box needs the image's width (the four flipped ones)
    assert summary["image_size_from"] == SIZES_FROM[table]


def test_flipping_by_laterality_misplaces_the_rois_of_issue_9(tmp_path):
    copy = frame_copy(tmp_path, "ROI_coords")
    manifest, lesions, summary = copy.build(orientation_from="laterality")
    # the R image stored already turned is mirrored anyway; the L one, stored facing left and
    # flipped by EMBED, is not
    columns = SIZES["2D"][1]
    for exam, laterality, view in (("e2", "R", "CC"), ("e3", "L", "MLO")):
        [(x1, y1, x2, y2)] = copy.expected[(exam, f"2d_{laterality}{view}", "2D")]
        wrong = [columns - x2, y1, columns - x1, y2]
        assert boxes_of(lesions, f"{exam}_{laterality}_{view}", "ffdm") == [wrong]
    assert_on_markers(copy, manifest, lesions, "e1", "R", "CC")
    assert summary["rois"]["frame_rule"] == {"laterality": 6}
    assert summary["rois"]["mirrored_images"] == 4


# The options on the fixed copy --------------------------------------------------------------


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
