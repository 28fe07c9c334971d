"""DICOM mammogram -> float32 model input in [0, 1] plus the `Geometry` that maps boxes back.

Reading: decode (pydicom; JPEG 2000, JPEG Lossless and JPEG-LS through pylibjpeg), modality
LUT, windowing (the file's VOI LUT or window, or min-max), MONOCHROME1 inverted so that dense
tissue is bright. The geometry (flip, crop to the breast, resize, pad) and the `Geometry`
itself are in `datamodules.geometry`; `load_image` applies both.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

# the kinds of pixel content the reader refuses (`ImageContentError.kind`)
from common.problems import CONSTANT, NON_FINITE

# every name of the geometry stays importable from here, where it was first
from datamodules.geometry import (
    BACKGROUND_THRESHOLD,
    DEFAULT_MARGIN,
    Geometry,
    apply_geometry,
    chest_wall_on_right,
    mask_box,
)
from datamodules.geometry import _split_boxes as _split_boxes
from datamodules.geometry import breast_box as breast_box
from datamodules.geometry import input_boxes as input_boxes

logger = logging.getLogger(__name__)
# A frame that does not decode is reported by `load_image`, naming the file and pydicom's
# reason; pydicom would log its own traceback of it first, which buries that line.
logging.getLogger("pydicom.pixels.decoders.base").setLevel(logging.CRITICAL)

WINDOWS = ("dicom", "minmax")


# An image whose stored values span at most this share of the range its pixel format holds
# (2**BitsStored - 1; 4 of 4095 levels at 12 bits, 65 of 65535 at 16) is blank: no
# mammogram is that flat, and testing exact equality after resizing flagged or missed one
# depending on the resize ratio.
CONSTANT_SHARE = 1e-3


class DicomReadError(ValueError):
    """A DICOM file could not be read or converted; the message names the file only."""


class ImageContentError(DicomReadError):
    """The file decodes, but its pixels cannot be a mammogram (``kind``: `NON_FINITE`,
    `CONSTANT`); ``reason`` says why without the path."""

    def __init__(self, kind: str, reason: str, path: str | os.PathLike | None = None):
        self.kind, self.reason, self.path = kind, reason, path
        super().__init__(f"cannot read {os.fspath(path)}: {reason}" if path else reason)

    def __reduce__(self):  # picklable across worker processes
        return type(self), (self.kind, self.reason, self.path)


# Integer images larger than this are windowed through a table of their values.
LOOKUP_MIN_PIXELS = 1 << 16
LOOKUP_MAX_VALUES = 1 << 16


def read_dicom(path: str | os.PathLike) -> tuple[np.ndarray, pydicom.Dataset]:
    """Decoded pixels after the modality LUT (rescale slope/intercept) and the dataset."""
    dataset = pydicom.dcmread(path)
    if int(dataset.get("SamplesPerPixel", 1)) != 1:
        raise ValueError("expected a grayscale image (SamplesPerPixel 1)")
    pixels = dataset.pixel_array
    if pixels.ndim == 3 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.ndim != 2:
        raise ValueError(f"expected one 2D frame, got pixel data of shape {pixels.shape}")
    slope = float(dataset.get("RescaleSlope", 1) or 1)
    intercept = float(dataset.get("RescaleIntercept", 0) or 0)
    # A VOI LUT needs integers: apply the modality LUT only when it changes something.
    if "ModalityLUTSequence" in dataset or (slope, intercept) != (1.0, 0.0):
        with np.errstate(invalid="ignore", over="ignore"):
            pixels = apply_modality_lut(pixels, dataset)
    if pixels.dtype.kind == "f":
        _refuse_non_finite(pixels, "after the modality LUT (RescaleSlope/Intercept)")
    return pixels, dataset


def _refuse_non_finite(values: np.ndarray, where: str) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise ImageContentError(
            NON_FINITE, f"{bad} of {finite.size} pixels are not finite (NaN or infinite) {where}"
        )


def refuse_constant(low: float, high: float, dataset: pydicom.Dataset, integer: bool) -> None:
    """`ImageContentError` when the stored values (after the modality LUT) span at most
    `CONSTANT_SHARE` of the range the pixel format holds: for integer data (2**BitsStored - 1)
    times the rescale slope, for float data the largest magnitude."""
    span = float(high) - float(low)
    if integer or dataset.get("BitsStored"):
        bits = int(dataset.get("BitsStored") or 16)
        slope = abs(float(dataset.get("RescaleSlope", 1) or 1))
        scale = (2**bits - 1) * slope
    else:
        scale = max(abs(float(low)), abs(float(high)))
    if span <= CONSTANT_SHARE * scale:
        what = (
            f"every pixel has the same value ({float(low):g})"
            if span == 0
            else f"the pixel values span only {span:g} (from {float(low):g} to {float(high):g}), "
            f"within {CONSTANT_SHARE:.1%} of the {scale:g} their format holds"
        )
        raise ImageContentError(CONSTANT, f"{what}: a blank image")


def _voi_output_range(dataset: pydicom.Dataset) -> tuple[float, float] | None:
    """(low, high) that the file's VOI LUT or window can output, or None when it has neither."""
    sequence = dataset.get("VOILUTSequence")
    if sequence and sequence[0].get("LUTDescriptor") and sequence[0].get("LUTData") is not None:
        entries, first = (
            int(sequence[0].LUTDescriptor[0]) or 2**16,
            int(sequence[0].LUTDescriptor[1]),
        )
        outputs = apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), dataset)
    elif dataset.get("WindowCenter") is not None and dataset.get("WindowWidth") is not None:
        center = dataset["WindowCenter"].value
        width = dataset["WindowWidth"].value
        center = float(center[0] if dataset["WindowCenter"].VM > 1 else center)
        width = abs(float(width[0] if dataset["WindowWidth"].VM > 1 else width))
        probe = np.array([center - 20 * width - 1, center + 20 * width + 1], dtype=np.float64)
        with np.errstate(over="ignore"):
            outputs = apply_voi_lut(probe, dataset)
    else:
        return None
    return float(np.min(outputs)), float(np.max(outputs))


def to_unit_range(
    pixels: np.ndarray, dataset: pydicom.Dataset, window: str = "dicom"
) -> np.ndarray:
    """float32 [0, 1] with dense tissue bright.

    ``window="dicom"`` applies the file's VOI LUT or first window (falling back to min-max
    when it has none) and maps the window's output range to [0, 1]; ``"minmax"`` maps the
    image's own range. MONOCHROME1 (and a Presentation LUT Shape INVERSE) is inverted.
    """
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
    table = ValueTable.of(pixels, dataset, window)
    return table.apply(pixels) if table is not None else _unit_range(pixels, dataset, window)


@dataclass(frozen=True)
class ValueTable:
    """``to_unit_range`` of every value from ``low`` to ``low + len(table) - 1``: every step of
    it is a function of the pixel value alone, so an integer image is windowed by mapping each
    value once and gathering (bit-identical to windowing the 13 Mpx in float64), and only the
    region that is kept need be gathered."""

    low: int
    table: np.ndarray  # float32

    @classmethod
    def of(
        cls,
        pixels: np.ndarray,
        dataset: pydicom.Dataset,
        window: str,
        value_range: tuple | None = None,
    ) -> ValueTable | None:
        """The table of a large integer image with at most LOOKUP_MAX_VALUES values, else None;
        ``value_range`` is the image's (min, max) when known."""
        if pixels.dtype.kind not in "iu" or pixels.size <= LOOKUP_MIN_PIXELS:
            return None
        low, high = value_range if value_range is not None else (pixels.min(), pixels.max())
        low, high = int(low), int(high)
        if high - low >= LOOKUP_MAX_VALUES:
            return None
        values = np.arange(low, high + 1, dtype=pixels.dtype)
        return cls(low, _unit_range(values, dataset, window, (float(low), float(high))))

    def _offsets(self, pixels: np.ndarray) -> np.ndarray:
        offsets = pixels - pixels.dtype.type(self.low) if self.low else pixels
        if offsets.dtype.kind == "i":  # a wrapped difference, read unsigned, is exact
            offsets = offsets.view(f"u{offsets.dtype.itemsize}")
        return offsets

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """``to_unit_range`` of (a region of) the image the table was made from."""
        return np.take(self.table, self._offsets(pixels))

    def above(self, pixels: np.ndarray, threshold: float) -> np.ndarray:
        """``apply(pixels) > threshold``: one comparison of the stored values when the table
        crosses the threshold once (any monotone window), else a gather."""
        above = self.table > threshold
        changes = np.flatnonzero(above[1:] != above[:-1])
        if changes.size == 0:
            return np.full(pixels.shape, bool(above[0]))
        if changes.size == 1:
            first = pixels.dtype.type(self.low + int(changes[0]) + 1)
            return pixels >= first if above[-1] else pixels < first
        return np.take(above, self._offsets(pixels))


def _unit_range(
    pixels: np.ndarray,
    dataset: pydicom.Dataset,
    window: str,
    pixel_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """``to_unit_range`` value by value; ``pixel_range`` is the image's (min, max) when
    ``pixels`` holds each of its values once rather than the image itself."""
    output_range = _voi_output_range(dataset) if window == "dicom" else None
    if output_range is not None:
        with np.errstate(over="ignore"):
            values = apply_voi_lut(pixels, dataset)
        low, high = output_range
    else:
        values = pixels
        low, high = pixel_range or (float(pixels.min()), float(pixels.max()))
    image = values.astype(np.float32)
    image -= np.float32(low)
    image *= np.float32(1.0 / (high - low)) if high > low else np.float32(0.0)
    np.clip(image, 0.0, 1.0, out=image)
    invert = dataset.get("PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1"
    if str(dataset.get("PresentationLUTShape", "")).upper() == "INVERSE":
        invert = not invert
    if invert:
        np.subtract(np.float32(1.0), image, out=image)
    return image


def dicom_laterality(dataset: pydicom.Dataset) -> str | None:
    """'L' or 'R' from ImageLaterality, Laterality or the frame's FrameLaterality, else None."""
    candidates = [dataset.get("ImageLaterality"), dataset.get("Laterality")]
    for group in dataset.get("SharedFunctionalGroupsSequence") or []:
        for anatomy in group.get("FrameAnatomySequence") or []:
            candidates.append(anatomy.get("FrameLaterality"))
    for value in candidates:
        value = str(value or "").strip().upper()
        if value in ("L", "R"):
            return value
    return None


# What a DICOM says it is (`image_kind`). DICOM PS3.3 C.8.11.7.1.4 marks a synthesized 2D
# image (an SM) with GENERATED_2D in ImageType; systems written before that term (or that put
# it elsewhere) name their synthesized 2D in the series description: Hologic "C-View", GE
# "V-Preview", Siemens "Insight 2D", Fujifilm "S-View", or the words synthesized/synthetic.
SM_DESCRIPTIONS = (
    "CVIEW",
    "VPREVIEW",
    "INSIGHT2D",
    "SVIEW",
    "SYNTHESIZED",
    "SYNTHESISED",
    "SYNTHETIC",
)
TOMOSYNTHESIS_TYPES = ("TOMO", "TOMOSYNTHESIS", "TOMO_PROJ", "TOMO_SCOUT", "VOLUME")


def image_kind(dataset: pydicom.Dataset) -> tuple[str | None, str]:
    """("sm" | "ffdm" | "tomosynthesis" | None, the tags that say so).

    An SM: ImageType holds GENERATED_2D, or the SeriesDescription names a vendor's
    synthesized 2D (`SM_DESCRIPTIONS`). A tomosynthesis slice or projection: ImageType holds
    TOMO, TOMOSYNTHESIS, TOMO_PROJ, ... without GENERATED_2D. An FFDM: ImageType begins
    ORIGINAL\\PRIMARY and nothing above applies. None when the tags do not say (no ImageType,
    or DERIVED without any of these)."""
    types = [str(value).strip().upper() for value in (dataset.get("ImageType") or [])]
    shown = "\\".join(types)
    if "GENERATED_2D" in types:
        return "sm", f"ImageType {shown}"
    description = str(dataset.get("SeriesDescription", "") or "")
    squashed = "".join(character for character in description.upper() if character.isalnum())
    if any(name in squashed for name in SM_DESCRIPTIONS):
        return "sm", f"SeriesDescription {description!r}"
    if any(value in TOMOSYNTHESIS_TYPES for value in types):
        return "tomosynthesis", f"ImageType {shown}"
    if types[:2] == ["ORIGINAL", "PRIMARY"]:
        return "ffdm", f"ImageType {shown}"
    return None, ""


def load_image(
    path: str | os.PathLike,
    image_size: tuple[int, int],
    laterality: str | None = None,
    window: str = "dicom",
    margin: float = DEFAULT_MARGIN,
    threshold: float = BACKGROUND_THRESHOLD,
) -> tuple[np.ndarray, Geometry]:
    """Read a mammogram as the model's input: (float32 [H, W] in [0, 1], Geometry).

    ``image_size`` is (H, W). Laterality comes from the argument (the manifest), else the DICOM
    tags, else a guess from the pixels (logged). R images are flipped so the chest wall is on
    the left. Errors are `DicomReadError` naming the file and nothing read from it.
    """
    try:
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
        pixels, dataset = read_dicom(path)
        low, high = pixels.min(), pixels.max()
        refuse_constant(low, high, dataset, pixels.dtype.kind in "iu")
        # an integer image stays in stored values: the breast is found by comparing them and
        # only the crop is windowed (the same output as windowing the whole image first)
        table = ValueTable.of(pixels, dataset, window, (low, high))
        if table is not None:
            _refuse_non_finite(table.table, "after the window (VOI LUT or WindowWidth/Center)")
            image = pixels
        else:
            image = _unit_range(pixels, dataset, window, (float(low), float(high)))
            _refuse_non_finite(image, "after the window (VOI LUT or WindowWidth/Center)")
        del pixels
        side = (laterality or "").strip().upper() or dicom_laterality(dataset)
        if side in ("L", "R"):
            flip = side == "R"
        else:
            flip = chest_wall_on_right(table.apply(image) if table is not None else image)
            logger.warning("%s: laterality unknown; chest wall side guessed from pixels", path)
        canonical = image[:, ::-1] if flip else image
        mask = table.above(canonical, threshold) if table is not None else canonical > threshold
        geometry = Geometry.build(image.shape, flip, mask_box(mask, margin), image_size)
        del mask
        return apply_geometry(image, geometry, table), geometry
    except ImageContentError as error:
        raise ImageContentError(error.kind, error.reason, path) from None
    except DicomReadError:
        raise
    except Exception as error:  # noqa: BLE001 - every failure must name the file
        raise DicomReadError(
            f"cannot read {os.fspath(path)}: {type(error).__name__}: {error}"
        ) from error
