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

from lightning_modules.detector import DetectorModule
from lightning_modules.distillation import FeatureProjection
from lightning_modules.effdet_parts import (
    DetectionCriterion,
    DetectionHead,
    FeatureExtractor,
    concat_features,
    config_from_spec,
    widen_head,
)
from lightning_modules.weights import check_same_features

PARTNER_FEATURES = ("extractor", "projected")
HEAD_INITS = ("sm_teacher", "random")
SPEC_KEYS = ("architecture", "architecture_overrides", "image_size", "num_classes",
             "backbone_name", "fpn_channels", "min_level", "max_level", "num_levels")


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
        learning_rate, weight_decay, warmup_steps, lr_schedule: the optimiser's settings.
        fauc_max_fp, fauc_n_boot: FAUC-x's cut-off and bootstrap replicates.
        hit_min_distance: the FROC hit rule's floor in original pixels (the paper's 100 px);
            linked from the data config's ``hit_min_distance`` by the CLI.
    """

    stage = 3

    def __init__(
        self,
        sm_teacher: str,
        partner: str,
        image_size: tuple[int, int] = (1280, 1024),
        partner_features: str = "extractor",
        head_init: str = "sm_teacher",
        focal_alpha: float = 0.9,
        focal_gamma: float = 2.5,
        learning_rate: float = 1.5e-4,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        lr_schedule: str = "cosine",
        fauc_max_fp: float = 1.0,
        fauc_n_boot: int = 2000,
        hit_min_distance: float = 100.0,
    ):
        super().__init__(
            learning_rate=learning_rate, weight_decay=weight_decay, warmup_steps=warmup_steps,
            lr_schedule=lr_schedule, fauc_max_fp=fauc_max_fp, fauc_n_boot=fauc_n_boot,
            hit_min_distance=hit_min_distance,
        )
        self.save_hyperparameters()
        if partner_features not in PARTNER_FEATURES:
            raise ValueError(f"partner_features must be one of {PARTNER_FEATURES}, got "
                             f"{partner_features!r}")
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
        self.modality = "sm"
        self.partner_features = partner_features
        self.head_init = head_init

        teacher = self.load_input(sm_teacher, "sm_teacher", [(1, "TeacherDetector", "sm")],
                                  image_size)
        self.sm_spec = {key: teacher.meta[key] for key in SPEC_KEYS}
        self.config = config_from_spec(self.sm_spec, focal_alpha=focal_alpha,
                                       focal_gamma=focal_gamma)
        self.extractor = FeatureExtractor(self.config)
        teacher.load_into(self.extractor, "extractor.", "sm_teacher")

        partner_artifact = self.load_input(
            partner, "partner", [(2, "DistillStudent", None), (1, "TeacherDetector", "ffdm")],
            image_size)
        meta = partner_artifact.meta
        self.variant = "fused" if meta["stage"] == 2 else "upper_bound"
        if self.variant == "upper_bound" and partner_features != "extractor":
            raise ValueError("partner_features='projected' needs a Stage II partner; BASE_UB "
                             "concatenates the FFDM teacher's own features")
        self.partner_spec = {key: meta[key] for key in SPEC_KEYS}
        check_same_features("partner", partner_artifact.path, self.partner_spec, self.sm_spec,
                            "the sm_teacher")
        self.partner = FeatureExtractor(config_from_spec(self.partner_spec))
        partner_artifact.load_into(self.partner, "extractor.", "partner")
        self.partner_projection = None
        if partner_features == "projected":
            self.partner_projection = FeatureProjection(
                self.partner.out_channels, int(self.partner.config.num_levels),
                meta.get("projection", "conv3x3"))
            partner_artifact.load_into(self.partner_projection, "projection.", "partner")
        if self.variant == "fused":
            self.freeze_part("partner")
            if self.partner_projection is not None:
                self.freeze_part("partner_projection")

        self.head = DetectionHead(self.config, in_multiplier=2)
        if head_init == "sm_teacher":
            single = DetectionHead(self.config)
            teacher.load_into(single, "head.", "sm_teacher")
            widen_head(self.head, single)
        self.criterion = DetectionCriterion(self.config)

    @property
    def input_modalities(self) -> tuple[str, ...]:
        return ("sm",) if self.variant == "fused" else ("sm", "ffdm")

    def check_batch(self, batch: dict[str, Any]) -> None:
        if self.variant == "upper_bound" and "ffdm" not in batch:
            raise ValueError(
                "BASE_UB (a FusedDetector whose partner is the FFDM teacher) reads the FFDM as "
                "well as the SM, and this batch has no 'ffdm' images: give it paired data "
                "(data.init_args.modalities [sm, ffdm]). The fused model (partner = a Stage II "
                "student) is the one that predicts from the SM alone."
            )
        super().check_batch(batch)

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
            "partner": self.partner_spec,
            "focal_alpha": self.criterion.focal_alpha,
            "focal_gamma": self.criterion.focal_gamma,
            **self.sm_spec,
        }
