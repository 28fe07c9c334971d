"""Part 1's local experiment (not package code): faster variants of `load_image` (the breast box
found at 1/4 resolution, then also resizing before windowing) against ours and the floor."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

import cv2
import numpy as np
from data_files import floor_read, timed
from shared import summary

from datamodules.dicom import (
    BACKGROUND_THRESHOLD,
    DEFAULT_MARGIN,
    Geometry,
    ValueTable,
    apply_geometry,
    chest_wall_on_right,
    dicom_laterality,
    load_image,
    read_dicom,
    to_unit_range,
)


# -- 1. a local experiment: faster variants of our path (not package code) --------------------
def _largest_box(mask: np.ndarray, factor: int, shape, margin: float):
    """`mask_box`'s rule on a mask reduced by ``factor`` (a block is on when any of its pixels
    is), its box scaled back."""
    height, width = shape
    mask = np.ascontiguousarray(mask).view(np.uint8)
    padded = cv2.copyMakeBorder(
        mask, 0, (-height) % factor, 0, (-width) % factor, cv2.BORDER_CONSTANT, value=0
    )
    np.multiply(padded, 255, out=padded)
    small = cv2.resize(
        padded, (padded.shape[1] // factor, padded.shape[0] // factor), interpolation=cv2.INTER_AREA
    )
    mask = (small > 0).view(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return 0, 0, width, height
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    left, top, box_width, box_height = (int(v) * factor for v in stats[largest, :4])
    pad = int(math.ceil(margin * max(height, width)))
    return (
        max(0, left - pad),
        max(0, top - pad),
        min(width, left + box_width + pad),
        min(height, top + box_height + pad),
    )


def proposed_load_image(
    path,
    image_size,
    laterality=None,
    window="dicom",
    margin=DEFAULT_MARGIN,
    threshold=BACKGROUND_THRESHOLD,
    box_factor=4,
    resize_first=False,
):
    """`load_image` with the breast box found on a mask reduced by ``box_factor``;
    ``resize_first`` also resizes the stored values before windowing (not exact: the window
    clips). Both move the crop box by a few pixels: every cache would change."""
    pixels, dataset = read_dicom(path)
    table = ValueTable.of(pixels, dataset, window)
    if table is None:
        return load_image(path, image_size, laterality, window, margin, threshold)
    side = (laterality or "").strip().upper() or dicom_laterality(dataset)
    if side in ("L", "R"):
        flip = side == "R"
    else:
        flip = chest_wall_on_right(table.apply(pixels))
    canonical = pixels[:, ::-1] if flip else pixels
    box = _largest_box(table.above(canonical, threshold), box_factor, pixels.shape, margin)
    geometry = Geometry.build(pixels.shape, flip, box, image_size)
    x1, y1, x2, y2 = geometry.crop_box
    content_height, content_width = geometry.content_size
    crop = canonical[y1:y2, x1:x2]
    shrinking = content_width < crop.shape[1] or content_height < crop.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    if resize_first:
        resized = cv2.resize(
            np.ascontiguousarray(crop), (content_width, content_height), interpolation=interpolation
        )
        resized = table.apply(resized)
    else:
        resized = cv2.resize(
            table.apply(crop), (content_width, content_height), interpolation=interpolation
        )
    out = np.zeros(geometry.input_size, dtype=np.float32)
    out[:content_height, :content_width] = resized
    return out, geometry


PROPOSALS = {
    "box_at_quarter": {"box_factor": 4, "resize_first": False},
    "box_at_quarter_resize_first": {"box_factor": 4, "resize_first": True},
}


def bench_proposals(spec, image_size, repeats, reference, reference_geometry):
    """The local experiment, in a pass of its own after the file's main repeats (what it
    allocates changes glibc's heap state, and the large temporaries of both are sensitive to
    that): floor, ours and each variant, in a rotating order in every repeat; then each
    variant's output against load_image's: exactly, and given the variant's own geometry (a
    crop box a few pixels larger resamples every pixel, so the plain difference mostly
    measures the texture under a sub-pixel shift)."""
    path, laterality = spec["path"], spec["laterality"]
    arms = {
        "floor": lambda: floor_read(path),
        "ours": lambda: load_image(path, image_size, laterality),
    }
    for name, options in PROPOSALS.items():
        arms[name] = lambda options=options: proposed_load_image(
            path, image_size, laterality, **options
        )
    times: dict[str, list[float]] = defaultdict(list)
    names = list(arms)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(timed(arms[name])[0])
    floor, ours = times["floor"], times["ours"]
    results = {"floor_s": summary(floor), "ours_s": summary(ours)}
    pixels, dataset = read_dicom(path)
    image = to_unit_range(pixels, dataset)
    del pixels
    for name in PROPOSALS:
        out, geometry = proposed_load_image(path, image_size, laterality, **PROPOSALS[name])
        same_geometry = apply_geometry(image, geometry)
        results[name] = {
            **PROPOSALS[name],
            "s": summary(times[name]),
            "ratio_to_floor": statistics.median(times[name]) / statistics.median(floor),
            "speed_up_vs_ours": statistics.median(ours) / statistics.median(times[name]),
            "identical_to_load_image": bool(np.array_equal(out, reference)),
            "max_abs_difference": float(np.max(np.abs(out - reference))),
            "mean_abs_difference": float(np.mean(np.abs(out - reference))),
            "share_of_pixels_off_by_over_0_01": float(np.mean(np.abs(out - reference) > 0.01)),
            "identical_to_load_image_steps_on_its_geometry": bool(
                np.array_equal(out, same_geometry)
            ),
            "max_abs_difference_on_its_geometry": float(np.max(np.abs(out - same_geometry))),
            "crop_box": list(geometry.crop_box),
            "crop_box_change_px": [
                int(a) - int(b) for a, b in zip(geometry.crop_box, reference_geometry.crop_box)
            ],
        }
    return results
