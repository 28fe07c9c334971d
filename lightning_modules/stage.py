"""What every stage's LightningModule shares: the optimiser, frozen parts, and its artifact spec.

A stage module says, in ``artifact_spec()``, what its weights are (architecture, image size,
which state-dict prefixes a later stage needs); the spec travels in each Lightning checkpoint
under ``CHECKPOINT_SPEC_KEY``, so a checkpoint becomes a stage artifact without rebuilding the
module (``artifacts.export_checkpoint``). Earlier stages come in by artifact path
(``load_input``), checked against what this stage needs and recorded in ``inputs``.

The schedule does not depend on the GPU count: with ``global_batch_size`` set, gradients are
accumulated over as many batches as make that many pairs per optimiser step on any number of
devices and nodes, the training length is the trainer's ``max_steps`` (optimiser steps), and
with ``reference_batch_size`` the learning rate scales linearly with the global batch and the
warm-up keeps its number of pairs. The artifact records the schedule it was trained with.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.layer_sync import TorchSyncBatchNorm

from lightning_modules.artifacts import CHECKPOINT_SPEC_KEY, Artifact, check_artifact, read_artifact
from lightning_modules.effdet_parts import TimmSyncBatchNorm, freeze, use_channels_last
from lightning_modules.settings import STAGE_SETTINGS, OptimizerSettings

# The "true" half precisions cast the whole model, BatchNorm statistics and anchors included.
REFUSED_PRECISIONS = {"bf16-true": "bfloat16", "16-true": "float16"}
_NONE = torch.iinfo(torch.int64).max  # no non-finite loss seen


def check_precision(precision: Any) -> None:
    """Refuse a precision this package cannot train or decode in (one line, naming the key)."""
    dtype = REFUSED_PRECISIONS.get(str(precision))
    if dtype:
        raise ValueError(
            f"trainer.precision: {precision} casts the whole model to {dtype}, BatchNorm "
            f"statistics and the anchors included (boxes off by pixels, scores tied): use "
            f"bf16-mixed (float32 weights, {dtype} compute) or leave it unset"
        )


def default_precision(accelerator: Any) -> str | None:
    """The precision of a run that does not set one: ``bf16-mixed`` where it will run on a CUDA
    GPU that computes in bfloat16 (``accelerator`` auto, gpu or cuda), else None (Lightning's
    32-true: CPUs gain nothing from bfloat16 autocast)."""
    name = accelerator if isinstance(accelerator, str) else type(accelerator).__name__
    if str(name).lower() not in ("auto", "gpu", "cuda", "cudaaccelerator"):
        return None
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16-mixed"
    return None


class StageModule(pl.LightningModule, ABC):
    """Base of ``TeacherDetector``, ``DistillStudent`` and ``FusedDetector``.

    Args:
        optimizer: AdamW and its schedule (`OptimizerSettings`; a mapping of its fields, as a
            checkpoint's hyperparameters hold it, is taken too).
        channels_last: weights and input images in channels_last (NHWC) memory: faster
            convolutions on a GPU's tensor cores; the same model.
    """

    stage: int

    def __init__(
        self, optimizer: OptimizerSettings = OptimizerSettings(), channels_last: bool = False
    ):
        super().__init__()
        self.optimizer_settings = OptimizerSettings.of(optimizer)
        self.channels_last = bool(channels_last)
        self.schedule: dict[str, Any] | None = None  # set by configure_optimizers
        self.inputs: dict[str, dict[str, str]] = {}
        self._frozen: list[str] = []
        # Training batches these weights have learnt from; saved with them, so predictions and
        # artifacts say which weights made them (Trainer.global_step is 0 when testing).
        self.register_buffer("trained_steps", torch.zeros((), dtype=torch.int64))
        # check_finite's record of this fit: the first non-finite loss's step and value, kept
        # on the device, and the recent batches' pair ids, kept on the host.
        self._bad_step: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None
        self._recent_pairs: dict[int, list[str]] = {}
        self._step_offset = 0
        self._batches_checked = 0

    def save_hyperparameters(self, *args, ignore=None, frame=None, logger: bool = True) -> None:
        """Lightning's, with the settings objects (`OptimizerSettings`, `EvaluationSettings`)
        kept as plain dicts: a checkpoint then loads with ``weights_only=True``, and
        LightningCLI reads its hyperparameters back as config."""
        super().save_hyperparameters(
            *args, ignore=ignore, frame=frame or inspect.currentframe().f_back, logger=logger
        )
        for hparams in (self._hparams, getattr(self, "_hparams_initial", {})):
            for key, kind in STAGE_SETTINGS.items():
                if key in hparams:
                    hparams[key] = kind.of(hparams[key]).as_dict()

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
        spec = {
            "stage": self.stage,
            "module_class": type(self).__name__,
            "inputs": dict(self.inputs),
            **self.artifact_spec(),
        }
        if self.schedule is not None:
            spec["schedule"] = dict(self.schedule)
        return spec

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Every rank saves together (Lightning's checkpointing, the SLURM requeue's save):
        # no checkpoint is written from weights a non-finite loss may have reached.
        if self._trainer is not None and self.trainer.state.fn == "fit":
            self._stop_if_non_finite()
        checkpoint[CHECKPOINT_SPEC_KEY] = self.full_artifact_spec()

    # -- the trainer's settings ---------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Before the strategy wraps the model: refuse a precision that cannot work, give
        ``sync_batchnorm`` timm's converter, apply ``channels_last``, and (fit) accumulate
        gradients to ``global_batch_size``."""
        trainer = self.trainer
        check_precision(trainer.precision)
        strategy = trainer.strategy
        layer_sync = getattr(strategy, "_layer_sync", None)
        if layer_sync is not None:
            if stage == "fit" and strategy.root_device.type == "cpu":
                raise ValueError(
                    "trainer.sync_batchnorm: torch's SyncBatchNorm trains on GPUs "
                    "only; set it false on CPU"
                )
            if type(layer_sync) is TorchSyncBatchNorm:
                strategy._layer_sync = TimmSyncBatchNorm()
        if self.channels_last:
            use_channels_last(self)
        if stage == "fit" and self.optimizer_settings.global_batch_size is not None:
            trainer.accumulate_grad_batches = self._accumulation()

    def _per_device_batch(self) -> int | None:
        batch = getattr(self.trainer.datamodule, "batch_size", None)
        return None if batch is None else int(batch)

    def _accumulation(self) -> int:
        """Batches per optimiser step that make ``global_batch_size`` on this many processes."""
        trainer = self.trainer
        batch = self._per_device_batch()
        if batch is None:
            raise ValueError(
                "model.init_args.optimizer.global_batch_size needs the per-device batch size: "
                "train with a data module that has a batch_size"
            )
        share = batch * trainer.world_size
        global_batch = self.optimizer_settings.global_batch_size
        accumulation, remainder = divmod(global_batch, share)
        if remainder or not accumulation:
            raise ValueError(
                f"model.init_args.optimizer.global_batch_size {global_batch} must be a multiple "
                f"of data.init_args.batch_size {batch} x {trainer.num_devices} devices x "
                f"{trainer.num_nodes} nodes = {share}"
            )
        if trainer.accumulate_grad_batches not in (1, accumulation):
            raise ValueError(
                f"trainer.accumulate_grad_batches {trainer.accumulate_grad_batches} contradicts "
                f"model.init_args.optimizer.global_batch_size {global_batch} ({accumulation} "
                f"batches of {batch} on {trainer.world_size} processes): leave it unset"
            )
        return accumulation

    # -- non-finite losses ------------------------------------------------------------------
    def on_train_start(self) -> None:
        self._bad_step = torch.full((), _NONE, dtype=torch.int64, device=self.device)
        self._bad_loss = torch.zeros((), dtype=torch.float32, device=self.device)
        self._recent_pairs = {}
        self._step_offset = int(self.trained_steps)
        self._batches_checked = 0

    def check_finite(self, loss: torch.Tensor, batch: dict[str, Any]) -> None:
        """Stop the run on a non-finite loss, naming its step and pairs, before any checkpoint
        is written from the weights it reached.

        The loss is tested on the device, where the first non-finite one's step and value are
        kept; the ranks compare their records (one collective, one host-device sync) every
        ``trainer.log_every_n_steps`` batches, before every checkpoint and at the end of fit,
        and all stop together. A non-finite loss is thus found up to that many batches late: the
        weights in memory may have moved by then, but none of them reaches a checkpoint, and
        the run stops naming the first bad step. Without a trainer it is tested at once.
        """
        if self._trainer is None or self._bad_step is None:
            if not bool(torch.isfinite(loss.detach()).all()):
                raise FloatingPointError(
                    self._non_finite_message(
                        float(loss.detach()),
                        int(self.trained_steps) + 1,
                        list(map(str, batch.get("pair_id", [])[:8])),
                    )
                )
            return
        self._batches_checked += 1
        step = self._step_offset + self._batches_checked
        self._recent_pairs[step] = list(map(str, batch.get("pair_id", [])[:8]))
        loss = loss.detach()
        first = (~torch.isfinite(loss).all()) & (self._bad_step == _NONE)
        self._bad_step = torch.where(first, self.trained_steps + 1, self._bad_step)
        self._bad_loss = torch.where(first, loss.float(), self._bad_loss)
        if self._batches_checked % max(int(self.trainer.log_every_n_steps), 1) == 0:
            self._stop_if_non_finite()

    def on_train_end(self) -> None:
        self._stop_if_non_finite()

    def _stop_if_non_finite(self) -> None:
        """All ranks compare their records; raise on each if any rank saw a non-finite loss."""
        if self._bad_step is None:
            return
        first = self.trainer.strategy.reduce(self._bad_step.clone(), reduce_op="min")
        if int(first) == _NONE:
            self._recent_pairs.clear()
            return
        # Rare, so no cost matters: every rank learns which rank saw it, its value and pairs.
        own = int(self._bad_step)
        record = (own, float(self._bad_loss), self._recent_pairs.get(own, []))
        records = [record]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            records = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(records, record)
        rank = min(range(len(records)), key=lambda index: records[index][0])
        step, value, pairs = records[rank]
        raise FloatingPointError(
            self._non_finite_message(value, step, pairs, rank if len(records) > 1 else None)
        )

    def _non_finite_message(
        self, value: float, step: int, pairs: list[str], rank: int | None = None
    ) -> str:
        checkpoint = (
            getattr(getattr(self._trainer, "checkpoint_callback", None), "last_model_path", "")
            if self._trainer
            else ""
        )
        where = "" if rank is None else f" on rank {rank}"
        return (
            f"non-finite training loss ({value}) at training step {step} (pairs "
            f"{', '.join(pairs)}{where}); training stopped. The last checkpoint "
            f"({checkpoint or 'none written yet'}) is untouched: lower the learning rate or "
            f"check these images, then resume from it"
        )

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.trained_steps += 1

    # -- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self):
        trainer = self.trainer
        batch = self._per_device_batch()
        settings = self.optimizer_settings
        global_batch = settings.global_batch_size or (
            None if batch is None else batch * trainer.world_size * trainer.accumulate_grad_batches
        )
        learning_rate, warmup = settings.peak()
        parameters = [parameter for parameter in self.parameters() if parameter.requires_grad]
        optimizer = torch.optim.AdamW(
            parameters, lr=learning_rate, weight_decay=settings.weight_decay
        )
        total_steps = max(int(trainer.estimated_stepping_batches), 1)
        warmup_steps = min(warmup, total_steps)
        schedule = settings.lr_schedule
        self.schedule = {
            "global_batch_size": global_batch,
            "batch_size": batch,
            "devices": trainer.num_devices,
            "num_nodes": trainer.num_nodes,
            "accumulate_grad_batches": trainer.accumulate_grad_batches,
            "optimizer_steps": total_steps,
            "warmup_steps": warmup_steps,
            "learning_rate": learning_rate,
            "reference_batch_size": settings.reference_batch_size,
            "lr_schedule": schedule,
        }

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
