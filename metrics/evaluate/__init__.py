"""``python cli.py evaluate``: score any detector's output (FAUC-x, FAUC-x+, their bootstrap
CIs, the threshold at a target FP rate and the sensitivity there), and the reading and
checking of the prediction tables, which the reports reuse.

    python cli.py evaluate --predictions P.parquet --ground-truth G.parquet --images I.parquet \\
        [--max-fp 1] [--threshold T] [--target-fp 1] [--min-distance 100] [--inclusive] \\
        [--n-boot 2000] [--seed 0] [--plot froc.png]
    python cli.py evaluate --export-csv runs/stage1_sm/predictions   # every table as CSV too

Tables are Parquet (``.parquet``, ``.pq``: what ``PredictionWriter`` writes) or CSV. P:
``image_id,x1,y1,x2,y2,score``; G: ``image_id,x1,y1,x2,y2``; I: ``image_id``, every evaluated
image (images without lesions or detections count), and from the writer the highest score its
cap left out per image. Boxes are xyxy in the original image's pixels; other columns are kept
and ignored. Ids are text, stripped, as the manifest reader reads them. Prints one JSON object.

Refused, each named by file, row and column: a missing or unreadable file or column, an empty
id, an id the images file lists twice or does not list, a value that is not a finite number,
a score outside [0, 1], a box with x2 <= x1 or y2 <= y1 or a negative coordinate, a predictions
table without rows, and a repeated row (a ground-truth box, or a detection among the rows
evaluation reads).

Only the detections FAUC-x can reach are matched and resampled
(:func:`metrics.froc.prune_detections`); the numbers are those of every detection, and when
some resample needs more the files are read again whole. When the writer's cap left out a
detection above the cut, one line on stderr says on how many images.
"""

from common.tables import BOX_COLUMNS
from metrics.evaluate.checks import EvaluationInputError
from metrics.evaluate.cli import build_parser, export_csv, main
from metrics.evaluate.evaluation import EvaluationTables, cap_message, evaluation_report
from metrics.evaluate.tables import (
    GROUND_TRUTH_COLUMNS,
    IMAGE_COLUMNS,
    PARQUET_SUFFIXES,
    PREDICTION_COLUMNS,
    read_evaluation_tables,
)

__all__ = [
    "BOX_COLUMNS",
    "GROUND_TRUTH_COLUMNS",
    "IMAGE_COLUMNS",
    "PARQUET_SUFFIXES",
    "PREDICTION_COLUMNS",
    "EvaluationInputError",
    "EvaluationTables",
    "build_parser",
    "cap_message",
    "evaluation_report",
    "export_csv",
    "main",
    "read_evaluation_tables",
]
