"""What `PairedMammoDataModule.setup` checks of the splits a run reads before its first step
(`setup_check`: every image decoded or its cache entry read, every box followed through what
training does to it), and the per-image and per-box checks that ``python cli.py check-data``
(`data_tools.check`) runs over a whole data set with them.

Every problem is reported at once with its table row, pair id, file and reason
(`datamodules.problems`). Warnings (a box the breast crop cuts off, a crop keeping little of
its image) are listed apart and do not fail.
Identifiers read from the DICOMs (PatientID, StudyInstanceUID, SOPInstanceUID) are compared
by hash and never printed.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from common.defaults import IMAGE_SIZE, MODALITIES, SPLIT_FRACTIONS
from common.parallel import run_parallel
from datamodules.cache import CACHE_INFO, CacheEntryError, ImageCache
from datamodules.dicom import (
    DEFAULT_MARGIN,
    DicomReadError,
    Geometry,
    ImageContentError,
    dicom_laterality,
    image_kind,
    input_boxes,
    load_image,
)
from datamodules.manifest import LATERALITIES, ROW_COLUMN, VIEWS, resolve_table_paths
from datamodules.problems import Problem, ProblemsError

EXPECTED_MODALITY = "MG"
# An image whose whole extent, or whose breast crop, must be enlarged more than this to fill
# the model's input is "far smaller" than it (a 16x16 thumbnail, a wrong file, a breast not
# found: a near-black image with one bright pixel cropped to 5x5); the phantom's crops are
# enlarged at most 2.5x at 320x256.
MAX_UPSCALE = 4.0
# A breast crop keeping less than this share of the image's area is reported: the breast was
# probably not found (the phantom's keep 11% or more).
MIN_CROP_SHARE = 0.05
# A target box narrower or shorter than this many input pixels is too small to learn from.
MIN_TARGET_SIDE = 1.0
# Boxes may pass their image's edge by this many pixels (annotation tools round outward).
BOX_TOLERANCE = 1.0
# A cache entry and its DICOM read now may differ by the entry's uint16 rounding.
PIXEL_TOLERANCE = 2.0 / 65535
_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}

# Problem kinds (the report counts them).
MISSING_FILE = "missing file"
UNREADABLE_FILE = "unreadable file"
NOT_DICOM = "not a DICOM file"
CORRUPT_DICOM = "corrupt DICOM"
TRUNCATED_DICOM = "truncated DICOM"
NO_PIXEL_DATA = "no pixel data"
UNDECODABLE = "pixel data cannot be decoded"
NOT_MG = "modality not MG"
MULTI_FRAME = "multi-frame image"
COLOUR = "colour image"
TOO_SMALL = "image far smaller than the input"
CROP_ENLARGED = "breast crop enlarged too much"
CROP_SMALL = "breast crop keeps little of the image"
WRONG_KIND = "image of the other modality"
SWAPPED = "SM and FFDM swapped"
LATERALITY = "laterality disagrees with the manifest"
VIEW = "view disagrees with the manifest"
BOX_OUTSIDE = "box outside its image"
NO_TARGET = "label 1 without a target box"
BOX_LOST = "box lost in preprocessing"
UNUSED_CLASS = "pathology class without lesions"
NO_LESION_TABLE = "no lesion table"
UNREADABLE_CACHE_ENTRY = "unreadable cache entry"
CACHE_SETTINGS = "cache made with other settings"
CACHE_ENTRY_DIFFERS = "cache entry differs from its DICOM"
# Kinds reported without failing: the data still trains, but not quite as the table says.
WARNINGS = frozenset({CROP_SMALL, BOX_LOST})


class ImageProblem(Exception):
    """One image cannot be used: ``kind`` and ``reason`` (no path: the caller knows it)."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class DataCheckError(ProblemsError):
    """The data a run is about to train on or evaluate has problems (`setup_check`);
    ``problems`` lists every one."""

    subject = "the data"
    more = "all in DataCheckError.problems"


# -- one DICOM --------------------------------------------------------------------------------
def read_header(path: str | os.PathLike) -> pydicom.Dataset:
    """The DICOM header without the pixel data (pydicom's ``stop_before_pixels``), after
    checking from the pixel data's element header, without reading it, that the file holds
    all of it. Raises `ImageProblem` for a missing, unreadable, non-DICOM, corrupt or truncated
    file and for one without pixel data."""
    path = os.fspath(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise ImageProblem(UNREADABLE_FILE, "is a folder, not a file")
        with open(path, "rb") as stream, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about odd values; the checks report
            dataset = pydicom.dcmread(stream, stop_before_pixels=True)
            _check_pixel_element(stream, dataset, info.st_size)
    except ImageProblem:
        raise
    except FileNotFoundError:
        raise ImageProblem(MISSING_FILE, "file not found") from None
    except InvalidDicomError:
        raise ImageProblem(
            NOT_DICOM, "not a DICOM file (no 'DICM' prefix and no file meta information)"
        ) from None
    except OSError as error:
        raise ImageProblem(UNREADABLE_FILE, f"cannot be read ({error.strerror or error})") from None
    except Exception as error:  # noqa: BLE001 - pydicom's parse errors have no common type
        raise ImageProblem(
            CORRUPT_DICOM, f"cannot parse the DICOM header ({type(error).__name__}: {error})"
        ) from None
    return dataset


def _check_pixel_element(stream, dataset: pydicom.Dataset, size: int) -> None:
    """The stream stands where pydicom stopped, before the pixel data element: read its header
    and check that the file holds the value it announces (native) or every fragment up to the
    sequence delimiter (encapsulated), by seeking alone."""
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return  # the stream position is inside the inflated data set; the decoder will tell
    implicit, little = dataset.original_encoding
    endian = "<" if little else ">"
    start = stream.tell()
    head = stream.read(8)
    if len(head) < 8:
        raise ImageProblem(
            NO_PIXEL_DATA,
            f"no pixel data: the file ends after its header, at byte {start} (truncated, or "
            "not an image)",
        )
    tag = struct.unpack(endian + "HH", head[:4])
    if tag not in _PIXEL_TAGS:
        raise ImageProblem(NO_PIXEL_DATA, f"no pixel data (element ({tag[0]:04X},{tag[1]:04X}) "
                                          f"at byte {start})")
    if implicit:
        length = struct.unpack(endian + "L", head[4:8])[0]
    elif head[4:6] in _LONG_VRS:
        extra = stream.read(4)
        if len(extra) < 4:
            raise ImageProblem(TRUNCATED_DICOM, "truncated: the file ends inside the pixel data")
        length = struct.unpack(endian + "L", extra)[0]
    else:
        length = struct.unpack(endian + "H", head[6:8])[0]
    value_start = stream.tell()
    if length == 0xFFFFFFFF:
        _check_fragments(stream, size)
        return
    if value_start + length > size:
        raise ImageProblem(
            TRUNCATED_DICOM,
            f"truncated: the pixel data needs {length} bytes, the file holds "
            f"{size - value_start} after its header",
        )
    expected = _native_length(dataset, tag)
    if expected is not None and length < expected:
        raise ImageProblem(
            CORRUPT_DICOM,
            f"the pixel data holds {length} bytes, its header ({dataset.get('Rows')}x"
            f"{dataset.get('Columns')} pixels, {dataset.get('BitsAllocated')} bits) needs "
            f"{expected}",
        )


def _check_fragments(stream, size: int) -> None:
    while True:
        at = stream.tell()
        item = stream.read(8)
        if len(item) < 8:
            raise ImageProblem(
                TRUNCATED_DICOM,
                f"truncated: the file ends inside the compressed pixel data, at byte {at}",
            )
        group, element, length = struct.unpack("<HHL", item)
        if (group, element) == (0xFFFE, 0xE0DD):
            return
        if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            raise ImageProblem(
                CORRUPT_DICOM,
                f"the compressed pixel data is malformed (({group:04X},{element:04X}) at byte "
                f"{at}, where a fragment item was expected)",
            )
        if at + 8 + length > size:
            raise ImageProblem(
                TRUNCATED_DICOM,
                f"truncated: a fragment of the compressed pixel data needs {length} bytes, "
                f"the file holds {size - at - 8}",
            )
        stream.seek(length, os.SEEK_CUR)


def _native_length(dataset: pydicom.Dataset, tag: tuple[int, int]) -> int | None:
    """Bytes of uncompressed pixel data the header announces, or None when it cannot say."""
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        samples = int(dataset.get("SamplesPerPixel", 1) or 1)
        bits = {(0x7FE0, 0x0008): 32, (0x7FE0, 0x0009): 64}.get(tag) or int(dataset.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return None
    if bits % 8:
        return None  # 1-bit data is packed; leave it to the decoder
    return rows * columns * frames * samples * bits // 8


def structure_problems(dataset: pydicom.Dataset) -> list[tuple[str, str]]:
    """(kind, reason) of what the training reader refuses: more than one frame, colour."""
    problems = []
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        problems.append((MULTI_FRAME, f"{frames} frames where one 2D image is expected (a "
                                      "tomosynthesis volume or a multi-frame object)"))
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    if samples != 1 or photometric not in ("", "MONOCHROME1", "MONOCHROME2"):
        shown = photometric or "no photometric interpretation"
        problems.append((COLOUR, f"a colour image ({shown}, {samples} sample(s) per pixel); a "
                                 "mammogram is MONOCHROME1 or MONOCHROME2"))
    return problems


def tag_problems(
    dataset: pydicom.Dataset, laterality: str, view: str, image_size: Sequence[int]
) -> list[tuple[str, str]]:
    """(kind, reason) of tags that disagree with the manifest or the model: modality, size,
    laterality, view. Absent tags are not problems."""
    problems = []
    modality = str(dataset.get("Modality", "") or "").strip().upper()
    if modality and modality != EXPECTED_MODALITY:
        problems.append((NOT_MG, f"modality {modality}, not {EXPECTED_MODALITY} (mammography)"))
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except (AttributeError, TypeError, ValueError):
        rows = columns = 0
    if rows > 0 and columns > 0:
        upscale = min(image_size[0] / rows, image_size[1] / columns)
        if upscale > MAX_UPSCALE:
            problems.append((TOO_SMALL, (
                f"{rows}x{columns} pixels (height x width), far smaller than the model's input "
                f"{image_size[0]}x{image_size[1]}: it would be enlarged {upscale:.1f} times "
                f"(more than {MAX_UPSCALE:g})")))
    tagged = dicom_laterality(dataset)
    if tagged and laterality in LATERALITIES and tagged != laterality:
        problems.append((LATERALITY, f"the DICOM's laterality is {tagged}, the manifest says "
                                     f"{laterality}"))
    position = str(dataset.get("ViewPosition", "") or "").strip().upper()
    if position in VIEWS and view in VIEWS and position != view:
        problems.append((VIEW, f"the DICOM's view (ViewPosition) is {position}, the manifest "
                               f"says {view}"))
    return problems


def _digest(value) -> str | None:
    text = str(value or "").strip()
    return hashlib.sha256(text.encode()).hexdigest()[:16] if text else None


def _reason(error: Exception, path: str) -> str:
    """An error's message without load_image's "cannot read <path>: " (the path is shown)."""
    text = str(error)
    prefix = f"cannot read {path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


# -- settings ---------------------------------------------------------------------------------
@dataclass
class CheckSettings:
    """What to check and how training reads it (a data config's ``init_args``)."""

    manifest: str
    lesions: str | None = None
    cache_dir: str | None = None
    image_size: tuple[int, int] = IMAGE_SIZE
    window: str = "dicom"
    margin: float = DEFAULT_MARGIN
    modalities: tuple[str, ...] = MODALITIES
    seed: int = 0
    split_fractions: tuple[float, float, float] = SPLIT_FRACTIONS
    pathology_classes: dict[str, int] | None = None

    def __post_init__(self):
        from datamodules.values import RULES

        for name in ("image_size", "window", "margin", "modalities", "split_fractions",
                     "pathology_classes"):
            wrong = RULES[name](getattr(self, name))
            if wrong:
                raise ValueError(f"{name}: {wrong}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.modalities = tuple(self.modalities)
        self.split_fractions = tuple(float(v) for v in self.split_fractions)
        if self.pathology_classes is not None:
            self.pathology_classes = {str(key): int(value)
                                      for key, value in self.pathology_classes.items()}


@dataclass
class CheckReport:
    """What a check found: every problem (``problems``: training would fail or learn from
    other boxes than the tables say) and every warning (``warnings``: it trains, but not
    quite as the tables say), and how much it checked."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    pairs_checked: int = 0
    images_checked: int = 0
    seconds: float = 0.0

    def add(self, found: Iterable[Problem]) -> None:
        """Sort ``found`` into problems and warnings by kind (`WARNINGS`)."""
        for problem in found:
            (self.warnings if problem.kind in WARNINGS else self.problems).append(problem)

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for problem in self.problems + self.warnings:
            counts[problem.kind] = counts.get(problem.kind, 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict:
        return {
            "pairs_checked": self.pairs_checked,
            "images_checked": self.images_checked,
            "seconds": round(self.seconds, 2),
            "problem_count": len(self.problems),
            "warning_count": len(self.warnings),
            "by_kind": self.by_kind(),
            "problems": [problem.to_dict() for problem in self.problems],
            "warnings": [problem.to_dict() for problem in self.warnings],
        }


# -- the per-pair work (in worker processes) --------------------------------------------------
@dataclass(frozen=True)
class _PairTask:
    row: int | None
    pair_id: str
    laterality: str
    view: str
    paths: tuple[tuple[str, str], ...]  # (modality, DICOM path)


@dataclass
class _ImageFacts:
    size: tuple[int, int] | None = None  # (rows, columns) of the original image
    patient: str | None = None  # hashes of the DICOM identifiers
    study: str | None = None
    image: str | None = None
    geometry: Geometry | None = None  # how training maps the image and its boxes
    kind: tuple[str | None, str] = (None, "")  # what the tags say it is (`image_kind`)


@dataclass
class _PairOutcome:
    row: int | None
    pair_id: str
    problems: list[tuple[str, str, str, str]]  # (modality, kind, reason, path)
    facts: dict[str, _ImageFacts]


_worker: dict = {}


def _init_worker(settings: dict, full: bool = True, pool: bool = True) -> None:
    if pool:
        import cv2

        cv2.setNumThreads(1)  # the processes are the parallelism
    settings = CheckSettings(**settings)
    cache = None
    if settings.cache_dir:
        try:
            cache = ImageCache(settings.cache_dir, settings.image_size, settings.window,
                               settings.margin)
        except (FileNotFoundError, ValueError):
            cache = None  # reported once by the main process
    _worker.update(settings=settings, cache=cache, full=full)


def _check_pair(task: _PairTask) -> _PairOutcome:
    outcome = _PairOutcome(task.row, task.pair_id, [], {})
    for modality, path in task.paths:
        facts, problems = _check_image(task, modality, path)
        outcome.facts[modality] = facts
        outcome.problems += [(modality, kind, reason, where) for kind, reason, where in problems]
    return outcome


def _check_image(task: _PairTask, modality: str, path: str):
    """(facts, [(kind, reason, file)]) of one image: its cache entry, its header, the training
    reader's output. ``full`` (check-data) reads the DICOM of a cached image too and compares
    the two; otherwise (`setup_check`) a readable cache entry is what training reads."""
    settings: CheckSettings = _worker["settings"]
    cache: ImageCache | None = _worker["cache"]
    facts, problems = _ImageFacts(), []
    entry_path = str(cache.path(task.pair_id, modality)) if cache is not None else None
    entry = None
    if cache is not None:
        try:
            entry = cache.read(task.pair_id, modality)
        except CacheEntryError as error:
            problems.append((UNREADABLE_CACHE_ENTRY, error.reason, error.path))
    if entry is not None and not _worker["full"]:
        facts.geometry = entry[1]
        facts.size = entry[1].original_size
        problems += _crop_problems(entry[1], entry_path)
        return facts, problems
    try:
        dataset = read_header(path)
    except ImageProblem as problem:
        reason = problem.reason
        if problem.kind == MISSING_FILE and entry is not None:
            reason += " (its cache entry is there, so training still reads the image)"
        problems.append((problem.kind, reason, path))
        if entry is not None:
            facts.size = entry[1].original_size
            facts.geometry = entry[1]
        return facts, problems
    facts.size = (int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0))
    facts.patient = _digest(dataset.get("PatientID"))
    facts.study = _digest(dataset.get("StudyInstanceUID"))
    facts.image = _digest(dataset.get("SOPInstanceUID"))
    facts.kind = image_kind(dataset)
    structure = structure_problems(dataset)
    problems += [(kind, reason, path) for kind, reason in structure]
    problems += [(kind, reason, path) for kind, reason in
                 tag_problems(dataset, task.laterality, task.view, settings.image_size)]
    if structure:
        return facts, problems  # the reader refuses these; decoding says nothing more
    margin = cache.margin if cache is not None else settings.margin  # as the dataset does
    try:
        image, geometry = load_image(path, settings.image_size, task.laterality or None,
                                     settings.window, margin)
    except ImageContentError as error:
        problems.append((error.kind, error.reason, path))
        return facts, problems
    except DicomReadError as error:
        problems.append((UNDECODABLE, _reason(error, path), path))
        return facts, problems
    facts.geometry = geometry
    if not any(kind == TOO_SMALL for kind, _, _ in problems):
        problems += _crop_problems(geometry, path)
    if entry is not None:
        cached, cached_geometry = entry
        facts.geometry = cached_geometry  # what training reads
        if cached_geometry != geometry:
            problems.append((CACHE_ENTRY_DIFFERS, (
                "the cache entry was made from another image or with other settings: its "
                f"geometry {_geometry_text(cached_geometry)} differs from the DICOM's "
                f"{_geometry_text(geometry)}"), entry_path))
        else:
            difference = float(np.abs(cached - image).max())
            if difference > PIXEL_TOLERANCE:
                problems.append((CACHE_ENTRY_DIFFERS, (
                    "the cache entry's pixels differ from the DICOM's read now (largest "
                    f"difference {difference:.3g} of 1): made from another image or with "
                    "other settings"), entry_path))
    return facts, problems


def _crop_problems(geometry: Geometry, path: str) -> list[tuple[str, str, str]]:
    """The breast crop enlarged more than MAX_UPSCALE to fill the input, or keeping less than
    MIN_CROP_SHARE of the image: the breast was not found."""
    x1, y1, x2, y2 = geometry.crop_box
    rows, columns = geometry.original_size
    share = (x2 - x1) * (y2 - y1) / max(1, rows * columns)
    enlarged = min(geometry.scale_x, geometry.scale_y)
    crop = f"the breast crop is {x2 - x1}x{y2 - y1} pixels (width x height) of {columns}x{rows}"
    if enlarged > MAX_UPSCALE:
        height, width = geometry.input_size
        return [(CROP_ENLARGED, f"{crop}: filling the model's input ({width}x{height}) enlarges "
                                f"it {enlarged:.1f} times (more than {MAX_UPSCALE:g}); the "
                                "breast was not found (a near-black image, or a bright spot "
                                "apart from the breast?)", path)]
    if share < MIN_CROP_SHARE:
        return [(CROP_SMALL, f"{crop}, {share:.1%} of the image (less than "
                             f"{MIN_CROP_SHARE:.0%}): is the breast that small, or was it not "
                             "found?", path)]
    return []


def _geometry_text(geometry) -> str:
    return (f"(original {geometry.original_size[0]}x{geometry.original_size[1]}, flip "
            f"{geometry.flip}, crop {list(geometry.crop_box)})")


# -- table checks -----------------------------------------------------------------------------
def box_problems(lesions: pd.DataFrame, sizes: dict[tuple[str, str], tuple[int, int]],
                 paths: dict[tuple[str, str], str], lesions_file: str) -> list[Problem]:
    """Lesion boxes not inside their image: ``sizes`` maps (pair id, modality) to the image's
    (rows, columns); lesions of images without a size are not checked."""
    problems = []
    for pair_id, modality, row, x1, y1, x2, y2 in zip(
        lesions["pair_id"], lesions["modality"], lesions[ROW_COLUMN], lesions["x1"],
        lesions["y1"], lesions["x2"], lesions["y2"],
    ):
        size = sizes.get((pair_id, modality))
        if not size or not size[0] or not np.isfinite([x1, y1, x2, y2]).all():
            continue  # unreadable image, or coordinates the validator reported
        rows, columns = size
        outside = [name for name, bad in (
            ("x1", x1 < -BOX_TOLERANCE), ("y1", y1 < -BOX_TOLERANCE),
            ("x2", x2 > columns + BOX_TOLERANCE), ("y2", y2 > rows + BOX_TOLERANCE),
            ("x1", x1 >= columns), ("y1", y1 >= rows), ("x2", x2 <= 0), ("y2", y2 <= 0),
        ) if bad]
        if outside:
            problems.append(Problem(
                lesions_file, int(row), outside[0],
                f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is not inside its {modality} image "
                f"(width {columns}, height {rows} pixels)",
                BOX_OUTSIDE, pair_id, paths.get((pair_id, modality))))
    return problems


def kind_problems(outcomes: list[_PairOutcome], manifest_file: str,
                  paths: dict[tuple[str, str], str]) -> list[Problem]:
    """Images whose DICOM tags say they are of the other modality (`image_kind`): an SM in
    ``ffdm_path``, an FFDM or a tomosynthesis slice in ``sm_path``; both at once is a swap."""
    problems = []
    for outcome in outcomes:
        said = {modality: facts.kind for modality, facts in outcome.facts.items()}
        sm, ffdm = said.get("sm", (None, "")), said.get("ffdm", (None, ""))
        if sm[0] == "ffdm" and ffdm[0] == "sm":
            problems.append(Problem(
                manifest_file, outcome.row, "sm_path", f"the DICOM tags say sm_path holds an "
                f"FFDM ({sm[1]}) and ffdm_path an SM ({ffdm[1]}): SM and FFDM swapped in "
                "this row", SWAPPED, outcome.pair_id,
                f"{paths.get((outcome.pair_id, 'sm'))} and "
                f"{paths.get((outcome.pair_id, 'ffdm'))}"))
            continue
        for modality, (kind, why) in said.items():
            if kind is not None and kind != modality:
                expected = "an SM" if modality == "sm" else "an FFDM"
                shown = {"sm": "an SM", "ffdm": "an FFDM"}.get(kind, f"a {kind} image")
                problems.append(Problem(
                    manifest_file, outcome.row, f"{modality}_path", f"the DICOM tags say this "
                    f"is {shown} ({why}), not {expected}", WRONG_KIND, outcome.pair_id,
                    paths.get((outcome.pair_id, modality))))
    return problems


def target_problems(manifest: pd.DataFrame, lesions: pd.DataFrame,
                    geometries: dict[tuple[str, str], Geometry], modalities: Sequence[str],
                    pathology_classes: dict[str, int] | None, manifest_file: str,
                    lesions_file: str | None, paths: dict[tuple[str, str], str],
                    skip: set[int] = frozenset(), outside: set[int] = frozenset()
                    ) -> list[Problem]:
    """Every lesion box followed through what training does to it (`input_boxes`): dropped by
    ``pathology_classes``, cut off by the breast crop (mirrored ones named as such), shrunk
    below MIN_TARGET_SIDE input pixels. A box lost is a warning; a label-1 pair left without
    a target in a modality the run reads is an error (unless its lesion rows are missing
    altogether, which `_table_problems` reports, or its row is in ``skip``); so is a
    ``pathology_classes`` key no lesion of the training pairs has, and no lesion table at
    all for a manifest with label-1 pairs. Images without a geometry (unreadable ones,
    reported already) are not judged; boxes at the lesion rows in ``outside`` (not inside
    their image, reported already) count as lost without a warning."""
    problems: list[Problem] = []
    positives = manifest[manifest["label"] == 1]
    if lesions_file is None:
        if len(positives):
            problems.append(Problem(
                manifest_file, None, None, f"no lesion table: none was given (lesions) and "
                f"there is no lesions.csv beside the manifest, so the {len(positives)} pair(s) "
                "with label 1 have no box to learn from", NO_LESION_TABLE))
        return problems
    read = lesions[lesions["modality"].isin(modalities)]
    lesion_name = lesions_file
    targets: dict[tuple[str, str], int] = {}
    lost: dict[tuple[str, str], list[str]] = {}
    for pair_id, modality, row, pathology, x1, y1, x2, y2 in zip(
        read["pair_id"], read["modality"], read[ROW_COLUMN], read["pathology"], read["x1"],
        read["y1"], read["x2"], read["y2"],
    ):
        key = (pair_id, modality)
        targets.setdefault(key, 0)
        where = f"{lesion_name} row {int(row)}" if row is not None else lesion_name
        if pathology_classes is not None and pathology not in pathology_classes:
            lost.setdefault(key, []).append(f"{where} is {pathology}, not a class of "
                                            "pathology_classes")
            continue
        if row is not None and int(row) in outside:
            lost.setdefault(key, []).append(f"{where} is not inside its image")
            continue
        geometry = geometries.get(key)
        box = np.array([[x1, y1, x2, y2]], dtype=np.float64)
        if geometry is None or not np.isfinite(box).all():
            targets[key] = -1  # the image or the box is unreadable: reported already
            continue
        reason = _lost_reason(box, geometry)
        if reason is None:
            if targets[key] >= 0:
                targets[key] += 1
            continue
        lost.setdefault(key, []).append(f"{where} {reason}")
        problems.append(Problem(
            lesions_file, None if row is None else int(row), "x1", f"box ({x1:g}, {y1:g}, "
            f"{x2:g}, {y2:g}) {reason}", BOX_LOST, pair_id, paths.get(key)))
    for pair_id, row in zip(positives["pair_id"], positives[ROW_COLUMN]):
        if row is not None and int(row) in skip:
            continue
        for modality in modalities:
            key = (pair_id, modality)
            if targets.get(key, 0) != 0 or key not in geometries:
                continue
            why = "; ".join(lost.get(key, [])) or f"the lesion table has no {modality} box " \
                                                   "for this pair"
            problems.append(Problem(
                manifest_file, None if row is None else int(row), "label", f"label 1, but no "
                f"{modality} box is left for training ({why})", NO_TARGET, pair_id,
                paths.get(key)))
    problems += unused_class_problems(read, manifest, pathology_classes, lesions_file)
    return problems


def _lost_reason(box: np.ndarray, geometry: Geometry) -> str | None:
    """Why training would lose this original-pixel box, or None when it keeps it."""
    kept_boxes, kept = input_boxes(box, geometry)
    if kept[0]:
        width, height = (float(v) for v in kept_boxes[0, 2:] - kept_boxes[0, :2])
        if min(width, height) >= MIN_TARGET_SIDE:
            return None
        return (f"is {width:.2g}x{height:.2g} pixels at the model's input (less than "
                f"{MIN_TARGET_SIDE:g}): too small to learn from")
    mirrored = box.copy()
    mirrored[:, [0, 2]] = geometry.original_size[1] - box[:, [2, 0]]
    clipped, inside = input_boxes(mirrored, geometry)
    if inside[0] and _area(clipped[0]) >= 0.5 * _area(np.asarray(geometry.to_input(mirrored))[0]):
        return ("lies outside the breast crop, where training drops it; mirrored (x -> width "
                "- x) it would lie inside: were the boxes written for the flipped image?")
    return "lies outside the breast crop, where training drops it (in the background?)"


def _area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def unused_class_problems(lesions: pd.DataFrame, manifest: pd.DataFrame,
                          pathology_classes: dict[str, int] | None,
                          lesions_file: str) -> list[Problem]:
    """A ``pathology_classes`` key that no lesion of the training pairs (of every pair when
    none is in training) has: its class would never be learnt."""
    if not pathology_classes:
        return []
    pairs = manifest["pair_id"]
    if "split" in manifest.columns and (manifest["split"] == "train").any():
        pairs = pairs[manifest["split"] == "train"]
    present = lesions.loc[lesions["pair_id"].isin(set(pairs)), "pathology"].value_counts()
    shown = ", ".join(f"{name} {int(count)}" for name, count in present.items()) or "none"
    return [Problem(
        lesions_file, None, "pathology", f"pathology_classes maps {name!r} to class {index}, "
        f"but no lesion of the pairs checked has pathology {name!r} (they have: {shown}): "
        "that class would never be trained", UNUSED_CLASS)
        for name, index in pathology_classes.items() if name not in present.index]


def _cache_problems(settings: CheckSettings) -> list[Problem]:
    if not settings.cache_dir:
        return []
    info = str(Path(settings.cache_dir) / CACHE_INFO)
    try:
        cache = ImageCache(settings.cache_dir, settings.image_size, settings.window,
                           settings.margin)
    except (FileNotFoundError, ValueError) as error:
        return [Problem(info, None, None, str(error), CACHE_SETTINGS)]
    if cache.margin != settings.margin:
        return [Problem(info, None, "margin", f"the cache was made with margin {cache.margin:g}, "
                        f"the config says {settings.margin:g}; training would use the cache's",
                        CACHE_SETTINGS)]
    return []


def _tasks(manifest: pd.DataFrame, modalities: Sequence[str]):
    """The per-pair jobs of a manifest and each image's path by (pair id, modality)."""
    tasks, paths = [], {}
    rows = manifest[ROW_COLUMN] if ROW_COLUMN in manifest.columns else [None] * len(manifest)
    for pair_id, row, laterality, view, *images in zip(
        manifest["pair_id"], rows, manifest["laterality"], manifest["view"],
        *(manifest[f"{modality}_path"] for modality in modalities),
    ):
        found = []
        for modality, path in zip(modalities, images):
            paths[(pair_id, modality)] = path
            if not path.endswith(os.sep):  # an empty path cell, reported by the validator
                found.append((modality, path))
        tasks.append(_PairTask(None if row is None else int(row), pair_id, laterality, view,
                               tuple(found)))
    return tasks, paths


def _image_problems(outcomes, manifest_file: str) -> tuple[list[Problem], dict, dict]:
    """The per-image problems as Problems at their manifest rows, each image's original size
    and each image's geometry, by (pair id, modality)."""
    problems, sizes, geometries = [], {}, {}
    for outcome in outcomes:
        for modality, kind, reason, path in outcome.problems:
            problems.append(Problem(manifest_file, outcome.row, f"{modality}_path", reason,
                                    kind, outcome.pair_id, path))
        for modality, facts in outcome.facts.items():
            if facts.size:
                sizes[(outcome.pair_id, modality)] = facts.size
            if facts.geometry is not None:
                geometries[(outcome.pair_id, modality)] = facts.geometry
    return problems, sizes, geometries


def _run(tasks, settings: CheckSettings, workers: int, progress: bool, full: bool) -> list:
    initargs = (asdict(settings), full)
    return list(run_parallel(
        _check_pair, tasks, workers=workers, initializer=_init_worker, initargs=initargs,
        # run here, cv2 keeps the caller's threads
        serial_setup=partial(_init_worker, *initargs, pool=False), max_chunksize=16,
        desc="check-data" if full else "data check", unit="pair", progress=progress))


# -- what a run reads, before its first step ---------------------------------------------------
# Above this many images `setup_check` decodes in worker processes (when it is given some):
# below it, starting them costs more than it saves.
PARALLEL_FROM = 200


def setup_check(
    manifest: pd.DataFrame,
    lesions: pd.DataFrame,
    settings: CheckSettings,
    workers: int = 1,
    parallel_from: int = PARALLEL_FROM,
) -> CheckReport:
    """What would make a run fail mid-way or learn from other boxes than the tables say, found
    before its first step, for the pairs of ``manifest`` (the splits the command reads; from
    `load_tables` with ``row_numbers``): every image of every modality in
    ``settings.modalities`` decoded with the training reader, or its cache entry read (a
    missing, truncated, corrupt, non-finite, blank or far too small image, a breast not
    found, tags of the other modality), then every lesion box followed through what training
    does to it (`target_problems`). One call, no state: its `CheckReport` can be computed
    once and shared. With ``workers`` > 1 and more than ``parallel_from`` images, the images
    are read in that many (spawned) processes."""
    started = time.monotonic()
    manifest_file, lesions_file = resolve_table_paths(settings.manifest, settings.lesions)
    manifest_name = str(manifest_file)
    lesions_name = str(lesions_file) if lesions_file else None
    report = CheckReport()
    cache = _cache_problems(settings)
    report.add(cache)
    tasks, paths = _tasks(manifest, settings.modalities)
    report.pairs_checked = len(tasks)
    report.images_checked = sum(len(task.paths) for task in tasks)
    if report.images_checked <= parallel_from:
        workers = 1
    outcomes = _run(tasks, settings, workers, progress=False, full=False)
    found, sizes, geometries = _image_problems(outcomes, manifest_name)
    found += kind_problems(outcomes, manifest_name, paths)
    if ROW_COLUMN not in lesions.columns:
        lesions = lesions.assign(**{ROW_COLUMN: None})
    read = lesions[lesions["modality"].isin(settings.modalities)]
    outside = box_problems(read, sizes, paths, lesions_name or "lesions")
    found += outside
    found += target_problems(
        manifest, read, geometries, settings.modalities, settings.pathology_classes,
        manifest_name, lesions_name, paths, _no_malignant_rows(manifest, lesions),
        {p.row for p in outside if p.row is not None})
    report.add(found)
    report.seconds = time.monotonic() - started
    return report


def _no_malignant_rows(manifest: pd.DataFrame, lesions: pd.DataFrame) -> set[int]:
    """Rows of label-1 pairs without any malignant lesion (check-data reports those alone)."""
    malignant = set(lesions.loc[lesions["pathology"] == "malignant", "pair_id"])
    rows = manifest.loc[(manifest["label"] == 1) & ~manifest["pair_id"].isin(malignant),
                        ROW_COLUMN] if ROW_COLUMN in manifest.columns else []
    return {int(row) for row in rows if row is not None}
