"""LightningModules of the training stages and the EfficientDet parts they share."""

import os

# timm reaches for the Hugging Face hub when asked for pretrained weights; behind a hospital
# firewall nothing may be downloaded, so fail fast instead of retrying for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lightning_modules.detector import DetectorModule  # noqa: E402
from lightning_modules.fused import FusedDetector  # noqa: E402
from lightning_modules.settings import EvaluationSettings, OptimizerSettings  # noqa: E402
from lightning_modules.stage import StageModule  # noqa: E402
from lightning_modules.student import DistillStudent  # noqa: E402
from lightning_modules.teacher import TeacherDetector  # noqa: E402

__all__ = [
    "DetectorModule",
    "DistillStudent",
    "EvaluationSettings",
    "FusedDetector",
    "OptimizerSettings",
    "StageModule",
    "TeacherDetector",
]
