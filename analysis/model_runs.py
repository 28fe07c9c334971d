"""Reading a model's run folder for the report: its ``{val,test}`` prediction tables, matched
with the run's own hit rule, and the manifest and lesion table of the data it was run on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from common.defaults import HIT_MIN_DISTANCE, SPLIT_FRACTIONS
from datamodules.manifest import load_tables
from metrics.evaluate import BOX_COLUMNS, EvaluationTables, cap_message, read_evaluation_tables
from metrics.froc import MatchedDetections, threshold_at_fp

SPLITS = ("val", "test")


@dataclass
class ModelRun:
    """One model's evaluation records, read from its run folder."""

    name: str
    folder: Path
    modality: str
    hit_min_distance: float
    tables: dict[str, EvaluationTables]
    matched: dict[str, MatchedDetections]
    lesions: dict[str, pd.DataFrame]  # ground truth rows joined to the lesion table's columns


def run_info(name: str, folder: Path) -> dict:
    """What the run's prediction files say of themselves (``{split}_info.json``); the
    validation threshold is applied to test, so both must come from the same weights."""
    infos = {}
    for split in SPLITS:
        path = folder / "predictions" / f"{split}_info.json"
        if not path.is_file():
            command = "validate" if split == "val" else "test"
            raise FileNotFoundError(
                f"{path} not found: run `python cli.py {command} ...` for {name} first"
            )
        infos[split] = json.loads(path.read_text())
    steps = {split: info.get("trained_steps") for split, info in infos.items()}
    if steps["val"] != steps["test"]:
        raise ValueError(
            f"{name}: validation predictions come from weights trained {steps['val']} steps, "
            f"test predictions from weights trained {steps['test']} steps; run `python cli.py "
            f"validate` with the checkpoint you tested (files in {folder / 'predictions'})"
        )
    for key in ("modality", "hit_min_distance"):
        values = {info.get(key) for info in infos.values()}
        if len(values) > 1:
            raise ValueError(
                f"{name}: the validation and test predictions differ in {key}: "
                f"{sorted(map(str, values))}"
            )
    return infos["test"]


def read_run(
    name: str,
    folder: str | Path,
    manifest: pd.DataFrame,
    lesions: pd.DataFrame,
    max_fp: float = 1.0,
    target_fp: float = 1.0,
    prune: bool = True,
) -> ModelRun:
    """Match a run's ``{val,test}`` predictions with its own hit rule; ground-truth rows get
    their lesion's attributes (``lesion_type``, ...) and their pair's (``density``, ...).

    With ``prune``, only the detections the report reads are kept: on validation those of
    FAUC-``max_fp`` and the ``target_fp`` threshold, on test those of FAUC-``max_fp``, the FROC
    figure (to 2 ``max_fp``) and everything down to the validation threshold."""
    folder = Path(folder)
    info = run_info(name, folder)
    modality = info.get("modality") or "sm"
    distance = float(info.get("hit_min_distance", HIT_MIN_DISTANCE))
    tables, matched, joined = {}, {}, {}
    floor = np.inf
    for split, reach in (("val", max(max_fp, target_fp)), ("test", max(2 * max_fp, target_fp))):
        tables[split] = read_evaluation_tables(
            *(_table(folder, split, table) for table in ("predictions", "ground_truth", "images")),
            fp_per_image=reach if prune else None,
            min_score=floor,
        ).sorted_by_image()
        matched[split] = tables[split].match(min_distance=distance)
        joined[split] = _join_lesions(tables[split].ground_truth, lesions, manifest, modality)
        if split == "val":
            floor = threshold_at_fp(matched[split], target_fp)  # applied to test
        capped = tables[split].capped_above(matched[split], max_fp)
        if capped:
            print(cap_message(capped, max_fp, f"report: {name}, {split}"))
    return ModelRun(name, folder, modality, distance, tables, matched, joined)


def _table(folder: Path, split: str, table: str) -> Path:
    """A run's ``{split}_{table}.parquet``, or the ``.csv`` older runs wrote."""
    path = folder / "predictions" / f"{split}_{table}.parquet"
    legacy = path.with_suffix(".csv")
    return legacy if not path.exists() and legacy.exists() else path


def _run_config(folder: Path) -> dict:
    path = folder / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {folder} a LightningCLI run folder?")
    return yaml.safe_load(path.read_text())


def run_tables(folder: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The data settings of a run folder's config, and its manifest (with splits) and lesion
    table."""
    data = _run_config(folder)["data"]["init_args"]
    fractions = tuple(data.get("split_fractions", SPLIT_FRACTIONS))
    manifest, lesions, _ = load_tables(
        data["manifest"], data.get("lesions"), seed=data.get("seed", 0), fractions=fractions
    )
    return data, manifest, lesions


def _join_lesions(
    ground_truth: pd.DataFrame, lesions: pd.DataFrame, manifest: pd.DataFrame, modality: str
) -> pd.DataFrame:
    """Ground-truth rows (in order) with the lesion table's and manifest's extra columns."""
    own = lesions[lesions["modality"] == modality].rename(columns={"pair_id": "image_id"})
    keys = ["image_id", *BOX_COLUMNS]
    boxes = list(BOX_COLUMNS)
    own = own.astype(dict.fromkeys(boxes, float)).drop_duplicates(keys)
    left = ground_truth.drop(columns=["image_index"], errors="ignore").astype(
        dict.fromkeys(boxes, float)
    )
    joined = left.merge(own.drop(columns=["modality"]), on=keys, how="left", validate="m:1")
    pairs = manifest.rename(columns={"pair_id": "image_id"})
    extra = [c for c in pairs.columns if c not in joined.columns or c == "image_id"]
    return joined.merge(pairs[extra], on="image_id", how="left", validate="m:1")
