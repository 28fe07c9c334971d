"""Where EMBED's ``anon_dicom_path`` values lie in a local copy: a known start removed and the
rest resolved under ``--images-root``; `EmbedPathError` when none of the listed files exists."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from common.problems import NO_IMAGE_FILE_FOUND, Problem
from data_tools.embed.options import EmbedOptions

# The folder EMBED's README gives for anon_dicom_path; kept for callers that name it.
EMBED_PATH_PREFIX = "/mnt/NAS2/mammo/anon_dicom/"
# The starts of anon_dicom_path seen in EMBED's documents, removed by default: (pattern, name).
KNOWN_PATH_PREFIXES = (
    # README: /mnt/NAS2/...; NUS_roi_reference.ipynb shows /mnt/NAS3/...
    (re.compile(r"/mnt/NAS\d*/mammo/anon_dicom/"), "/mnt/NAS*/mammo/anon_dicom/"),
    # Sample_Notebook.ipynb: './images/cohort_1/<patient>/<study>/...'
    (re.compile(r"\./images/"), "./images/"),
    (re.compile(r"images/"), "images/"),
)


class EmbedPathError(FileNotFoundError):
    """None of the image files the metadata lists was found under ``--images-root``;
    ``problems`` holds the one `Problem` the message states."""

    def __init__(self, problem: Problem):
        self.problems = [problem]
        super().__init__(str(problem))


def strip_path_prefix(source: str, prefixes: tuple[str, ...] = ()) -> tuple[str, str]:
    """(the rest of an ``anon_dicom_path`` relative to the images root, the start removed or
    '' if none): a given prefix first, else one of `KNOWN_PATH_PREFIXES`."""
    for prefix in prefixes:
        if prefix and source.startswith(prefix):
            return source[len(prefix) :].lstrip("/"), prefix
    for pattern, name in KNOWN_PATH_PREFIXES:
        match = pattern.match(source)
        if match:
            return source[match.end() :].lstrip("/"), name
    rest = source[2:] if source.startswith("./") else source
    return rest.lstrip("/"), ""


def resolve_path(source: str, options: EmbedOptions) -> Path:
    """Where an ``anon_dicom_path`` lies in this copy: its start removed, under images_root."""
    return options.images_root / strip_path_prefix(source, options.strip_prefixes)[0]


def _resolve_paths(images: pd.DataFrame, metadata_path: Path, options: EmbedOptions, summary):
    """Paths, existence and the prefix counts; `EmbedPathError` when no listed file exists."""
    prefixes = options.strip_prefixes
    stripped = [strip_path_prefix(source, prefixes) for source in images["source_path"]]
    images["path"] = [options.images_root / rest for rest, _ in stripped]
    images["path_text"] = images["path"].map(str)
    prefixes = Counter(name or "none" for _, name in stripped)
    images["exists"] = [path.is_file() for path in images["path"]] if options.check_files else True
    summary["paths"] = {"prefix_removed": dict(sorted(prefixes.items()))}
    if not options.check_files:
        return images
    found = int(images["exists"].sum())
    summary["paths"].update(files_found=found, files_not_found=len(images) - found)
    if len(images) and not found:
        first = images.iloc[0]
        reason = (
            f"none of the {len(images)} image files listed was found. The first, "
            f"{first['source_path']!r}, was looked for as {first['path']} in the folder "
            f"{os.path.abspath(options.images_root)} (--images-root). Set --images-root to the "
            "folder that holds the cohort_1/... folders, or name the start of anon_dicom_path "
            "to remove with --strip-prefix."
        )
        raise EmbedPathError(
            Problem(
                str(metadata_path),
                int(first["row"]),
                "anon_dicom_path",
                reason,
                NO_IMAGE_FILE_FOUND,
            )
        )
    return images
