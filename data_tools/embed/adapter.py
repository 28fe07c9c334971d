"""EMBED (Emory Breast Imaging Dataset) open-data tables -> the paired manifest and lesion table.

``python cli.py adapt embed`` pairs each full-field 2D mammogram (FFDM) with the C-view (the
SM) of the same patient, exam, breast and view, turns EMBED's ROI columns into xyxy boxes in
each image's stored DICOM pixels, labels the pairs from the clinical table (carrying pathology
back from the diagnostic follow-up, as EMBED's own labelling notebook does), and writes
``manifest.csv``, ``lesions.csv`` (`datamodules.manifest`) and ``adapter_summary.json``.
``python cli.py adapt embed-check`` (``check.py``) draws a sample of the written boxes
beside their mirror images, so a user sees whether the ROI frame was read right.

Each step is a module of this package: reading the tables (``tables.py``; the ROI text in
``roi_text.py``), resolving the image paths (``paths.py``), pairing (``pairing.py``), placing
the boxes in the stored frame (``frames.py``) and labelling (``labels.py``); this module runs
them in order and writes the outputs, ``options.py`` holds `EmbedOptions` and ``cli.py`` the
command line.

The rules follow EMBED's public repository, Emory-HITI/EMBED_Open_Data (cited below by path):
``README.md`` sections VII-IX, ``resources/EMBED ROI Reference v1_2.pdf`` (the "ROI
reference"), ``resources/notebooks/{Sample_Notebook,DCM_to_PNG,screening_label_assignment}
.ipynb``, ``resources/datathon_notebooks/NUS_{roi_reference,example_pipeline}.ipynb`` and its
issue #9. Every rule is also written into the summary (``rules``, ``conventions``).

- Images: ``FinalImageType`` 2D (FFDM) or cview (SM); spot and magnification views
  (``spot_mag`` set), lateralities other than L/R and views outside the manifest's list are
  excluded and counted per reason.
- Paths: ``anon_dicom_path`` appears as ``/mnt/NAS2/mammo/anon_dicom/...`` (README),
  ``/mnt/NAS3/mammo/anon_dicom/...`` (NUS_roi_reference.ipynb), ``./images/...``
  (Sample_Notebook.ipynb) or ``images/...``; each known start is removed and the rest resolved
  under ``--images-root``. When none of the listed files exists the run stops.
- Pairing key: (``empi_anon``, ``acc_anon``, ``ImageLateralityFinal``, ``ViewPosition``). When
  a key has several images of a kind, the (2D, C-view) combination kept is, in order: both
  files exist, same ``SeriesNumber``, nearest ``SeriesTime`` (the 2D and C-view of one
  compression share both: NUS_roi_reference.ipynb), more images with ROIs, first by path; the
  deciding criterion of every choice is counted.
- ROIs: ``DCM_ROI_coords`` (stored DICOM pixels) where present, else ``PNG_ROI_coords``, else
  ``ROI_coords`` (both in the frame of EMBED's PNGs, turned to face right). A PNG-frame box is
  mirrored, x' = Columns - x, when EMBED flipped that image: ``PNG_flipped`` where the table
  has it, else EMBED's rule from the DICOM header (``PatientOrientation`` first value 'P', CC,
  MLO and ML views only: DCM_to_PNG.ipynb). Match levels are per ROI (``ROI_match_level`` or
  ``match_level``); ``num_roi``/``num_ROI`` is checked against the ROIs read.
- Labels: clinical rows join the image's breast by ``side`` (L/R, B or empty join both: README
  VIII); a pathology result joins the breast of ``bside`` where set. A screening exam also
  takes the pathology of the first diagnostic (or ultrasound) exam of the same patient and
  breast within 180 days after a BI-RADS 0 and 365 after a 1/2 (README IX,
  screening_label_assignment.ipynb). ``label`` 1 for ``path_severity`` 0 or 1; exams with a
  ``path_severity`` 6 (non-breast cancer) are excluded (NUS_example_pipeline.ipynb).
- Lesion pathology: EMBED does not link an ROI to one finding, so every ROI of an image gets
  the pair's worst pathology: malignant, else benign (biopsied), else unknown, with the most
  suspicious BI-RADS assessment kept beside it.
- ``annotated``: the exam is in the clinical table (it was read) and, for a malignant pair,
  at least one of its two images has an ROI; a malignant pair without boxes would teach the
  detector that the cancer is background.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from common.defaults import MODALITIES
from common.problems import Problem
from data_tools.embed.frames import _PLACED_COLUMNS, place_boxes
from data_tools.embed.labels import _flag, label_pairs
from data_tools.embed.options import EmbedOptions
from data_tools.embed.pairing import _exclusions, pair_images
from data_tools.embed.paths import KNOWN_PATH_PREFIXES, _resolve_paths
from data_tools.embed.tables import (
    _MAX_LISTED_ROWS,
    ROI_COLUMNS,
    EmbedTableError,
    read_clinical,
    read_metadata,
)
from datamodules.manifest import LESION_COLUMNS, validate, write_tables

SUMMARY_FILE = "adapter_summary.json"

_FRAME_RULES = {
    "dcm_roi_coords": "DCM_ROI_coords: stored DICOM pixels, never mirrored",
    "png_flipped": "mirrored where the table's PNG_flipped is true",
    "patient_orientation": (
        "mirrored where EMBED's DICOM-to-PNG conversion flipped the image: PatientOrientation "
        "(DICOM header) first value 'P', views CC/MLO/ML"
    ),
    "laterality_no_patient_orientation": (
        "no PatientOrientation in the header: mirrored for laterality R, views CC/MLO/ML"
    ),
    "laterality": "mirrored for laterality R (--orientation-from laterality)",
    "pixels": "mirrored where the brighter outer fifth of the pixels is on the right",
    "roi_frame_stored": "PNG_ROI_coords/ROI_coords taken as stored pixels (--roi-frame stored)",
}


def _conventions(options: EmbedOptions) -> dict:
    if options.roi_frame == "stored":
        mirror = "none: PNG-frame ROIs are taken as the stored DICOM's pixels (--roi-frame stored)"
    else:
        mirror = {
            "embed": "as EMBED flipped the image: PNG_flipped, else PatientOrientation",
            "laterality": "laterality R",
            "pixels": "the brighter outer fifth of the pixels is on the right",
        }[options.orientation_from]
        mirror = f"x' = Columns - x for the images EMBED's PNGs mirror (decided by: {mirror})"
    window = options.label_window
    return {
        "roi_coords": "EMBED (ymin, xmin, ymax, xmax) -> x1=xmin, y1=ymin, x2=xmax, y2=ymax",
        "roi_columns_preferred": list(ROI_COLUMNS),
        "roi_frame": options.roi_frame,
        "roi_frame_meaning": (
            "PNG_ROI_coords/ROI_coords are in EMBED's PNGs, turned to face right (chest wall on "
            "the left); DCM_ROI_coords in the stored DICOM"
            if options.roi_frame == "chest-wall-left"
            else "all ROI columns are taken as the stored image's pixels"
        ),
        "stored_orientation_from": options.orientation_from,
        "mirror": mirror,
        "frame_rules": dict(_FRAME_RULES),
        "lesion_boxes": "xyxy in each modality's stored DICOM pixels (before any flip)",
        "image_paths": "relative to the output folder" if options.relative_paths else "absolute",
        "images_root": os.path.abspath(options.images_root),
        "strip_prefixes": list(options.strip_prefixes),
        "known_path_prefixes": [name for _, name in KNOWN_PATH_PREFIXES],
        "label_window_days": (
            {"after_birads_0": window[0], "after_birads_1_2": window[1]} if options.follow_up else 0
        ),
    }


RULES = {
    "images": "FinalImageType 2D = FFDM, cview = SM; spot/magnification views excluded",
    "pairing": "key (empi_anon, acc_anon, ImageLateralityFinal, ViewPosition)",
    "several_candidates": (
        "per key, keep the (2D, C-view) combination with: both files existing, then the same "
        "SeriesNumber, then the nearest SeriesTime, then more images with ROIs, then the first "
        "by path"
    ),
    "rois": (
        "DCM_ROI_coords where present, else PNG_ROI_coords, else ROI_coords; one match level "
        "per ROI (ROI_match_level, else match_level)"
    ),
    "findings": (
        "clinical rows with the exam's acc_anon and side = laterality, B or empty; a pathology "
        "result by bside where set"
    ),
    "follow_up": (
        "a screening exam takes the pathology of its first diagnostic (or more severe "
        "ultrasound) exam of the same patient and breast within the label window after a "
        "BI-RADS 0 (first number) or 1/2 (second number)"
    ),
    "label": "1 if the breast's own or carried-back pathology has path_severity 0 or 1",
    "excluded_exams": "exams with a path_severity 6 (non-breast cancer), own or carried back",
    "lesion_pathology": (
        "the pair's worst pathology: malignant (path_severity 0/1), else benign (biopsied), "
        "else unknown (never biopsied); birads = most suspicious assessment"
    ),
    "annotated": (
        "the exam is in the clinical table and, for label 1, an image of the pair has an ROI"
    ),
}


def build_tables(
    metadata_path: str | os.PathLike, clinical_path: str | os.PathLike, options: EmbedOptions
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(manifest, lesions, summary) from EMBED's metadata and clinical tables.

    Raises `EmbedTableError` listing every missing column and unreadable value (file, row as
    a spreadsheet shows it, column) of both tables, and `EmbedPathError` when none of the
    listed image files exists (with ``check_files``).
    """
    metadata_path, clinical_path = Path(metadata_path), Path(clinical_path)
    problems: list[Problem] = []
    images = read_metadata(metadata_path, problems)
    clinical = read_clinical(clinical_path, problems, follow_up=options.follow_up)
    if problems:
        raise EmbedTableError(problems)
    columns = images.attrs["columns"]
    summary: dict = {
        "inputs": {
            "metadata": metadata_path.name,
            "metadata_rows": len(images),
            "clinical": clinical_path.name,
            "clinical_rows": len(clinical),
        },
        "columns_read": {**columns, "bside": bool((clinical["bside"] != "").any())},
        "images": {
            "2d": int((images["kind"] == "ffdm").sum()),
            "cview": int((images["kind"] == "sm").sum()),
            "other_type": int((images["kind"] == "").sum()),
        },
    }
    differs = images["num_roi"].notna() & (images["num_roi"] != images["n_rois"])
    with_rois = images[images["roi_column"] != ""]
    summary["roi_table"] = {
        "images_by_column": {
            column: int((with_rois["roi_column"] == column).sum()) for column in columns["roi"]
        },
        "num_roi_differs": int(differs.sum()),
        "num_roi_differs_metadata_rows": images.loc[differs, "row"].tolist()[:_MAX_LISTED_ROWS],
        "match_level_count_differs": int(images["levels_differ"].sum()),
        "match_level_count_differs_metadata_rows": images.loc[
            images["levels_differ"], "row"
        ].tolist()[:_MAX_LISTED_ROWS],
    }

    reasons = _exclusions(images)
    summary["excluded_images"] = {
        reason: int(count) for reason, count in reasons[reasons != ""].value_counts().items()
    }
    images = images[reasons == ""].copy()
    images = _resolve_paths(images, metadata_path, options, summary)
    images["has_rois"] = images["n_rois"] > 0
    pairs = pair_images(images, summary)

    summary["excluded_pairs"] = {}
    pairs = label_pairs(pairs, clinical, options, summary)
    if options.check_files:
        missing = ~(pairs["exists_ffdm"] & pairs["exists_sm"])
        summary["excluded_pairs"]["dicom_file_not_found"] = int(missing.sum())
        pairs = pairs[~missing]
    pairs = pairs.reset_index(drop=True)
    pairs["position"] = pairs.index
    lesion_rows, unreadable = place_boxes(pairs, options, summary)
    summary["excluded_pairs"]["dicom_unreadable"] = len(unreadable)
    pairs = pairs[~pairs["position"].isin(sorted(unreadable))]
    lesions = pd.DataFrame(lesion_rows, columns=list(_PLACED_COLUMNS))
    lesions = lesions[~lesions["position"].isin(sorted(unreadable))]

    density = clinical.groupby("exam")["density"].max()
    manifest = _manifest(pairs, set(clinical["exam"]), density)
    lesions = _lesions(lesions, manifest)
    _count(summary, manifest, lesions, options)
    return manifest.reset_index(drop=True), lesions, summary


def _manifest(pairs: pd.DataFrame, read_exams: set, density: pd.Series) -> pd.DataFrame:
    """Manifest rows (indexed by the pairs' positions) with EMBED's extra columns."""
    malignant = pairs["label"].to_numpy(dtype=int) == 1
    biopsied = _flag(pairs["biopsied"])
    has_rois = ((pairs["n_rois_ffdm"] + pairs["n_rois_sm"]) > 0).to_numpy(dtype=bool)
    in_clinical = pairs["exam"].isin(read_exams).to_numpy(dtype=bool)
    basis = np.select(
        [~in_clinical, malignant & ~has_rois, malignant],
        ["exam_not_in_clinical", "malignant_without_roi", "malignant_with_roi"],
        "no_malignant_finding",
    )
    manifest = pd.DataFrame(
        {
            # no patient id in the pair id: it names images in logs and prediction files
            "pair_id": pairs["exam"].str.cat([pairs["laterality"], pairs["view"]], sep="_"),
            "patient_id": pairs["patient"],
            "exam_id": pairs["exam"],
            "laterality": pairs["laterality"],
            "view": pairs["view"],
            "sm_path": [os.path.abspath(path) for path in pairs["path_sm"]],
            "ffdm_path": [os.path.abspath(path) for path in pairs["path_ffdm"]],
            "label": malignant.astype(int),
            "annotated": np.isin(basis, ["malignant_with_roi", "no_malignant_finding"]),
            "annotated_basis": basis,
            "pathology": np.where(malignant, "malignant", np.where(biopsied, "benign", "unknown")),
            "path_severity": pairs["path_severity"],
            "label_source": pairs["label_source"],
            "follow_up_exam_id": pairs["fu_exam"],
            "follow_up_days": pairs["fu_days"],
            "asses": pairs["asses"].fillna(""),
            "birads": pairs["birads"],
            "n_findings": pairs["n_findings"].fillna(0).astype(int),
            "density": pairs["exam"].map(density),
            "manufacturer": pairs["manufacturer_ffdm"].where(
                pairs["manufacturer_ffdm"] != "", pairs["manufacturer_sm"]
            ),
            "pairing_basis": pairs["pairing_basis"],
            "ffdm_rois": pairs["n_rois_ffdm"].astype(int),
            "sm_rois": pairs["n_rois_sm"].astype(int),
            "ffdm_metadata_row": pairs["row_ffdm"].astype(int),
            "sm_metadata_row": pairs["row_sm"].astype(int),
        }
    )
    manifest.index = pairs["position"].to_numpy()
    return manifest


def _lesions(lesions: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    columns = [
        *LESION_COLUMNS,
        "match_level",
        "birads",
        "path_severity",
        "roi_index",
        "roi_column",
        "frame_rule",
        "mirrored",
        "metadata_row",
    ]
    if not len(lesions):
        return pd.DataFrame({column: [] for column in columns})
    pair = manifest.loc[lesions["position"]]
    lesions = lesions.assign(
        pair_id=pair["pair_id"].to_numpy(),
        pathology=pair["pathology"].to_numpy(),
        birads=pair["birads"].to_numpy(),
        path_severity=pair["path_severity"].to_numpy(),
    )
    lesions = lesions.assign(modality_order=lesions["modality"].map({"ffdm": 0, "sm": 1}))
    lesions = lesions.sort_values(["position", "modality_order", "roi_index"])
    return lesions[columns].reset_index(drop=True)


def _count(summary: dict, manifest: pd.DataFrame, lesions: pd.DataFrame, options) -> None:
    summary["pairs"] = len(manifest)
    summary["patients"] = int(manifest["patient_id"].nunique())
    summary["exams"] = int(manifest["exam_id"].nunique())
    summary["positives"] = int(manifest["label"].sum())
    summary["annotated"] = {
        "true": int(manifest["annotated"].sum()),
        "false": int((~manifest["annotated"]).sum()),
        "by_basis": {k: int(v) for k, v in manifest["annotated_basis"].value_counts().items()},
    }
    summary["pairs_by_pathology"] = {
        k: int(v) for k, v in manifest["pathology"].value_counts().items()
    }
    summary["lesions"] = {kind: int((lesions["modality"] == kind).sum()) for kind in MODALITIES}
    summary["lesions_by_pathology"] = {
        kind: {
            k: int(v)
            for k, v in lesions.loc[lesions["modality"] == kind, "pathology"].value_counts().items()
        }
        for kind in MODALITIES
    }
    levels = lesions["match_level"].map(lambda v: "missing" if pd.isna(v) else f"{v:g}")
    summary["lesions_by_match_level"] = {k: int(v) for k, v in levels.value_counts().items()}
    summary["conventions"] = _conventions(options)
    summary["rules"] = dict(RULES)


def adapt(
    metadata_path: str | os.PathLike,
    clinical_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: EmbedOptions,
) -> dict:
    """Build, validate (`datamodules.manifest.validate`) and write the tables and the summary;
    return the summary."""
    out_dir = Path(out_dir)
    manifest, lesions, summary = build_tables(metadata_path, clinical_path, options)
    if options.relative_paths:
        for column in ("sm_path", "ffdm_path"):
            manifest[column] = [
                os.path.relpath(path, os.path.abspath(out_dir)) for path in manifest[column]
            ]
    manifest = manifest.reset_index(drop=True)
    validate(
        manifest,
        lesions,
        manifest_name=str(out_dir / "manifest.csv"),
        lesions_name=str(out_dir / "lesions.csv"),
    )
    manifest_file, lesions_file = write_tables(out_dir, manifest, lesions)
    summary["outputs"] = {"manifest": manifest_file.name, "lesions": lesions_file.name}
    with open(out_dir / SUMMARY_FILE, "w") as stream:
        json.dump(summary, stream, indent=2)
        stream.write("\n")
    return summary
