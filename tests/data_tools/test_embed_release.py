"""The EMBED adapter on tables laid out as EMBED publishes them.

Each test writes its own EMBED-format tables and real DICOM files (pydicom) with a bright
marker inside each lesion, and asserts the labels, the boxes (on the marker, within 1 px) and
the summary counts: per-ROI match levels, the three path forms, the three ROI columns and
their frames (PatientOrientation written into the DICOM), the follow-up label rule, bside,
path_severity 6 and pairing by series. `write_synthetic_embed` writes a table of any size
(2,000 rows by default).
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_factory import breast_image, marker_box, write_mammogram

import cli
from data_tools.embed.adapter import build_tables
from data_tools.embed.frames import embed_png_flip
from data_tools.embed.options import EmbedOptions
from data_tools.embed.paths import EmbedPathError
from data_tools.embed.roi_text import parse_match_levels, parse_roi_coords
from datamodules.manifest import read_table, validate

NAS2 = "/mnt/NAS2/mammo/anon_dicom/"
SIZES = {"2D": (80, 60), "cview": (60, 45)}  # (Rows, Columns)
MARKER = 6


def orientation_for(view: str, chest_wall: str) -> tuple[str, str]:
    """The PatientOrientation a mammogram stored with its chest wall on ``chest_wall`` has:
    the rows run towards the chest wall (P) when it is on the right, else towards the nipple
    (A); the columns towards the side (CC) or the feet (MLO)."""
    rows = "P" if chest_wall == "R" else "A"
    return rows, ("F" if view in ("MLO", "ML") else "L" if chest_wall == "R" else "R")


def roi_text(boxes, column: str) -> str:
    """Boxes (ymin, xmin, ymax, xmax) as EMBED writes the column: DCM_/PNG_ROI_coords nested
    by source image in lists (ROI reference v1.2), ROI_coords as a tuple of tuples."""
    if not boxes:
        return "[]" if column != "ROI_coords" else "()"
    if column == "ROI_coords":
        return "(" + ", ".join(str(tuple(int(v) for v in box)) for box in boxes) + ",)"
    return "[[" + ", ".join(str([int(v) for v in box]) for box in boxes) + "]]"


class EmbedCopy:
    """EMBED's two tables and the DICOMs under ``root/images``, built image by image."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.metadata: list[dict] = []
        self.clinical: list[dict] = []
        self.expected: dict[tuple[str, str, str], list[list[float]]] = {}

    def image(
        self,
        patient,
        exam,
        name,
        kind="2D",
        laterality="R",
        view="CC",
        chest_wall=None,
        orientation="auto",
        lesions=(),
        columns=("ROI_coords",),
        png_flipped=False,
        form=NAS2,
        series=None,
        extra=None,
    ) -> dict:
        """One image: a DICOM stored with the chest wall on ``chest_wall`` (default: the
        DICOM side of its laterality) and a marker per lesion (depth from the chest wall and
        height, as fractions), and its metadata row with the lesions in each of ``columns``
        in that column's frame. ``orientation`` 'auto' writes the PatientOrientation of the
        layout, None none. ``series``: (SeriesNumber, SeriesTime)."""
        rows, width = SIZES[kind]
        chest_wall = chest_wall or laterality
        stored = []
        for depth, height in lesions:
            x = width - depth * width if chest_wall == "R" else depth * width
            stored.append(marker_box(x, height * rows, MARKER))
        image = breast_image(
            rows,
            width,
            laterality=chest_wall,
            markers=[((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, MARKER) for b in stored],
        )
        if orientation == "auto":
            orientation = orientation_for(view, chest_wall)
        relative = f"cohort_1/{patient}/{exam}/{name}.dcm"
        write_mammogram(
            self.root / "images" / relative,
            image,
            laterality=laterality,
            view=view,
            patient_orientation=orientation,
            series_number=None if series is None else series[0],
            series_time=None if series is None else series[1],
        )
        flipped = chest_wall == "R" and view in ("CC", "MLO", "ML")  # DCM_to_PNG.ipynb
        dicom_rois = [(y1, x1, y2, x2) for x1, y1, x2, y2 in stored]
        png_rois = [
            (y1, width - x2, y2, width - x1) if flipped else (y1, x1, y2, x2)
            for x1, y1, x2, y2 in stored
        ]
        row = {
            "empi_anon": patient,
            "acc_anon": exam,
            "anon_dicom_path": form + relative,
            "FinalImageType": kind,
            "ImageLateralityFinal": laterality,
            "ViewPosition": view,
            "spot_mag": "",
            "num_roi": len(stored),
        }
        for column in columns:
            row[column] = roi_text(dicom_rois if column == "DCM_ROI_coords" else png_rois, column)
        if "PNG_ROI_coords" in columns and png_flipped:
            row["PNG_flipped"] = str(flipped) if stored else ""
        if series is not None:
            row["SeriesNumber"], row["SeriesTime"] = series[0], f"{series[1]}.0"
        row |= extra or {}
        self.metadata.append(row)
        self.expected[(exam, name, kind)] = [list(box) for box in stored]
        return row

    def pair(self, patient, exam, laterality="R", view="CC", lesions=(), **options):
        """A 2D image and its C-view, each with markers at the same relative places."""
        for kind in ("2D", "cview"):
            name = f"{kind.lower()}_{laterality}{view}"
            self.image(patient, exam, name, kind, laterality, view, lesions=lesions, **options)

    def finding(self, patient, exam, date, desc, side="", asses="N", path="", bside=""):
        self.clinical.append(
            {
                "empi_anon": patient,
                "acc_anon": exam,
                "study_date_anon": date,
                "desc": desc,
                "side": side,
                "asses": asses,
                "path_severity": path,
                "bside": bside,
                "tissueden": 2,
            }
        )

    def write(self) -> tuple[Path, Path]:
        metadata, clinical = self.root / "metadata.csv", self.root / "clinical.csv"
        pd.DataFrame(self.metadata).to_csv(metadata, index=False)
        pd.DataFrame(self.clinical).to_csv(clinical, index=False)
        return metadata, clinical

    def build(self, **options):
        metadata, clinical = self.write()
        options = EmbedOptions(images_root=self.root / "images", **options)
        manifest, lesions, summary = build_tables(metadata, clinical, options)
        validate(manifest, lesions, "manifest", "lesions")
        return manifest.set_index("pair_id"), lesions, summary


def boxes_of(lesions, pair_id, modality):
    mine = lesions[(lesions["pair_id"] == pair_id) & (lesions["modality"] == modality)]
    return mine[["x1", "y1", "x2", "y2"]].to_numpy(dtype=float).tolist()


def assert_on_markers(copy: EmbedCopy, manifest, lesions, exam, laterality, view):
    """Each written box is its marker's box within 1 px, and the stored pixels under it are the
    marker's (the brightest value of the file)."""
    pair_id = f"{exam}_{laterality}_{view}"
    for kind, modality in (("2D", "ffdm"), ("cview", "sm")):
        expected = copy.expected[(exam, f"{kind.lower()}_{laterality}{view}", kind)]
        written = boxes_of(lesions, pair_id, modality)
        assert len(written) == len(expected)
        np.testing.assert_allclose(written, expected, atol=1.0)
        pixels = pydicom.dcmread(manifest.loc[pair_id, f"{modality}_path"]).pixel_array
        for x1, y1, x2, y2 in written:
            inside = pixels[int(y1) + 1 : int(y2) - 1, int(x1) + 1 : int(x2) - 1]
            assert inside.min() == pixels.max()


# Parsing ------------------------------------------------------------------------------------


def test_the_roi_reference_forms_parse():
    # ROI reference v1.2 and NUS_roi_reference.ipynb: nested by source image, levels quoted
    assert parse_roi_coords("[[[1165, 822, 1294, 1000]]]") == [(1165, 822, 1294, 1000)]
    assert parse_roi_coords("[[[1, 2, 3, 4], [5, 6, 7, 8]], [[9, 10, 11, 12]]]") == [
        (1, 2, 3, 4),
        (5, 6, 7, 8),
        (9, 10, 11, 12),
    ]
    assert parse_roi_coords("[]") == [] and parse_roi_coords("[[]]") == []
    assert parse_match_levels("[['1']]") == [1.0]
    assert parse_match_levels("[['1', '2'], ['2']]") == [1.0, 2.0, 2.0]
    assert parse_match_levels("[1, 2]") == [1.0, 2.0]
    assert parse_match_levels("(1, 2)") == [1.0, 2.0]
    assert parse_match_levels("2.0") == [2.0]
    assert parse_match_levels("") == [] and parse_match_levels(float("nan")) == []
    with pytest.raises(ValueError, match="unexpected character 'x'"):
        parse_match_levels("[x]")


def test_embeds_flip_rule_follows_patient_orientation_not_laterality():
    # DCM_to_PNG.ipynb, check_dcm: flip CC/MLO/ML when PatientOrientation[0] is 'P'
    assert embed_png_flip(["P", "L"], "CC", "R") == (True, "patient_orientation")
    assert embed_png_flip(["A", "R"], "CC", "R") == (False, "patient_orientation")
    assert embed_png_flip(["P", "F"], "MLO", "L") == (True, "patient_orientation")
    assert embed_png_flip(["P", "L"], "XCCL", "R") == (False, "patient_orientation")
    assert embed_png_flip([], "ML", "R") == (True, "laterality_no_patient_orientation")
    assert embed_png_flip([], "CC", "L") == (False, "laterality_no_patient_orientation")


# Match levels -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("columns", "levels", "count_column"),
    [
        (("ROI_coords",), {"match_level": ["[1, 2]", "(2,)"]}, "num_roi"),
        (("DCM_ROI_coords",), {"ROI_match_level": ["[['1', '2']]", "[['2']]"]}, "num_ROI"),
    ],
    ids=["match_level", "ROI_match_level"],
)
def test_match_levels_are_read_per_roi(tmp_path, columns, levels, count_column):
    copy = EmbedCopy(tmp_path)
    lesions = [(0.3, 0.3), (0.4, 0.7)]
    name = next(iter(levels))
    for kind, level, count in zip(("2D", "cview"), levels[name], (2, 1)):
        rois = lesions[:count]
        copy.image("p1", "e1", f"{kind.lower()}_RCC", kind, lesions=rois, columns=columns)
        copy.metadata[-1][name] = level
    copy.image("p1", "e1", "2d_LCC", "2D", "L", lesions=[(0.3, 0.5)], columns=columns)
    copy.image("p1", "e1", "cview_LCC", "cview", "L", lesions=[(0.3, 0.5)], columns=columns)
    for row in copy.metadata:
        row[count_column] = row.pop("num_roi")
    copy.metadata[-1][count_column] = 3  # says 3, holds 1: counted, not fatal
    copy.metadata[-2][name] = "[1, 1, 2]"  # 3 levels for 1 ROI: the level is left missing
    copy.finding("p1", "e1", "2019-01-02", "MG Screening Bilateral", asses="N")
    manifest, written, summary = copy.build()

    # lesions run pair by pair (L CC, then R CC), FFDM before SM
    assert written["match_level"].fillna(0).tolist() == [0, 0, 1, 2, 2]
    assert written["roi_column"].tolist() == [columns[0]] * 5
    assert manifest["label"].tolist() == [0, 0]
    assert_on_markers(copy, manifest, written, "e1", "R", "CC")
    assert_on_markers(copy, manifest, written, "e1", "L", "CC")
    assert summary["columns_read"]["match_level"] == name
    assert summary["columns_read"]["num_roi"] == count_column
    assert summary["lesions_by_match_level"] == {"2": 2, "1": 1, "missing": 2}
    assert summary["roi_table"]["match_level_count_differs"] == 1
    assert summary["roi_table"]["match_level_count_differs_metadata_rows"] == [4]
    assert summary["roi_table"]["num_roi_differs"] == 1
    assert summary["roi_table"]["num_roi_differs_metadata_rows"] == [5]


# Paths --------------------------------------------------------------------------------------


def test_every_path_form_resolves_and_a_given_prefix_still_works(tmp_path, capsys):
    copy = EmbedCopy(tmp_path)
    forms = [NAS2, "./images/", "images/", "/mnt/NAS3/mammo/anon_dicom/", "/data/embed/dicom/"]
    for index, form in enumerate(forms):
        copy.pair(f"p{index}", f"e{index}", lesions=[(0.3, 0.4)], form=form)
        copy.finding(f"p{index}", f"e{index}", "2020-02-02", "MG Diagnostic Right", "R", "S", "0")
    metadata, clinical = copy.write()
    out = tmp_path / "out"
    argv = ["adapt", "embed", "--metadata", str(metadata), "--clinical", str(clinical)]
    argv += ["--images-root", str(tmp_path / "images"), "--out", str(out)]
    assert cli.main([*argv, "--strip-prefix", "/data/embed/dicom/"]) == 0
    capsys.readouterr()
    manifest = read_table(out / "manifest.csv").set_index("pair_id")
    lesions = read_table(out / "lesions.csv")
    summary = json.loads((out / "adapter_summary.json").read_text())

    assert list(manifest.index) == [f"e{index}_R_CC" for index in range(5)]
    assert manifest["label"].tolist() == [1] * 5 and manifest["annotated"].all()
    for index in range(5):
        expected = tmp_path / "images" / "cohort_1" / f"p{index}" / f"e{index}" / "2d_RCC.dcm"
        assert manifest.loc[f"e{index}_R_CC", "ffdm_path"] == str(expected.resolve())
        assert_on_markers(copy, manifest, lesions, f"e{index}", "R", "CC")
    assert summary["paths"] == {
        "prefix_removed": {
            "./images/": 2,
            "/data/embed/dicom/": 2,
            "/mnt/NAS*/mammo/anon_dicom/": 4,
            "images/": 2,
        },
        "files_found": 10,
        "files_not_found": 0,
    }
    assert summary["excluded_pairs"]["dicom_file_not_found"] == 0
    assert (summary["pairs"], summary["positives"]) == (5, 5)

    # without the flag that start is not known: those two files are missing, and counted
    assert cli.main(argv) == 0
    summary = json.loads((out / "adapter_summary.json").read_text())
    assert summary["paths"]["prefix_removed"]["none"] == 2
    assert summary["paths"]["files_not_found"] == 2
    assert summary["excluded_pairs"]["dicom_file_not_found"] == 1
    assert summary["pairs"] == 4


def test_no_file_found_at_all_stops_with_the_path_and_folder(tmp_path, capsys):
    copy = EmbedCopy(tmp_path)
    copy.pair("p1", "e1", form="./images/")
    copy.finding("p1", "e1", "2020-02-02", "MG Screening Bilateral")
    metadata, clinical = copy.write()
    wrong_root = tmp_path / "images" / "cohort_1"  # one folder too deep
    with pytest.raises(EmbedPathError) as caught:
        build_tables(metadata, clinical, EmbedOptions(images_root=wrong_root))
    message = str(caught.value)
    assert f"{metadata} row 2, column anon_dicom_path" in message
    assert "none of the 2 image files listed was found" in message
    assert "'./images/cohort_1/p1/e1/2d_RCC.dcm'" in message
    assert f"as {wrong_root / 'cohort_1/p1/e1/2d_RCC.dcm'}" in message
    assert f"in the folder {wrong_root}" in message

    out = tmp_path / "out"
    argv = ["adapt", "embed", "--metadata", str(metadata), "--clinical", str(clinical)]
    assert cli.main([*argv, "--images-root", str(wrong_root), "--out", str(out)]) == 1
    assert "none of the 2 image files listed was found" in capsys.readouterr().err
    assert not (out / "manifest.csv").exists()


# ROI frames ---------------------------------------------------------------------------------

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


# Labels -------------------------------------------------------------------------------------


def follow_up_copy(root: Path) -> EmbedCopy:
    """Screening exams and the diagnostic exams that follow them."""
    copy = EmbedCopy(root)
    # BI-RADS 0, cancer (R) on a diagnostic 30 days later: the screening ROIs are the cancer
    copy.pair("p1", "s1", "R", "CC", lesions=[(0.3, 0.4)])
    copy.pair("p1", "s1", "L", "CC")
    copy.finding("p1", "s1", "2016-01-10", "MG Screening Bilateral w/CAD", "R", "A")
    copy.finding("p1", "s1", "2016-01-10", "MG Screening Bilateral w/CAD", "L", "N")
    copy.finding("p1", "d1", "2016-02-09", "MG Diagnostic Right", "R", "S", "0")
    # the same, 400 days later: past the 180-day window
    copy.pair("p2", "s2", "R", "CC", lesions=[(0.3, 0.4)])
    copy.finding("p2", "s2", "2016-01-10", "MG Screening Bilateral", "R", "A")
    copy.finding("p2", "d2", "2017-02-13", "MG Diagnostic Right", "R", "S", "0")
    # BI-RADS 1, cancer (L) on a diagnostic 200 days later: an interval cancer (365 days)
    copy.pair("p3", "s3", "L", "MLO")
    copy.finding("p3", "s3", "2018-05-01", "MG Screening Bilateral", "", "N")
    copy.finding("p3", "d3", "2018-11-17", "MG Diagnostic Left", "L", "M", "1")
    return copy


def test_pathology_is_carried_back_from_the_follow_up_within_the_window(tmp_path, capsys):
    copy = follow_up_copy(tmp_path)
    manifest, lesions, summary = copy.build()

    assert list(manifest.index) == ["s1_L_CC", "s1_R_CC", "s2_R_CC", "s3_L_MLO"]
    assert manifest["label"].tolist() == [0, 1, 0, 1]
    assert manifest["label_source"].fillna("").tolist() == [
        "", "follow_up_diagnostic", "", "follow_up_diagnostic"
    ]  # fmt: skip
    assert manifest["follow_up_exam_id"].fillna("").tolist() == ["", "d1", "", "d3"]
    assert manifest["follow_up_days"].fillna(-1).tolist() == [-1, 30, -1, 200]
    assert manifest["annotated_basis"].tolist() == [
        "no_malignant_finding", "malignant_with_roi", "no_malignant_finding",
        "malignant_without_roi",
    ]  # fmt: skip
    assert manifest["pathology"].tolist() == ["unknown", "malignant", "unknown", "malignant"]
    assert lesions.groupby("pair_id")["pathology"].agg(set).to_dict() == {
        "s1_R_CC": {"malignant"},
        "s2_R_CC": {"unknown"},
    }
    assert_on_markers(copy, manifest, lesions, "s1", "R", "CC")
    assert_on_markers(copy, manifest, lesions, "s2", "R", "CC")
    assert summary["labels"]["positives_by_source"] == {
        "own_exam": 0,
        "follow_up_diagnostic": 2,
        "follow_up_ultrasound": 0,
    }
    assert summary["labels"]["screening_pairs_with_follow_up"] == 2
    assert summary["positives"] == 2
    assert summary["conventions"]["label_window_days"] == {
        "after_birads_0": 180,
        "after_birads_1_2": 365,
    }

    # --label-window 0 is the old rule: the screening cancer is trained as background
    manifest, _, summary = copy.build(label_window=0)
    assert manifest["label"].tolist() == [0, 0, 0, 0]
    assert summary["labels"]["screening_pairs_with_follow_up"] == 0
    assert summary["conventions"]["label_window_days"] == 0
    # a longer window reaches the 400-day diagnostic, through the command line
    metadata, clinical = copy.write()
    argv = ["adapt", "embed", "--metadata", str(metadata), "--clinical", str(clinical)]
    argv += ["--images-root", str(tmp_path / "images"), "--out", str(tmp_path / "out")]
    assert cli.main([*argv, "--label-window", "500", "365"]) == 0
    capsys.readouterr()
    manifest = read_table(tmp_path / "out" / "manifest.csv").set_index("pair_id")
    assert manifest["label"].tolist() == [0, 1, 1, 1]
    assert manifest.loc["s2_R_CC", "follow_up_days"] == 400


def test_the_follow_up_columns_are_required_while_the_rule_is_on(tmp_path):
    copy = follow_up_copy(tmp_path)
    metadata, clinical = copy.write()
    pd.read_csv(clinical).drop(columns=["desc"]).to_csv(clinical, index=False)
    with pytest.raises(ValueError, match="column desc: missing required column .*--label-window"):
        build_tables(metadata, clinical, EmbedOptions(images_root=tmp_path / "images"))
    options = EmbedOptions(images_root=tmp_path / "images", label_window=0)
    manifest, _, _ = build_tables(metadata, clinical, options)
    assert manifest["label"].tolist() == [0, 0, 0, 0]


def test_a_pathology_side_b_or_empty_follows_bside(tmp_path):
    copy = EmbedCopy(tmp_path)
    # a screening BI-RADS 0; its bilateral diagnostic has a side-B finding biopsied on the L
    copy.pair("p1", "s1", "R", "CC", lesions=[(0.3, 0.4)])
    copy.pair("p1", "s1", "L", "CC", lesions=[(0.3, 0.6)])
    copy.finding("p1", "s1", "2016-01-10", "MG Screening Bilateral", "B", "A")
    copy.finding("p1", "d1", "2016-01-30", "MG Diagnostic Mammo Bilateral", "B", "S", "0", "L")
    # a diagnostic exam's own finding without a side, biopsied on the R
    copy.pair("p2", "d2", "R", "MLO", lesions=[(0.35, 0.5)])
    copy.pair("p2", "d2", "L", "MLO")
    copy.finding("p2", "d2", "2017-03-03", "MG Diagnostic Mammo Bilateral", "", "S", "1", "R")
    manifest, lesions, summary = copy.build()

    assert list(manifest.index) == ["s1_L_CC", "s1_R_CC", "d2_L_MLO", "d2_R_MLO"]
    assert manifest["label"].tolist() == [1, 0, 0, 1]
    assert manifest["label_source"].fillna("").tolist() == [
        "follow_up_diagnostic", "", "", "own_exam"
    ]  # fmt: skip
    # the R of s1 had its diagnostic (bilateral) but no pathology on that side
    assert manifest["follow_up_exam_id"].fillna("").tolist() == ["d1", "d1", "", ""]
    assert manifest["pathology"].tolist() == ["malignant", "unknown", "unknown", "malignant"]
    assert manifest["n_findings"].tolist() == [1, 1, 1, 1]  # the findings join both sides
    assert lesions.groupby("pair_id")["pathology"].agg(set).to_dict() == {
        "s1_L_CC": {"malignant"},
        "s1_R_CC": {"unknown"},
        "d2_R_MLO": {"malignant"},
    }
    for exam, laterality, view in (("s1", "L", "CC"), ("s1", "R", "CC"), ("d2", "R", "MLO")):
        assert_on_markers(copy, manifest, lesions, exam, laterality, view)
    assert summary["columns_read"]["bside"] is True
    assert summary["labels"]["positives_by_source"] == {
        "own_exam": 1,
        "follow_up_diagnostic": 1,
        "follow_up_ultrasound": 0,
    }
    assert summary["annotated"]["by_basis"] == {"malignant_with_roi": 2, "no_malignant_finding": 2}


def test_path_severity_6_excludes_the_exam_and_is_counted(tmp_path):
    copy = EmbedCopy(tmp_path)
    # a diagnostic exam with a non-breast cancer on the L: both breasts go
    copy.pair("p1", "d1", "L", "CC", lesions=[(0.3, 0.4)])
    copy.pair("p1", "d1", "R", "CC")
    copy.finding("p1", "d1", "2016-01-10", "MG Diagnostic Mammo Bilateral", "L", "S", "6")
    copy.finding("p1", "d1", "2016-01-10", "MG Diagnostic Mammo Bilateral", "R", "S", "4")
    # a screening exam whose follow-up found one on the R: that breast goes
    copy.pair("p2", "s2", "R", "CC", lesions=[(0.3, 0.4)])
    copy.pair("p2", "s2", "L", "CC", lesions=[(0.3, 0.6)])
    copy.finding("p2", "s2", "2016-05-05", "MG Screening Bilateral", "B", "A")
    copy.finding("p2", "d2", "2016-05-20", "MG Diagnostic Right", "R", "S", "6")
    # BI-RADS 5 without any pathology: kept, label 0, counted
    copy.pair("p3", "d3", "L", "MLO", lesions=[(0.3, 0.5)])
    copy.finding("p3", "d3", "2016-07-07", "MG Diagnostic Left", "L", "M")
    manifest, lesions, summary = copy.build()

    assert list(manifest.index) == ["s2_L_CC", "d3_L_MLO"]
    assert manifest["label"].tolist() == [0, 0]
    assert manifest["pathology"].tolist() == ["unknown", "unknown"]
    assert_on_markers(copy, manifest, lesions, "s2", "L", "CC")
    assert_on_markers(copy, manifest, lesions, "d3", "L", "MLO")
    assert set(lesions["pair_id"]) == {"s2_L_CC", "d3_L_MLO"}
    assert summary["excluded_pairs"] == {
        "path_severity_6": 2,
        "follow_up_path_severity_6": 1,
        "dicom_file_not_found": 0,
        "dicom_unreadable": 0,
    }
    assert summary["excluded_exams"] == {"path_severity_6": 1, "path_severity_6_in_clinical": 2}
    assert summary["labels"]["birads_5_or_6_without_pathology"] == {"pairs": 1, "exams": 1}
    assert summary["pairs"] == 2 and summary["positives"] == 0


# Pairing ------------------------------------------------------------------------------------


def test_the_2d_of_the_c_views_series_is_paired(tmp_path):
    copy = EmbedCopy(tmp_path)
    # key 1: the first 2D by path is of another series; the second shares the C-view's
    copy.image("p1", "e1", "a_2d", "2D", lesions=[(0.2, 0.3)], series=(71100000, 100000))
    copy.image("p1", "e1", "b_2d", "2D", lesions=[(0.4, 0.6)], series=(71300000, 101500))
    copy.image("p1", "e1", "cview", "cview", lesions=[(0.4, 0.6)], series=(71300000, 101500))
    # key 2: one series for all (EMBED's SeriesNumber often is); the nearest SeriesTime wins
    copy.image("p1", "e1", "a_2d_mlo", "2D", view="MLO", series=(71300000, 101900))
    copy.image("p1", "e1", "b_2d_mlo", "2D", view="MLO", series=(71300000, 102210))
    copy.image("p1", "e1", "cview_mlo", "cview", view="MLO", series=(71300000, 102213))
    # key 3: no series recorded: the one with ROIs, as before
    copy.image("p1", "e1", "a_2d_lcc", "2D", "L", extra={"SeriesNumber": ""})
    copy.image("p1", "e1", "b_2d_lcc", "2D", "L", lesions=[(0.3, 0.5)])
    copy.image("p1", "e1", "cview_lcc", "cview", "L")
    copy.finding("p1", "e1", "2019-09-09", "MG Diagnostic Mammo Bilateral", "R", "S", "0")
    manifest, lesions, summary = copy.build()

    assert list(manifest.index) == ["e1_L_CC", "e1_R_CC", "e1_R_MLO"]
    chosen = [Path(path).stem for path in manifest["ffdm_path"]]
    assert chosen == ["b_2d_lcc", "b_2d", "b_2d_mlo"]
    assert manifest["pairing_basis"].tolist() == ["with_rois", "same_series", "nearest_series_time"]
    assert manifest["label"].tolist() == [0, 1, 1]
    assert boxes_of(lesions, "e1_R_CC", "ffdm") == copy.expected[("e1", "b_2d", "2D")]
    assert boxes_of(lesions, "e1_R_CC", "sm") == copy.expected[("e1", "cview", "cview")]
    assert boxes_of(lesions, "e1_L_CC", "ffdm") == copy.expected[("e1", "b_2d_lcc", "2D")]
    assert summary["several_candidates"] == {
        "keys_with_several_2d": 3,
        "keys_with_several_cview": 0,
        "images_not_chosen": 3,
        "chosen_by": {"nearest_series_time": 1, "same_series": 1, "with_rois": 1},
    }
    assert summary["pair_series"] == {"same_series": 2, "other_series": 0, "series_unknown": 1}


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
