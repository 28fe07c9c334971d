"""What every stage's LightningModule shares: the optimiser, frozen parts, and its artifact spec.

A stage module says, in ``artifact_spec()``, what its weights are (architecture, image size,
which state-dict prefixes a later stage needs); the spec travels in each Lightning checkpoint
under ``CHECKPOINT_SPEC_KEY``, so a checkpoint becomes a stage artifact without rebuilding the
module (``weights.export_checkpoint``). Earlier stages come in by artifact path
(``load_input``), checked against what this stage needs and recorded in ``inputs``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import pytorch_lightning as pl
import torch

from lightning_modules.effdet_parts import freeze
from lightning_modules.weights import CHECKPOINT_SPEC_KEY, Artifact, check_artifact, read_artifact


class StageModule(pl.LightningModule, ABC):
    """Base of ``TeacherDetector``, ``DistillStudent`` and ``FusedDetector``.

    Args:
        learning_rate, weight_decay: AdamW's (the paper: learning rate 1.5e-4).
        warmup_steps: linear warm-up steps; then ``lr_schedule``: "cosine" (to zero at the
            last step) or "constant".
    """

    stage: int

    def __init__(self, learning_rate: float, weight_decay: float = 1e-4, warmup_steps: int = 0,
                 lr_schedule: str = "cosine"):
        super().__init__()
        if not float(learning_rate) > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        if lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {lr_schedule!r}")
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.lr_schedule = lr_schedule
        self.inputs: dict[str, dict[str, str]] = {}
        self._frozen: list[str] = []
        # Training batches these weights have learnt from; saved with them, so predictions and
        # artifacts say which weights made them (Trainer.global_step is 0 when testing).
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.int64))

    # -- earlier stages ---------------------------------------------------------------------
    def load_input(self, path: str, role: str, accepted, image_size=None) -> Artifact:
        """Read the artifact ``path`` given as ``role``, refuse it unless it is one of
        ``accepted`` (stage, class, modality) at ``image_size``, and record it in ``inputs``."""
        artifact = read_artifact(path, role)
        check_artifact(artifact, role, accepted, image_size)
        self.inputs[role] = artifact.reference
        return artifact

    def freeze_part(self, name: str) -> None:
        """Freeze submodule ``name`` for the whole run: no gradients, eval mode always."""
        freeze(getattr(self, name))
        self._frozen.append(name)

    def train(self, mode: bool = True):
        super().train(mode)
        for name in getattr(self, "_frozen", ()):
            getattr(self, name).eval()
        return self

    # -- what a stage hands on ----------------------------------------------------------------
    @abstractmethod
    def artifact_spec(self) -> dict[str, Any]:
        """What the artifact of this module records: at least ``weights``, the state-dict
        prefixes a later stage needs, and the architecture of the parts they hold."""

    def full_artifact_spec(self) -> dict[str, Any]:
        return {"stage": self.stage, "module_class": type(self).__name__,
                "inputs": dict(self.inputs), **self.artifact_spec()}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_SPEC_KEY] = self.full_artifact_spec()

    def check_finite(self, loss: torch.Tensor, batch: dict[str, Any]) -> None:
        """Stop the run on a non-finite loss, naming the step and the pairs, before the
        optimiser steps: the last checkpoint on disk stays the last good one. Under DDP every
        rank takes the same decision (one collective on a boolean), so none is left waiting."""
        finite = bool(torch.isfinite(loss.detach()).all())
        if self._trainer is not None:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            pairs = ", ".join(map(str, batch.get("pair_id", [])[:8]))
            checkpoint = getattr(getattr(self._trainer, "checkpoint_callback", None),
                                 "last_model_path", "") if self._trainer else ""
            raise FloatingPointError(
                f"non-finite training loss ({float(loss.detach())}) at training step "
                f"{int(self.trained_steps) + 1} (pairs {pairs}, on some rank); training stopped. "
                f"The last checkpoint ({checkpoint or 'none written yet'}) is untouched: lower "
                f"the learning rate or check these images, then resume from it"
            )

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.trained_steps += 1

    # -- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self):
        parameters = [parameter for parameter in self.parameters() if parameter.requires_grad]
        optimizer = torch.optim.AdamW(
            parameters, lr=self.learning_rate, weight_decay=self.weight_decay
        )
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup_steps = min(self.warmup_steps, total_steps)
        schedule = self.lr_schedule

        def factor(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / warmup_steps
            if schedule == "constant":
                return 1.0
            progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
