"""The base LightningModule of every stage that detects lesions.

A subclass says how it makes features from a batch (``features``) and which modality's
boxes supervise it (``modality``); this class does the rest the same way for every stage:
loss, logging, detection decoding, detections mapped back to the original DICOM's pixels,
FAUC-1 on validation and test, and the optimiser.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch

from datamodules.batch import (
    PAIR_ID,
    boxes_key,
    geometry_key,
    labels_key,
    original_boxes_key,
    validate_batch,
)
from lightning_modules.effdet_parts import DetectionCriterion, DetectionHead
from lightning_modules.settings import EvaluationSettings, OptimizerSettings
from lightning_modules.stage import StageModule
from metrics.fauc import FAUC


class DetectorModule(StageModule):
    """Shared training, validation and prediction loop of the detectors.

    Subclasses set ``self.modality``, ``self.head`` (a ``DetectionHead``) and
    ``self.criterion`` (a ``DetectionCriterion``) and implement ``features(batch)``.
    """

    modality: str
    head: DetectionHead
    criterion: DetectionCriterion

    def __init__(
        self,
        optimizer: OptimizerSettings = OptimizerSettings(),
        evaluation: EvaluationSettings = EvaluationSettings(),
        channels_last: bool = False,
    ):
        super().__init__(optimizer=optimizer, channels_last=channels_last)
        self.evaluation = EvaluationSettings.of(evaluation)
        self.val_fauc: FAUC | None = None
        self.test_fauc: FAUC | None = None

    def setup(self, stage: str) -> None:
        """Build the FAUC metrics (and ``StageModule.setup``); bootstrap CIs are skipped for the
        validation runs inside ``fit``, where only the value is wanted.

        The hit rule's floor (``evaluation.hit_min_distance``, 100 px in the paper) belongs
        to the data, whose pixel size it depends on: the CLI links it from the data config.
        """
        super().setup(stage)
        settings = self.evaluation
        distance, max_fp = settings.hit_min_distance, settings.fauc_max_fp
        val_boot = 0 if stage == "fit" else settings.fauc_n_boot
        self.val_fauc = FAUC(max_fp, min_distance=distance, n_boot=val_boot)
        self.test_fauc = FAUC(max_fp, min_distance=distance, n_boot=settings.fauc_n_boot)

    # -- what a stage defines -------------------------------------------------------------
    @abstractmethod
    def features(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """The feature levels the head predicts from."""

    @property
    def input_modalities(self) -> tuple[str, ...]:
        """The modalities whose images ``features`` reads (checked against each batch)."""
        return (self.modality,)

    def check_batch(self, batch: dict[str, Any], targets: bool = True) -> None:
        """Raise a ValueError naming what is missing when a batch lacks this model's inputs
        (and, with ``targets``, its boxes and labels)."""
        validate_batch(batch, self.input_modalities, targets=targets)

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
                f"{split}_{name}",
                value,
                on_step=on_step,
                on_epoch=True,
                prog_bar=name == "loss",
                batch_size=batch_size,
                sync_dist=not on_step,
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.check_batch(batch)
        losses = self.detection_loss(batch)
        self.check_finite(losses["loss"], batch)
        self._log_losses(losses, "train", len(batch[PAIR_ID]))
        return losses["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        return self._evaluation_step(batch, "val", self.val_fauc)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        return self._evaluation_step(batch, "test", self.test_fauc)

    def _evaluation_step(
        self, batch: dict[str, Any], split: str, metric: FAUC | None
    ) -> list[dict[str, Any]]:
        self.check_batch(batch)
        outputs = self(batch)
        self._log_losses(self.detection_loss(batch, outputs), split, len(batch[PAIR_ID]))
        detections = self.detections(batch, outputs)
        lesions = batch.get(original_boxes_key(self.modality))
        if metric is not None and lesions is not None and "boxes_original" in detections[0]:
            metric.update(
                [
                    {"boxes": d["boxes_original"], "scores": d["scores"], "image_id": d["pair_id"]}
                    for d in detections
                ],
                [
                    {"boxes": boxes, "image_id": d["pair_id"]}
                    for d, boxes in zip(detections, lesions)
                ],
            )
        return detections

    def on_validation_epoch_end(self) -> None:
        self._log_fauc(self.val_fauc, "val")

    def on_test_epoch_end(self) -> None:
        self._log_fauc(self.test_fauc, "test")

    def _log_fauc(self, metric: FAUC | None, split: str) -> None:
        """Log ``{split}_fauc``, ``{split}_fauc_pos`` (and their CI bounds when bootstrapped).
        Under DDP the metric computes them on rank 0 and broadcasts them: every rank logs the
        same numbers, and none needs reducing."""
        if metric is None or metric.update_count == 0:
            return
        for name, value in metric.compute().items():
            if name.startswith("fauc"):
                self.log(f"{split}_{name}", float(value), prog_bar=name == "fauc")
        metric.reset()

    def detections(self, batch: dict[str, Any], outputs=None) -> list[dict[str, Any]]:
        """Per image: ``pair_id``; ``boxes`` [n, 4] xyxy input pixels, ``scores``, ``labels``
        (0-based), highest score first; and ``boxes_original``, the boxes in the original
        DICOM's pixels, when the batch carries the images' geometry."""
        class_out, box_out = self(batch) if outputs is None else outputs
        decoded = self.criterion.decode(class_out, box_out)
        geometries = batch.get(geometry_key(self.modality))
        for index, (pair_id, image_detections) in enumerate(zip(batch[PAIR_ID], decoded)):
            image_detections["pair_id"] = pair_id
            if geometries is not None:
                image_detections["boxes_original"] = geometries[index].to_original(
                    image_detections["boxes"]
                )
        return decoded

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        self.check_batch(batch, targets=False)
        return self.detections(batch)
