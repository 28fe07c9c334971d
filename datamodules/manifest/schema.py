"""The manifest's and lesion table's schema: their columns, the values a category column
allows and the tables' file names."""

from __future__ import annotations

from common.tables import BOX_COLUMNS

MANIFEST_COLUMNS = (
    "pair_id",
    "patient_id",
    "exam_id",
    "laterality",
    "view",
    "sm_path",
    "ffdm_path",
    "label",
    "annotated",
)
OPTIONAL_MANIFEST_COLUMNS = ("split",)
LESION_COLUMNS = ("pair_id", "modality", *BOX_COLUMNS, "pathology")

LATERALITIES = ("L", "R")
# ACR/DICOM view codes of mammography (ViewCodeSequence abbreviations).
VIEWS = ("CC", "MLO", "ML", "LM", "LMO", "FB", "SIO", "XCCL", "XCCM", "AT", "CV")
SPLITS = ("train", "val", "test")
PATHOLOGIES = ("malignant", "benign", "unknown")
MANIFEST_FILE = "manifest.csv"
LESIONS_FILE = "lesions.csv"
