"""The checks of one DICOM file: its header read without its pixel data, after checking that
the file holds all of them (`read_header`), and what the training reader refuses
(`structure_problems`) or the manifest contradicts (`tag_problems`) in it."""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import warnings
from collections.abc import Sequence

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import DeflatedExplicitVRLittleEndian

from common.problems import (
    COLOUR,
    CORRUPT_DICOM,
    LATERALITY,
    MISSING_FILE,
    MULTI_FRAME,
    NO_PIXEL_DATA,
    NOT_DICOM,
    NOT_MG,
    TOO_SMALL,
    TRUNCATED_DICOM,
    UNREADABLE_FILE,
    VIEW,
)
from datamodules.dicom import dicom_laterality
from datamodules.manifest import LATERALITIES, VIEWS
from datamodules.preflight.settings import EXPECTED_MODALITY, MAX_UPSCALE, ImageProblem

_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}


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
        raise ImageProblem(
            NO_PIXEL_DATA, f"no pixel data (element ({tag[0]:04X},{tag[1]:04X}) at byte {start})"
        )
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
        problems.append(
            (
                MULTI_FRAME,
                f"{frames} frames where one 2D image is expected (a "
                "tomosynthesis volume or a multi-frame object)",
            )
        )
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    if samples != 1 or photometric not in ("", "MONOCHROME1", "MONOCHROME2"):
        shown = photometric or "no photometric interpretation"
        problems.append(
            (
                COLOUR,
                f"a colour image ({shown}, {samples} sample(s) per pixel); a "
                "mammogram is MONOCHROME1 or MONOCHROME2",
            )
        )
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
            problems.append(
                (
                    TOO_SMALL,
                    (
                        f"{rows}x{columns} pixels (height x width), far smaller than the "
                        "model's input "
                        f"{image_size[0]}x{image_size[1]}: it would be enlarged {upscale:.1f} "
                        "times "
                        f"(more than {MAX_UPSCALE:g})"
                    ),
                )
            )
    tagged = dicom_laterality(dataset)
    if tagged and laterality in LATERALITIES and tagged != laterality:
        problems.append(
            (LATERALITY, f"the DICOM's laterality is {tagged}, the manifest says {laterality}")
        )
    position = str(dataset.get("ViewPosition", "") or "").strip().upper()
    if position in VIEWS and view in VIEWS and position != view:
        problems.append(
            (VIEW, f"the DICOM's view (ViewPosition) is {position}, the manifest says {view}")
        )
    return problems


def _digest(value) -> str | None:
    text = str(value or "").strip()
    return hashlib.sha256(text.encode()).hexdigest()[:16] if text else None


def _reason(error: Exception, path: str) -> str:
    """An error's message without load_image's "cannot read <path>: " (the path is shown)."""
    text = str(error)
    prefix = f"cannot read {path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text
