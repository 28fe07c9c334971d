"""EMBED-format copies for the EMBED adapter's tests (`tests/data_tools/embed/`).

The fixed copy (`write_embed_copy`, the `embed_copy` fixture of that folder's conftest.py)
follows the facts of EMBED's open-data tables: every ROI_coords form seen, both lateralities, a
spot view, a 2D image without its C-view (and the reverse), two 2D candidates for one key, a
finding with side B and one with no side, an exam missing from the clinical table, a
secondary-capture image type and an image without laterality.

The builder (`EmbedCopy`) writes tables laid out as EMBED publishes them, image by image, and
real DICOM files (pydicom) with a bright marker inside each lesion, so that a test can assert
the boxes land on the marker (`assert_on_markers`, within 1 px): per-ROI match levels, the
three path forms, the three ROI columns and their frames (PatientOrientation written into the
DICOM), series numbers and times.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from dicom_factory import breast_image, marker_box, write_mammogram

import cli
from data_tools.embed.adapter import build_tables
from data_tools.embed.options import EmbedOptions
from datamodules.manifest import validate

# The fixed copy -----------------------------------------------------------------------------

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
# study_date_anon, desc: diagnostic exams, so the follow-up rule (test_embed_labels.py)
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


# The builder --------------------------------------------------------------------------------

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
