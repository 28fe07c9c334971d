"""The whole data check of ``cli.py check-data`` (``check_data``: the tables, every file of
every annotated pair, the cache and the boxes), and why one image cannot be used in its words
(``refusals``, which ``prepare`` uses too)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from common.problems import LABEL_WITHOUT_LESION, MISSING_COLUMN, NO_ROWS, Problem
from data_tools.check.dataset_checks import _identity_problems, _table_problems
from datamodules.dicom import Geometry
from datamodules.manifest import (
    ROW_COLUMN,
    ManifestError,
    prepared_tables,
    read_table,
    resolve_table_paths,
    validate,
)
from datamodules.preflight import (
    MISSING_FILE,
    NOT_MG,
    TOO_SMALL,
    UNREADABLE_FILE,
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
from datamodules.preflight.pair_checks import _crop_problems
from datamodules.preflight.runner import _cache_problems, _image_problems, _run, _tasks


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
