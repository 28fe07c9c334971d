"""The data check run over the pairs of a manifest: its per-pair tasks spread over worker
processes (`_run`), the cache's settings, and what `PairedMammoDataModule.setup` checks
(`setup_check`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import pandas as pd

from common.parallel import run_parallel
from common.problems import CACHE_SETTINGS, Problem
from datamodules.cache import CACHE_INFO, ImageCache
from datamodules.manifest import ROW_COLUMN, resolve_table_paths
from datamodules.preflight.pair_checks import _check_pair, _init_worker, _PairTask
from datamodules.preflight.settings import CheckReport, CheckSettings
from datamodules.preflight.table_checks import box_problems, kind_problems, target_problems


def _cache_problems(settings: CheckSettings) -> list[Problem]:
    if not settings.cache_dir:
        return []
    info = str(Path(settings.cache_dir) / CACHE_INFO)
    try:
        cache = ImageCache(
            settings.cache_dir, settings.image_size, settings.window, settings.margin
        )
    except (FileNotFoundError, ValueError) as error:
        return [Problem(info, None, None, str(error), CACHE_SETTINGS)]
    if cache.margin != settings.margin:
        return [
            Problem(
                info,
                None,
                "margin",
                f"the cache was made with margin {cache.margin:g}, "
                f"the config says {settings.margin:g}; training would use the cache's",
                CACHE_SETTINGS,
            )
        ]
    return []


def _tasks(manifest: pd.DataFrame, modalities: Sequence[str]):
    """The per-pair jobs of a manifest and each image's path by (pair id, modality)."""
    tasks, paths = [], {}
    rows = manifest[ROW_COLUMN] if ROW_COLUMN in manifest.columns else [None] * len(manifest)
    for pair_id, row, laterality, view, *images in zip(
        manifest["pair_id"],
        rows,
        manifest["laterality"],
        manifest["view"],
        *(manifest[f"{modality}_path"] for modality in modalities),
    ):
        found = []
        for modality, path in zip(modalities, images):
            paths[(pair_id, modality)] = path
            if not path.endswith(os.sep):  # an empty path cell, reported by the validator
                found.append((modality, path))
        tasks.append(
            _PairTask(None if row is None else int(row), pair_id, laterality, view, tuple(found))
        )
    return tasks, paths


def _image_problems(outcomes, manifest_file: str) -> tuple[list[Problem], dict, dict]:
    """The per-image problems as Problems at their manifest rows, each image's original size
    and each image's geometry, by (pair id, modality)."""
    problems, sizes, geometries = [], {}, {}
    for outcome in outcomes:
        for modality, kind, reason, path in outcome.problems:
            problems.append(
                Problem(
                    manifest_file,
                    outcome.row,
                    f"{modality}_path",
                    reason,
                    kind,
                    outcome.pair_id,
                    path,
                )
            )
        for modality, facts in outcome.facts.items():
            if facts.size:
                sizes[(outcome.pair_id, modality)] = facts.size
            if facts.geometry is not None:
                geometries[(outcome.pair_id, modality)] = facts.geometry
    return problems, sizes, geometries


def _run(tasks, settings: CheckSettings, workers: int, progress: bool, full: bool) -> list:
    initargs = (asdict(settings), full)
    return list(
        run_parallel(
            _check_pair,
            tasks,
            workers=workers,
            initializer=_init_worker,
            initargs=initargs,
            # run here, cv2 keeps the caller's threads
            serial_setup=partial(_init_worker, *initargs, pool=False),
            max_chunksize=16,
            desc="check-data" if full else "data check",
            unit="pair",
            progress=progress,
        )
    )


# -- what a run reads, before its first step ---------------------------------------------------
# Above this many images `setup_check` decodes in worker processes (when it is given some):
# below it, starting them costs more than it saves.
PARALLEL_FROM = 200


def setup_check(
    manifest: pd.DataFrame,
    lesions: pd.DataFrame,
    settings: CheckSettings,
    workers: int = 1,
    parallel_from: int = PARALLEL_FROM,
) -> CheckReport:
    """What would make a run fail mid-way or learn from other boxes than the tables say, found
    before its first step, for the pairs of ``manifest`` (the splits the command reads; from
    `load_tables` with ``row_numbers``): every image of every modality in
    ``settings.modalities`` decoded with the training reader, or its cache entry read (a
    missing, truncated, corrupt, non-finite, blank or far too small image, a breast not
    found, tags of the other modality), then every lesion box followed through what training
    does to it (`target_problems`). One call, no state: its `CheckReport` can be computed
    once and shared. With ``workers`` > 1 and more than ``parallel_from`` images, the images
    are read in that many (spawned) processes."""
    started = time.monotonic()
    manifest_file, lesions_file = resolve_table_paths(settings.manifest, settings.lesions)
    manifest_name = str(manifest_file)
    lesions_name = str(lesions_file) if lesions_file else None
    report = CheckReport()
    cache = _cache_problems(settings)
    report.add(cache)
    tasks, paths = _tasks(manifest, settings.modalities)
    report.pairs_checked = len(tasks)
    report.images_checked = sum(len(task.paths) for task in tasks)
    if report.images_checked <= parallel_from:
        workers = 1
    outcomes = _run(tasks, settings, workers, progress=False, full=False)
    found, sizes, geometries = _image_problems(outcomes, manifest_name)
    found += kind_problems(outcomes, manifest_name, paths)
    if ROW_COLUMN not in lesions.columns:
        lesions = lesions.assign(**{ROW_COLUMN: None})
    read = lesions[lesions["modality"].isin(settings.modalities)]
    outside = box_problems(read, sizes, paths, lesions_name or "lesions")
    found += outside
    found += target_problems(
        manifest,
        read,
        geometries,
        settings.modalities,
        settings.pathology_classes,
        manifest_name,
        lesions_name,
        paths,
        _no_malignant_rows(manifest, lesions),
        {p.row for p in outside if p.row is not None},
    )
    report.add(found)
    report.seconds = time.monotonic() - started
    return report


def _no_malignant_rows(manifest: pd.DataFrame, lesions: pd.DataFrame) -> set[int]:
    """Rows of label-1 pairs without any malignant lesion (check-data reports those alone)."""
    malignant = set(lesions.loc[lesions["pathology"] == "malignant", "pair_id"])
    rows = (
        manifest.loc[(manifest["label"] == 1) & ~manifest["pair_id"].isin(malignant), ROW_COLUMN]
        if ROW_COLUMN in manifest.columns
        else []
    )
    return {int(row) for row in rows if row is not None}
