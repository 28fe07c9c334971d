"""A rehearsal of the paper's scale on this machine: what can be measured here
is measured, the rest is assumed and says so, and from both a projection for the paper's
1,239,372 pairs on one node of 8 GPUs.

Measured:
1. Prediction writing: ``PredictionWriter``'s per-rank part files (effdet's 100 detections per
   image, the default cap kept) and rank 0's merge, rows per CPU second.
2. Evaluation of the paper's test split, 370,000 images at the writer's default density (every
   image at the cap) with 3% of images with lesions: for each of two models FAUC-1, FAUC-1+,
   2,000-replicate CIs and the 1 FP/image threshold, then their paired bootstrap, from Parquet
   through ``read_evaluation_tables`` (pruned) as the report runs it (both models on one draw
   of the resamples); wall time, CPU time and peak RSS, in a process of its own. Today's path
   (every detection as CSV, effdet's 100 per image, read whole and matched unpruned, each
   bootstrap drawing its own resamples) in the same run on smaller splits, extrapolated by the
   line through two sizes, and its numbers checked equal to the new path's on the same
   detections.
3. ``prepare`` and ``check-data`` images per CPU second of one thread, on full-size synthetic
   DICOMs (``tests/helpers/dicom_factory.py``: FFDM 4096 x 3328 12-bit MONOCHROME1, SM 2457 x 1996
   16-bit, uncompressed); the cache's bytes per pair (1280 x 1024).
4. The cached training loader's pairs per CPU second (no workers), SM alone and SM + FFDM.

Per-core rates are per CPU second because this machine's 2 cores are shared: other work
stretches wall time, much less CPU time. The evaluation's acceptance (60 s, 4 GB) is on wall
time, reported with the load average it ran under.
5. With ``--demo-run``: how many detections per image of a finished demo lie at or above the
   lowest score FAUC-1 and FAUC-2 read, per model and split (what the cap's default rests on).

    .venv/bin/python bench/bench_scale.py [--quick] [--demo-run runs/demo] [--no-readme]

Writes ``bench/results/scale.json`` (``--out``) and, unless ``--quick`` or ``--no-readme``,
README's "At the paper's scale" table (between its markers). ``--quick`` (about 30 s) is a
smoke run on small sizes: its figures are not the README's.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # per-core figures; the bootstrap uses its threads

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pa_csv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from shared import ROOT, machine, peak_rss_mib, write_result  # noqa: E402

from common.defaults import HIT_MIN_DISTANCE, IMAGE_SIZE  # noqa: E402

PAPER_PAIRS = 1_239_372
PAPER_TEST_IMAGES = 370_000
FFDM_SIZE = (4096, 3328)
SM_SIZE = (2457, 1996)
README_START = "<!-- bench_scale: start -->"
README_END = "<!-- bench_scale: end -->"


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


def child(arguments: list[str]) -> dict:
    """Run this script's ``--child`` in a fresh process and return its JSON."""
    finished = subprocess.run(
        [sys.executable, __file__, "--child", *arguments],
        capture_output=True,
        text=True,
        check=False,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"bench_scale child {arguments} failed:\n{finished.stderr[-3000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def bench_evaluation(args, folder: Path) -> dict:
    from callbacks.prediction_writer import MAX_DETECTIONS

    result = {"new": {}, "today": {}}
    started = time.perf_counter()
    case = synthetic_predictions(args.images, MAX_DETECTIONS, seed=0)
    files = write_case(case, folder / "new", "parquet")
    del case
    result["new"]["setup_s"] = time.perf_counter() - started
    result["new"]["file_mib_per_model"] = Path(files["predictions_a"]).stat().st_size / 2**20
    result["new"] |= {
        "images": args.images,
        "detections_per_image": MAX_DETECTIONS,
        **child(["evaluate", json.dumps(files), "new", str(args.n_boot)]),
    }
    for size in args.today_images:
        case = synthetic_predictions(size, 100, seed=1)
        files = write_case(case, folder / f"today_{size}", "csv")
        parquet = write_case(case, folder / f"same_{size}", "parquet")
        del case
        today = child(["evaluate", json.dumps(files), "today", str(args.n_boot)])
        new = child(["evaluate", json.dumps(parquet), "new", str(args.n_boot)])
        today["csv_mib_per_model"] = Path(files["predictions_a"]).stat().st_size / 2**20
        today["new_path_on_the_same_detections"] = {
            "total_s": new["timings"]["total_s"],
            "peak_rss_mib": new["peak_rss_mib"],
            "numbers_equal": new["numbers"] == today["numbers"],
        }
        result["today"][str(size)] = today
    # today's path extrapolated to the paper's split by the line through the two sizes
    small, large = (result["today"][str(s)] for s in args.today_images[:2])
    scale = (args.images - args.today_images[0]) / (args.today_images[1] - args.today_images[0])
    result["today_extrapolated"] = {
        "images": args.images,
        "detections_per_image": 100,
        "total_s": small["timings"]["total_s"]
        + scale * (large["timings"]["total_s"] - small["timings"]["total_s"]),
        "peak_rss_mib": small["peak_rss_mib"]
        + scale * (large["peak_rss_mib"] - small["peak_rss_mib"]),
        "csv_mib_per_model": small["csv_mib_per_model"]
        + scale * (large["csv_mib_per_model"] - small["csv_mib_per_model"]),
        "basis": f"linear through {args.today_images[0]} and {args.today_images[1]} images",
    }
    new = result["new"]
    result["acceptance"] = {
        "total_s": new["timings"]["total_s"],
        "peak_rss_mib": new["peak_rss_mib"],
        "budget_s": 60.0,
        "budget_mib": 4096.0,
        "met": new["timings"]["total_s"] <= 60.0 and new["peak_rss_mib"] <= 4096.0,
    }
    return result


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


# -- projection ----------------------------------------------------------------------------------
def project(result: dict, args) -> list[dict]:
    """The paper's job on one node of ``--node-cores`` cores and 8 GPUs, each row labelled."""
    pairs, images = PAPER_PAIRS, 2 * PAPER_PAIRS
    data, loader, evaluation, writer = (
        result["data_path"],
        result["loader"],
        result["evaluation"],
        result["writer"],
    )
    prepare_core_h = images / data["prepare_images_per_s_per_core"] / 3600
    check_core_h = images / data["check_data_images_per_s_per_core"] / 3600
    gpus, cores = 8, args.node_cores
    sm_rate, both_rate = (loader[name]["pairs_per_s_per_core"] for name in ("sm", "sm_ffdm"))
    # per-core rates are per CPU second: see bench_data_path
    rows = [
        ("Pairs; test images", f"{pairs:,}; {PAPER_TEST_IMAGES:,}", "paper"),
        ("CPU cores per node", f"{cores}", "assumed"),
        (
            "GPU training rate, Stage I",
            f"{args.gpu_pairs_per_s:g} pairs/s per GPU",
            "assumed (no GPU measured here)",
        ),
        (
            "`prepare`, per core",
            f"{data['prepare_images_per_s_per_core']:.2f} images/s",
            "measured",
        ),
        (
            "`prepare`, whole data set",
            f"{prepare_core_h:,.0f} core-hours; "
            f"{prepare_core_h / cores:.1f} h wall on {cores} cores",
            "projected",
        ),
        (
            "`check-data`, per core",
            f"{data['check_data_images_per_s_per_core']:.2f} images/s",
            "measured",
        ),
        (
            "`check-data`, whole data set",
            f"{check_core_h:,.0f} core-hours; {check_core_h / cores:.1f} h wall on {cores} cores",
            "projected",
        ),
        (
            "Cache, per pair (1280x1024)",
            f"{data['cache_bytes_per_pair'] / 2**20:.2f} MiB",
            "measured",
        ),
        (
            "Cache, whole data set",
            f"{data['cache_bytes_per_pair'] * pairs / 2**40:.2f} TiB",
            "projected",
        ),
        ("Loader, per core (SM; SM + FFDM)", f"{sm_rate:.1f}; {both_rate:.1f} pairs/s", "measured"),
        (
            "Loader cores per GPU (SM; SM + FFDM)",
            f"{args.gpu_pairs_per_s / sm_rate:.1f}; {args.gpu_pairs_per_s / both_rate:.1f} "
            f"(x{gpus} GPUs: {gpus * args.gpu_pairs_per_s / both_rate:.0f} of {cores} cores)",
            "projected from the assumed GPU rate",
        ),
        (
            "Prediction writing, per core",
            f"{writer['rows_per_cpu_s']:,.0f} rows/s "
            f"({writer['max_detections']} per image kept of "
            f"{writer['detections_per_image_given']})",
            "measured",
        ),
        (
            "Writing the test split's predictions, one model, one process",
            f"{PAPER_TEST_IMAGES / writer['images_per_cpu_s']:.0f} s",
            "projected",
        ),
    ]
    new = evaluation["new"]
    today = evaluation["today_extrapolated"]
    rows += [
        (
            f"Evaluation, {new['images']:,} test images x {new['detections_per_image']} "
            "detections, two models, paired bootstrap (2,000)",
            f"{new['timings']['total_s']:.1f} s ({new['cpu_s']:.0f} s CPU, load average "
            f"{new['load_average'][0]:.1f}), {new['peak_rss_mib'] / 1024:.2f} GB peak RSS; "
            f"{new['file_mib_per_model']:.0f} MiB Parquet per model",
            "measured",
        ),
        (
            "Same with today's path (CSV, 100 per image, unpruned)",
            f"{today['total_s']:.0f} s, {today['peak_rss_mib'] / 1024:.1f} GB; "
            f"{today['csv_mib_per_model'] / 1024:.1f} GiB CSV per model",
            f"extrapolated ({today['basis']})",
        ),
    ]
    return [{"what": what, "figure": figure, "basis": basis} for what, figure, basis in rows]


def markdown(rows: list[dict]) -> str:
    lines = ["| What | Figure | Basis |", "|---|---|---|"]
    lines += [f"| {row['what']} | {row['figure']} | {row['basis']} |" for row in rows]
    return "\n".join(lines)


def update_readme(table: str, readme: Path) -> bool:
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        return False
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{table}\n{README_END}{tail}")
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":  # evaluate FILES_JSON new|today N_BOOT
        files, mode, n_boot = json.loads(argv[2]), argv[3], int(argv[4])
        print(json.dumps(evaluate_case(files, mode == "new", n_boot)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=PAPER_TEST_IMAGES)
    parser.add_argument("--today-images", type=int, nargs=2, default=[10_000, 20_000])
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--writer-images", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=4, help="full-size pairs for prepare")
    parser.add_argument("--dicom-scale", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, nargs=2, default=list(IMAGE_SIZE))
    parser.add_argument("--loader-batches", type=int, default=6)
    parser.add_argument(
        "--node-cores", type=int, default=96, help="CPU cores of the 8-GPU node (assumed)"
    )
    parser.add_argument(
        "--gpu-pairs-per-s",
        type=float,
        default=60.0,
        help="Stage I training pairs/s per GPU (assumed)",
    )
    parser.add_argument(
        "--demo-run",
        type=Path,
        default=None,
        help="a finished demo run folder: measure detections above the cuts",
    )
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/scale.json")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke run on small sizes")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.today_images, args.n_boot = 2000, [300, 600], 50
        args.writer_images, args.pairs, args.dicom_scale, args.loader_batches = 300, 1, 0.0625, 1
        args.image_size = [128, 128]
    started = time.perf_counter()
    load_before = os.getloadavg()
    result = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    }
    with tempfile.TemporaryDirectory(prefix="bench_scale_", dir=args.workdir) as temporary:
        folder = Path(temporary)
        result["writer"] = bench_writer(args.writer_images, 100)
        result["evaluation"] = bench_evaluation(args, folder / "evaluation")
        result["data_path"] = bench_data_path(args, folder / "data")
        result["loader"] = bench_loader(args, folder / "data")
    if args.demo_run is not None:
        result["cap"] = bench_cap(args.demo_run)
    result["projection"] = project(result, args)
    result["wall_s"] = time.perf_counter() - started
    # other work on the machine stretches wall times: the load says how much there was
    result["load_average_before_after"] = [list(load_before), list(os.getloadavg())]
    table = markdown(result["projection"])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"benchmark": "scale", "machine": machine(), **result}, indent=2) + "\n"
        )
        path = args.out
    else:
        path = write_result("scale", result)
    print(table)
    acceptance = result["evaluation"]["acceptance"]
    print(
        f"evaluation of {args.images:,} images: {acceptance['total_s']:.1f} s, "
        f"{acceptance['peak_rss_mib']:.0f} MiB peak RSS "
        f"({'meets' if acceptance['met'] else 'misses'} 60 s / 4 GB); wrote {path} "
        f"({result['wall_s']:.0f} s)"
    )
    if not args.quick and not args.no_readme:
        print(
            "README table "
            + (
                "updated"
                if update_readme(table, args.readme)
                else f"not updated: no {README_START} marker in {args.readme}"
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
