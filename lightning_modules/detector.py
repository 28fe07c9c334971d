"""The base LightningModule of every stage that detects lesions.

A subclass says how it makes features from a batch (``features``) and which modality's
boxes supervise it (``modality``); this class does the rest the same way for every stage:
loss, logging, detection decoding, prediction output and the optimiser.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import pytorch_lightning as pl
import torch

from datamodules.batch import PAIR_ID, boxes_key, labels_key, validate_batch
from lightning_modules.effdet_parts import DetectionCriterion, DetectionHead


class DetectorModule(pl.LightningModule, ABC):
    """Shared training, validation and prediction loop of the detectors.

    Subclasses set ``self.modality``, ``self.head`` (a ``DetectionHead``) and
    ``self.criterion`` (a ``DetectionCriterion``) and implement ``features(batch)``.
    """

    modality: str
    head: DetectionHead
    criterion: DetectionCriterion

    def __init__(
        self,
        learning_rate: float,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        lr_schedule: str = "cosine",
    ):
        super().__init__()
        if lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine' or 'constant', got {lr_schedule!r}")
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.lr_schedule = lr_schedule

    # -- what a stage defines -------------------------------------------------------------
    @abstractmethod
    def features(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """The feature levels the head predicts from."""

    @property
    def input_modalities(self) -> tuple[str, ...]:
        """The modalities whose images ``features`` reads (checked against each batch)."""
        return (self.modality,)

    # -- shared loop ------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]):
        """Raw head outputs (per-level class logits and box regressions) for a batch."""
        return self.head(self.features(batch))

    def detection_loss(self, batch: dict[str, Any], outputs=None) -> dict[str, torch.Tensor]:
        class_out, box_out = self(batch) if outputs is None else outputs
        return self.criterion(
            class_out, box_out, batch[boxes_key(self.modality)], batch[labels_key(self.modality)]
        )

    def _log_losses(self, losses: dict[str, torch.Tensor], split: str, batch_size: int) -> None:
        on_step = split == "train"
        for name, value in losses.items():
            self.log(
                f"{split}_{name}", value, on_step=on_step, on_epoch=True, prog_bar=name == "loss",
                batch_size=batch_size, sync_dist=not on_step,
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        validate_batch(batch, self.input_modalities)
        losses = self.detection_loss(batch)
        self._log_losses(losses, "train", len(batch[PAIR_ID]))
        return losses["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def _evaluation_step(self, batch: dict[str, Any], split: str) -> list[dict[str, Any]]:
        validate_batch(batch, self.input_modalities)
        outputs = self(batch)
        self._log_losses(self.detection_loss(batch, outputs), split, len(batch[PAIR_ID]))
        return self.detections(batch, outputs)

    def detections(self, batch: dict[str, Any], outputs=None) -> list[dict[str, Any]]:
        """Per image: ``pair_id`` and ``boxes`` [n, 4] xyxy input pixels, ``scores``,
        ``labels`` (0-based), highest score first."""
        class_out, box_out = self(batch) if outputs is None else outputs
        decoded = self.criterion.decode(class_out, box_out)
        for pair_id, image_detections in zip(batch[PAIR_ID], decoded):
            image_detections["pair_id"] = pair_id
        return decoded

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        validate_batch(batch, self.input_modalities)
        return self.detections(batch)

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
