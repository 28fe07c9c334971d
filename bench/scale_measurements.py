"""The rehearsal's measurements besides the evaluation: prediction writing (1), ``prepare``,
``check-data`` and the cache (3), the cached loader (4), and the cap on a finished demo (5)."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import shared  # noqa: F401  (puts the repository root on sys.path, for common)

from common.defaults import HIT_MIN_DISTANCE

FFDM_SIZE = (4096, 3328)
SM_SIZE = (2457, 1996)


# -- 1. prediction writing ---------------------------------------------------------------------
def bench_writer(images: int, per_image: int, seed: int = 0) -> dict:
    """Two ranks' parts of ``images`` images (``per_image`` detections each, as effdet gives)
    through ``RankParts`` and ``merge_parts``."""
    from callbacks.prediction_writer import MAX_DETECTIONS, RankParts, merge_parts

    rng = np.random.default_rng(seed)
    boxes = rng.uniform(0, 3000, (256, per_image, 4)).astype(np.float32)
    boxes[..., 2:] += boxes[..., :2]
    scores = np.sort(rng.random((256, per_image)).astype(np.float32), axis=1)[:, ::-1]
    labels = np.zeros(per_image, np.int32)
    lesion = np.array([[100.0, 100.0, 200.0, 200.0]])
    with tempfile.TemporaryDirectory(prefix="bench_scale_writer_") as folder:
        started, cpu = time.perf_counter(), time.process_time()
        for rank in range(2):
            parts = RankParts(Path(folder), "test", rank)
            for image in range(rank, images, 2):
                parts.add(
                    f"image{image:07d}",
                    FFDM_SIZE,
                    boxes[image % 256],
                    scores[image % 256],
                    labels,
                    lesion[: image % 2],
                )
            parts.close()
        written = time.perf_counter() - started
        n_images, capped = merge_parts(Path(folder), "test", 2)
        total, cpu = time.perf_counter() - started, time.process_time() - cpu
        rows = pq.ParquetFile(Path(folder) / "test_predictions.parquet").metadata.num_rows
        size = (Path(folder) / "test_predictions.parquet").stat().st_size
    return {
        "images": n_images,
        "detections_per_image_given": per_image,
        "max_detections": MAX_DETECTIONS,
        "rows": rows,
        "images_capped": capped,
        "parts_s": written,
        "merge_s": total - written,
        "total_s": total,
        "cpu_s": cpu,
        "rows_per_s": rows / total,
        "images_per_s": n_images / total,
        "rows_per_cpu_s": rows / cpu,
        "images_per_cpu_s": n_images / cpu,
        "bytes_per_row": size / rows,
    }


# -- 3. prepare, check-data, the cache -----------------------------------------------------------
def bench_data_path(args, folder: Path) -> dict:
    """``prepare`` and ``check-data`` on one core over full-size pairs, the cache's size. Rates
    per core are items per CPU second of this process (one thread: torch's, OpenCV's), which
    other work on the machine stretches far less than wall time."""
    import cv2
    import torch

    from data_tools.check import main as check_main
    from data_tools.prepare import main as prepare_main
    from tests.helpers.dicom_factory import write_paired_folder

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    scale = args.dicom_scale
    sm = tuple(round(v * scale) for v in SM_SIZE)
    ffdm = tuple(round(v * scale) for v in FFDM_SIZE)
    started = time.perf_counter()
    write_paired_folder(folder, pairs=args.pairs, sm_size=sm, ffdm_size=ffdm)
    setup = time.perf_counter() - started
    images = 2 * args.pairs
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        mark, cpu = time.perf_counter(), time.process_time()
        prepared = prepare_main(
            [
                "--manifest",
                str(folder),
                "--out",
                str(folder / "cache"),
                "--image-size",
                *map(str, args.image_size),
                "--workers",
                "0",
                "--no-progress",
            ]
        )
        prepare_s, prepare_cpu = time.perf_counter() - mark, time.process_time() - cpu
        mark, cpu = time.perf_counter(), time.process_time()
        checked = check_main(
            [
                "--manifest",
                str(folder),
                "--cache-dir",
                "null",
                "--image-size",
                *map(str, args.image_size),
                "--workers",
                "1",
                "--no-progress",
            ]
        )
        check_s, check_cpu = time.perf_counter() - mark, time.process_time() - cpu
    cache_bytes = sum(p.stat().st_size for p in (folder / "cache").rglob("*") if p.is_file())
    return {
        "pairs": args.pairs,
        "sm_size": list(sm),
        "ffdm_size": list(ffdm),
        "image_size": list(args.image_size),
        "setup_s": setup,
        "prepare_exit": prepared,
        "prepare_s": prepare_s,
        "prepare_cpu_s": prepare_cpu,
        "prepare_images_per_s_per_core": images / prepare_cpu,
        "check_data_exit": checked,
        "check_data_s": check_s,
        "check_data_cpu_s": check_cpu,
        "check_data_images_per_s_per_core": images / check_cpu,
        "cache_bytes_per_pair": cache_bytes / args.pairs,
        "output_tail": output.getvalue()[-1500:],
    }


# -- 4. the loader -------------------------------------------------------------------------------
def bench_loader(args, folder: Path) -> dict:
    """Pairs per CPU second of the training loader with no workers (one core), per modality
    set."""
    from datamodules.paired import PairedMammoDataModule

    result = {}
    for name, modalities in (("sm", ["sm"]), ("sm_ffdm", ["sm", "ffdm"])):
        module = PairedMammoDataModule(
            str(folder),
            cache_dir=str(folder / "cache"),
            image_size=tuple(args.image_size),
            modalities=modalities,
            batch_size=4,
            num_workers=0,
            seed=0,
            augment=True,
            samples_per_epoch=4 * (args.loader_batches + 1),
        )
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            module.setup("fit")
        iterator = iter(module.train_dataloader())
        next(iterator)  # warm-up
        started, cpu, pairs = time.perf_counter(), time.process_time(), 0
        for batch in iterator:
            pairs += len(batch["pair_id"])
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        result[name] = {
            "modalities": modalities,
            "pairs": pairs,
            "wall_s": wall,
            "cpu_s": cpu,
            "pairs_per_s_per_core": pairs / cpu,
        }
    return result


# -- 5. the cap's measurement on a demo ----------------------------------------------------------
def bench_cap(run: Path) -> dict:
    """Per model and split of a finished demo: detections per image at or above the lowest
    score FAUC-1 (FAUC-2) reads; the most of any image is what a cap must keep."""
    from analysis.model_runs import _table
    from metrics.evaluate import read_evaluation_tables
    from metrics.froc import lowest_score_read

    result = {}
    for info in sorted(run.glob("*/predictions/test_info.json")):
        stage = info.parent.parent
        meta = json.loads(info.read_text())
        for split in ("val", "test"):
            tables = read_evaluation_tables(
                *(
                    _table(stage, split, table)
                    for table in ("predictions", "ground_truth", "images")
                )
            )
            matched = tables.match(
                min_distance=float(meta.get("hit_min_distance", HIT_MIN_DISTANCE))
            )
            per_image = {}
            for max_fp in (1.0, 2.0):
                lowest = lowest_score_read(matched, max_fp)
                above = matched.detection_score >= lowest
                counts = np.bincount(matched.detection_image[above], minlength=matched.n_images)
                per_image[f"fauc_{max_fp:g}"] = {
                    "lowest_score_read": lowest,
                    "max": int(counts.max()),
                    "p99": float(np.percentile(counts, 99)),
                    "mean": float(counts.mean()),
                }
            given = np.bincount(matched.detection_image, minlength=matched.n_images)
            result[f"{stage.name}/{split}"] = {
                "images": matched.n_images,
                "detections_per_image": float(given.mean()),
                **per_image,
            }
    return result
