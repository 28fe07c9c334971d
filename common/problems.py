"""One problem type and one formatter for every validator: the manifest and lesion tables, the
EMBED adapter, ``cli.py evaluate``'s CSV files and ``cli.py check-data``'s image checks.

A `Problem` says where (the file, its row as a spreadsheet shows it, the column), which pair
and which image or cache file it concerns, and why; `format_problems` lists many at once.
Every problem kind is named here once (`KINDS`): the words are in saved reports, JSON and tests,
so a kind's value never changes; the two kinds built from a column's name are templates
(`KIND_TEMPLATES`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

ROW_CONVENTION = "row numbers count the header as row 1, as a spreadsheet shows the file"
MAX_LISTED = 200

# -- problem kinds (`Problem.kind`; `format_problems` and the data check's report count them) --
# A Problem made without a kind.
DEFAULT_KIND = "problem"

# Several readers: the manifest and lesion tables, the EMBED adapter, evaluate's files.
MISSING_COLUMN = "missing column"
EMPTY_VALUE = "empty value"
# A table or image file check-data cannot find or read; evaluate's unreadable files too.
MISSING_FILE = "missing file"
UNREADABLE_FILE = "unreadable file"

# The manifest and lesion tables (`datamodules.manifest.validate`); PATIENT_IN_TWO_SPLITS is
# also check-data's DICOM patient in two splits.
UNKNOWN_LATERALITY = "unknown laterality"
UNKNOWN_VIEW = "unknown view"
LABEL_NOT_0_OR_1 = "label not 0/1"
ANNOTATED_NOT_BOOLEAN = "annotated not boolean"
DUPLICATE_PAIR_ID = "duplicate pair_id"
DUPLICATE_SM_PATH = "duplicate sm_path"
DUPLICATE_FFDM_PATH = "duplicate ffdm_path"
SAME_SM_AND_FFDM_PATH = "sm_path = ffdm_path"
UNKNOWN_SPLIT = "unknown split"
PATIENT_IN_TWO_SPLITS = "patient in two splits"
LESION_OF_UNKNOWN_PAIR = "lesion of unknown pair"
UNKNOWN_MODALITY = "unknown modality"
UNKNOWN_PATHOLOGY = "unknown pathology"
COORDINATE_NOT_A_NUMBER = "coordinate not a number"

# One DICOM file (`datamodules.preflight`: its header, what the reader refuses, its tags).
NOT_DICOM = "not a DICOM file"
CORRUPT_DICOM = "corrupt DICOM"
TRUNCATED_DICOM = "truncated DICOM"
NO_PIXEL_DATA = "no pixel data"
UNDECODABLE = "pixel data cannot be decoded"
NOT_MG = "modality not MG"
MULTI_FRAME = "multi-frame image"
COLOUR = "colour image"
TOO_SMALL = "image far smaller than the input"
LATERALITY = "laterality disagrees with the manifest"
VIEW = "view disagrees with the manifest"

# Pixel content the DICOM reader refuses (`datamodules.dicom.ImageContentError.kind`).
NON_FINITE = "non-finite pixels"
CONSTANT = "constant pixels"

# Each image's breast crop and cache entry (`datamodules.preflight`); an entry ``prepare``
# could not read back is UNREADABLE_CACHE_ENTRY too.
CROP_ENLARGED = "breast crop enlarged too much"
CROP_SMALL = "breast crop keeps little of the image"
UNREADABLE_CACHE_ENTRY = "unreadable cache entry"
CACHE_SETTINGS = "cache made with other settings"
CACHE_ENTRY_DIFFERS = "cache entry differs from its DICOM"

# The tables against the images (`datamodules.preflight`).
WRONG_KIND = "image of the other modality"
SWAPPED = "SM and FFDM swapped"
BOX_OUTSIDE = "box outside its image"
NO_TARGET = "label 1 without a target box"
BOX_LOST = "box lost in preprocessing"
UNUSED_CLASS = "pathology class without lesions"
NO_LESION_TABLE = "no lesion table"

# The checks only a whole data set allows (`data_tools.check`, ``cli.py check-data``).
PATIENT_DIFFERS = "SM and FFDM of different patients"
STUDY_DIFFERS = "SM and FFDM of different studies"
DUPLICATE_IMAGE = "duplicate image"
DUPLICATE_VIEW = "duplicate exam view"
EXAM_OF_TWO_PATIENTS = "exam of two patients"
LABEL_WITHOUT_LESION = "label 1 without a malignant lesion"
LESION_WITH_LABEL_0 = "malignant lesion with label 0"
NO_ROWS = "no rows"

# An image ``cli.py prepare`` could not cache (`data_tools.prepare`).
UNREADABLE_IMAGE = "unreadable image"

# A file of the SM folder predicted from (`datamodules.folder`).
NOT_AN_SM = "not an SM"

# The EMBED adapter (`data_tools.embed`): no image file of the metadata table found.
NO_IMAGE_FILE_FOUND = "no image file found"

# ``cli.py evaluate``'s tables (`metrics.evaluate`).
FILE_NOT_FOUND = "file not found"
EMPTY_FILE = "empty file"
NO_IMAGES = "no images"
NO_DETECTIONS = "no detections"
DUPLICATE_IMAGE_ID = "duplicate image_id"
IMAGE_ID_NOT_LISTED = "image_id not listed"
NOT_A_NUMBER = "not a number"
SCORE_OUTSIDE = "score outside [0, 1]"
LESION_OUTSIDE = "lesion outside its image"
DETECTION_OUTSIDE = "detection outside its image"
DUPLICATE_ROW = "duplicate row"

KINDS = (
    DEFAULT_KIND,
    MISSING_COLUMN,
    EMPTY_VALUE,
    MISSING_FILE,
    UNREADABLE_FILE,
    UNKNOWN_LATERALITY,
    UNKNOWN_VIEW,
    LABEL_NOT_0_OR_1,
    ANNOTATED_NOT_BOOLEAN,
    DUPLICATE_PAIR_ID,
    DUPLICATE_SM_PATH,
    DUPLICATE_FFDM_PATH,
    SAME_SM_AND_FFDM_PATH,
    UNKNOWN_SPLIT,
    PATIENT_IN_TWO_SPLITS,
    LESION_OF_UNKNOWN_PAIR,
    UNKNOWN_MODALITY,
    UNKNOWN_PATHOLOGY,
    COORDINATE_NOT_A_NUMBER,
    NOT_DICOM,
    CORRUPT_DICOM,
    TRUNCATED_DICOM,
    NO_PIXEL_DATA,
    UNDECODABLE,
    NOT_MG,
    MULTI_FRAME,
    COLOUR,
    TOO_SMALL,
    LATERALITY,
    VIEW,
    NON_FINITE,
    CONSTANT,
    CROP_ENLARGED,
    CROP_SMALL,
    UNREADABLE_CACHE_ENTRY,
    CACHE_SETTINGS,
    CACHE_ENTRY_DIFFERS,
    WRONG_KIND,
    SWAPPED,
    BOX_OUTSIDE,
    NO_TARGET,
    BOX_LOST,
    UNUSED_CLASS,
    NO_LESION_TABLE,
    PATIENT_DIFFERS,
    STUDY_DIFFERS,
    DUPLICATE_IMAGE,
    DUPLICATE_VIEW,
    EXAM_OF_TWO_PATIENTS,
    LABEL_WITHOUT_LESION,
    LESION_WITH_LABEL_0,
    NO_ROWS,
    UNREADABLE_IMAGE,
    NOT_AN_SM,
    NO_IMAGE_FILE_FOUND,
    FILE_NOT_FOUND,
    EMPTY_FILE,
    NO_IMAGES,
    NO_DETECTIONS,
    DUPLICATE_IMAGE_ID,
    IMAGE_ID_NOT_LISTED,
    NOT_A_NUMBER,
    SCORE_OUTSIDE,
    LESION_OUTSIDE,
    DETECTION_OUTSIDE,
    DUPLICATE_ROW,
)

# Kinds built from a column's name: the wording is fixed here, the column filled in
# (``str.format``) where the problem is found.
# The EMBED adapter: a value it cannot read, e.g. "bad SeriesTime" (`data_tools.embed.tables`).
BAD_VALUE = "bad {column}"
# The box rule broken, "x2 <= x1" or "y2 <= y1" (`common.tables.inverted_kind`).
INVERTED_BOX = "{high} <= {low}"
KIND_TEMPLATES = (BAD_VALUE, INVERTED_BOX)


@dataclass(frozen=True)
class Problem:
    """One problem: where it is, what it concerns and what is wrong.

    ``file``: the table (or other file) the problem is in; ``row``: its row as a spreadsheet
    shows the file (header = row 1, first data row = row 2), None for the whole file;
    ``column``: the column, None for a whole row or file; ``reason``: what is wrong;
    ``kind``: a short category, one of `KINDS` or made from `KIND_TEMPLATES` (counted by
    `format_problems`); ``pair_id``: the pair the row
    belongs to; ``path``: the image or cache file the row points at, when that file is where
    the problem was found.
    """

    file: str
    row: int | None
    column: str | None
    reason: str
    kind: str = DEFAULT_KIND
    pair_id: str | None = None
    path: str | None = None

    @property
    def message(self) -> str:
        """The reason (the name the field had before the types were shared)."""
        return self.reason

    def location(self) -> str:
        where = self.file
        if self.row is not None:
            where += f" row {self.row}"
        if self.column is not None:
            where += f", column {self.column}" if self.row is not None else f" column {self.column}"
        return where

    def __str__(self) -> str:
        details = []
        if self.pair_id:
            details.append(f"pair {self.pair_id}")
        if self.path:
            details.append(f"file {self.path}")
        suffix = f" ({', '.join(details)})" if details else ""
        return f"{self.location()}: {self.reason}{suffix}"

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of the fields."""
        return asdict(self)


def format_problems(
    problems: Sequence[Problem],
    subject: str = "the input",
    limit: int = MAX_LISTED,
    more: str | None = None,
    rows_note: bool = True,
    by_kind: bool = True,
) -> str:
    """A heading with the count, one indented line per problem (the first ``limit``), the
    number left out (``more`` says where the rest are) and the count of each kind."""
    problems = list(problems)
    note = f" ({ROW_CONVENTION}; row 2 is the first data row)" if rows_note else ""
    lines = [f"{len(problems)} problem(s) in {subject}{note}:"]
    lines += [f"  {problem}" for problem in problems[:limit]]
    if len(problems) > limit:
        where = f" ({more})" if more else ""
        lines.append(f"  ... and {len(problems) - limit} more{where}")
    if by_kind and problems:
        kinds = Counter(problem.kind for problem in problems)
        lines.append("by kind: " + ", ".join(f"{kind}: {n}" for kind, n in sorted(kinds.items())))
    return "\n".join(lines)


class ProblemsError(ValueError):
    """Bad input; ``problems`` lists every `Problem` found and the message formats them."""

    subject = "the input"
    more = None  # where the problems left out of the message are

    def __init__(
        self, problems: Sequence[Problem], subject: str | None = None, hint: str | None = None
    ):
        self.problems = list(problems)
        if subject is not None:
            self.subject = subject
        message = format_problems(self.problems, self.subject, more=self.more)
        super().__init__(message + (f"\n{hint}" if hint else ""))
