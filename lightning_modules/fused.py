"""Stage III and the upper bound: ``FusedDetector``, a detection head over two extractors'
features concatenated, h_FUSED = h_SM (+) h_partner.

* Partner = a Stage II artifact (module B): the paper's fused model. A (from the Stage I SM
  artifact) is fine-tuned, B is frozen (no gradients, eval mode, run under ``no_grad``) and
  reads the same SM, so inference needs the SM alone.
* Partner = a Stage I FFDM artifact (module C): BASE_UB, Section 5's upper bound, with C's
  true FFDM features; A, C and the head are trained end to end, and every batch needs the
  FFDM as well as the SM.
"""

from __future__ import annotations

from typing import Any

import torch

from common.defaults import IMAGE_SIZE, MODALITIES
from lightning_modules.artifacts import check_same_features
from lightning_modules.detector import DetectorModule
from lightning_modules.distillation import FeatureProjection
from lightning_modules.effdet_parts import (
    ARCHITECTURE_SPEC_KEYS,
    DetectionCriterion,
    DetectionHead,
    FeatureExtractor,
    concat_features,
    config_from_spec,
    widen_head,
)
from lightning_modules.settings import EvaluationSettings, OptimizerSettings

PARTNER_FEATURES = ("extractor", "projected")
HEAD_INITS = ("sm_teacher", "random")


class FusedDetector(DetectorModule):
    """Detections from A's SM features concatenated with a partner's features.

    Args:
        sm_teacher: a Stage I SM artifact (module A, Model_SM), fine-tuned here.
        partner: a Stage II artifact (module B, frozen: the fused model) or a Stage I FFDM
            artifact (module C, reading the FFDM, trained end to end: BASE_UB).
        image_size: the model input (H, W); must equal the artifacts' (linked from the data).
        partner_features: for a Stage II partner, "extractor" (h'_SM, B's features before the
            projection, as the paper writes h_FUSED = h_SM (+) h'_SM) or "projected" (z'_SM).
        head_init: "sm_teacher": the head's weights for A's channels copied from A's Stage I
            head and those from the partner's channels set to zero, so training starts
            exactly at Model_SM; "random": effdet's fresh initialisation.
        focal_alpha, focal_gamma: Eq. 1's alpha and gamma.
        pretrained: a Stage III artifact: the whole model (architecture and weights) is
            built from it, and ``sm_teacher``/``partner`` are not read (for predicting, or
            training on from a finished fused model).
        optimizer: AdamW and its schedule (`OptimizerSettings`).
        evaluation: FAUC-x's cut-off, its bootstrap replicates and the hit rule's floor
            (`EvaluationSettings`; the floor is linked from the data config by the CLI).
        channels_last: NHWC memory (``StageModule``).
    """

    stage = 3

    def __init__(
        self,
        sm_teacher: str | None = None,
        partner: str | None = None,
        image_size: tuple[int, int] = IMAGE_SIZE,
        partner_features: str = "extractor",
        head_init: str = "sm_teacher",
        focal_alpha: float = 0.9,
        focal_gamma: float = 2.5,
        pretrained: str | None = None,
        optimizer: OptimizerSettings = OptimizerSettings(),
        evaluation: EvaluationSettings = EvaluationSettings(),
        channels_last: bool = False,
    ):
        super().__init__(optimizer=optimizer, evaluation=evaluation, channels_last=channels_last)
        self.save_hyperparameters()
        if partner_features not in PARTNER_FEATURES:
            raise ValueError(
                f"partner_features must be one of {PARTNER_FEATURES}, got {partner_features!r}"
            )
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
        self.modality = "sm"
        self.head_init = head_init

        if pretrained:  # a Stage III artifact: the whole model, architecture and weights
            fused = self.load_input(
                pretrained, "pretrained", [(3, "FusedDetector", None)], image_size
            )
            meta = fused.meta
            self._build(
                meta["variant"],
                {key: meta[key] for key in ARCHITECTURE_SPEC_KEYS},
                meta["partner"],
                meta["partner_features"],
                meta.get("partner_projection"),
                focal_alpha,
                focal_gamma,
            )
            for name in ("extractor", "partner", "partner_projection", "head"):
                if getattr(self, name) is not None:
                    fused.load_into(getattr(self, name), f"{name}.", "pretrained")
        else:
            if not sm_teacher or not partner:
                raise ValueError(
                    "FusedDetector needs sm_teacher and partner (Stage I and II "
                    "artifacts), or pretrained (a Stage III artifact)"
                )
            teacher = self.load_input(
                sm_teacher, "sm_teacher", [(1, "TeacherDetector", "sm")], image_size
            )
            other = self.load_input(
                partner,
                "partner",
                [(2, "DistillStudent", None), (1, "TeacherDetector", "ffdm")],
                image_size,
            )
            variant = "fused" if other.meta["stage"] == 2 else "upper_bound"
            if variant == "upper_bound" and partner_features != "extractor":
                raise ValueError(
                    "partner_features='projected' needs a Stage II partner; "
                    "BASE_UB concatenates the FFDM teacher's own features"
                )
            partner_spec = {key: other.meta[key] for key in ARCHITECTURE_SPEC_KEYS}
            check_same_features("partner", other.path, partner_spec, teacher.meta, "the sm_teacher")
            projection = (
                other.meta.get("projection", "conv3x3")
                if (partner_features == "projected")
                else None
            )
            self._build(
                variant,
                {key: teacher.meta[key] for key in ARCHITECTURE_SPEC_KEYS},
                partner_spec,
                partner_features,
                projection,
                focal_alpha,
                focal_gamma,
            )
            teacher.load_into(self.extractor, "extractor.", "sm_teacher")
            other.load_into(self.partner, "extractor.", "partner")
            if self.partner_projection is not None:
                other.load_into(self.partner_projection, "projection.", "partner")
            if head_init == "sm_teacher":
                single = DetectionHead(self.config)
                teacher.load_into(single, "head.", "sm_teacher")
                widen_head(self.head, single)
        if self.variant == "fused":
            self.freeze_part("partner")
            if self.partner_projection is not None:
                self.freeze_part("partner_projection")

    def _build(
        self,
        variant: str,
        sm_spec: dict,
        partner_spec: dict,
        partner_features: str,
        projection: str | None,
        focal_alpha: float,
        focal_gamma: float,
    ) -> None:
        """A's extractor, the partner's (and its projection), the 2x head and the criterion."""
        self.variant = variant
        self.partner_features = partner_features
        self.sm_spec, self.partner_spec = sm_spec, partner_spec
        self.config = config_from_spec(sm_spec, focal_alpha=focal_alpha, focal_gamma=focal_gamma)
        self.extractor = FeatureExtractor(self.config)
        self.partner = FeatureExtractor(config_from_spec(partner_spec))
        self.partner_projection = None
        if projection is not None:
            self.partner_projection = FeatureProjection(
                self.partner.out_channels, int(self.partner.config.num_levels), projection
            )
        self.head = DetectionHead(self.config, in_multiplier=2)
        self.criterion = DetectionCriterion(self.config)

    @property
    def input_modalities(self) -> tuple[str, ...]:
        return ("sm",) if self.variant == "fused" else MODALITIES

    def check_batch(self, batch: dict[str, Any], targets: bool = True) -> None:
        if self.variant == "upper_bound" and "ffdm" not in batch:
            raise ValueError(
                "BASE_UB (a FusedDetector whose partner is the FFDM teacher) reads the FFDM as "
                "well as the SM, and this batch has no 'ffdm' images: give it paired data "
                "(data.init_args.modalities [sm, ffdm]). The fused model (partner = a Stage II "
                "student) is the one that predicts from the SM alone."
            )
        super().check_batch(batch, targets)

    def partner_features_of(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """h'_SM (or z'_SM) of the frozen student, or h_FFDM of the trained FFDM teacher."""
        if self.variant == "upper_bound":
            return self.partner(batch["ffdm"])
        with torch.no_grad():
            features = self.partner(batch["sm"])
            if self.partner_projection is not None:
                features = self.partner_projection(features)
        return features

    def features(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """h_FUSED = h_SM (+) h_partner, level by level."""
        return concat_features(self.extractor(batch["sm"]), self.partner_features_of(batch))

    def artifact_spec(self) -> dict[str, Any]:
        """The whole inference model: A, the partner (and its projection), the head."""
        prefixes = ["extractor.", "partner.", "head."]
        if self.partner_projection is not None:
            prefixes.append("partner_projection.")
        return {
            "modality": "sm",
            "variant": self.variant,
            "input_modalities": list(self.input_modalities),
            "weights": prefixes,
            "partner_features": self.partner_features,
            "partner_projection": None
            if self.partner_projection is None
            else (self.partner_projection.kind),
            "partner": self.partner_spec,
            "focal_alpha": self.criterion.focal_alpha,
            "focal_gamma": self.criterion.focal_gamma,
            **self.sm_spec,
        }
