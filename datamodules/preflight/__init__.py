"""What `PairedMammoDataModule.setup` checks of the splits a run reads before its first step
(`setup_check`: every image decoded or its cache entry read, every box followed through what
training does to it), and the per-image and per-box checks that ``python cli.py check-data``
(`data_tools.check`) runs over a whole data set with them.

Every problem is reported at once with its table row, pair id, file and reason
(`common.problems`). Warnings (a box the breast crop cuts off, a crop keeping little of
its image) are listed apart and do not fail.
Identifiers read from the DICOMs (PatientID, StudyInstanceUID, SOPInstanceUID) are compared
by hash and never printed.

The problem kinds are named in `common.problems` (and importable from here too).
Read in this order: ``settings`` (thresholds, the kinds that are warnings, `CheckSettings`,
`CheckReport`), ``dicom_checks`` (one DICOM's header), ``pair_checks`` (each pair's images, in
worker processes), ``table_checks`` (the tables against the images), ``runner``
(`setup_check`).
"""

from common.problems import (
    BOX_LOST,
    BOX_OUTSIDE,
    CACHE_ENTRY_DIFFERS,
    CACHE_SETTINGS,
    COLOUR,
    CORRUPT_DICOM,
    CROP_ENLARGED,
    CROP_SMALL,
    LATERALITY,
    MISSING_FILE,
    MULTI_FRAME,
    NO_LESION_TABLE,
    NO_PIXEL_DATA,
    NO_TARGET,
    NOT_DICOM,
    NOT_MG,
    SWAPPED,
    TOO_SMALL,
    TRUNCATED_DICOM,
    UNDECODABLE,
    UNREADABLE_CACHE_ENTRY,
    UNREADABLE_FILE,
    UNUSED_CLASS,
    VIEW,
    WRONG_KIND,
)
from datamodules.preflight.dicom_checks import read_header, structure_problems, tag_problems
from datamodules.preflight.runner import PARALLEL_FROM, setup_check
from datamodules.preflight.settings import (
    BOX_TOLERANCE,
    EXPECTED_MODALITY,
    MAX_UPSCALE,
    MIN_CROP_SHARE,
    MIN_TARGET_SIDE,
    PIXEL_TOLERANCE,
    WARNINGS,
    CheckReport,
    CheckSettings,
    DataCheckError,
    ImageProblem,
)
from datamodules.preflight.table_checks import (
    box_problems,
    kind_problems,
    target_problems,
    unused_class_problems,
)

__all__ = [
    "BOX_LOST",
    "BOX_OUTSIDE",
    "BOX_TOLERANCE",
    "CACHE_ENTRY_DIFFERS",
    "CACHE_SETTINGS",
    "COLOUR",
    "CORRUPT_DICOM",
    "CROP_ENLARGED",
    "CROP_SMALL",
    "EXPECTED_MODALITY",
    "LATERALITY",
    "MAX_UPSCALE",
    "MIN_CROP_SHARE",
    "MIN_TARGET_SIDE",
    "MISSING_FILE",
    "MULTI_FRAME",
    "NO_LESION_TABLE",
    "NO_PIXEL_DATA",
    "NO_TARGET",
    "NOT_DICOM",
    "NOT_MG",
    "PARALLEL_FROM",
    "PIXEL_TOLERANCE",
    "SWAPPED",
    "TOO_SMALL",
    "TRUNCATED_DICOM",
    "UNDECODABLE",
    "UNREADABLE_CACHE_ENTRY",
    "UNREADABLE_FILE",
    "UNUSED_CLASS",
    "VIEW",
    "WARNINGS",
    "WRONG_KIND",
    "CheckReport",
    "CheckSettings",
    "DataCheckError",
    "ImageProblem",
    "box_problems",
    "kind_problems",
    "read_header",
    "setup_check",
    "structure_problems",
    "tag_problems",
    "target_problems",
    "unused_class_problems",
]
