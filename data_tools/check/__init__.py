"""``python cli.py check-data``: every row of a manifest and every file it names checked before a
GPU hour is spent, with the reader training uses (`datamodules.preflight`, whose per-image and
per-box checks `PairedMammoDataModule.setup` runs too), and the checks only a whole data set
allows (labels against the lesion table, identities across pairs and splits).

    python cli.py check-data --config configs/data/phantom.yaml [--json FILE] [--workers N]
    python cli.py check-data --manifest M [--lesions L] [--cache-dir C] [--image-size H W]

Every problem is reported at once with its table row, pair id, file and reason
(`common.problems`); the exit status is 1 when there is any. Warnings (a box the breast
crop cuts off, a crop keeping little of its image) are listed apart and do not fail.
Identifiers read from the DICOMs (PatientID, StudyInstanceUID, SOPInstanceUID) are compared
by hash and never printed.
Only annotated pairs have their files checked: the others never reach training.

Every name others use is importable from here. Read in this order: ``dataset_checks`` (the
whole-data-set checks), ``run`` (``check_data``, ``refusals``),
``cli`` (the parser, ``settings_from_configs``, ``main`` and the report it writes).
"""

# check-data's problem kinds, importable from here (CONSTANT and NON_FINITE are the reader's
# kinds of refused pixel content)
from common.problems import (
    CONSTANT,
    DUPLICATE_IMAGE,
    DUPLICATE_VIEW,
    EXAM_OF_TWO_PATIENTS,
    LABEL_WITHOUT_LESION,
    LESION_WITH_LABEL_0,
    NO_ROWS,
    NON_FINITE,
    PATIENT_DIFFERS,
    PATIENT_IN_TWO_SPLITS,
    STUDY_DIFFERS,
)
from data_tools.check.cli import build_parser, main, settings_from_configs
from data_tools.check.dataset_checks import PLACEHOLDER_PATIENTS
from data_tools.check.run import check_data, refusals

__all__ = [
    "CONSTANT",
    "DUPLICATE_IMAGE",
    "DUPLICATE_VIEW",
    "EXAM_OF_TWO_PATIENTS",
    "LABEL_WITHOUT_LESION",
    "LESION_WITH_LABEL_0",
    "NON_FINITE",
    "NO_ROWS",
    "PATIENT_DIFFERS",
    "PATIENT_IN_TWO_SPLITS",
    "PLACEHOLDER_PATIENTS",
    "STUDY_DIFFERS",
    "build_parser",
    "check_data",
    "main",
    "refusals",
    "settings_from_configs",
]
