"""The checks of the tables against the images: lesion boxes not inside their image
(`box_problems`), images of the other modality (`kind_problems`), boxes training would lose
and label-1 pairs left without a target (`target_problems`), classes without lesions
(`unused_class_problems`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from common.problems import (
    BOX_LOST,
    BOX_OUTSIDE,
    NO_LESION_TABLE,
    NO_TARGET,
    SWAPPED,
    UNUSED_CLASS,
    WRONG_KIND,
    Problem,
)
from datamodules.dicom import Geometry, input_boxes
from datamodules.manifest import ROW_COLUMN
from datamodules.preflight.pair_checks import _PairOutcome
from datamodules.preflight.settings import BOX_TOLERANCE, MIN_TARGET_SIDE


def box_problems(
    lesions: pd.DataFrame,
    sizes: dict[tuple[str, str], tuple[int, int]],
    paths: dict[tuple[str, str], str],
    lesions_file: str,
) -> list[Problem]:
    """Lesion boxes not inside their image: ``sizes`` maps (pair id, modality) to the image's
    (rows, columns); lesions of images without a size are not checked."""
    problems = []
    for pair_id, modality, row, x1, y1, x2, y2 in zip(
        lesions["pair_id"],
        lesions["modality"],
        lesions[ROW_COLUMN],
        lesions["x1"],
        lesions["y1"],
        lesions["x2"],
        lesions["y2"],
    ):
        size = sizes.get((pair_id, modality))
        if not size or not size[0] or not np.isfinite([x1, y1, x2, y2]).all():
            continue  # unreadable image, or coordinates the validator reported
        rows, columns = size
        outside = [
            name
            for name, bad in (
                ("x1", x1 < -BOX_TOLERANCE),
                ("y1", y1 < -BOX_TOLERANCE),
                ("x2", x2 > columns + BOX_TOLERANCE),
                ("y2", y2 > rows + BOX_TOLERANCE),
                ("x1", x1 >= columns),
                ("y1", y1 >= rows),
                ("x2", x2 <= 0),
                ("y2", y2 <= 0),
            )
            if bad
        ]
        if outside:
            problems.append(
                Problem(
                    lesions_file,
                    int(row),
                    outside[0],
                    f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is not inside its {modality} image "
                    f"(width {columns}, height {rows} pixels)",
                    BOX_OUTSIDE,
                    pair_id,
                    paths.get((pair_id, modality)),
                )
            )
    return problems


def kind_problems(
    outcomes: list[_PairOutcome], manifest_file: str, paths: dict[tuple[str, str], str]
) -> list[Problem]:
    """Images whose DICOM tags say they are of the other modality (`image_kind`): an SM in
    ``ffdm_path``, an FFDM or a tomosynthesis slice in ``sm_path``; both at once is a swap."""
    problems = []
    for outcome in outcomes:
        said = {modality: facts.kind for modality, facts in outcome.facts.items()}
        sm, ffdm = said.get("sm", (None, "")), said.get("ffdm", (None, ""))
        if sm[0] == "ffdm" and ffdm[0] == "sm":
            problems.append(
                Problem(
                    manifest_file,
                    outcome.row,
                    "sm_path",
                    f"the DICOM tags say sm_path holds an "
                    f"FFDM ({sm[1]}) and ffdm_path an SM ({ffdm[1]}): SM and FFDM swapped in "
                    "this row",
                    SWAPPED,
                    outcome.pair_id,
                    f"{paths.get((outcome.pair_id, 'sm'))} and "
                    f"{paths.get((outcome.pair_id, 'ffdm'))}",
                )
            )
            continue
        for modality, (kind, why) in said.items():
            if kind is not None and kind != modality:
                expected = "an SM" if modality == "sm" else "an FFDM"
                shown = {"sm": "an SM", "ffdm": "an FFDM"}.get(kind, f"a {kind} image")
                problems.append(
                    Problem(
                        manifest_file,
                        outcome.row,
                        f"{modality}_path",
                        f"the DICOM tags say this is {shown} ({why}), not {expected}",
                        WRONG_KIND,
                        outcome.pair_id,
                        paths.get((outcome.pair_id, modality)),
                    )
                )
    return problems


def target_problems(
    manifest: pd.DataFrame,
    lesions: pd.DataFrame,
    geometries: dict[tuple[str, str], Geometry],
    modalities: Sequence[str],
    pathology_classes: dict[str, int] | None,
    manifest_file: str,
    lesions_file: str | None,
    paths: dict[tuple[str, str], str],
    skip: set[int] = frozenset(),
    outside: set[int] = frozenset(),
) -> list[Problem]:
    """Every lesion box followed through what training does to it (`input_boxes`): dropped by
    ``pathology_classes``, cut off by the breast crop (mirrored ones named as such), shrunk
    below MIN_TARGET_SIDE input pixels. A box lost is a warning; a label-1 pair left without
    a target in a modality the run reads is an error (unless its lesion rows are missing
    altogether, which `_table_problems` reports, or its row is in ``skip``); so is a
    ``pathology_classes`` key no lesion of the training pairs has, and no lesion table at
    all for a manifest with label-1 pairs. Images without a geometry (unreadable ones,
    reported already) are not judged; boxes at the lesion rows in ``outside`` (not inside
    their image, reported already) count as lost without a warning."""
    problems: list[Problem] = []
    positives = manifest[manifest["label"] == 1]
    if lesions_file is None:
        if len(positives):
            problems.append(
                Problem(
                    manifest_file,
                    None,
                    None,
                    f"no lesion table: none was given (lesions) and "
                    f"there is no lesions.csv beside the manifest, so the {len(positives)} pair(s) "
                    "with label 1 have no box to learn from",
                    NO_LESION_TABLE,
                )
            )
        return problems
    read = lesions[lesions["modality"].isin(modalities)]
    lesion_name = lesions_file
    targets: dict[tuple[str, str], int] = {}
    lost: dict[tuple[str, str], list[str]] = {}
    for pair_id, modality, row, pathology, x1, y1, x2, y2 in zip(
        read["pair_id"],
        read["modality"],
        read[ROW_COLUMN],
        read["pathology"],
        read["x1"],
        read["y1"],
        read["x2"],
        read["y2"],
    ):
        key = (pair_id, modality)
        targets.setdefault(key, 0)
        where = f"{lesion_name} row {int(row)}" if row is not None else lesion_name
        if pathology_classes is not None and pathology not in pathology_classes:
            lost.setdefault(key, []).append(
                f"{where} is {pathology}, not a class of pathology_classes"
            )
            continue
        if row is not None and int(row) in outside:
            lost.setdefault(key, []).append(f"{where} is not inside its image")
            continue
        geometry = geometries.get(key)
        box = np.array([[x1, y1, x2, y2]], dtype=np.float64)
        if geometry is None or not np.isfinite(box).all():
            targets[key] = -1  # the image or the box is unreadable: reported already
            continue
        reason = _lost_reason(box, geometry)
        if reason is None:
            if targets[key] >= 0:
                targets[key] += 1
            continue
        lost.setdefault(key, []).append(f"{where} {reason}")
        problems.append(
            Problem(
                lesions_file,
                None if row is None else int(row),
                "x1",
                f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) {reason}",
                BOX_LOST,
                pair_id,
                paths.get(key),
            )
        )
    for pair_id, row in zip(positives["pair_id"], positives[ROW_COLUMN]):
        if row is not None and int(row) in skip:
            continue
        for modality in modalities:
            key = (pair_id, modality)
            if targets.get(key, 0) != 0 or key not in geometries:
                continue
            why = (
                "; ".join(lost.get(key, []))
                or f"the lesion table has no {modality} box for this pair"
            )
            problems.append(
                Problem(
                    manifest_file,
                    None if row is None else int(row),
                    "label",
                    f"label 1, but no {modality} box is left for training ({why})",
                    NO_TARGET,
                    pair_id,
                    paths.get(key),
                )
            )
    problems += unused_class_problems(read, manifest, pathology_classes, lesions_file)
    return problems


def _lost_reason(box: np.ndarray, geometry: Geometry) -> str | None:
    """Why training would lose this original-pixel box, or None when it keeps it."""
    kept_boxes, kept = input_boxes(box, geometry)
    if kept[0]:
        width, height = (float(v) for v in kept_boxes[0, 2:] - kept_boxes[0, :2])
        if min(width, height) >= MIN_TARGET_SIDE:
            return None
        return (
            f"is {width:.2g}x{height:.2g} pixels at the model's input (less than "
            f"{MIN_TARGET_SIDE:g}): too small to learn from"
        )
    mirrored = box.copy()
    mirrored[:, [0, 2]] = geometry.original_size[1] - box[:, [2, 0]]
    clipped, inside = input_boxes(mirrored, geometry)
    if inside[0] and _area(clipped[0]) >= 0.5 * _area(np.asarray(geometry.to_input(mirrored))[0]):
        return (
            "lies outside the breast crop, where training drops it; mirrored (x -> width "
            "- x) it would lie inside: were the boxes written for the flipped image?"
        )
    return "lies outside the breast crop, where training drops it (in the background?)"


def _area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def unused_class_problems(
    lesions: pd.DataFrame,
    manifest: pd.DataFrame,
    pathology_classes: dict[str, int] | None,
    lesions_file: str,
) -> list[Problem]:
    """A ``pathology_classes`` key that no lesion of the training pairs (of every pair when
    none is in training) has: its class would never be learnt."""
    if not pathology_classes:
        return []
    pairs = manifest["pair_id"]
    if "split" in manifest.columns and (manifest["split"] == "train").any():
        pairs = pairs[manifest["split"] == "train"]
    present = lesions.loc[lesions["pair_id"].isin(set(pairs)), "pathology"].value_counts()
    shown = ", ".join(f"{name} {int(count)}" for name, count in present.items()) or "none"
    return [
        Problem(
            lesions_file,
            None,
            "pathology",
            f"pathology_classes maps {name!r} to class {index}, "
            f"but no lesion of the pairs checked has pathology {name!r} (they have: {shown}): "
            "that class would never be trained",
            UNUSED_CLASS,
        )
        for name, index in pathology_classes.items()
        if name not in present.index
    ]
