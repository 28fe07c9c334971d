"""The `Geometry` that maps boxes between the model's input and the original DICOM's pixels,
the breast crop it is built from, and its application to an image.

Geometry, in this order: original -> horizontal flip (canonical orientation: chest wall on the
LEFT, breast pointing right) -> crop to the breast -> resize keeping the aspect ratio -> zero
padding on the right and bottom. Box coordinates are continuous pixel coordinates: pixel (i, j)
covers [j, j+1) x [i, i+1), the convention of cv2.resize.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from datamodules.dicom import ValueTable

# Margin around the breast, as a fraction of the image's longer side (41 px on a 4096 px FFDM).
DEFAULT_MARGIN = 0.01
# After windowing, air behind the breast is black; a low fixed level keeps the faint skin line
# inside the breast mask, and the largest connected component drops burned-in labels.
BACKGROUND_THRESHOLD = 0.05


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
