"""Stage hand-off: at the end of ``fit``, the stage's best checkpoint becomes its artifact.

The best checkpoint is ModelCheckpoint's by the stage's monitored metric (``val_fauc`` for a
detector, ``val_cosine`` for the Stage II student), or ``last`` when nothing is monitored.
Under DDP rank 0 alone decides which checkpoint (by its view of the file system), writes the
artifact, atomically (``artifacts.write_artifact``), and broadcasts its path and weights' SHA-256,
so every rank takes the same branch and the ranks of the next step see the same file. Writing
the artifact of the same checkpoint again is a no-op.

Each rank also appends what it did to ``<run>/handoff.jsonl`` (one JSON object per line):
the inputs it loaded (path and SHA-256) and the hyperparameters it was built with, the digest
of its final weights, whole and per part (equal on every rank under DDP once rank 0's
BatchNorm statistics are shared), and the artifact it wrote or received. A user, or a test,
reads there that the stages handed over the files they were meant to.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml

from lightning_modules.artifacts import export_checkpoint, read_artifact, state_digest
from lightning_modules.stage import StageModule

JOURNAL = "handoff.jsonl"
# Config entries that say where a run writes, not what it trains: left out of the hash.
LOCATION_KEYS = {
    "trainer": ("default_root_dir", "logger", "enable_progress_bar"),
    "checkpoint": ("dirpath",),
    "predictions": ("output_dir",),
}
IGNORED_TOP_LEVEL = ("handoff", "ckpt_path", "config")
INPUT_ARGS = ("ffdm_teacher", "sm_teacher", "partner", "init_from", "pretrained")


def config_hash(config: dict[str, Any], inputs: dict[str, dict[str, str]]) -> str:
    """SHA-256 of what a stage's weights are a function of: its resolved config without the
    places it writes to, with each input artifact's path replaced by its weights' SHA-256.
    A retrained teacher (new weights) therefore changes its students' hashes.

    The artifact's ``config_hash`` of a run started by hand (``cli.py fit``). A pipeline stage
    records the pipeline's stage hash there instead (``--handoff.config_hash``), which hashes
    other inputs (the stage and data YAML files as written, the overrides and the data tables'
    contents): two different hashes of different inputs, never compared with each other."""
    config = json.loads(json.dumps(config, default=str))
    for key in IGNORED_TOP_LEVEL:
        config.pop(key, None)
    for section, keys in LOCATION_KEYS.items():
        for key in keys:
            if isinstance(config.get(section), dict):
                config[section].pop(key, None)
    init_args = (config.get("model") or {}).get("init_args") or {}
    for key in INPUT_ARGS:
        init_args.pop(key, None)
    payload = {
        "config": config,
        "inputs": {role: reference["sha256"] for role, reference in sorted(inputs.items())},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class StageHandoff(pl.Callback):
    """Writes ``<run>/artifact`` (or ``out_dir``) from the best checkpoint at the end of fit.

    Args:
        out_dir: the artifact folder; default ``<trainer.default_root_dir>/artifact``.
        config_hash: recorded as the artifact's ``config_hash`` (the pipeline passes its stage
            hash); default the ``config_hash`` of the run's saved ``config.yaml`` and its
            inputs.
        enabled: set False to write no artifact.
    """

    def __init__(
        self, out_dir: str | None = None, config_hash: str | None = None, enabled: bool = True
    ):
        super().__init__()
        self.out_dir = out_dir
        self.config_hash = config_hash
        self.enabled = enabled
        self.artifact_path: Path | None = None

    def directory(self, trainer: pl.Trainer) -> Path:
        return Path(self.out_dir or os.path.join(trainer.default_root_dir, "artifact"))

    def journal(self, trainer: pl.Trainer, event: str, **fields: Any) -> None:
        """Append one event of this rank to the run's hand-off journal."""
        record = {
            "event": event,
            "rank": int(trainer.global_rank),
            "world_size": int(trainer.world_size),
            **fields,
        }
        path = Path(trainer.default_root_dir) / JOURNAL
        path.parent.mkdir(parents=True, exist_ok=True)
        # One write of one line with O_APPEND: lines of several ranks never interleave.
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, (json.dumps(record, sort_keys=True) + "\n").encode())
        finally:
            os.close(descriptor)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.enabled and isinstance(pl_module, StageModule):
            hyperparameters = json.loads(json.dumps(dict(pl_module.hparams), default=str))
            self.journal(
                trainer, "inputs", inputs=pl_module.inputs, hyperparameters=hyperparameters
            )

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled or not isinstance(pl_module, StageModule):
            return
        _share_rank_zero_buffers(pl_module)
        state = pl_module.state_dict()
        parts = {}
        for key, value in state.items():
            parts.setdefault(key.split(".", 1)[0], {})[key] = value
        self.journal(
            trainer,
            "final_weights",
            digest=state_digest(state),
            parts={name: state_digest(part) for name, part in sorted(parts.items())},
            trained_steps=int(pl_module.trained_steps),
        )
        # Rank 0's view of the file system decides for every rank (another rank's view of a
        # shared file system may lag): which checkpoint, then the artifact written from it.
        best = self._best_checkpoint(trainer) if trainer.is_global_zero else None
        checkpoint, monitor, value = trainer.strategy.broadcast(best, src=0)
        if checkpoint is None:  # no ModelCheckpoint: save the final weights (all ranks call)
            checkpoint = os.path.join(trainer.default_root_dir, "checkpoints", "final.ckpt")
            trainer.save_checkpoint(checkpoint)
        outcome, failure = None, None
        if trainer.is_global_zero:
            try:
                digest_hash = self.config_hash or self._default_hash(trainer, pl_module)
                out, written = export_checkpoint(
                    checkpoint,
                    self.directory(trainer),
                    config_hash=digest_hash,
                    monitor=monitor,
                    monitor_value=value,
                )
                sha256 = read_artifact(out).meta["weights_sha256"]
                self.journal(
                    trainer,
                    "wrote" if written else "unchanged",
                    path=str(out),
                    checkpoint=str(checkpoint),
                    sha256=sha256,
                )
                outcome = (str(out), sha256, None)
            except Exception as error:  # noqa: BLE001 - raised below, once every rank knows
                failure, outcome = error, (None, None, f"{type(error).__name__}: {error}")
        path, sha256, error = trainer.strategy.broadcast(outcome, src=0)
        if failure is not None:
            raise failure
        if error is not None:
            raise RuntimeError(f"the stage hand-off failed on rank 0: {error}")
        self.artifact_path = Path(path)
        self.journal(trainer, "received", path=path, sha256=sha256)

    @staticmethod
    def _best_checkpoint(trainer: pl.Trainer) -> tuple[str | None, str | None, float | None]:
        callback = trainer.checkpoint_callback
        if callback is None:
            return None, None, None
        best = getattr(callback, "best_model_path", "")
        if callback.monitor and best and os.path.isfile(best):
            score = callback.best_model_score
            return best, callback.monitor, None if score is None else float(score)
        last = getattr(callback, "last_model_path", "") or best
        return (last, None, None) if last and os.path.isfile(last) else (None, None, None)

    @staticmethod
    def _default_hash(trainer: pl.Trainer, pl_module: StageModule) -> str:
        saved = Path(trainer.default_root_dir) / "config.yaml"
        if saved.is_file():
            config = yaml.safe_load(saved.read_text()) or {}
        else:
            config = {
                "model": {
                    "class_path": type(pl_module).__name__,
                    "init_args": dict(pl_module.hparams),
                }
            }
        return config_hash(config, pl_module.inputs)


def _share_rank_zero_buffers(module: pl.LightningModule) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    DDP keeps parameters equal by reducing gradients, but each rank's last forward updates its
    own BatchNorm statistics (DDP broadcasts rank 0's only before the next forward), so ranks
    end a fit with slightly different buffers. Rank 0's are the ones checkpointed; after this,
    every rank holds exactly them.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)
