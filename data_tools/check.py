"""``python cli.py check-data``: every row of a manifest and every file it names checked before a
GPU hour is spent, with the reader training uses (`datamodules.preflight`, whose per-image and
per-box checks `PairedMammoDataModule.setup` runs too), and the checks only a whole data set
allows (labels against the lesion table, identities across pairs and splits).

    python cli.py check-data --config configs/data/phantom.yaml [--json FILE] [--workers N]
    python cli.py check-data --manifest M [--lesions L] [--cache-dir C] [--image-size H W]

Every problem is reported at once with its table row, pair id, file and reason
(`common.problems`); the exit status is 1 when there is any. Warnings (a box the breast
crop cuts off, a crop keeping little of its image) are listed apart and do not fail.
Identifiers read from the DICOMs (PatientID, StudyInstanceUID, SOPInstanceUID) are compared
by hash and never printed.
Only annotated pairs have their files checked: the others never reach training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from common.defaults import IMAGE_SIZE, MODALITIES

# CONSTANT and NON_FINITE, the reader's kinds of refused pixel content, are check-data's kinds
# too (and importable from here)
from common.problems import CONSTANT as CONSTANT
from common.problems import (
    DUPLICATE_IMAGE,
    DUPLICATE_VIEW,
    EXAM_OF_TWO_PATIENTS,
    LABEL_WITHOUT_LESION,
    LESION_WITH_LABEL_0,
    MISSING_COLUMN,
    MISSING_FILE,
    NO_ROWS,
    NOT_MG,
    PATIENT_DIFFERS,
    PATIENT_IN_TWO_SPLITS,
    STUDY_DIFFERS,
    TOO_SMALL,
    UNREADABLE_FILE,
    Problem,
    format_problems,
)
from common.problems import NON_FINITE as NON_FINITE
from datamodules.dicom import WINDOWS, Geometry
from datamodules.manifest import (
    ROW_COLUMN,
    ManifestError,
    prepared_tables,
    read_table,
    resolve_table_paths,
    validate,
)
from datamodules.preflight import (
    WARNINGS,
    CheckReport,
    CheckSettings,
    ImageProblem,
    box_problems,
    kind_problems,
    read_header,
    structure_problems,
    tag_problems,
    target_problems,
)
from datamodules.preflight.pair_checks import _crop_problems, _PairOutcome
from datamodules.preflight.runner import _cache_problems, _image_problems, _run, _tasks

# A DICOM PatientID shared by more manifest patients than this is a placeholder of an
# anonymisation ("ANONYMOUS"), not a patient: it is not used to find patients in two splits.
PLACEHOLDER_PATIENTS = 5


def refusals(path: str, image_size: Sequence[int], geometry: Geometry | None = None) -> list[str]:
    """Why an image cannot be used, in check-data's words: without ``geometry``, what its
    header says (unreadable, no pixel data, multi-frame, colour, not MG, far smaller than the
    input); with the ``geometry`` the reader made, its breast crop enlarged too much. What
    ``prepare`` refuses to cache (the reader itself refuses blank and non-finite pixels)."""
    if geometry is not None:
        return [
            reason for kind, reason, _ in _crop_problems(geometry, path) if kind not in WARNINGS
        ]
    try:
        dataset = read_header(path)
    except ImageProblem as problem:
        return [problem.reason]
    found = structure_problems(dataset) + [
        (kind, reason)
        for kind, reason in tag_problems(dataset, "", "", image_size)
        if kind in (NOT_MG, TOO_SMALL)
    ]
    return [reason for _, reason in found]


# -- table checks -----------------------------------------------------------------------------
def _table_problems(
    manifest: pd.DataFrame,
    lesions: pd.DataFrame,
    manifest_file: str,
    lesions_file: str | None,
    skip_label_rows: set[int],
) -> list[Problem]:
    """Labels against the lesion table, one exam view paired twice, an exam of two patients
    (annotated pairs only)."""
    problems = []
    malignant = lesions[lesions["pathology"] == "malignant"]
    first_malignant = dict(zip(malignant["pair_id"][::-1], malignant[ROW_COLUMN][::-1]))
    lesion_name = lesions_file or "the lesion table"
    seen_view: dict[tuple[str, str, str], int] = {}
    exam_patient: dict[str, tuple[str, int]] = {}
    for pair_id, row, label, exam, patient, laterality, view in zip(
        manifest["pair_id"],
        manifest[ROW_COLUMN],
        manifest["label"],
        manifest["exam_id"],
        manifest["patient_id"],
        manifest["laterality"],
        manifest["view"],
    ):
        row = int(row)
        if row not in skip_label_rows:
            if label == 1 and pair_id not in first_malignant:
                problems.append(
                    Problem(
                        manifest_file,
                        row,
                        "label",
                        "label 1 (malignant), but the lesion table has "
                        "no malignant lesion for this pair",
                        LABEL_WITHOUT_LESION,
                        pair_id,
                    )
                )
            elif label == 0 and pair_id in first_malignant:
                problems.append(
                    Problem(
                        manifest_file,
                        row,
                        "label",
                        "label 0, but the lesion table has a malignant "
                        f"lesion for this pair ({lesion_name} row {first_malignant[pair_id]})",
                        LESION_WITH_LABEL_0,
                        pair_id,
                    )
                )
        if exam and laterality and view:
            key = (exam, laterality, view)
            if key in seen_view:
                problems.append(
                    Problem(
                        manifest_file,
                        row,
                        "view",
                        f"the same exam, laterality and view as row "
                        f"{seen_view[key]}: one breast view paired twice",
                        DUPLICATE_VIEW,
                        pair_id,
                    )
                )
            else:
                seen_view[key] = row
        if exam and patient:
            if exam in exam_patient and exam_patient[exam][0] != patient:
                problems.append(
                    Problem(
                        manifest_file,
                        row,
                        "exam_id",
                        f"the same exam_id as row "
                        f"{exam_patient[exam][1]}, whose patient_id differs: an exam belongs "
                        "to one "
                        "patient",
                        EXAM_OF_TWO_PATIENTS,
                        pair_id,
                    )
                )
            exam_patient.setdefault(exam, (patient, row))
    return problems


def _identity_problems(
    outcomes: list[_PairOutcome],
    manifest: pd.DataFrame,
    manifest_file: str,
    paths: dict[tuple[str, str], str],
) -> list[Problem]:
    """SM and FFDM of one pair from different patients or studies; one image in two rows; one
    DICOM patient in two splits. Identifiers are compared by hash and never shown."""
    problems = []
    split_of = dict(zip(manifest["pair_id"], manifest["split"]))
    patient_of = dict(zip(manifest["pair_id"], manifest["patient_id"]))
    seen_image: dict[str, tuple[int | None, str]] = {}
    manifest_patients: dict[str, set[str]] = {}
    for outcome in outcomes:
        for facts in outcome.facts.values():
            if facts.patient:
                manifest_patients.setdefault(facts.patient, set()).add(patient_of[outcome.pair_id])
    patient_split: dict[str, tuple[str, int | None, str]] = {}
    leaked: set[str] = set()
    for outcome in sorted(outcomes, key=lambda o: o.row or 0):
        sm, ffdm = outcome.facts.get("sm"), outcome.facts.get("ffdm")
        both = f"{paths.get((outcome.pair_id, 'sm'))} and {paths.get((outcome.pair_id, 'ffdm'))}"
        if sm and ffdm:
            for attribute, tag, kind in (
                ("patient", "PatientID", PATIENT_DIFFERS),
                ("study", "StudyInstanceUID", STUDY_DIFFERS),
            ):
                first, second = getattr(sm, attribute), getattr(ffdm, attribute)
                if first and second and first != second:
                    problems.append(
                        Problem(
                            manifest_file,
                            outcome.row,
                            None,
                            f"the SM's and the FFDM's DICOM {tag} "
                            "differ (compared by hash; not shown): the two images are not of one "
                            "breast view",
                            kind,
                            outcome.pair_id,
                            both,
                        )
                    )
        for modality, facts in outcome.facts.items():
            column = f"{modality}_path"
            if facts.image:
                if facts.image in seen_image:
                    row, other = seen_image[facts.image]
                    problems.append(
                        Problem(
                            manifest_file,
                            outcome.row,
                            column,
                            "the same DICOM image "
                            f"(SOPInstanceUID, compared by hash) as row {row}, column {other}",
                            DUPLICATE_IMAGE,
                            outcome.pair_id,
                            paths.get((outcome.pair_id, modality)),
                        )
                    )
                else:
                    seen_image[facts.image] = (outcome.row, column)
            patient = facts.patient
            if not patient or len(manifest_patients[patient]) > PLACEHOLDER_PATIENTS:
                continue
            split = split_of[outcome.pair_id]
            first = patient_split.setdefault(patient, (split, outcome.row, outcome.pair_id))
            if (
                first[0] != split
                and patient_of[first[2]] != patient_of[outcome.pair_id]
                and outcome.pair_id not in leaked
            ):
                leaked.add(outcome.pair_id)  # once per pair, not per image
                problems.append(
                    Problem(
                        manifest_file,
                        outcome.row,
                        "patient_id",
                        "this pair's DICOM patient "
                        f"(PatientID, compared by hash) is also that of row {first[1]}, which "
                        "is in "
                        f"split {first[0]!r} while this pair is in {split!r}: one patient in two "
                        "splits under two patient_ids",
                        PATIENT_IN_TWO_SPLITS,
                        outcome.pair_id,
                        paths.get((outcome.pair_id, modality)),
                    )
                )
    return problems


# -- the whole check --------------------------------------------------------------------------
def check_data(settings: CheckSettings, workers: int = 1, progress: bool = True) -> CheckReport:
    """Check the tables, every file of every annotated pair, the cache and the boxes; every
    problem at once. ``workers`` > 1 checks pairs in that many processes."""
    started = time.monotonic()
    report = CheckReport()
    manifest_file, lesions_file = resolve_table_paths(settings.manifest, settings.lesions)
    tables = []
    for path in (manifest_file, lesions_file):
        try:
            tables.append(None if path is None else read_table(path))
        except (FileNotFoundError, ValueError) as error:  # pandas' parse errors are ValueErrors
            reason = str(error).removeprefix(f"{path}: ")
            kind = MISSING_FILE if isinstance(error, FileNotFoundError) else UNREADABLE_FILE
            report.problems.append(Problem(str(path), None, None, reason, kind))
    if report.problems:
        return report
    raw_manifest, raw_lesions = tables
    manifest_name = str(manifest_file)
    lesions_name = str(lesions_file) if lesions_file else None
    try:
        validate(raw_manifest, raw_lesions, manifest_name, lesions_name or "lesions")
    except ManifestError as error:
        report.problems += error.problems
    if len(raw_manifest) == 0:
        report.problems.append(
            Problem(manifest_name, None, None, "no data rows (only a header)", NO_ROWS)
        )
    if any(problem.kind == MISSING_COLUMN for problem in report.problems) or not len(raw_manifest):
        return report  # the rows cannot be read without their columns
    skip_label_rows = {p.row for p in report.problems if p.column == "label" and p.row}
    manifest, lesions, _ = prepared_tables(
        raw_manifest,
        raw_lesions,
        manifest_file,
        settings.seed,
        settings.split_fractions,
        row_numbers=True,
    )
    if len(manifest) == 0:
        report.problems.append(
            Problem(
                manifest_name,
                None,
                "annotated",
                f"none of its {len(raw_manifest)} rows has "
                "annotated true: every pair is left out, and nothing would be trained or tested",
                NO_ROWS,
            )
        )
        return report
    if lesions_file is None:  # one problem says so, not one per label-1 row
        skip_label_rows |= set(int(row) for row in manifest[ROW_COLUMN])
    report.problems += _cache_problems(settings)
    rows = _table_problems(manifest, lesions, manifest_name, lesions_name, skip_label_rows)
    tasks, paths = _tasks(manifest, settings.modalities)
    report.pairs_checked = len(tasks)
    report.images_checked = sum(len(task.paths) for task in tasks)
    outcomes = _run(tasks, settings, workers, progress, full=True)
    found, sizes, geometries = _image_problems(outcomes, manifest_name)
    rows += found
    rows += _identity_problems(outcomes, manifest, manifest_name, paths)
    rows += kind_problems(outcomes, manifest_name, paths)
    checked = lesions[lesions["modality"].isin(settings.modalities)]
    outside = box_problems(checked, sizes, paths, lesions_name or "lesions")
    rows += outside
    no_malignant = {p.row for p in rows if p.kind == LABEL_WITHOUT_LESION}
    rows += target_problems(
        manifest,
        lesions,
        geometries,
        settings.modalities,
        settings.pathology_classes,
        manifest_name,
        lesions_name,
        paths,
        skip_label_rows | no_malignant,
        {p.row for p in outside},
    )
    order = {manifest_name: 0, lesions_name: 1}
    rows.sort(key=lambda p: (order.get(p.file, 2), p.row or 0, p.column or "", p.kind))
    report.add(rows)
    report.seconds = time.monotonic() - started
    return report


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
