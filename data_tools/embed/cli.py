"""``python cli.py adapt embed``: the EMBED adapter's options on the command line; the run
writes the tables and prints the summary."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data_tools.embed.adapter import SUMMARY_FILE, adapt
from data_tools.embed.options import (
    DEFAULT_LABEL_WINDOW,
    ORIENTATION_SOURCES,
    ROI_FRAMES,
    EmbedOptions,
)
from data_tools.embed.paths import KNOWN_PATH_PREFIXES
from datamodules.manifest import ManifestError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python cli.py adapt embed",
        description="EMBED open-data tables -> manifest.csv, lesions.csv, adapter_summary.json",
    )
    parser.add_argument("--metadata", required=True, help="EMBED_OpenData_metadata.csv")
    parser.add_argument("--clinical", required=True, help="EMBED_OpenData_clinical.csv")
    parser.add_argument(
        "--images-root",
        required=True,
        help="folder where anon_dicom_path values resolve once their start is removed",
    )
    parser.add_argument("--out", required=True, help="output folder")
    known = ", ".join(name for _, name in KNOWN_PATH_PREFIXES)
    parser.add_argument(
        "--strip-prefix",
        action="append",
        dest="strip_prefixes",
        metavar="PREFIX",
        help=f"remove this start of anon_dicom_path (repeatable; tried before the known starts "
        f"{known}, which are always removed)",
    )
    parser.add_argument(
        "--roi-frame",
        choices=ROI_FRAMES,
        default="chest-wall-left",
        help="the frame of PNG_ROI_coords/ROI_coords (default chest-wall-left: EMBED's PNGs, "
        "turned to face right; stored: the DICOM's own pixels). DCM_ROI_coords are always "
        "stored pixels",
    )
    parser.add_argument(
        "--orientation-from",
        choices=ORIENTATION_SOURCES,
        default="embed",
        help="which images to mirror under chest-wall-left: embed (default; the table's "
        "PNG_flipped, else EMBED's rule on the DICOM header's PatientOrientation), laterality "
        "(every R image), or pixels (the brighter side of each image with ROIs; reads them)",
    )
    parser.add_argument(
        "--label-window",
        type=int,
        nargs="+",
        default=list(DEFAULT_LABEL_WINDOW),
        metavar="DAYS",
        help="carry a follow-up exam's pathology back to the screening exam within DAYS after "
        "a BI-RADS 0 and after a 1/2 (default 180 365, as EMBED's labelling notebook; one "
        "number sets both; 0 switches the rule off)",
    )
    parser.add_argument(
        "--no-file-check",
        action="store_true",
        help="do not require the DICOM files to exist (image sizes then come from the "
        "metadata's Rows/Columns columns; the embed orientation rule still reads the headers "
        "of PNG-frame images without PNG_flipped)",
    )
    parser.add_argument(
        "--relative-paths",
        action="store_true",
        help="write image paths relative to --out instead of absolute",
    )
    return parser


def main(argv: list[str]) -> int:
    """``python cli.py adapt embed ...``: write the tables and print the summary."""
    parser = _parser()
    args = parser.parse_args(argv)
    if len(args.label_window) > 2:
        parser.error("--label-window takes one or two numbers of days")
    try:
        options = EmbedOptions(
            images_root=Path(args.images_root),
            strip_prefixes=tuple(args.strip_prefixes or ()),
            roi_frame=args.roi_frame,
            orientation_from=args.orientation_from,
            label_window=tuple(args.label_window),
            check_files=not args.no_file_check,
            relative_paths=args.relative_paths,
        )
    except ValueError as error:
        parser.error(str(error))
    try:
        summary = adapt(args.metadata, args.clinical, args.out, options)
    except (ManifestError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    print(
        f"wrote {Path(args.out) / 'manifest.csv'}, lesions.csv and {SUMMARY_FILE}; check the ROI "
        f"frame with: python cli.py adapt embed-check --out {args.out}"
    )
    return 0
