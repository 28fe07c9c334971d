"""What a stage's run folder says about it: its state file (``stage.json``), whether it holds
the finished stage for a hash (``is_current``), and the checkpoint an interrupted fit resumes
from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from common.io import write_atomically
from lightning_modules.artifacts import is_artifact, read_artifact, read_checkpoint

STATE_FILE = "stage.json"
REQUEUE_CHECKPOINTS = "hpc_ckpt_*.ckpt"  # Lightning's name for them, in the run folder


def _state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # one process writes a stage's state: a fixed temporary name, which a killed run's
    # next write reuses rather than leaving one more behind
    write_atomically(
        folder / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n", unique=False
    )


def is_current(folder: Path, digest: str) -> bool:
    """True when the stage folder holds a finished stage for this hash."""
    state = _state(folder)
    artifact = folder / "artifact"
    if state.get("hash") != digest or state.get("status") != "done" or not is_artifact(artifact):
        return False
    try:
        meta = read_artifact(artifact).meta
    except (OSError, ValueError):
        return False
    return meta.get("config_hash") == digest and meta.get("weights_sha256") == state.get(
        "weights_sha256"
    )


def _newest_checkpoint(folder: Path, log=print) -> Path | None:
    """The newest readable of a stage's requeue checkpoints (``hpc_ckpt_<n>.ckpt``, written
    on SLURM's signal) and its ``last.ckpt`` (validation ends and the wall-clock timer): the
    one of most training steps, the later written of two with as many."""
    newest, newest_key = None, None
    for path in [*folder.glob(REQUEUE_CHECKPOINTS), folder / "checkpoints" / "last.ckpt"]:
        if not path.is_file():
            continue
        try:
            steps = int(read_checkpoint(path).get("global_step", 0))
        except ValueError:
            log(
                f"[pipeline] {folder.name}: {path} is unreadable (cut off while written?); "
                "not resuming from it"
            )
            continue
        key = (steps, path.stat().st_mtime_ns)
        if newest_key is None or key > newest_key:
            newest, newest_key = path, key
    return newest
