"""DICOM mammogram -> float32 model input in [0, 1] plus the `Geometry` that maps boxes back.

Reading: decode (pydicom; JPEG 2000, JPEG Lossless and JPEG-LS through pylibjpeg), modality
LUT, windowing (the file's VOI LUT or window, or min-max), MONOCHROME1 inverted so that dense
tissue is bright. Geometry, in this order: original -> horizontal flip (canonical orientation:
chest wall on the LEFT, breast pointing right) -> crop to the breast -> resize keeping the
aspect ratio -> zero padding on the right and bottom. Box coordinates are continuous pixel
coordinates: pixel (i, j) covers [j, j+1) x [i, i+1), the convention of cv2.resize.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

# the kinds of pixel content the reader refuses (`ImageContentError.kind`)
from common.problems import CONSTANT, NON_FINITE

logger = logging.getLogger(__name__)
# A frame that does not decode is reported by `load_image`, naming the file and pydicom's
# reason; pydicom would log its own traceback of it first, which buries that line.
logging.getLogger("pydicom.pixels.decoders.base").setLevel(logging.CRITICAL)

WINDOWS = ("dicom", "minmax")
# Margin around the breast, as a fraction of the image's longer side (41 px on a 4096 px FFDM).
DEFAULT_MARGIN = 0.01
# After windowing, air behind the breast is black; a low fixed level keeps the faint skin line
# inside the breast mask, and the largest connected component drops burned-in labels.
BACKGROUND_THRESHOLD = 0.05


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


# Not frozen: Lightning moves batches to the device by rebuilding the dataclasses in them,
# which a frozen dataclass refuses. Treat it as immutable all the same.
@dataclass
class Geometry:
    """Where the model's input came from in the original DICOM's pixels.

    ``flip``: mirrored left-right first. ``crop_box``: (x1, y1, x2, y2), end exclusive, in the
    flipped original. ``scale_x``, ``scale_y``: input pixels per cropped pixel; one scale
    (the aspect ratio is kept) up to the rounding of the resized size to whole pixels, so the
    two are recorded to map boxes exactly. ``padding``: (right, bottom) zero pixels added.
    Sizes are (height, width).
    """

    original_size: tuple[int, int]
    flip: bool
    crop_box: tuple[int, int, int, int]
    scale_x: float
    scale_y: float
    padding: tuple[int, int]
    input_size: tuple[int, int]

    @classmethod
    def build(
        cls,
        original_size: tuple[int, int],
        flip: bool,
        crop_box: tuple[int, int, int, int],
        input_size: tuple[int, int],
    ) -> Geometry:
        """The geometry that fits crop_box into input_size with one scale, padding the rest."""
        height, width = (int(v) for v in input_size)
        x1, y1, x2, y2 = (int(v) for v in crop_box)
        crop_width, crop_height = x2 - x1, y2 - y1
        if not (0 <= x1 < x2 <= original_size[1] and 0 <= y1 < y2 <= original_size[0]):
            raise ValueError(f"crop box {crop_box} is not inside an image of size {original_size}")
        scale = min(height / crop_height, width / crop_width)
        resized_width = min(width, max(1, round(crop_width * scale)))
        resized_height = min(height, max(1, round(crop_height * scale)))
        return cls(
            original_size=(int(original_size[0]), int(original_size[1])),
            flip=bool(flip),
            crop_box=(x1, y1, x2, y2),
            scale_x=resized_width / crop_width,
            scale_y=resized_height / crop_height,
            padding=(width - resized_width, height - resized_height),
            input_size=(height, width),
        )

    @property
    def content_size(self) -> tuple[int, int]:
        """(height, width) of the resized image before padding."""
        return self.input_size[0] - self.padding[1], self.input_size[1] - self.padding[0]

    def to_input(self, boxes):
        """Original-pixel xyxy boxes [n, 4] (numpy or torch) -> input pixels; not clipped."""
        x1, y1, x2, y2, rebuild = _split_boxes(boxes)
        if self.flip:
            width = self.original_size[1]
            x1, x2 = width - x2, width - x1
        cx, cy = self.crop_box[0], self.crop_box[1]
        return rebuild(
            (x1 - cx) * self.scale_x,
            (y1 - cy) * self.scale_y,
            (x2 - cx) * self.scale_x,
            (y2 - cy) * self.scale_y,
        )

    def to_original(self, boxes):
        """Input-pixel xyxy boxes [n, 4] (numpy or torch) -> the original DICOM's pixels."""
        x1, y1, x2, y2, rebuild = _split_boxes(boxes)
        cx, cy = self.crop_box[0], self.crop_box[1]
        x1, x2 = x1 / self.scale_x + cx, x2 / self.scale_x + cx
        y1, y2 = y1 / self.scale_y + cy, y2 / self.scale_y + cy
        if self.flip:
            width = self.original_size[1]
            x1, x2 = width - x2, width - x1
        return rebuild(x1, y1, x2, y2)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        return cls(
            original_size=tuple(int(v) for v in data["original_size"]),
            flip=bool(data["flip"]),
            crop_box=tuple(int(v) for v in data["crop_box"]),
            scale_x=float(data["scale_x"]),
            scale_y=float(data["scale_y"]),
            padding=tuple(int(v) for v in data["padding"]),
            input_size=tuple(int(v) for v in data["input_size"]),
        )


def input_boxes(original: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """(boxes in input pixels clipped to the image content, mask of the boxes kept).

    Boxes are clipped to the resized image (not the zero padding); boxes with no area left
    are dropped.
    """
    boxes = np.asarray(geometry.to_input(np.asarray(original, dtype=np.float64)))
    content_height, content_width = geometry.content_size
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, content_width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, content_height)
    kept = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[kept].astype(np.float32), kept


# Integer images larger than this are windowed through a table of their values.
LOOKUP_MIN_PIXELS = 1 << 16
LOOKUP_MAX_VALUES = 1 << 16


def _split_boxes(boxes):
    """Columns of [n, 4] boxes in float64 and a function that stacks them back like the input."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(boxes, torch.Tensor):
        dtype = boxes.dtype if boxes.is_floating_point() else torch.float32
        values = boxes.to(torch.float64).reshape(-1, 4)

        def rebuild(*columns):
            return torch.stack(columns, dim=-1).to(dtype)

    else:
        array = np.asarray(boxes)
        dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float32
        values = array.astype(np.float64).reshape(-1, 4)

        def rebuild(*columns):
            return np.stack(columns, axis=-1).astype(dtype)

    return values[:, 0], values[:, 1], values[:, 2], values[:, 3], rebuild


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


def chest_wall_on_right(image: np.ndarray) -> bool:
    """Guess from the pixels: the chest wall side is the brighter of the two outer fifths."""
    fifth = max(1, image.shape[1] // 5)
    return float(image[:, -fifth:].mean()) > float(image[:, :fifth].mean())


def breast_box(
    image: np.ndarray,
    margin: float = DEFAULT_MARGIN,
    threshold: float = BACKGROUND_THRESHOLD,
) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2), end exclusive: the largest 8-connected component above threshold plus
    ``margin`` times the longer side on each side, clipped to the image; the whole image when
    nothing is above the threshold."""
    return mask_box(image > threshold, margin)


def mask_box(mask: np.ndarray, margin: float = DEFAULT_MARGIN) -> tuple[int, int, int, int]:
    """`breast_box`'s rule on a boolean mask of the pixels above the threshold; of components
    of equal largest area, the topmost, then leftmost, box."""
    height, width = mask.shape
    mask = np.ascontiguousarray(mask).view(np.uint8)
    # Grana's block-based labelling finds the same components as OpenCV's default, faster
    count, _, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        mask, 8, cv2.CV_32S, cv2.CCL_GRANA
    )
    if count <= 1:
        return 0, 0, width, height
    stats = stats[1:]
    area = stats[:, cv2.CC_STAT_AREA]
    tied = np.flatnonzero(area == area.max())
    order = np.lexsort((stats[tied, cv2.CC_STAT_LEFT], stats[tied, cv2.CC_STAT_TOP]))
    left, top, box_width, box_height = (int(v) for v in stats[tied[order[0]], :4])
    pad = int(math.ceil(margin * max(height, width)))
    return (
        max(0, left - pad),
        max(0, top - pad),
        min(width, left + box_width + pad),
        min(height, top + box_height + pad),
    )


def apply_geometry(
    image: np.ndarray, geometry: Geometry, table: ValueTable | None = None
) -> np.ndarray:
    """Flip, crop, resize and pad an original-size image as the geometry says; with ``table``,
    ``image`` holds the stored values and only the crop is windowed."""
    if tuple(image.shape) != tuple(geometry.original_size):
        raise ValueError(f"image of shape {image.shape} does not fit {geometry}")
    if geometry.flip:
        image = image[:, ::-1]
    x1, y1, x2, y2 = geometry.crop_box
    if table is not None:
        crop = table.apply(image[y1:y2, x1:x2])
    else:
        crop = np.ascontiguousarray(image[y1:y2, x1:x2], dtype=np.float32)
    content_height, content_width = geometry.content_size
    shrinking = content_width < crop.shape[1] or content_height < crop.shape[0]
    resized = cv2.resize(
        crop,
        (content_width, content_height),
        interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
    )
    out = np.zeros(geometry.input_size, dtype=np.float32)
    out[:content_height, :content_width] = resized
    return out


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
