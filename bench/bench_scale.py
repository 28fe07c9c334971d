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
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_evaluation import evaluate_case, synthetic_predictions, write_case  # noqa: E402
from scale_measurements import bench_cap, bench_data_path, bench_loader, bench_writer  # noqa: E402
from scale_projection import (  # noqa: E402
    PAPER_TEST_IMAGES,
    README_START,
    markdown,
    project,
    update_readme,
)
from shared import ROOT, machine, write_result  # noqa: E402

from common.defaults import IMAGE_SIZE  # noqa: E402


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
