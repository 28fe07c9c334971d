"""Stage II: ``DistillStudent``, module B of Figure 3, which learns from the SM alone to produce
the features the frozen FFDM detector C sees in the paired FFDM.

B (an EfficientDet feature extractor) reads the SM and gives h'_SM; a 3x3 convolution per
BiFPN level projects it to z'_SM; the loss compares z'_SM with h_FFDM = C(FFDM). By default it
is the negative of Eq. 2's cosine similarity at every position, averaged over positions and
weighted over levels, as the paper writes it; ``losses`` replaces it by a list of terms
(``lightning_modules.distill_losses``: lesion-aware and published feature-distillation
losses). C comes from a Stage I FFDM artifact and stays frozen for the whole run (no
gradients, eval mode, so its BatchNorm statistics never move, run under ``no_grad``).

The self-distillation control takes A (``sm_teacher``, a Stage I SM artifact) instead of C:
B then learns A's features of the same SM, with the same loss and steps, which separates what
the FFDM teaches from what distillation does as a regulariser.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

from common.defaults import IMAGE_SIZE, MODALITIES
from datamodules.batch import PAIR_ID
from lightning_modules.artifacts import check_same_features, is_artifact
from lightning_modules.distill_losses import build_terms, foreground_weights, lesion_boxes
from lightning_modules.distillation import (
    FeatureProjection,
    cosine_similarity_map,
    level_similarities,
)
from lightning_modules.effdet_parts import (
    ARCHITECTURE_SPEC_KEYS,
    FeatureExtractor,
    architecture_spec,
    build_config,
    config_from_spec,
)
from lightning_modules.pretrained import load_pretrained, weights_reference
from lightning_modules.settings import OptimizerSettings
from lightning_modules.stage import StageModule

DIAGNOSTIC_SPLITS = ("val", "test")


class DistillStudent(StageModule):
    """Module B: SM -> extractor -> projection, taught by the frozen FFDM extractor C.

    Args:
        ffdm_teacher: a Stage I FFDM artifact (module C); its architecture, image size and
            weights are read from it.
        sm_teacher: instead of ``ffdm_teacher``, a Stage I SM artifact (module A): the
            self-distillation control (the teacher reads the same SM as B).
        image_size: the model input (H, W); must equal the teacher's (linked from the data).
        architecture, architecture_overrides: B's effdet architecture; default the teacher's.
            Its BiFPN channels and levels must equal the teacher's.
        init_from: how B starts: a Stage I artifact (e.g. the SM teacher A: B then starts from
            a detector that already reads SMs), a local COCO effdet or timm backbone file, or
            None (random initialisation).
        projection: "conv3x3" (the paper: one 3x3 convolution per BiFPN level) or "shared"
            (one convolution for all levels).
        levels: which BiFPN levels enter Eq. 2's loss, by number (3 = P3, ...); default all.
        level_weights: one weight per level in ``levels`` (default equal).
        eps: Eq. 2's epsilon.
        losses: instead of Eq. 2, a list of loss terms, each a mapping with ``kind``
            (``cosine``, ``masked_cosine``, ``roi_cosine``, ``cwd``, ``pkd``), ``weight``,
            ``levels``, ``level_weights`` and the kind's settings (see
            ``lightning_modules.distill_losses``); the loss is the weighted sum of the terms.
            ``levels`` and ``level_weights`` above then stay unset.
        optimizer: AdamW and its schedule (`OptimizerSettings`).
        channels_last: NHWC memory (``StageModule``).
    """

    stage = 2

    def __init__(
        self,
        ffdm_teacher: str | None = None,
        image_size: tuple[int, int] = IMAGE_SIZE,
        architecture: str | None = None,
        architecture_overrides: dict[str, Any] | None = None,
        init_from: str | None = None,
        projection: str = "conv3x3",
        levels: list[int] | None = None,
        level_weights: list[float] | None = None,
        eps: float = 1e-8,
        losses: list[dict[str, Any]] | None = None,
        sm_teacher: str | None = None,
        optimizer: OptimizerSettings = OptimizerSettings(),
        channels_last: bool = False,
    ):
        super().__init__(optimizer=optimizer, channels_last=channels_last)
        self.save_hyperparameters()
        self.modality = "sm"
        if (ffdm_teacher is None) == (sm_teacher is None):
            raise ValueError(
                "DistillStudent needs exactly one teacher: ffdm_teacher (a Stage I "
                "FFDM artifact, the paper's C) or sm_teacher (a Stage I SM "
                "artifact, the self-distillation control)"
            )
        self.teacher_role = "ffdm_teacher" if ffdm_teacher else "sm_teacher"
        self.teacher_modality = "ffdm" if ffdm_teacher else "sm"
        teacher = self.load_input(
            ffdm_teacher or sm_teacher,
            self.teacher_role,
            [(1, "TeacherDetector", self.teacher_modality)],
            image_size,
        )
        self.teacher_spec = {key: teacher.meta[key] for key in ARCHITECTURE_SPEC_KEYS}
        self.teacher = FeatureExtractor(config_from_spec(self.teacher_spec))
        teacher.load_into(self.teacher, "extractor.", self.teacher_role)
        self.freeze_part("teacher")

        if architecture is None:
            architecture = self.teacher_spec["architecture"]
            if architecture_overrides is None:
                architecture_overrides = self.teacher_spec["architecture_overrides"]
        self.architecture = architecture
        self.architecture_overrides = architecture_overrides
        self.config = build_config(
            architecture, image_size, self.teacher_spec["num_classes"], architecture_overrides
        )
        own = architecture_spec(architecture, architecture_overrides, self.config)
        check_same_features(
            self.teacher_role,
            teacher.path,
            self.teacher_spec,
            own,
            f"this student ({architecture})",
        )
        self.extractor = FeatureExtractor(self.config)
        if init_from:
            if is_artifact(init_from):
                source = self.load_input(
                    init_from, "init_from", [(1, "TeacherDetector", None)], image_size
                )
                source.load_into(self.extractor, "extractor.", "init_from")
            else:
                load_pretrained(init_from, self.extractor)
                self.inputs["init_from"] = weights_reference(init_from)

        num_levels = int(self.config.num_levels)
        self.projection = FeatureProjection(self.extractor.out_channels, num_levels, projection)
        self.level_numbers = list(range(self.config.min_level, self.config.max_level + 1))
        self.strides = [2**level for level in self.level_numbers]
        if losses is None:  # the paper's Eq. 2
            losses = [
                {"kind": "cosine", "levels": levels, "level_weights": level_weights, "eps": eps}
            ]
        elif levels is not None or level_weights is not None:
            raise ValueError(
                "levels and level_weights shape Eq. 2's default loss; with "
                "`losses`, give them inside each term"
            )
        self.terms = build_terms(losses, self.level_numbers)
        self.levels = sorted({level for term in self.terms for level in term.levels})
        self.eps = eps
        # Eq. 2's similarity at lesion and at background positions, per level, over a whole
        # validation or test epoch (each lesion weighing equally; synchronised under DDP).
        self.diagnostics = nn.ModuleDict(
            {
                f"{split}_{where}_p{level}": MeanMetric()
                for split in DIAGNOSTIC_SPLITS
                for where in ("lesion", "background")
                for level in self.level_numbers
            }
        )

    # -- features ----------------------------------------------------------------------------
    def student_features(self, sm: torch.Tensor) -> list[torch.Tensor]:
        """h'_SM: B's BiFPN levels of the SM."""
        return self.extractor(sm)

    def project(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """z'_SM: the projection of h'_SM, level by level, shapes kept."""
        return self.projection(features)

    @torch.no_grad()
    def teacher_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """h_FFDM: the frozen C's BiFPN levels of the FFDM (A's of the SM for the control)."""
        return self.teacher(images)

    def _pair(self, batch: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(z'_SM, the teacher's features) for a batch."""
        for key in ("sm", self.teacher_modality):
            if key not in batch:
                raise ValueError(
                    f"DistillStudent reads the SM and its teacher reads the "
                    f"{self.teacher_modality.upper()}; the batch has no {key!r} images (keys: "
                    f"{sorted(batch)}): set data.init_args.modalities [sm, ffdm]"
                )
        h = self.teacher_features(batch[self.teacher_modality])
        z = self.project(self.student_features(batch["sm"]))
        return z, h

    def similarities(self, batch: dict[str, Any]) -> torch.Tensor:
        """Eq. 2's mean similarity per BiFPN level (all levels, in order)."""
        z, h = self._pair(batch)
        return level_similarities(z, h, self.eps)

    def _losses(self, batch: dict[str, Any]):
        """(the loss, Eq. 2's per-level similarities, z'_SM, the teacher's features)."""
        z, h = self._pair(batch)
        similarities = level_similarities(z, h, self.eps)
        boxes = None
        loss = None
        for term in self.terms:
            if term.needs_boxes:
                boxes = lesion_boxes(batch, term.settings["boxes"])
            value = term(z, h, boxes, self.strides, similarities)
            value = value if term.weight == 1.0 else term.weight * value
            loss = value if loss is None else loss + value
        return loss, similarities, z, h

    def loss(self, similarities: torch.Tensor) -> torch.Tensor:
        """The negative of Eq. 2, weighted over the chosen levels (the default loss alone)."""
        term = self.terms[0]
        if len(self.terms) != 1 or term.kind != "cosine":
            raise ValueError(
                "loss(similarities) is Eq. 2's loss; this student's `losses` "
                "need the batch: use forward(batch)"
            )
        return term(None, None, None, self.strides, similarities)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self._losses(batch)[0]

    def _eq2(self, loss: torch.Tensor, similarities: torch.Tensor) -> torch.Tensor:
        """Eq. 2's similarity as logged: minus the loss when the loss is Eq. 2 alone, else
        the mean over levels."""
        if len(self.terms) == 1 and self.terms[0].kind == "cosine" and self.terms[0].weight == 1:
            return -loss
        return similarities.mean()

    # -- loop ------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, similarities, _, _ = self._losses(batch)
        self.check_finite(loss, batch)
        size = len(batch[PAIR_ID])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log(
            "train_cosine",
            self._eq2(loss, similarities).detach(),
            on_step=True,
            on_epoch=True,
            batch_size=size,
        )
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: dict[str, Any], split: str) -> None:
        """``{split}_loss``, ``{split}_cosine`` (Eq. 2's similarity; checkpointing monitors it
        by default) and the similarity of each level, ``{split}_cosine_p3`` ...; and Eq. 2's
        similarity at lesion and background positions, logged at the epoch's end."""
        loss, similarities, z, h = self._losses(batch)
        size = len(batch[PAIR_ID])
        options = {"on_epoch": True, "batch_size": size, "sync_dist": True}
        self.log(f"{split}_loss", loss, **options)
        self.log(f"{split}_cosine", self._eq2(loss, similarities), prog_bar=True, **options)
        for level, value in zip(self.level_numbers, similarities):
            self.log(f"{split}_cosine_p{level}", value, **options)
        self._update_diagnostics(batch, split, z, h)

    def _update_diagnostics(self, batch, split: str, z, h) -> None:
        if not any(f"{m}_boxes" in batch for m in MODALITIES):
            return
        boxes = lesion_boxes(batch, "both")
        for level, stride, zl, hl in zip(self.level_numbers, self.strides, z, h):
            cosine = cosine_similarity_map(zl, hl, self.eps).detach()
            lesion = foreground_weights(boxes, stride, *zl.shape[-2:]).to(cosine)
            self.diagnostics[f"{split}_lesion_p{level}"].update(cosine, lesion)
            self.diagnostics[f"{split}_background_p{level}"].update(
                cosine, (lesion == 0).to(cosine)
            )

    def _log_diagnostics(self, split: str) -> None:
        for where in ("lesion", "background"):
            values = []
            for level in self.level_numbers:
                metric = self.diagnostics[f"{split}_{where}_p{level}"]
                if metric.update_called:
                    values.append(metric.compute())
                    self.log(f"{split}_cosine_{where}_p{level}", values[-1])
                metric.reset()
            if values:
                self.log(f"{split}_cosine_{where}", torch.stack(values).mean())

    def on_validation_epoch_end(self) -> None:
        self._log_diagnostics("val")

    def on_test_epoch_end(self) -> None:
        self._log_diagnostics("test")

    def artifact_spec(self) -> dict[str, Any]:
        """Module B: its extractor and projection (C stays behind: Stage III never needs it)."""
        return {
            "modality": "sm",
            "input_modalities": ["sm"],
            "weights": ["extractor.", "projection."],
            "projection": self.projection.kind,
            "levels": list(self.levels),
            "losses": [term.spec() for term in self.terms],
            "teacher_modality": self.teacher_modality,
            "teacher": self.teacher_spec,
            **architecture_spec(self.architecture, self.architecture_overrides, self.config),
        }
