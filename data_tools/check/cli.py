"""The ``cli.py check-data`` command: its parser, the data module settings read from the
configs (``settings_from_configs``), and ``main``, which runs the check and writes its report."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from common.defaults import IMAGE_SIZE, MODALITIES
from common.problems import format_problems
from data_tools.check.run import check_data
from datamodules.dicom import WINDOWS
from datamodules.preflight import CheckSettings

# -- the command ------------------------------------------------------------------------------
_CONFIG_KEYS = (
    "manifest",
    "lesions",
    "cache_dir",
    "image_size",
    "window",
    "margin",
    "modalities",
    "seed",
    "split_fractions",
    "pathology_classes",
)


def settings_from_configs(paths: Sequence[str]) -> dict:
    """The data module's ``init_args`` of one or more YAML configs (later ones win), as
    LightningCLI merges them: a data config (``data: {class_path, init_args}``), a full run
    config, or a data module's own YAML (``class_path``, ``init_args``)."""
    import yaml

    merged: dict = {}
    for path in paths:
        with open(path) as stream:
            config = yaml.safe_load(stream) or {}
        data = config.get("data", config) if isinstance(config, dict) else None
        if not isinstance(data, dict):
            continue
        class_path = data.get("class_path")
        if class_path and not str(class_path).endswith("PairedMammoDataModule"):
            raise ValueError(
                f"{path}: the data module is {class_path}; only a "
                "PairedMammoDataModule reads a manifest"
            )
        init_args = data.get("init_args", {} if class_path else data)
        merged.update({key: init_args[key] for key in _CONFIG_KEYS if key in (init_args or {})})
    return merged


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cli.py check-data",
        description="Read every manifest row and open every file as training would, without "
        "training; report every problem with its row, pair id, file and reason.",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        help="data config YAML (data.init_args: manifest, lesions, cache_dir, "
        "image_size, window, margin, ...); may be repeated",
    )
    parser.add_argument("--manifest", help="manifest file or its folder (overrides the config)")
    parser.add_argument("--lesions", help="lesion table (default: lesions.csv beside it)")
    parser.add_argument("--cache-dir", help="image cache to check ('null': none)")
    parser.add_argument(
        "--image-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help=f"the model's input (default: the config's, else {IMAGE_SIZE[0]} {IMAGE_SIZE[1]})",
    )
    parser.add_argument("--window", choices=WINDOWS)
    parser.add_argument("--margin", type=float)
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES)
    parser.add_argument("--json", help="write the report (every problem) to this JSON file")
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)), help="processes (0 or 1: none)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str]) -> int:
    """``python cli.py check-data``: 0 when nothing is wrong, 1 when a problem was found, 2 for
    a bad command line or config."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        values = settings_from_configs(args.config)
    except (OSError, ValueError) as error:
        print(f"check-data: {error}", file=sys.stderr)
        return 2
    for key in ("manifest", "lesions", "cache_dir", "image_size", "window", "margin", "modalities"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if str(values.get("cache_dir")).lower() in ("null", "none", ""):
        values["cache_dir"] = None
    if not values.get("manifest"):
        parser.error("give --manifest, or a --config whose data.init_args name a manifest")
    if values.get("image_size") is not None:
        from data_tools.prepare import image_size_problem

        try:
            wrong = image_size_problem(values["image_size"], args.config)
        except (OSError, ValueError) as error:
            wrong = str(error)
        if wrong:
            print(f"check-data: image_size: {wrong}", file=sys.stderr)
            return 2
    try:
        settings = CheckSettings(**values)
    except (TypeError, ValueError) as error:
        print(f"check-data: {error}", file=sys.stderr)
        return 2
    report = check_data(settings, workers=args.workers, progress=not args.no_progress)
    if args.json:
        document = {"settings": asdict(settings), **report.to_dict()}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(document, indent=2))
    more = f"all in {args.json}" if args.json else "--json FILE lists them all"
    if report.problems:
        print(format_problems(report.problems, f"the data of {settings.manifest}", more=more))
    if report.warnings:
        print(
            format_problems(
                report.warnings,
                f"the data of {settings.manifest}: warnings (it "
                "trains, but not quite as the tables say)",
                more=more,
            )
        )
    found = [f"{len(report.problems)} problem(s)"] if report.problems else []
    found += [f"{len(report.warnings)} warning(s)"] if report.warnings else []
    print(
        f"check-data: {report.pairs_checked} pairs, {report.images_checked} images checked "
        f"in {report.seconds:.1f} s: " + (", ".join(found) or "no problems")
    )
    return 1 if report.problems else 0
