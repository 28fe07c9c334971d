"""Stage II: ``DistillStudent``, module B of Figure 3, which learns from the SM alone to produce
the features the frozen FFDM detector C sees in the paired FFDM.

B (an EfficientDet feature extractor) reads the SM and gives h'_SM; a 3x3 convolution per
BiFPN level projects it to z'_SM; the loss is the negative of Eq. 2's cosine similarity
between z'_SM and h_FFDM = C(FFDM) at every position, averaged over positions and weighted
over levels. C comes from a Stage I FFDM artifact and stays frozen for the whole run (no
gradients, eval mode, so its BatchNorm statistics never move, run under ``no_grad``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from datamodules.batch import PAIR_ID
from lightning_modules.distillation import (
    FeatureProjection,
    level_similarities,
    weighted_similarity,
)
from lightning_modules.effdet_parts import (
    FeatureExtractor,
    architecture_spec,
    build_config,
    config_from_spec,
)
from lightning_modules.stage import StageModule
from lightning_modules.weights import (
    check_same_features,
    is_artifact,
    load_pretrained,
    weights_reference,
)


class DistillStudent(StageModule):
    """Module B: SM -> extractor -> projection, taught by the frozen FFDM extractor C.

    Args:
        ffdm_teacher: a Stage I FFDM artifact (module C); its architecture, image size and
            weights are read from it.
        image_size: the model input (H, W); must equal the teacher's (linked from the data).
        architecture, architecture_overrides: B's effdet architecture; default the teacher's.
            Its BiFPN channels and levels must equal the teacher's.
        init_from: how B starts: a Stage I artifact (e.g. the SM teacher A: B then starts from
            a detector that already reads SMs), a local COCO effdet or timm backbone file, or
            None (random initialisation).
        projection: "conv3x3" (the paper: one 3x3 convolution per BiFPN level) or "shared"
            (one convolution for all levels).
        levels: which BiFPN levels enter the loss, by number (3 = P3, ...); default all.
        level_weights: one weight per level in ``levels`` (default equal).
        eps: Eq. 2's epsilon.
        learning_rate, weight_decay, warmup_steps, lr_schedule: the optimiser's settings.
        global_batch_size, reference_batch_size, channels_last: the schedule's global batch,
            the batch its learning rate is given for, NHWC memory (``StageModule``).
    """

    stage = 2

    def __init__(
        self,
        ffdm_teacher: str,
        image_size: tuple[int, int] = (1280, 1024),
        architecture: str | None = None,
        architecture_overrides: dict[str, Any] | None = None,
        init_from: str | None = None,
        projection: str = "conv3x3",
        levels: list[int] | None = None,
        level_weights: list[float] | None = None,
        eps: float = 1e-8,
        learning_rate: float = 1.5e-4,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        lr_schedule: str = "cosine",
        global_batch_size: int | None = None,
        reference_batch_size: int | None = None,
        channels_last: bool = False,
    ):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay,
                         warmup_steps=warmup_steps, lr_schedule=lr_schedule,
                         global_batch_size=global_batch_size,
                         reference_batch_size=reference_batch_size, channels_last=channels_last)
        self.save_hyperparameters()
        self.modality = "sm"
        teacher = self.load_input(ffdm_teacher, "ffdm_teacher",
                                  [(1, "TeacherDetector", "ffdm")], image_size)
        self.teacher_spec = {key: teacher.meta[key] for key in (
            "architecture", "architecture_overrides", "image_size", "num_classes",
            "backbone_name", "fpn_channels", "min_level", "max_level", "num_levels")}
        self.teacher = FeatureExtractor(config_from_spec(self.teacher_spec))
        teacher.load_into(self.teacher, "extractor.", "ffdm_teacher")
        self.freeze_part("teacher")

        if architecture is None:
            architecture = self.teacher_spec["architecture"]
            if architecture_overrides is None:
                architecture_overrides = self.teacher_spec["architecture_overrides"]
        self.architecture = architecture
        self.architecture_overrides = architecture_overrides
        self.config = build_config(architecture, image_size, self.teacher_spec["num_classes"],
                                   architecture_overrides)
        own = architecture_spec(architecture, architecture_overrides, self.config)
        check_same_features("ffdm_teacher", teacher.path, self.teacher_spec, own,
                            f"this student ({architecture})")
        self.extractor = FeatureExtractor(self.config)
        if init_from:
            if is_artifact(init_from):
                source = self.load_input(init_from, "init_from",
                                         [(1, "TeacherDetector", None)], image_size)
                source.load_into(self.extractor, "extractor.", "init_from")
            else:
                load_pretrained(init_from, self.extractor)
                self.inputs["init_from"] = weights_reference(init_from)

        num_levels = int(self.config.num_levels)
        self.projection = FeatureProjection(self.extractor.out_channels, num_levels, projection)
        self.level_numbers = list(range(self.config.min_level, self.config.max_level + 1))
        self.levels = list(self.level_numbers if levels is None else levels)
        unknown = [level for level in self.levels if level not in self.level_numbers]
        if unknown or not self.levels:
            raise ValueError(f"levels {self.levels}: this model's BiFPN levels are "
                             f"{self.level_numbers}")
        weights = [1.0] * len(self.levels) if level_weights is None else list(level_weights)
        if len(weights) != len(self.levels) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"level_weights {weights} must give one non-negative weight per "
                             f"level in {self.levels}, not all zero")
        self.register_buffer("level_weights", torch.tensor(weights), persistent=False)
        self.eps = eps

    # -- features ----------------------------------------------------------------------------
    def student_features(self, sm: torch.Tensor) -> list[torch.Tensor]:
        """h'_SM: B's BiFPN levels of the SM."""
        return self.extractor(sm)

    def project(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """z'_SM: the projection of h'_SM, level by level, shapes kept."""
        return self.projection(features)

    @torch.no_grad()
    def teacher_features(self, ffdm: torch.Tensor) -> list[torch.Tensor]:
        """h_FFDM: the frozen C's BiFPN levels of the FFDM."""
        return self.teacher(ffdm)

    def similarities(self, batch: dict[str, Any]) -> torch.Tensor:
        """Eq. 2's mean similarity per BiFPN level (all levels, in order)."""
        for key in ("sm", "ffdm"):
            if key not in batch:
                raise ValueError(
                    f"DistillStudent reads the SM and its paired FFDM; the batch has no "
                    f"{key!r} images (keys: {sorted(batch)}): set data.init_args.modalities "
                    f"[sm, ffdm]"
                )
        h_ffdm = self.teacher_features(batch["ffdm"])
        z_sm = self.project(self.student_features(batch["sm"]))
        return level_similarities(z_sm, h_ffdm, self.eps)

    def loss(self, similarities: torch.Tensor) -> torch.Tensor:
        """The negative of Eq. 2, weighted over the chosen levels."""
        chosen = torch.tensor([self.level_numbers.index(level) for level in self.levels],
                              device=similarities.device)
        return -weighted_similarity(similarities[chosen], self.level_weights)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.loss(self.similarities(batch))

    # -- loop ------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        similarities = self.similarities(batch)
        loss = self.loss(similarities)
        self.check_finite(loss, batch)
        size = len(batch[PAIR_ID])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log("train_cosine", -loss, on_step=True, on_epoch=True, batch_size=size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: dict[str, Any], split: str) -> None:
        """``{split}_cosine`` (the weighted mean similarity, which checkpointing monitors),
        ``{split}_loss`` and the similarity of each level, ``{split}_cosine_p3`` ..."""
        similarities = self.similarities(batch)
        loss = self.loss(similarities)
        size = len(batch[PAIR_ID])
        options = {"on_epoch": True, "batch_size": size, "sync_dist": True}
        self.log(f"{split}_loss", loss, **options)
        self.log(f"{split}_cosine", -loss, prog_bar=True, **options)
        for level, value in zip(self.level_numbers, similarities):
            self.log(f"{split}_cosine_p{level}", value, **options)

    def artifact_spec(self) -> dict[str, Any]:
        """Module B: its extractor and projection (C stays behind: Stage III never needs it)."""
        return {
            "modality": "sm",
            "input_modalities": ["sm"],
            "weights": ["extractor.", "projection."],
            "projection": self.projection.kind,
            "levels": list(self.levels),
            "teacher": self.teacher_spec,
            **architecture_spec(self.architecture, self.architecture_overrides, self.config),
        }
