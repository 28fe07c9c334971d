"""EMBED's ROIs as xyxy boxes in each image's stored DICOM pixels: the frame of the ROI column,
whether EMBED's PNG mirrored the image (``PNG_flipped``, else EMBED's rule on the DICOM header)
and the image size a mirror needs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from common.tables import box_holds
from data_tools.embed.options import EmbedOptions
from data_tools.embed.tables import _MAX_LISTED_ROWS

# The ROI columns in the stored DICOM's pixels; the others of `tables.ROI_COLUMNS` are in
# the frame of EMBED's PNGs.
DICOM_FRAME_COLUMNS = ("DCM_ROI_coords",)
# DCM_to_PNG.ipynb (check_dcm) flips only these views; others are never flipped.
FLIPPED_VIEWS = ("CC", "MLO", "ML")


def roi_to_xyxy(
    roi: tuple[float, float, float, float], mirror_width: float | None = None
) -> tuple[float, float, float, float]:
    """(ymin, xmin, ymax, xmax) -> (x1, y1, x2, y2); mirrored as x' = width - x when given."""
    ymin, xmin, ymax, xmax = (float(v) for v in roi)
    if mirror_width is not None:
        xmin, xmax = mirror_width - xmax, mirror_width - xmin
    return xmin, ymin, xmax, ymax


def embed_png_flip(orientation, view: str, laterality: str) -> tuple[bool, str]:
    """(whether EMBED's DICOM-to-PNG conversion mirrored the image, the rule that decided).

    ``check_dcm`` of DCM_to_PNG.ipynb flips a CC, MLO or ML view horizontally when the first
    value of ``PatientOrientation`` (the patient direction of the image rows) is 'P', i.e. the
    chest wall is on the right; other views are never flipped. Without the tag the notebook's
    fallback branch flips R CC/ML/MLO views (that branch is unreachable in the notebook, whose
    ``~pd.isnull(...)`` is always true; its stated intent is used here).
    """
    view = (view or "").strip().upper()
    values = [str(value).strip().upper() for value in (orientation or ()) if str(value).strip()]
    if values:
        return view in FLIPPED_VIEWS and values[0] == "P", "patient_orientation"
    return view in FLIPPED_VIEWS and laterality == "R", "laterality_no_patient_orientation"


_PLACED_COLUMNS = (
    "position",
    "modality",
    "x1",
    "y1",
    "x2",
    "y2",
    "match_level",
    "roi_index",
    "roi_column",
    "frame_rule",
    "mirrored",
    "metadata_row",
)
_HEADER_TAGS = ["Rows", "Columns", "PatientOrientation", "ViewPosition", "ImageLaterality"]


def read_header(path: Path) -> dict:
    """Rows, Columns, PatientOrientation (a list, [] if absent), ViewPosition and
    ImageLaterality ('' if absent) from the DICOM header; the pixel data is not read."""
    import pydicom

    dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    orientation = dataset.get("PatientOrientation")
    if orientation is None or orientation == "":
        values = []
    elif isinstance(orientation, str):
        values = orientation.split("\\")
    else:
        values = [str(value) for value in orientation]
    return {
        "size": (int(dataset.Rows), int(dataset.Columns)),
        "orientation": [value.strip() for value in values if value.strip()],
        "view": str(dataset.get("ViewPosition", "") or ""),
        "laterality": str(dataset.get("ImageLaterality", "") or ""),
    }


def _pixel_orientation(path: Path) -> tuple[tuple[int, int], bool]:
    """((Rows, Columns), chest wall on the right) from the pixels."""
    from datamodules.dicom import chest_wall_on_right, read_dicom, to_unit_range

    pixels, dataset = read_dicom(path)
    image = to_unit_range(pixels, dataset, window="minmax")
    return image.shape, chest_wall_on_right(image)


def _image_frame(pair: pd.Series, kind: str, options: EmbedOptions):
    """(size (Rows, Columns) or None, mirror the boxes, the rule that decided, where the size
    came from or '') of one image of a pair."""
    size = (pair[f"meta_rows_{kind}"], pair[f"meta_columns_{kind}"])
    size = tuple(int(v) for v in size) if all(np.isfinite(size)) else None
    source = "metadata" if size is not None else ""
    path = pair[f"path_{kind}"]
    if pair[f"roi_column_{kind}"] in DICOM_FRAME_COLUMNS:
        return size, False, "dcm_roi_coords", source
    if options.roi_frame == "stored":
        return size, False, "roi_frame_stored", source
    if options.orientation_from == "pixels":
        size, mirror = _pixel_orientation(path)
        return size, mirror, "pixels", "pixels"
    if options.orientation_from == "laterality":
        mirror, rule = pair["laterality"] == "R", "laterality"
    elif np.isfinite(pair[f"png_flipped_{kind}"]):
        mirror, rule = bool(pair[f"png_flipped_{kind}"]), "png_flipped"
    else:
        header = read_header(path)
        mirror, rule = embed_png_flip(
            header["orientation"],
            header["view"] or pair["view"],
            header["laterality"].upper() or pair["laterality"],
        )
        if size is None:
            return header["size"], mirror, rule, "dicom_header"
        return size, mirror, rule, source
    if size is None and mirror:
        return read_header(path)["size"], mirror, rule, "dicom_header"
    return size, mirror, rule, source


def place_boxes(pairs: pd.DataFrame, options: EmbedOptions, summary: dict):
    """(lesion rows: xyxy in stored pixels, each with its ROI column, frame rule and mirrored
    or not; the positions of the pairs with an image that could not be read). Counts go to
    summary."""
    lesions, unreadable = [], set()
    sources, rules, stats = Counter(), Counter(), Counter()
    degenerate_rows, outside_rows = [], []
    with_rois = pairs[(pairs["n_rois_ffdm"] + pairs["n_rois_sm"]) > 0]
    for _, pair in with_rois.iterrows():
        position = int(pair["position"])
        # both images of a pair are placed before either counts: an unreadable one drops both
        placed = {}
        try:
            for kind in ("ffdm", "sm"):
                if pair[f"rois_{kind}"]:
                    placed[kind] = _image_frame(pair, kind, options)
        except Exception:  # noqa: BLE001 - counted; the file's name is not logged
            unreadable.add(position)
            continue
        for kind, (size, mirror, rule, source) in placed.items():
            if source:
                sources[source] += 1
            rules[rule] += 1
            if rule == "pixels" and mirror != (pair["laterality"] == "R"):
                stats["pixel_orientation_differs_from_laterality"] += 1
            stats["mirrored_images" if mirror else "unmirrored_images"] += 1
            row = int(pair[f"row_{kind}"])
            levels = pair[f"roi_levels_{kind}"]
            for index, roi in enumerate(pair[f"rois_{kind}"]):
                x1, y1, x2, y2 = roi_to_xyxy(roi, size[1] if mirror else None)
                if not box_holds(x1, y1, x2, y2):
                    degenerate_rows.append(row)
                    continue
                if size is not None and (x1 < 0 or y1 < 0 or x2 > size[1] or y2 > size[0]):
                    outside_rows.append(row)
                lesions.append(
                    {
                        "position": position,
                        "modality": kind,
                        "x1": x1,
                        "y1": y1,
                        "x2": x2,
                        "y2": y2,
                        "match_level": levels[index] if index < len(levels) else np.nan,
                        "roi_index": index,
                        "roi_column": pair[f"roi_column_{kind}"],
                        "frame_rule": rule,
                        "mirrored": bool(mirror),
                        "metadata_row": row,
                    }
                )
    summary["rois"] = {
        "mirrored_images": stats["mirrored_images"],
        "unmirrored_images": stats["unmirrored_images"],
        "frame_rule": dict(sorted(rules.items())),
        "degenerate_dropped": len(degenerate_rows),
        "degenerate_metadata_rows": sorted(set(degenerate_rows))[:_MAX_LISTED_ROWS],
        "outside_image_kept": len(outside_rows),
        "outside_image_metadata_rows": sorted(set(outside_rows))[:_MAX_LISTED_ROWS],
    }
    if options.orientation_from == "pixels" and options.roi_frame == "chest-wall-left":
        summary["rois"]["pixel_orientation_differs_from_laterality"] = stats[
            "pixel_orientation_differs_from_laterality"
        ]
    summary["image_size_from"] = dict(sources)
    return lesions, unreadable
