"""The data path: DICOM decode and preprocessing per image per core, the
cached loader's pairs per second, and from these the CPU cores that keep one GPU fed.

1. Decode + preprocessing. Full-size FFDMs (4096 x 3328, 12-bit MONOCHROME2 with a window in
   the header, as Hologic writes them) uncompressed (Explicit VR Little Endian), JPEG 2000
   Lossless and JPEG Lossless SV1 (the same picture in all three), a 14-bit MONOCHROME1 FFDM
   (uncompressed) and an SM (2457 x 1996, 16-bit, uncompressed), written once per run by
   ``tests/helpers/dicom_factory.py`` (``breast_image``, ``write_mammogram``; JPEG 2000 through
   pydicom's ``Dataset.compress`` with pylibjpeg-openjpeg, JPEG Lossless by the factory's
   ``encode_jpeg_lossless``: 20-30 s and about 8 GB of memory for a full-size FFDM). Each
   repeat times the floor, ``pydicom.dcmread(path).pixel_array``, and ours,
   `datamodules.dicom.load_image` (what ``cli.py prepare`` runs per image), in alternating
   order; then each step of ours on its own (``read_dicom``, ``ValueTable.of``: the window as
   a table of the image's values, laterality, the breast mask as a comparison of stored
   values, ``mask_box``'s connected components, ``Geometry.build``, ``apply_geometry``, of
   which the crop's windowing and the resize, and the cache write of ``prepare``), and the
   cache builder's own call per image (``_prepare_one`` after ``_init_worker``). One thread
   everywhere (torch, OpenCV, OpenMP): the figures are per core. The files are in the page
   cache: the floor is decoding, not the disk. A local experiment (not package code), in a pass
   of its own after each uncompressed file's repeats, times faster variants of our path
   against it and the floor: the breast box found at 1/4 resolution, then also resizing before
   windowing (both move the crop box).
2. Cached loader: a phantom (``cli.py phantom --pairs 64 --scale 5/16``, so FFDMs come at about
   the model's input size) prepared at 1280 x 1024 (``cli.py prepare``), read by
   `PairedMammoDataModule`'s training loader (balanced sampler, training augmentation, batch
   4) with 0, 1 and 2 workers, for Stage I (one modality) and for two modalities (Stage II and
   BASE_UB): pairs/s over a fixed number of batches after warm-up; and, in this process, what
   one sample costs (cache read, of which zlib inflation; augmentation; the rest; collation).
3. Cores per GPU: an assumed GPU rate (``--gpu-pairs-per-s``, default 60 pairs/s for Stage I:
   EfficientDet-D0 at 1280 x 1024, bf16, one H100/H200-class GPU; not measured here) over the
   pairs/s of one loader worker (one core), and the same for the decode path without a cache.

    .venv/bin/python bench/bench_data.py [--repeats 7] [--compressed-repeats 3] [--pairs 64]
        [--workers 0 1 2] [--gpu-pairs-per-s 60] [--quick]

``--quick`` (about 30 s) uses quarter-size DICOMs, 8 pairs and one or two repeats: a smoke run,
not figures. Writes ``bench/results/data.json`` (``--out``).
"""

from __future__ import annotations

import os

# Per core: one thread for every library that could start a pool (before numpy is imported).
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
import torch  # noqa: E402
from shared import machine, summary  # noqa: E402

from common.defaults import IMAGE_SIZE  # noqa: E402
from data_tools.prepare import _init_worker, _prepare_one, _Task  # noqa: E402
from datamodules.cache import ImageCache  # noqa: E402
from datamodules.dicom import (  # noqa: E402
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
    to_unit_range,
)
from tests.helpers.dicom_factory import breast_image, write_mammogram  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "data.json"
FFDM_SIZE = (4096, 3328)  # rows, columns: Hologic Selenia Dimensions FFDM
SM_SIZE = (2457, 1996)  # Hologic C-View synthesised mammogram
TRANSFER_SYNTAXES = {
    None: "1.2.840.10008.1.2.1 Explicit VR Little Endian",
    "jpeg2000": "1.2.840.10008.1.2.4.90 JPEG 2000 Lossless",
    "jpeg-lossless": "1.2.840.10008.1.2.4.70 JPEG Lossless SV1",
}
ASSUMPTION = (
    "assumed, not measured here: the Stage I training rate of EfficientDet-D0 at "
    "1280 x 1024 with bf16 on one H100/H200-class GPU"
)


def timed(function, *args, **kwargs) -> tuple[float, Any]:
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - start, value


def floor_read(path) -> np.ndarray:
    """What any reader pays: pydicom's bare decode."""
    return pydicom.dcmread(path).pixel_array


# -- 1. the test files ---------------------------------------------------------------------------
def file_specs(scale: float) -> list[dict[str, Any]]:
    """The files to write: name, size, laterality, photometric, bits, compression, window."""
    ffdm = tuple(max(64, round(v * scale)) for v in FFDM_SIZE)
    sm = tuple(max(64, round(v * scale)) for v in SM_SIZE)
    specs = []
    for compression, name in (
        (None, "ffdm_uncompressed"),
        ("jpeg2000", "ffdm_jpeg2000"),
        ("jpeg-lossless", "ffdm_jpeg_lossless"),
    ):
        specs.append(
            {
                "name": name,
                "modality": "ffdm",
                "size": ffdm,
                "laterality": "R",
                "photometric": "MONOCHROME2",
                "bits_stored": 12,
                "compression": compression,
                "window": (2048.0, 4096.0),
                "seed": 0,
            }
        )
    specs.append(
        {
            "name": "ffdm_uncompressed_monochrome1",
            "modality": "ffdm",
            "size": ffdm,
            "laterality": "L",
            "photometric": "MONOCHROME1",
            "bits_stored": 14,
            "compression": None,
            "window": (8192.0, 16384.0),
            "seed": 1,
        }
    )
    specs.append(
        {
            "name": "sm_uncompressed",
            "modality": "sm",
            "size": sm,
            "laterality": "R",
            "photometric": "MONOCHROME2",
            "bits_stored": 16,
            "compression": None,
            "window": (32768.0, 65536.0),
            "seed": 2,
        }
    )
    return specs


def write_files(specs, folder: Path) -> dict[str, float]:
    """Write every file once (the same picture for the three FFDM syntaxes); returns the time
    each took. Each compressed file is checked to decode to the uncompressed one's pixels."""
    images, setup = {}, {}
    reference = {}
    for spec in specs:
        key = (spec["size"], spec["laterality"], spec["seed"])
        if key not in images:
            images[key] = breast_image(
                *spec["size"], laterality=spec["laterality"], seed=spec["seed"]
            )
        seconds, path = timed(
            write_mammogram,
            folder / f"{spec['name']}.dcm",
            images[key],
            spec["laterality"],
            "CC",
            spec["photometric"],
            spec["bits_stored"],
            spec["compression"],
            window=spec["window"],
        )
        spec["path"] = str(path)
        setup[spec["name"]] = seconds
        dataset = pydicom.dcmread(path)
        spec["transfer_syntax"] = str(dataset.file_meta.TransferSyntaxUID)
        spec["transfer_syntax_expected"] = TRANSFER_SYNTAXES[spec["compression"]]
        spec["file_mib"] = path.stat().st_size / 2**20
        stored = dataset.pixel_array
        if spec["compression"] is None:
            reference[key + (spec["bits_stored"], spec["photometric"])] = stored
        else:
            expected = reference[key + (spec["bits_stored"], spec["photometric"])]
            spec["lossless_round_trip"] = bool(np.array_equal(stored, expected))
    return setup


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


# -- 2. the cached loader ------------------------------------------------------------------------
def make_phantom(folder: Path, pairs: int, scale: str, image_size) -> dict[str, Any]:
    """``cli.py phantom`` and ``cli.py prepare`` as the Makefile runs them (untimed setup)."""
    from data_tools.phantom import main as phantom_main
    from data_tools.prepare import main as prepare_main

    started = time.perf_counter()
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = phantom_main(
            [
                "--out",
                str(folder),
                "--pairs",
                str(pairs),
                "--seed",
                "0",
                "--scale",
                scale,
                "--quiet",
            ]
        )
        phantom_s = time.perf_counter() - started
        if code == 0:
            code = prepare_main(
                [
                    "--manifest",
                    str(folder),
                    "--out",
                    str(folder / "cache"),
                    "--image-size",
                    *(str(v) for v in image_size),
                    "--no-progress",
                ]
            )
    if code != 0:
        raise RuntimeError(f"making the phantom cache failed:\n{text.getvalue()}")
    entries = list((folder / "cache").rglob("*.npz"))
    return {
        "pairs": pairs,
        "scale": scale,
        "phantom_s": phantom_s,
        "prepare_s": time.perf_counter() - started - phantom_s,
        "cache_entries": len(entries),
        "cache_entry_kib_mean": sum(p.stat().st_size for p in entries) / len(entries) / 1024,
    }


def data_module(folder: Path, modalities, workers: int, args):
    from datamodules.paired import PairedMammoDataModule

    module = PairedMammoDataModule(
        str(folder),
        cache_dir=str(folder / "cache"),
        image_size=tuple(args.image_size),
        modalities=modalities,
        batch_size=args.batch_size,
        num_workers=workers,
        seed=0,
        augment=True,
        samples_per_epoch=(args.warmup_batches + args.batches) * args.batch_size,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        module.setup("fit")
    return module


def loader_rates(folder: Path, modalities, args) -> dict[str, Any]:
    """Pairs/s of the training loader per worker count, interleaved across repeats."""
    loaders = {w: data_module(folder, modalities, w, args).train_dataloader() for w in args.workers}
    rates: dict[int, list[float]] = defaultdict(list)
    startup: dict[int, float] = {}
    for repeat in range(args.loader_repeats):
        shift = repeat % len(args.workers)
        for workers in args.workers[shift:] + args.workers[:shift]:
            started = time.perf_counter()
            iterator = iter(loaders[workers])
            for _ in range(args.warmup_batches):
                next(iterator)
            startup.setdefault(workers, time.perf_counter() - started)
            start, pairs = time.perf_counter(), 0
            for batch in iterator:
                pairs += len(batch["pair_id"])
            rates[workers].append(pairs / (time.perf_counter() - start))
    for loader in loaders.values():  # persistent workers: stop them now
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
    del loaders
    gc.collect()
    return {
        "pairs_per_s": {str(w): summary(rates[w]) for w in args.workers},
        "first_iteration_with_warmup_s": {str(w): startup[w] for w in args.workers},
    }


def loader_steps(folder: Path, modalities, args, count: int) -> dict[str, Any]:
    """What one training sample costs in this process: cache read per image (zlib inflation and
    the float conversion apart), augmentation per pair, the whole ``__getitem__``, collation."""
    from datamodules.batch import collate_pairs
    from datamodules.dataset import input_boxes

    module = data_module(folder, modalities, 0, args)
    dataset = module.dataset("train")
    draws = list(itertools.islice(iter(module.train_dataloader().sampler), count))
    parts: dict[str, list[float]] = defaultdict(list)
    samples = []
    for index, seed in draws:
        images, boxes, labels = {}, {}, {}
        for modality in modalities:
            pair_id = dataset.pair_ids[index].decode()
            entry = dataset.cache.path(pair_id, modality)

            def inflate(entry=entry):
                with np.load(entry, allow_pickle=False) as stored:
                    return stored["image"]

            parts["cache_inflate_per_image"].append(timed(inflate)[0])
            seconds, (image, geometry) = timed(dataset.read, index, modality)
            parts["cache_read_per_image"].append(seconds)
            empty = (np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))
            original, classes = dataset.lesions.get((index, modality), empty)
            images[modality] = image
            boxes[modality], kept = input_boxes(original, geometry)
            labels[modality] = classes[kept]
        parts["augment_per_pair"].append(
            timed(dataset.transform, images, boxes, labels, seed=seed)[0]
        )
        seconds, sample = timed(dataset.__getitem__, (index, seed))
        parts["getitem_per_pair"].append(seconds)
        samples.append(sample)
    for start in range(0, len(samples) - args.batch_size + 1, args.batch_size):
        seconds, _ = timed(collate_pairs, samples[start : start + args.batch_size])
        parts["collate_per_pair"].append(seconds / args.batch_size)
    # the mean too: augmentation is a mixture (each transform applies with p = 0.5)
    result = {
        name: {**summary(values), "mean": statistics.fmean(values)}
        for name, values in parts.items()
    }
    per_image = result["cache_read_per_image"]["mean"] * len(modalities)
    result["rest_of_getitem_per_pair_mean_s"] = (
        result["getitem_per_pair"]["mean"] - per_image - result["augment_per_pair"]["mean"]
    )
    return result


def bench_loader(args, folder: Path) -> dict[str, Any]:
    phantom = make_phantom(folder, args.pairs, args.phantom_scale, args.image_size)
    configs = {"stage1_one_modality": ("sm",), "two_modalities": ("sm", "ffdm")}
    results = {}
    for name, modalities in configs.items():
        results[name] = {
            "modalities": list(modalities),
            **loader_rates(folder, modalities, args),
            "steps_s": loader_steps(folder, modalities, args, args.step_samples),
        }
    return {
        "phantom": phantom,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "warmup_batches": args.warmup_batches,
        "repeats": args.loader_repeats,
        "augment": True,
        **results,
    }


# -- 3. conclusions ------------------------------------------------------------------------------
def conclusions(decode, loader, args) -> dict[str, Any]:
    gpu = args.gpu_pairs_per_s
    files = decode["files"]
    stage1 = loader["stage1_one_modality"]
    rates = {int(w): value["median"] for w, value in stage1["pairs_per_s"].items()}
    per_worker = {w: rates[w] / max(1, w) for w in rates}
    # one worker process is one core; else the in-process loader (0 workers)
    basis = 1 if 1 in rates else min(rates)
    cached = {
        "pairs_per_s_per_core": per_worker[basis],
        "basis_num_workers": basis,
        "cores_per_gpu": gpu / per_worker[basis],
        "cores_per_gpu_by_num_workers": {str(w): gpu / per_worker[w] for w in rates},
        "note": "loader worker cores only; the training process itself needs one more",
    }
    two = loader["two_modalities"]["pairs_per_s"]
    two_rate = two[str(basis)]["median"] / max(1, basis)
    cached["two_modalities_cores_per_gpu_at_same_rate"] = gpu / two_rate
    # without a cache: each image's load_image instead of its cache read, the rest unchanged
    steps = stage1["steps_s"]
    cached_pair = 1.0 / rates[min(rates)]
    rest = max(0.0, cached_pair - steps["cache_read_per_image"]["mean"])
    decode_path = {}
    for name, result in files.items():
        seconds = result["ours_s"]["median"] + rest
        decode_path[f"stage1_{name}"] = {"s_per_pair": seconds, "cores_per_gpu": gpu * seconds}
    two_steps = loader["two_modalities"]["steps_s"]
    two_rest = max(
        0.0, 1.0 / two[str(min(rates))]["median"] - 2 * two_steps["cache_read_per_image"]["mean"]
    )
    if "sm_uncompressed" in files:
        for name in ("ffdm_uncompressed", "ffdm_jpeg2000", "ffdm_jpeg_lossless"):
            if name in files:
                seconds = (
                    files["sm_uncompressed"]["ours_s"]["median"]
                    + files[name]["ours_s"]["median"]
                    + two_rest
                )
                decode_path[f"two_modalities_sm_and_{name}"] = {
                    "s_per_pair": seconds,
                    "cores_per_gpu": gpu * seconds,
                }
    uncompressed = files.get("ffdm_uncompressed")
    target = {}
    if uncompressed is not None:
        ratio = uncompressed["ratio_ours_to_floor"]["of_medians"]
        steps_s = uncompressed["steps_s"]
        costly = sorted(
            (
                (name, value["median"])
                for name, value in steps_s.items()
                if not name.startswith("of_which") and name != "cache_write"
            ),
            key=lambda item: -item[1],
        )
        target = {
            "uncompressed_ffdm_ratio": ratio,
            "target_ratio": 2.0,
            "aim_ratio": 1.5,
            "meets_target": ratio <= 2.0,
            "floor_s": uncompressed["floor_s"]["median"],
            "ours_s": uncompressed["ours_s"]["median"],
            "steps_by_cost_s": dict(costly),
            "inside_steps_s": {
                name: value["median"]
                for name, value in steps_s.items()
                if name.startswith("of_which")
            },
        }
        proposed = uncompressed.get("proposed")
        if proposed:
            target["proposed_ratios"] = {
                name: proposed[name]["ratio_to_floor"] for name in PROPOSALS
            }
    return {
        "gpu_pairs_per_s": gpu,
        "gpu_rate_is": ASSUMPTION,
        "cached": cached,
        "decode_path_no_cache": decode_path,
        "decode_path_formula": "cores = gpu pairs/s x (load_image per image + the cached "
        "loader's per-pair time less its cache read)",
        "acceptance": target,
    }


# -- summary -------------------------------------------------------------------------------------
def ms(value: float) -> str:
    return f"{value * 1000:.0f}" if value >= 0.01 else f"{value * 1000:.1f}"


def print_summary(result, path: Path) -> None:
    decode, loader, found = result["decode"], result["loader"], result["conclusions"]
    print(
        "Decode + preprocessing per image, one core (median ms; ours = load_image; "
        "ratio = ours / floor):"
    )
    print(f"  {'file':32s} {'floor':>7s} {'ours':>7s} {'ratio':>6s} {'prepare':>8s}  MiB")
    for name, item in decode["files"].items():
        print(
            f"  {name:32s} {ms(item['floor_s']['median']):>7s} "
            f"{ms(item['ours_s']['median']):>7s} "
            f"{item['ratio_ours_to_floor']['of_medians']:>5.1f}x "
            f"{ms(item['prepare_one_s']['median']):>8s}  {item['file_mib']:.1f}"
        )
    for name, item in decode["files"].items():
        parts = ", ".join(
            f"{step} {ms(value['median'])}" for step, value in item["steps_s"].items()
        )
        print(f"  steps of {name} (ms): {parts}")
    uncompressed = decode["files"].get("ffdm_uncompressed", {})
    proposed = uncompressed.get("proposed", {})
    if proposed:
        print(
            f"  local experiment on ffdm_uncompressed, its own pass: floor "
            f"{ms(proposed['floor_s']['median'])} ms, ours {ms(proposed['ours_s']['median'])}"
            " ms"
        )
    for name in PROPOSALS if proposed else ():
        item = proposed[name]
        same = (
            "identical output"
            if item["identical_to_load_image"]
            else (
                f"mean |diff| {item['mean_abs_difference']:.1e} (max "
                f"{item['max_abs_difference']:.2f}, "
                f"{100 * item['share_of_pixels_off_by_over_0_01']:.1f}% of pixels off by > 0.01), "
                f"crop box moved {item['crop_box_change_px']} px; on its own crop box "
                + (
                    "identical"
                    if item["identical_to_load_image_steps_on_its_geometry"]
                    else f"max |diff| {item['max_abs_difference_on_its_geometry']:.2g}"
                )
            )
        )
        print(
            f"  proposed {name} (local experiment): {ms(item['s']['median'])} ms, "
            f"{item['ratio_to_floor']:.1f}x floor, {item['speed_up_vs_ours']:.1f}x faster "
            f"than ours, {same}"
        )
    print(
        f"Cached loader at {result['settings']['image_size']}, batch "
        f"{loader['batch_size']}, training augmentation (pairs/s, median of "
        f"{loader['repeats']}):"
    )
    for config in ("stage1_one_modality", "two_modalities"):
        item = loader[config]
        rates = ", ".join(
            f"num_workers={w}: {value['median']:.1f}" for w, value in item["pairs_per_s"].items()
        )
        steps = item["steps_s"]
        print(
            f"  {config} {item['modalities']}: {rates}; in process, mean ms: cache read "
            f"{ms(steps['cache_read_per_image']['mean'])} per image (zlib inflate "
            f"{ms(steps['cache_inflate_per_image']['mean'])}), augment "
            f"{ms(steps['augment_per_pair']['mean'])} per pair, getitem "
            f"{ms(steps['getitem_per_pair']['mean'])} per pair, collate "
            f"{ms(steps['collate_per_pair']['mean'])} per pair"
        )
    cached = found["cached"]
    print(f"Cores per GPU at {found['gpu_pairs_per_s']:g} pairs/s ({found['gpu_rate_is']}):")
    print(
        f"  cached loader: {cached['cores_per_gpu']:.1f} worker cores "
        f"({cached['pairs_per_s_per_core']:.1f} pairs/s per core, "
        f"{cached['basis_num_workers']} worker), two modalities "
        f"{cached['two_modalities_cores_per_gpu_at_same_rate']:.1f}; plus the training "
        "process"
    )
    for name, item in found["decode_path_no_cache"].items():
        print(
            f"  no cache, {name}: {item['cores_per_gpu']:.1f} cores "
            f"({ms(item['s_per_pair'])} ms per pair)"
        )
    target = found["acceptance"]
    if target:
        verdict = "meets" if target["meets_target"] else "misses"
        print(
            f"Acceptance: uncompressed FFDM {target['uncompressed_ffdm_ratio']:.1f}x the "
            f"pixel_array floor: {verdict} the 2x target"
        )
    print(f"wrote {path} ({result['wall_s']:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="repeats per uncompressed file")
    parser.add_argument("--compressed-repeats", type=int, default=3)
    parser.add_argument("--image-size", nargs=2, type=int, default=IMAGE_SIZE, metavar=("H", "W"))
    parser.add_argument(
        "--dicom-scale",
        type=float,
        default=1.0,
        help="size of the test DICOMs relative to full size",
    )
    parser.add_argument("--pairs", type=int, default=64, help="phantom pairs for the loader")
    parser.add_argument("--phantom-scale", default="5/16")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per repeat")
    parser.add_argument("--warmup-batches", type=int, default=2)
    parser.add_argument("--loader-repeats", type=int, default=3)
    parser.add_argument("--step-samples", type=int, default=16)
    parser.add_argument(
        "--gpu-pairs-per-s", type=float, default=60.0, help=f"GPU training rate ({ASSUMPTION})"
    )
    parser.add_argument(
        "--no-proposals", action="store_true", help="skip the local experiment of faster variants"
    )
    parser.add_argument("--workdir", help="folder for the temporary files (default: system's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: quarter-size DICOMs, 8 pairs, 1-2 repeats"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.compressed_repeats, args.dicom_scale = 2, 1, 0.25
        args.pairs, args.batches, args.warmup_batches = 8, 3, 1
        args.loader_repeats, args.step_samples = 1, 4
    started = time.perf_counter()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_data_", dir=args.workdir) as temporary:
        folder = Path(temporary)
        decode = bench_decode(args, folder / "dicom")
        loader = bench_loader(args, folder / "phantom")
    settings = {
        key: (list(value) if isinstance(value, tuple) else value)
        for key, value in vars(args).items()
        if key not in ("out", "workdir")
    }
    settings["threads"] = {
        "torch": torch.get_num_threads(),
        "opencv": cv2.getNumThreads(),
        **{
            name: os.environ.get(name)
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        },
        "note": "one thread per process: figures are per core; DataLoader "
        "workers are one process (core) each",
    }
    info = machine()
    info["opencv"] = cv2.__version__
    info["numpy"] = np.__version__
    info["pydicom"] = pydicom.__version__
    info["torch"] = torch.__version__
    info["load_average_before_after"] = [list(load_before), list(os.getloadavg())]
    result = {
        "benchmark": "data",
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": info,
        "settings": settings,
        "decode": decode,
        "loader": loader,
    }
    result["conclusions"] = conclusions(decode, loader, args)
    result["wall_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_summary(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
