"""The focal loss and ``DetectionCriterion`` (anchors, anchor labelling, loss, decoding): the
one place where xyxy boxes and 0-based labels become effdet's yxyx boxes and 1-based classes,
and back."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from effdet.anchors import AnchorLabeler, Anchors
from effdet.bench import _batch_detection, _post_process
from effdet.loss import DetectionLoss, new_focal_loss
from torch import nn


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float):
    """Per-element focal loss (paper Eq. 1 for positives), effdet's own implementation.

    For a positive target: ``-alpha * (1 - p)**gamma * log(p)``; for a negative:
    ``-(1 - alpha) * p**gamma * log(1 - p)``, with ``p = sigmoid(logits)``.
    """
    return new_focal_loss(
        logits, targets, alpha=alpha, gamma=gamma, normalizer=1.0, label_smoothing=0.0
    )


class DetectionCriterion(nn.Module):
    """Anchors, anchor labelling, focal + box loss, and decoding: effdet's training bench
    (``DetBenchTrain``/``DetBenchPredict``) without the model inside it."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.anchors = Anchors.from_config(config)
        # Anchors are derived from the config: keep them out of checkpoints and artifacts.
        self.anchors.register_buffer("boxes", self.anchors.boxes, persistent=False)
        self.labeler = AnchorLabeler(self.anchors, config.num_classes, match_threshold=0.5)
        self.loss_fn = DetectionLoss(config)

    @property
    def focal_alpha(self) -> float:
        return float(self.loss_fn.alpha)

    @property
    def focal_gamma(self) -> float:
        return float(self.loss_fn.gamma)

    def forward(
        self,
        class_out: list[torch.Tensor],
        box_out: list[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Loss of raw head outputs against xyxy boxes (input pixels) and 0-based labels, in
        float32 with autocast off."""
        device = class_out[0].device
        with torch.autocast(device.type, enabled=False):
            gt_boxes, gt_classes = to_effdet_targets(boxes, labels, device)
            cls_targets, box_targets, num_positives = self.labeler.batch_label_anchors(
                gt_boxes, gt_classes
            )
            loss, class_loss, box_loss = self.loss_fn(
                _float(class_out), _float(box_out), cls_targets, box_targets, num_positives
            )
        return {"loss": loss, "class_loss": class_loss, "box_loss": box_loss}

    @torch.no_grad()
    def decode(
        self, class_out: list[torch.Tensor], box_out: list[torch.Tensor]
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image after effdet's top-k and NMS: ``boxes`` [n, 4] xyxy in input
        pixels, ``scores`` [n] in (0, 1), ``labels`` [n] 0-based; empty slots removed. All of
        it in float32 with autocast off, the anchors included, whatever the precision."""
        config = self.config
        with torch.autocast(class_out[0].device.type, enabled=False):
            class_top, box_top, indices, classes = _post_process(
                _float(class_out),
                _float(box_out),
                num_levels=config.num_levels,
                num_classes=config.num_classes,
                max_detection_points=config.max_detection_points,
            )
            detections = _batch_detection(
                class_out[0].shape[0],
                class_top,
                box_top,
                self.anchors.boxes.float(),
                indices,
                classes,
                None,
                None,
                max_det_per_image=config.max_det_per_image,
                soft_nms=config.soft_nms,
            )
        results = []
        for image_detections in detections:
            # effdet pads to max_det_per_image with all-zero rows (class 0 = no detection).
            keep = image_detections[:, 5] > 0
            image_detections = image_detections[keep]
            results.append(
                {
                    "boxes": image_detections[:, :4].float(),
                    "scores": image_detections[:, 4].float(),
                    "labels": image_detections[:, 5].long() - 1,
                }
            )
        return results


def _float(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [tensor.float() for tensor in tensors]


def to_effdet_targets(
    boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], device: torch.device
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """xyxy boxes and 0-based labels to effdet's yxyx boxes and 1-based classes."""
    gt_boxes, gt_classes = [], []
    for image_boxes, image_labels in zip(boxes, labels):
        image_boxes = torch.as_tensor(image_boxes, dtype=torch.float32, device=device)
        gt_boxes.append(image_boxes.reshape(-1, 4)[:, [1, 0, 3, 2]])
        gt_classes.append(torch.as_tensor(image_labels, device=device).reshape(-1).float() + 1)
    return gt_boxes, gt_classes
