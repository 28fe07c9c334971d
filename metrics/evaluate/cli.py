"""The command ``python cli.py evaluate``: its parser, `main` and ``--export-csv``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.defaults import HIT_MIN_DISTANCE
from metrics.evaluate.checks import EvaluationInputError
from metrics.evaluate.evaluation import cap_message, evaluation_report
from metrics.evaluate.tables import _is_parquet, read_evaluation_tables
from metrics.froc import IncompleteDetections


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cli.py evaluate",
        description="FAUC-x, FAUC-x+ and an operating threshold of a detector's predictions.",
    )
    parser.add_argument(
        "--predictions", type=Path, help="Parquet or CSV: image_id,x1,y1,x2,y2,score"
    )
    parser.add_argument("--ground-truth", type=Path, help="Parquet or CSV: image_id,x1,y1,x2,y2")
    parser.add_argument("--images", type=Path, help="Parquet or CSV: image_id of every image")
    parser.add_argument("--max-fp", type=float, default=1.0, help="x of FAUC-x (default 1)")
    parser.add_argument(
        "--threshold", type=float, default=None, help="report the sensitivity at this score"
    )
    parser.add_argument(
        "--target-fp",
        type=float,
        default=1.0,
        help="false positives per image that set threshold_at_target_fp (default 1)",
    )
    parser.add_argument(
        "--min-distance",
        type=float,
        default=HIT_MIN_DISTANCE,
        help=f"hit radius floor in original pixels (default {HIT_MIN_DISTANCE:g})",
    )
    parser.add_argument(
        "--inclusive",
        action="store_true",
        help="a detection at exactly the hit radius hits (DBTex's <=); default strict <",
    )
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples; 0: no CIs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None, help="write the FROC curve to this PNG")
    parser.add_argument(
        "--export-csv",
        type=Path,
        nargs="+",
        default=None,
        metavar="PATH",
        help="instead: write a CSV next to each Parquet table given (or in each folder given, "
        "e.g. a run's predictions/) and exit",
    )
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``python cli.py evaluate``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.export_csv is not None:
        for path in export_csv(args.export_csv):
            print(path)
        return 0
    if None in (args.predictions, args.ground_truth, args.images):
        parser.error("--predictions, --ground-truth and --images are required")
    for flag, value, holds, rule in (
        ("--max-fp", args.max_fp, args.max_fp > 0, "> 0"),
        ("--target-fp", args.target_fp, args.target_fp >= 0, ">= 0"),
        ("--n-boot", args.n_boot, args.n_boot >= 0, ">= 0"),
        ("--min-distance", args.min_distance, args.min_distance >= 0, ">= 0"),
    ):
        if not holds:
            parser.error(f"{flag} must be {rule}, got {value:g}")
    # the deepest the numbers below read: FAUC-x, the threshold, the plot's axis (2x)
    reach = max(args.max_fp, args.target_fp) * (2 if args.plot is not None else 1)
    floor = np.inf if args.threshold is None else args.threshold
    for fp_per_image in (reach, None):
        try:
            tables = read_evaluation_tables(
                args.predictions,
                args.ground_truth,
                args.images,
                fp_per_image=fp_per_image,
                min_score=floor,
            )
        except EvaluationInputError as error:
            print(f"evaluate: bad input\n{error}", file=sys.stderr)
            return 2
        matched = tables.match(min_distance=args.min_distance, inclusive=args.inclusive)
        try:
            report = evaluation_report(
                matched,
                max_fp=args.max_fp,
                target_fp=args.target_fp,
                threshold=args.threshold,
                n_boot=args.n_boot,
                seed=args.seed,
            )
            if args.plot is not None:
                from metrics.plot import plot_froc

                plot_froc(
                    {args.predictions.stem: matched},
                    args.plot,
                    max_fp=args.max_fp,
                    n_boot=args.n_boot,
                    seed=args.seed,
                )
                report["plot"] = str(args.plot)
            break
        except IncompleteDetections as error:
            if fp_per_image is None:
                raise
            print(f"evaluate: {error}; reading every detection", file=sys.stderr)
    report["n_detections"] = tables.n_predictions
    report["n_detections_read"] = matched.n_detections
    capped = tables.capped_above(matched, args.max_fp)
    report["images_capped_above_cut"] = capped
    if capped:
        print(cap_message(capped, args.max_fp), file=sys.stderr)
    print(json.dumps(report))
    return 0


def export_csv(paths: list[Path]) -> list[Path]:
    """A CSV next to each Parquet table (``x.parquet`` -> ``x.csv``; folders: every Parquet
    file in them), floats written as float64 so that they read back to the same numbers."""
    import pyarrow.csv as csv

    tables = []
    for path in map(Path, paths):
        found = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        if path.is_dir() and not found:
            raise SystemExit(f"evaluate --export-csv: no .parquet file in {path}")
        tables += found
    written = []
    for path in tables:
        if not _is_parquet(path) or not path.is_file():
            raise SystemExit(f"evaluate --export-csv: {path} is not a Parquet file")
        table = pq.read_table(path)
        table = table.cast(
            pa.schema(
                [
                    pa.field(field.name, pa.float64())
                    if pa.types.is_floating(field.type)
                    else field
                    for field in table.schema
                ]
            )
        )
        out = path.with_suffix(".csv")
        csv.write_csv(table, out)
        written.append(out)
    return written
