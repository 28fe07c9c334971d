"""``python cli.py evaluate``: score any detector's output from CSV files (FAUC-x, FAUC-x+, their
bootstrap CIs, the threshold at a target FP rate and the sensitivity there), and the reading
and validation of those CSV files, which the reports reuse.

    python cli.py evaluate --predictions P.csv --ground-truth G.csv --images I.csv \\
        [--max-fp 1] [--threshold T] [--target-fp 1] [--min-distance 100] [--inclusive] \\
        [--n-boot 2000] [--seed 0] [--plot froc.png]

P.csv: ``image_id,x1,y1,x2,y2,score``; G.csv: ``image_id,x1,y1,x2,y2``; I.csv: ``image_id``,
every evaluated image (images without lesions or detections count). Boxes are xyxy in the
original image's pixels; other columns are kept and ignored. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from datamodules.problems import Problem, ProblemsError
from metrics.froc import (
    MatchedDetections,
    bootstrap_fauc,
    fauc,
    match_detections,
    operating_point,
    threshold_at_fp,
)

BOX_COLUMNS = ("x1", "y1", "x2", "y2")
PREDICTION_COLUMNS = ("image_id", *BOX_COLUMNS, "score")
GROUND_TRUTH_COLUMNS = ("image_id", *BOX_COLUMNS)
IMAGE_COLUMNS = ("image_id",)
# The files a run writes per split (``callbacks.PredictionWriter``), which this module reads:
# ``{split}_predictions.csv``, ``{split}_images.csv``, ``{split}_ground_truth.csv``.
PREDICTION_TABLES = {
    "predictions": (*PREDICTION_COLUMNS, "label"),
    "images": IMAGE_COLUMNS,
    "ground_truth": GROUND_TRUTH_COLUMNS,
}


class EvaluationInputError(ProblemsError):
    """Bad evaluation CSV files; ``problems`` lists every `Problem` found (file, row as a
    spreadsheet shows it, column) and the message one per line."""

    subject = "the evaluation files"
    more = "all in EvaluationInputError.problems"


@dataclass(frozen=True, eq=False)
class EvaluationTables:
    """The three evaluation tables, validated. ``image_ids`` in the images file's order;
    ``predictions`` and ``ground_truth`` keep every column of their files (ids as str, box and
    score columns as float) plus ``image_index``, the row of their image in ``image_ids``."""

    image_ids: np.ndarray
    predictions: pd.DataFrame
    ground_truth: pd.DataFrame

    def sorted_by_image(self) -> EvaluationTables:
        """The same tables with the images in sorted id order (runs on different numbers of
        processes list them in different orders; comparisons need one)."""
        order = np.argsort(self.image_ids.astype(str), kind="stable")
        position = np.empty_like(order)
        position[order] = np.arange(order.size)
        tables = []
        for table in (self.predictions, self.ground_truth):
            table = table.assign(image_index=position[table["image_index"].to_numpy()])
            tables.append(table.sort_values("image_index", kind="stable").reset_index(drop=True))
        return EvaluationTables(self.image_ids[order], *tables)

    def match(self, min_distance: float = 100.0, inclusive: bool = False) -> MatchedDetections:
        """Match the predictions to the lesions; lesion i is row i of ``ground_truth`` and
        detection j row j of ``predictions``."""
        return match_detections(
            self.predictions["image_index"].to_numpy(),
            self.predictions[list(BOX_COLUMNS)].to_numpy(np.float64),
            self.predictions["score"].to_numpy(np.float64),
            self.ground_truth["image_index"].to_numpy(),
            self.ground_truth[list(BOX_COLUMNS)].to_numpy(np.float64),
            n_images=self.image_ids.size,
            min_distance=min_distance,
            inclusive=inclusive,
            image_ids=self.image_ids,
        )


def read_evaluation_tables(
    predictions: str | Path, ground_truth: str | Path, images: str | Path
) -> EvaluationTables:
    """Read and validate the predictions, ground-truth and images CSV files. Raises
    :class:`EvaluationInputError` listing every problem of all three files at once."""
    problems: list[Problem] = []
    image_table = _read_table(images, IMAGE_COLUMNS, (), problems)
    image_index = None
    if image_table is not None:
        ids = image_table["image_id"]
        repeated = ids.duplicated(keep="first")
        if repeated.any():
            first_row = {}
            for row, image_id in ids.items():
                first_row.setdefault(image_id, row)
            problems.extend(
                Problem(str(images), row + 2, "image_id",
                        f"{image_id!r} is listed more than once (first at row "
                        f"{first_row[image_id] + 2})", "duplicate image_id")
                for row, image_id in ids[repeated].items()
            )
        elif ids.empty:
            problems.append(Problem(str(images), None, None, "no images listed", "no images"))
        else:
            image_index = pd.Index(ids)
    tables = []
    for path, required, numeric in (
        (predictions, PREDICTION_COLUMNS, (*BOX_COLUMNS, "score")),
        (ground_truth, GROUND_TRUTH_COLUMNS, BOX_COLUMNS),
    ):
        table = _read_table(path, required, numeric, problems)
        tables.append(table)
        if table is None or image_index is None:
            continue
        table["image_index"] = image_index.get_indexer(table["image_id"])
        missing = table["image_index"] < 0
        problems.extend(
            Problem(str(path), row + 2, "image_id", f"{image_id!r} is not listed in {images}",
                    "image_id not listed")
            for row, image_id in table.loc[missing, "image_id"].items()
        )
    if problems:
        raise EvaluationInputError(problems)
    return EvaluationTables(
        image_ids=image_table["image_id"].to_numpy(dtype=str),
        predictions=tables[0],
        ground_truth=tables[1],
    )


def _read_table(
    path: str | Path,
    required: tuple[str, ...],
    numeric: tuple[str, ...],
    problems: list[Problem],
) -> pd.DataFrame | None:
    """One CSV, ids as str and ``numeric`` columns as float (nan where unparsable); appends its
    problems. None when it cannot be read or lacks a required column."""
    name = str(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        problems.append(Problem(name, None, None, "file not found", "file not found"))
        return None
    except pd.errors.EmptyDataError:
        problems.append(Problem(name, None, None, "empty file (no header line)", "empty file"))
        return None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        problems.append(
            Problem(name, None, None, f"not a readable CSV file ({error})", "unreadable file")
        )
        return None
    absent = [column for column in required if column not in table.columns]
    if absent:
        has = ", ".join(map(repr, table.columns))
        problems.extend(
            Problem(name, None, column, f"missing required column (has {has})", "missing column")
            for column in absent
        )
        return None
    table = table.reset_index(drop=True)
    empty_id = table["image_id"].str.strip() == ""
    problems.extend(
        Problem(name, row + 2, "image_id", "empty value", "empty value")
        for row in np.flatnonzero(empty_id)
    )
    for column in numeric:
        text = table[column]
        values = pd.to_numeric(text, errors="coerce").astype(np.float64)
        bad = ~np.isfinite(values.to_numpy())
        problems.extend(
            Problem(name, row + 2, column, f"{text[row]!r} is not a finite number",
                    "not a number")
            for row in np.flatnonzero(bad)
        )
        table[column] = values.where(~bad, np.nan)
    for low, high in (("x1", "x2"), ("y1", "y2")):
        if low not in numeric:
            continue
        # rows whose numbers did not parse are reported above
        inverted = table[low].notna() & table[high].notna() & ~(table[high] > table[low])
        problems.extend(
            Problem(name, row + 2, high,
                    f"{high}={table[high][row]:g} is not greater than {low}={table[low][row]:g}",
                    f"{high} <= {low}")
            for row in np.flatnonzero(inverted)
        )
    return table


def evaluation_report(
    matched: MatchedDetections,
    max_fp: float = 1.0,
    target_fp: float = 1.0,
    threshold: float | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """The numbers ``evaluate`` prints, as a JSON-ready dict (nan and inf become None)."""
    positive = matched.positive_images()
    if n_boot > 0:
        overall = bootstrap_fauc(matched, max_fp, n_boot=n_boot, seed=seed)
        positive_interval = bootstrap_fauc(positive, max_fp, n_boot=n_boot, seed=seed)
        fauc_ci = [overall.low, overall.high]
        positive_ci = [positive_interval.low, positive_interval.high]
    else:
        fauc_ci = positive_ci = None
    at_target = threshold_at_fp(matched, target_fp)
    used = at_target if threshold is None else float(threshold)
    point = operating_point(matched, used)
    report = {
        "fauc": fauc(matched, max_fp),
        "fauc_ci95": fauc_ci,
        "fauc_positive": fauc(positive, max_fp),
        "fauc_positive_ci95": positive_ci,
        "max_fp": max_fp,
        "n_images": matched.n_images,
        "n_positive_images": positive.n_images,
        "n_lesions": matched.n_lesions,
        "n_detections": matched.n_detections,
        "target_fp": target_fp,
        "threshold_at_target_fp": at_target,
        "threshold": used,
        "threshold_source": "target_fp" if threshold is None else "given",
        "sensitivity_at_threshold": point.sensitivity,
        "fp_rate_at_threshold": point.fp_rate,
        "lesions_found_at_threshold": point.n_lesions_found,
        "n_boot": n_boot,
        "seed": seed,
    }
    return _json_ready(report)


def _json_ready(value):
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cli.py evaluate",
        description="FAUC-x, FAUC-x+ and an operating threshold of a detector's predictions.",
    )
    parser.add_argument(
        "--predictions", required=True, type=Path, help="CSV: image_id,x1,y1,x2,y2,score"
    )
    parser.add_argument(
        "--ground-truth", required=True, type=Path, help="CSV: image_id,x1,y1,x2,y2"
    )
    parser.add_argument("--images", required=True, type=Path, help="CSV: image_id of every image")
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
        default=100.0,
        help="hit radius floor in original pixels (default 100)",
    )
    parser.add_argument(
        "--inclusive",
        action="store_true",
        help="a detection at exactly the hit radius hits (DBTex's <=); default strict <",
    )
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples; 0: no CIs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None, help="write the FROC curve to this PNG")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``python cli.py evaluate``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.max_fp > 0 or not args.target_fp >= 0 or args.n_boot < 0:
        parser.error("--max-fp must be > 0, --target-fp >= 0 and --n-boot >= 0")
    try:
        tables = read_evaluation_tables(args.predictions, args.ground_truth, args.images)
    except EvaluationInputError as error:
        print(f"evaluate: bad input\n{error}", file=sys.stderr)
        return 2
    matched = tables.match(min_distance=args.min_distance, inclusive=args.inclusive)
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
    print(json.dumps(report))
    return 0
