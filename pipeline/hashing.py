"""The stage hash: what a stage's weights are a function of (``pipeline/runner.py``'s
docstring says what goes in), so that a stage whose artifact has the same hash is skipped."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from common.io import sha256_file
from lightning_modules.artifacts import read_artifact
from pipeline.config import Pipeline, Stage


def _data_fingerprint(data_config: Path) -> dict[str, Any]:
    """The data config and the SHA-256 of the tables it names (not of every image)."""
    config = yaml.safe_load(data_config.read_text()) or {}
    init = ((config.get("data") or {}).get("init_args")) or {}
    tables = {}
    manifest = init.get("manifest")
    if manifest:
        manifest_path = Path(manifest)
        if manifest_path.is_dir():
            manifest_path = manifest_path / "manifest.csv"
        lesions = (
            Path(init["lesions"]) if init.get("lesions") else (manifest_path.parent / "lesions.csv")
        )
        for name, table in (("manifest", manifest_path), ("lesions", lesions)):
            tables[name] = sha256_file(table) if table.is_file() else None
    return {"config": config, "tables": tables}


def stage_hash(pipeline: Pipeline, stage: Stage) -> str:
    """What the stage's weights are a function of (see the module docstring).

    Passed to the fit as ``--handoff.config_hash``, so it is what the stage's artifact records
    as ``config_hash`` (and ``stage.json`` as ``hash``); ``is_current`` compares the two. It is
    not ``callbacks.handoff.config_hash``, the default of a run started by hand, which hashes
    Lightning's resolved config instead of the pipeline's stage definition and data tables."""
    inputs = {}
    for argument, source in sorted(stage.inputs.items()):
        artifact = pipeline.run / source / "artifact"
        inputs[argument] = read_artifact(artifact, argument).meta["weights_sha256"]
    payload = {
        "stage": yaml.safe_load(stage.config.read_text()),
        "data": _data_fingerprint(pipeline.data),
        "overrides": {**pipeline.overrides, **stage.overrides},
        "inputs": inputs,
    }
    if stage.data is not None:  # trained on its own data, assessed on the pipeline's
        payload["training_data"] = _data_fingerprint(stage.data)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
