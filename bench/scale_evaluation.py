"""The rehearsal's evaluation (2): synthetic detections at the writer's density, written as
Parquet or as today's CSVs, and evaluated as the report runs it or as it ran before."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from shared import peak_rss_mib


# -- 2. evaluation -------------------------------------------------------------------------------
def synthetic_predictions(n_images: int, per_image: int, seed: int = 0) -> dict:
    """Mammogram-sized images, ``per_image`` detections each (as the writer leaves them); 3% of
    images hold one or two lesions, 70% of lesions a nearby detection that tends to score
    higher. Model b's scores are model a's with noise (two detectors of the same images)."""
    rng = np.random.default_rng(seed)
    width, height = 3328.0, 4096.0
    share = 0.03
    counts = rng.choice([0, 1, 2], size=n_images, p=[1 - share, share * 0.85, share * 0.15])
    lesion_image = np.repeat(np.arange(n_images), counts)
    centre = rng.uniform([200, 200], [width - 200, height - 200], (lesion_image.size, 2))
    half = rng.uniform(20, 150, (lesion_image.size, 2))
    image = np.repeat(np.arange(n_images), per_image)
    detection_centre = rng.uniform([0, 0], [width, height], (image.size, 2)).astype(np.float32)
    found = np.flatnonzero(rng.random(lesion_image.size) < 0.7)
    within = np.arange(lesion_image.size) - np.searchsorted(lesion_image, lesion_image)
    row = lesion_image[found] * per_image + within[found]  # the image's k-th detection: lesion k
    detection_centre[row] = centre[found] + rng.normal(0, 40, (found.size, 2))
    detection_half = rng.uniform(20, 120, (image.size, 2)).astype(np.float32)
    scores_a = rng.beta(2, 5, image.size).astype(np.float32)
    scores_a[row] = rng.beta(5, 2, row.size)
    scores_b = np.clip(scores_a + rng.normal(0, 0.05, image.size), 1e-4, 1 - 1e-4).astype(
        np.float32
    )
    return {
        "n_images": n_images,
        "image": image,
        "boxes": np.hstack([detection_centre - detection_half, detection_centre + detection_half]),
        "scores": {"a": scores_a, "b": scores_b},
        "lesion_image": lesion_image,
        "lesion_boxes": np.hstack([centre - half, centre + half]),
    }


def write_case(case: dict, folder: Path, kind: str) -> dict:
    """The case as the writer's tables (``kind`` "parquet") or as today's CSVs ("csv", every
    float as float64 text, as the CSV writer wrote them)."""
    from callbacks.prediction_writer import SCHEMAS

    folder.mkdir(parents=True, exist_ok=True)
    ids = pa.array([f"image{index:07d}" for index in range(case["n_images"])])

    def id_column(index):
        return pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)), ids).cast(
            pa.string()
        )

    boxes, truth = case["boxes"], case["lesion_boxes"]
    tables = {
        "images": pa.table({"image_id": ids}),
        "ground_truth": pa.table(
            {
                "image_id": id_column(case["lesion_image"]),
                **{c: truth[:, i] for i, c in enumerate(("x1", "y1", "x2", "y2"))},
            }
        ),
    }
    for model, scores in case["scores"].items():
        tables[f"predictions_{model}"] = pa.table(
            {
                "image_id": id_column(case["image"]),
                **{c: boxes[:, i] for i, c in enumerate(("x1", "y1", "x2", "y2"))},
                "score": scores,
                "label": np.zeros(scores.size, np.int32),
            }
        )
    files = {}
    for name, table in tables.items():
        if kind == "parquet":
            schema = SCHEMAS[name.split("_")[0] if name.startswith("predictions") else name]
            table = table.select([n for n in schema.names if n in table.column_names])
            table = table.cast(pa.schema([schema.field(n) for n in table.column_names]))
            path = folder / f"{name}.parquet"
            pq.write_table(table, path)
        else:
            table = table.cast(
                pa.schema(
                    [
                        pa.field(f.name, pa.float64()) if pa.types.is_floating(f.type) else f
                        for f in table.schema
                    ]
                )
            )
            path = folder / f"{name}.csv"
            pa_csv.write_csv(table, path)
        files[name] = str(path)
    return files


def evaluate_case(files: dict, new: bool, n_boot: int) -> dict:
    """FAUC-1, FAUC-1+ with CIs and the 1 FP/image threshold of each model and their paired
    bootstrap (in a process of its own: its peak RSS is the evaluation's). ``new``: as the
    report now runs it (pruned; every model on one draw of the resamples, the paired bootstrap
    reusing their replicates); else as it ran before (whole files; each bootstrap, the paired
    one included, drawing its own resamples)."""
    from dataclasses import replace

    from metrics.evaluate import evaluation_report, read_evaluation_tables
    from metrics.froc import IncompleteDetections, bootstrap_replicates, paired_bootstrap_fauc

    def run(reach):
        timings, matched, reports, read = {}, {}, {}, {}
        started = time.perf_counter()
        for model in ("a", "b"):
            mark = time.perf_counter()
            tables = read_evaluation_tables(
                files[f"predictions_{model}"],
                files["ground_truth"],
                files["images"],
                fp_per_image=reach,
            )
            timings[f"read_{model}_s"] = time.perf_counter() - mark
            mark = time.perf_counter()
            matched[model] = tables.match()
            timings[f"match_{model}_s"] = time.perf_counter() - mark
            read[model] = [tables.n_predictions, matched[model].n_detections]
        if new:
            mark = time.perf_counter()
            both = [matched["a"], matched["b"]]
            bootstrap_replicates([*both, *(m.positive_images() for m in both)], 1.0, n_boot)
            timings["bootstrap_both_s"] = time.perf_counter() - mark
        for model in ("a", "b"):
            mark = time.perf_counter()
            reports[model] = evaluation_report(matched[model], n_boot=n_boot)
            timings[f"fauc_cis_threshold_{model}_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        pair = [matched["a"], matched["b"]] if new else [replace(m) for m in matched.values()]
        paired = paired_bootstrap_fauc(*pair, 1.0, n_boot=n_boot)
        timings["paired_bootstrap_s"] = time.perf_counter() - mark
        timings["total_s"] = time.perf_counter() - started
        return timings, reports, paired, read

    retried = False
    try:
        timings, reports, paired, read = run(1.0 if new else None)
    except IncompleteDetections:
        retried = True
        timings, reports, paired, read = run(None)
    keys = (
        "fauc",
        "fauc_ci95",
        "fauc_positive",
        "fauc_positive_ci95",
        "threshold_at_target_fp",
        "sensitivity_at_threshold",
    )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "timings": timings,
        "peak_rss_mib": peak_rss_mib(),
        "retried_unpruned": retried,
        # wall time depends on what else runs on the machine; CPU time much less
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "load_average": os.getloadavg(),
        "rows_in_files_and_read": read,
        "numbers": {
            **{f"{model}_{key}": report[key] for model, report in reports.items() for key in keys},
            "paired": [paired.difference, paired.low, paired.high, paired.p_value],
        },
    }
