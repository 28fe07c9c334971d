"""Part 1 of the data benchmark: decode + preprocessing of each test DICOM, pydicom's floor
against `load_image`, each of its steps on its own, and the cache builder's own call."""

from __future__ import annotations

import gc
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from data_files import file_specs, floor_read, timed, write_files
from data_proposals import bench_proposals
from shared import summary

from data_tools.prepare import _init_worker, _prepare_one, _Task
from datamodules.cache import ImageCache
from datamodules.dicom import (
    BACKGROUND_THRESHOLD,
    DEFAULT_MARGIN,
    Geometry,
    ValueTable,
    apply_geometry,
    chest_wall_on_right,
    dicom_laterality,
    load_image,
    mask_box,
    read_dicom,
)


# -- 1. our path, step by step -------------------------------------------------------------------
def time_steps(path, image_size, laterality, cache: ImageCache, name: str, modality: str):
    """Each step of `load_image` (and the cache write of ``prepare``) on its own, in order, on
    the real intermediate results; returns (seconds by step, the final image)."""
    steps = {}
    steps["read_dicom"], (pixels, dataset) = timed(read_dicom, path)
    steps["value_table"], table = timed(ValueTable.of, pixels, dataset, "dicom")
    if table is None:
        raise RuntimeError(f"{path}: no value table (the benchmark's files are integer images)")

    def laterality_step():
        side = (laterality or "").strip().upper() or dicom_laterality(dataset)
        return side == "R" if side in ("L", "R") else chest_wall_on_right(table.apply(pixels))

    steps["laterality"], flip = timed(laterality_step)
    canonical = pixels[:, ::-1] if flip else pixels
    # the breast box's two lines (dicom.py: the mask, then cv2's connected components)
    steps["box_mask"], mask = timed(table.above, canonical, BACKGROUND_THRESHOLD)
    steps["box_components"], box = timed(mask_box, mask, DEFAULT_MARGIN)
    del mask
    steps["geometry_build"], geometry = timed(Geometry.build, pixels.shape, flip, box, image_size)
    steps["apply_geometry"], out = timed(apply_geometry, pixels, geometry, table)
    # apply_geometry's two lines (the crop windowed through the table, cv2.resize), apart
    x1, y1, x2, y2 = geometry.crop_box
    steps["of_which_geometry_crop_window"], crop = timed(table.apply, canonical[y1:y2, x1:x2])
    content_height, content_width = geometry.content_size
    shrinking = content_width < crop.shape[1] or content_height < crop.shape[0]
    steps["of_which_geometry_resize"], _ = timed(
        cv2.resize,
        crop,
        (content_width, content_height),
        interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
    )
    del crop
    steps["cache_write"], _ = timed(cache.write, f"steps-{name}", modality, out, geometry)
    return steps, out


# -- 1. the decode benchmark ---------------------------------------------------------------------
def ratio_summary(ours: list[float], floor: list[float]) -> dict[str, float]:
    return {
        "of_medians": statistics.median(ours) / statistics.median(floor),
        **{
            f"per_repeat_{key}": value
            for key, value in summary([a / b for a, b in zip(ours, floor)]).items()
        },
    }


def bench_file(spec, image_size, cache: ImageCache, repeats: int, propose: bool):
    path, laterality, modality = spec["path"], spec["laterality"], spec["modality"]
    task = _Task(f"prepare-{spec['name']}", modality, path, laterality, False)
    # warm-up, untimed: decoder plugins loaded, file in the page cache
    floor_read(path)
    reference, reference_geometry = load_image(path, image_size, laterality)
    floor, ours, prepare = [], [], []
    steps: dict[str, list[float]] = defaultdict(list)
    steps_match = True
    for repeat in range(repeats):
        order = ("floor", "ours") if repeat % 2 == 0 else ("ours", "floor")
        for which in order:
            if which == "floor":
                floor.append(timed(floor_read, path)[0])
            else:
                ours.append(timed(load_image, path, image_size, laterality)[0])
        seconds, out = time_steps(path, image_size, laterality, cache, spec["name"], modality)
        steps_match &= bool(np.array_equal(out, reference))
        for name, value in seconds.items():
            steps[name].append(value)
        seconds, outcome = timed(_prepare_one, task)
        if outcome[3] is not None:
            raise RuntimeError(f"_prepare_one failed on {path}: {outcome[3]}")
        prepare.append(seconds)
    steps_summary = {name: summary(values) for name, values in steps.items()}
    counted = [name for name in steps if not name.startswith("of_which") and name != "cache_write"]
    result = {
        **{
            key: spec[key]
            for key in (
                "modality",
                "laterality",
                "photometric",
                "bits_stored",
                "transfer_syntax",
                "transfer_syntax_expected",
                "file_mib",
            )
        },
        "size": list(spec["size"]),
        "repeats": repeats,
        "floor_s": summary(floor),
        "ours_s": summary(ours),
        "ratio_ours_to_floor": ratio_summary(ours, floor),
        "steps_s": steps_summary,
        "steps_load_image_sum_median_s": sum(steps_summary[n]["median"] for n in counted),
        "steps_reproduce_load_image": steps_match,
        "prepare_one_s": summary(prepare),
        "cache_entry_kib": cache.path(task.pair_id, modality).stat().st_size / 1024,
        "crop_box": list(reference_geometry.crop_box),
    }
    if "lossless_round_trip" in spec:
        result["lossless_round_trip"] = spec["lossless_round_trip"]
    if propose:
        result["proposed"] = bench_proposals(
            spec, image_size, repeats, reference, reference_geometry
        )
    return result


def bench_decode(args, folder: Path) -> dict[str, Any]:
    specs = file_specs(args.dicom_scale)
    started = time.perf_counter()
    write_s = write_files(specs, folder)
    setup_s = time.perf_counter() - started
    gc.collect()
    cache_dir = folder / "prepare-cache"
    image_size = tuple(args.image_size)
    cache = ImageCache(cache_dir, image_size, create=True)
    _init_worker(str(cache_dir), image_size, "dicom", DEFAULT_MARGIN)
    files = {}
    for spec in specs:
        repeats = args.repeats if spec["compression"] is None else args.compressed_repeats
        propose = spec["compression"] is None and not args.no_proposals
        files[spec["name"]] = bench_file(spec, image_size, cache, repeats, propose)
        gc.collect()
    return {"setup_s": setup_s, "write_s": write_s, "files": files}
