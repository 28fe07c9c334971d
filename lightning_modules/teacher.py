"""Stage I: ``TeacherDetector``, an EfficientDet on one modality (modules A and C of Figure 3).

Trained on SM it is Model_SM and module A; trained on FFDM it is Model_FFDM and module C,
whose frozen features the Stage II student later learns to reproduce from the SM.
"""

from __future__ import annotations

from typing import Any

import torch

from common.defaults import IMAGE_SIZE
from datamodules.batch import check_modality
from lightning_modules.detector import DetectorModule
from lightning_modules.effdet_parts import (
    DetectionCriterion,
    DetectionHead,
    FeatureExtractor,
    architecture_spec,
    build_config,
)
from lightning_modules.pretrained import load_pretrained, weights_reference
from lightning_modules.settings import EvaluationSettings, OptimizerSettings


class TeacherDetector(DetectorModule):
    """An EfficientDet trained with the focal loss on the images of one modality.

    Args:
        modality: ``"sm"`` or ``"ffdm"``: the images it reads and the boxes it learns.
        architecture: an effdet config name (``tf_efficientdet_d0`` ... ``d7``,
            ``efficientdet_d0``, ...).
        image_size: model input (H, W), divisible by ``2**max_level``.
        num_classes: lesion classes (1: any lesion).
        focal_alpha, focal_gamma: Eq. 1's alpha and gamma (paper's best: 0.9, 2.5).
        pretrained: a local effdet (COCO) checkpoint, a timm backbone weight file, a stage
            artifact or a Lightning checkpoint of one of our modules (its extractor and
            head); nothing is downloaded.
        architecture_overrides: effdet config keys to override (backbone, channels,
            repeats, levels, anchors): a small CPU detector is a config entry.
        freeze_extractor: train the head alone on a frozen extractor (from ``pretrained``):
            a probe of what another stage's features carry, e.g. the student B's.
        optimizer: AdamW and its schedule (`OptimizerSettings`: learning rate, the paper's
            1.5e-4, weight decay, warm-up, schedule, global and reference batch).
        evaluation: FAUC-x's cut-off, its bootstrap replicates and the hit rule's floor
            (`EvaluationSettings`; the floor is linked from the data config by the CLI).
        channels_last: NHWC memory (``StageModule``).
    """

    stage = 1

    def __init__(
        self,
        modality: str = "sm",
        architecture: str = "tf_efficientdet_d0",
        image_size: tuple[int, int] = IMAGE_SIZE,
        num_classes: int = 1,
        focal_alpha: float = 0.9,
        focal_gamma: float = 2.5,
        pretrained: str | None = None,
        architecture_overrides: dict[str, Any] | None = None,
        freeze_extractor: bool = False,
        optimizer: OptimizerSettings = OptimizerSettings(),
        evaluation: EvaluationSettings = EvaluationSettings(),
        channels_last: bool = False,
    ):
        super().__init__(optimizer=optimizer, evaluation=evaluation, channels_last=channels_last)
        self.save_hyperparameters()
        self.modality = check_modality(modality)
        self.architecture = architecture
        self.architecture_overrides = architecture_overrides
        self.config = build_config(
            architecture,
            image_size,
            num_classes,
            architecture_overrides,
            focal_alpha=focal_alpha,
            focal_gamma=focal_gamma,
        )
        self.extractor = FeatureExtractor(self.config)
        self.head = DetectionHead(self.config)
        self.criterion = DetectionCriterion(self.config)
        if pretrained:
            load_pretrained(pretrained, self.extractor, self.head)
            self.inputs["pretrained"] = weights_reference(pretrained)
        if freeze_extractor:
            if not pretrained:
                raise ValueError("freeze_extractor needs pretrained weights to freeze")
            self.freeze_part("extractor")

    def features(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """h_SM or h_FFDM: the BiFPN levels of this modality's images."""
        return self.extractor(batch[self.modality])

    def artifact_spec(self) -> dict[str, Any]:
        """Module A (SM) or C (FFDM): its extractor and head, and their architecture."""
        return {
            "modality": self.modality,
            "input_modalities": [self.modality],
            "weights": ["extractor.", "head."],
            "focal_alpha": self.criterion.focal_alpha,
            "focal_gamma": self.criterion.focal_gamma,
            **architecture_spec(self.architecture, self.architecture_overrides, self.config),
        }
