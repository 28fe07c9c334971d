"""The per-pair work of the data check, run in worker processes (`runner._run`): each image
of a pair read as training reads it, from its cache entry or its DICOM, and what it shows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.problems import (
    CACHE_ENTRY_DIFFERS,
    CROP_ENLARGED,
    CROP_SMALL,
    MISSING_FILE,
    TOO_SMALL,
    UNDECODABLE,
    UNREADABLE_CACHE_ENTRY,
)
from datamodules.cache import CacheEntryError, ImageCache
from datamodules.dicom import (
    DicomReadError,
    Geometry,
    ImageContentError,
    image_kind,
    load_image,
)
from datamodules.preflight.dicom_checks import (
    _digest,
    _reason,
    read_header,
    structure_problems,
    tag_problems,
)
from datamodules.preflight.settings import (
    MAX_UPSCALE,
    MIN_CROP_SHARE,
    PIXEL_TOLERANCE,
    CheckSettings,
    ImageProblem,
)


@dataclass(frozen=True)
class _PairTask:
    row: int | None
    pair_id: str
    laterality: str
    view: str
    paths: tuple[tuple[str, str], ...]  # (modality, DICOM path)


@dataclass
class _ImageFacts:
    size: tuple[int, int] | None = None  # (rows, columns) of the original image
    patient: str | None = None  # hashes of the DICOM identifiers
    study: str | None = None
    image: str | None = None
    geometry: Geometry | None = None  # how training maps the image and its boxes
    kind: tuple[str | None, str] = (None, "")  # what the tags say it is (`image_kind`)


@dataclass
class _PairOutcome:
    row: int | None
    pair_id: str
    problems: list[tuple[str, str, str, str]]  # (modality, kind, reason, path)
    facts: dict[str, _ImageFacts]


_worker: dict = {}


def _init_worker(settings: dict, full: bool = True, pool: bool = True) -> None:
    if pool:
        import cv2

        cv2.setNumThreads(1)  # the processes are the parallelism
    settings = CheckSettings(**settings)
    cache = None
    if settings.cache_dir:
        try:
            cache = ImageCache(
                settings.cache_dir, settings.image_size, settings.window, settings.margin
            )
        except (FileNotFoundError, ValueError):
            cache = None  # reported once by the main process
    _worker.update(settings=settings, cache=cache, full=full)


def _check_pair(task: _PairTask) -> _PairOutcome:
    outcome = _PairOutcome(task.row, task.pair_id, [], {})
    for modality, path in task.paths:
        facts, problems = _check_image(task, modality, path)
        outcome.facts[modality] = facts
        outcome.problems += [(modality, kind, reason, where) for kind, reason, where in problems]
    return outcome


def _check_image(task: _PairTask, modality: str, path: str):
    """(facts, [(kind, reason, file)]) of one image: its cache entry, its header, the training
    reader's output. ``full`` (check-data) reads the DICOM of a cached image too and compares
    the two; otherwise (`setup_check`) a readable cache entry is what training reads."""
    settings: CheckSettings = _worker["settings"]
    cache: ImageCache | None = _worker["cache"]
    facts, problems = _ImageFacts(), []
    entry_path = str(cache.path(task.pair_id, modality)) if cache is not None else None
    entry = None
    if cache is not None:
        try:
            entry = cache.read(task.pair_id, modality)
        except CacheEntryError as error:
            problems.append((UNREADABLE_CACHE_ENTRY, error.reason, error.path))
    if entry is not None and not _worker["full"]:
        facts.geometry = entry[1]
        facts.size = entry[1].original_size
        problems += _crop_problems(entry[1], entry_path)
        return facts, problems
    try:
        dataset = read_header(path)
    except ImageProblem as problem:
        reason = problem.reason
        if problem.kind == MISSING_FILE and entry is not None:
            reason += " (its cache entry is there, so training still reads the image)"
        problems.append((problem.kind, reason, path))
        if entry is not None:
            facts.size = entry[1].original_size
            facts.geometry = entry[1]
        return facts, problems
    facts.size = (int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0))
    facts.patient = _digest(dataset.get("PatientID"))
    facts.study = _digest(dataset.get("StudyInstanceUID"))
    facts.image = _digest(dataset.get("SOPInstanceUID"))
    facts.kind = image_kind(dataset)
    structure = structure_problems(dataset)
    problems += [(kind, reason, path) for kind, reason in structure]
    problems += [
        (kind, reason, path)
        for kind, reason in tag_problems(dataset, task.laterality, task.view, settings.image_size)
    ]
    if structure:
        return facts, problems  # the reader refuses these; decoding says nothing more
    margin = cache.margin if cache is not None else settings.margin  # as the dataset does
    try:
        image, geometry = load_image(
            path, settings.image_size, task.laterality or None, settings.window, margin
        )
    except ImageContentError as error:
        problems.append((error.kind, error.reason, path))
        return facts, problems
    except DicomReadError as error:
        problems.append((UNDECODABLE, _reason(error, path), path))
        return facts, problems
    facts.geometry = geometry
    if not any(kind == TOO_SMALL for kind, _, _ in problems):
        problems += _crop_problems(geometry, path)
    if entry is not None:
        cached, cached_geometry = entry
        facts.geometry = cached_geometry  # what training reads
        if cached_geometry != geometry:
            problems.append(
                (
                    CACHE_ENTRY_DIFFERS,
                    (
                        "the cache entry was made from another image or with other settings: its "
                        f"geometry {_geometry_text(cached_geometry)} differs from the DICOM's "
                        f"{_geometry_text(geometry)}"
                    ),
                    entry_path,
                )
            )
        else:
            difference = float(np.abs(cached - image).max())
            if difference > PIXEL_TOLERANCE:
                problems.append(
                    (
                        CACHE_ENTRY_DIFFERS,
                        (
                            "the cache entry's pixels differ from the DICOM's read now (largest "
                            f"difference {difference:.3g} of 1): made from another image or with "
                            "other settings"
                        ),
                        entry_path,
                    )
                )
    return facts, problems


def _crop_problems(geometry: Geometry, path: str) -> list[tuple[str, str, str]]:
    """The breast crop enlarged more than MAX_UPSCALE to fill the input, or keeping less than
    MIN_CROP_SHARE of the image: the breast was not found."""
    x1, y1, x2, y2 = geometry.crop_box
    rows, columns = geometry.original_size
    share = (x2 - x1) * (y2 - y1) / max(1, rows * columns)
    enlarged = min(geometry.scale_x, geometry.scale_y)
    crop = f"the breast crop is {x2 - x1}x{y2 - y1} pixels (width x height) of {columns}x{rows}"
    if enlarged > MAX_UPSCALE:
        height, width = geometry.input_size
        return [
            (
                CROP_ENLARGED,
                f"{crop}: filling the model's input ({width}x{height}) enlarges "
                f"it {enlarged:.1f} times (more than {MAX_UPSCALE:g}); the "
                "breast was not found (a near-black image, or a bright spot "
                "apart from the breast?)",
                path,
            )
        ]
    if share < MIN_CROP_SHARE:
        return [
            (
                CROP_SMALL,
                f"{crop}, {share:.1%} of the image (less than "
                f"{MIN_CROP_SHARE:.0%}): is the breast that small, or was it not "
                "found?",
                path,
            )
        ]
    return []


def _geometry_text(geometry) -> str:
    return (
        f"(original {geometry.original_size[0]}x{geometry.original_size[1]}, flip "
        f"{geometry.flip}, crop {list(geometry.crop_box)})"
    )
