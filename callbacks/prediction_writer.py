"""Write every detection of a validation, test or predict run as CSV, in original pixels.

Files (in ``output_dir``, default ``<run folder>/predictions``), one set per split (``val``,
``test``): ``{split}_predictions.csv`` (``image_id,x1,y1,x2,y2,score,label``),
``{split}_images.csv`` (every image read, with or without detections) and, where the batches
carry lesions, ``{split}_ground_truth.csv`` (``image_id,x1,y1,x2,y2``): exactly what
``cli.py evaluate`` reads, so its FAUC equals the one logged during the run.
``{split}_info.json`` says which weights made them (the module's ``trained_steps``, the
checkpoint) and how to score them (the boxes' modality, the hit rule), so a report can refuse
to apply a threshold chosen on validation to test predictions of other weights. ``predict``
writes ``predictions.csv``, ``images.csv`` and ``info.json``, and with ``overlays`` one PNG
per image (``overlays/<image id>.png``): the DICOM as stored, its detections drawn.

Under DDP each rank appends to its own part files as batches come; at the end of the run
rank 0 merges them and drops the images that DistributedSampler padding repeated.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch

from datamodules.batch import PAIR_ID, original_boxes_key
from metrics.evaluate import PREDICTION_TABLES as TABLES

_OCCURRENCE = "_occurrence"  # rank and running index of an image's reading: the first is kept


class PredictionWriter(pl.Callback):
    """Writes detections (``boxes_original``) of ``validate``/``test``/``predict`` runs.

    Args:
        output_dir: where the CSVs go; default ``<trainer.default_root_dir>/predictions``.
        during_fit: also write the validation runs inside ``fit`` (overwritten each epoch).
        overlays: ``predict`` also draws each image's detections into a PNG.
        overlay_min_score: the lowest score drawn.
    """

    def __init__(self, output_dir: str | None = None, during_fit: bool = False,
                 overlays: bool = False, overlay_min_score: float = 0.3):
        super().__init__()
        self.output_dir = output_dir
        self.during_fit = during_fit
        self.overlays = overlays
        self.overlay_min_score = overlay_min_score
        self._parts: dict[str, Any] = {}
        self._count = 0

    def directory(self, trainer: pl.Trainer) -> Path:
        return Path(self.output_dir or os.path.join(trainer.default_root_dir, "predictions"))

    def _active(self, trainer: pl.Trainer) -> bool:
        detects = hasattr(trainer.lightning_module, "detections")  # not the Stage II student
        return detects and (self.during_fit or trainer.state.fn != "fit")

    # -- hooks ------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer, pl_module):
        if self._active(trainer) and not trainer.sanity_checking:
            self._open(trainer, "val")

    def on_test_epoch_start(self, trainer, pl_module):
        if self._active(trainer):
            self._open(trainer, "test")

    def on_predict_epoch_start(self, trainer, pl_module):
        if self._active(trainer):
            self._open(trainer, "predict")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        self._write(outputs, batch, pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        self._write(outputs, batch, pl_module)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
        self._write(outputs, batch, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module):
        self._close(trainer, "val")

    def on_test_epoch_end(self, trainer, pl_module):
        self._close(trainer, "test")

    def on_predict_epoch_end(self, trainer, pl_module):
        self._close(trainer, "predict")

    # -- writing ----------------------------------------------------------------------------
    def _part_path(self, trainer, split: str, table: str, rank: int | None = None) -> Path:
        rank = trainer.global_rank if rank is None else rank
        return self.directory(trainer) / f"{split}_{table}.rank{rank}.part.csv"

    def _open(self, trainer: pl.Trainer, split: str) -> None:
        self._trainer = trainer
        self.directory(trainer).mkdir(parents=True, exist_ok=True)
        self._count = 0
        self._parts = {"split": split}
        for table, columns in TABLES.items():
            handle = open(self._part_path(trainer, split, table), "w", newline="")  # noqa: SIM115
            writer = csv.writer(handle)
            writer.writerow([*columns, _OCCURRENCE])
            self._parts[table] = (handle, writer)

    def _write(self, outputs: Any, batch: dict[str, Any], pl_module) -> None:
        if not self._parts or not outputs:
            return
        rank = pl_module.global_rank
        lesions = batch.get(original_boxes_key(pl_module.modality))
        has_lesions = lesions is not None
        self._parts["has_lesions"] = has_lesions
        for index, detection in enumerate(outputs):
            if "boxes_original" not in detection:
                raise ValueError(
                    "detections carry no boxes in original pixels: the batches need "
                    f"'{pl_module.modality}_geometry' (PairedMammoDataModule provides it)"
                )
            image_id = str(batch[PAIR_ID][index])
            if self.overlays and self._parts["split"] == "predict":
                self._overlay(image_id, detection, batch, index, pl_module.modality)
            occurrence = f"{rank:05d}:{self._count:012d}"
            self._count += 1
            self._parts["images"][1].writerow([image_id, occurrence])
            boxes = _rows(detection["boxes_original"])
            scores = detection["scores"].detach().cpu().double().tolist()
            labels = detection["labels"].detach().cpu().tolist()
            for box, score, label in zip(boxes, scores, labels):
                self._parts["predictions"][1].writerow([image_id, *box, score, label, occurrence])
            if has_lesions:
                for box in _rows(lesions[index]):
                    self._parts["ground_truth"][1].writerow([image_id, *box, occurrence])

    def _close(self, trainer: pl.Trainer, split: str) -> None:
        if not self._parts or self._parts.get("split") != split:
            return
        has_lesions = self._parts.get("has_lesions", False)
        for table in TABLES:
            self._parts[table][0].close()
        self._parts = {}
        trainer.strategy.barrier("prediction_writer")
        if trainer.is_global_zero:
            images = self._merge(trainer, split, trainer.world_size, has_lesions)
            module = trainer.lightning_module
            trained_steps = getattr(module, "trained_steps", None)
            info = {
                "split": split,
                "model": type(module).__name__,
                # what the report needs to score these CSVs: whose boxes they are, the hit rule
                "modality": module.modality,
                "input_modalities": list(module.input_modalities),
                "hit_min_distance": float(module.hit_min_distance),
                "trained_steps": None if trained_steps is None else int(trained_steps),
                "ckpt_path": getattr(trainer, "ckpt_path", None),
                "during_fit": trainer.state.fn == "fit",
                "world_size": int(trainer.world_size),
                "n_images": images,
            }
            path = self.directory(trainer) / _file_name(split, "info", "json")
            path.write_text(json.dumps(info, indent=2) + "\n")
        trainer.strategy.barrier("prediction_writer_merged")

    def _merge(self, trainer: pl.Trainer, split: str, world_size: int, has_lesions: bool) -> int:
        """Merge the ranks' part files into the split's CSVs; returns the number of images."""
        directory = self.directory(trainer)
        tables = {}
        for table in TABLES:
            parts = [self._part_path(trainer, split, table, rank) for rank in range(world_size)]
            tables[table] = pd.concat(
                [pd.read_csv(part, dtype={"image_id": str, _OCCURRENCE: str},
                             float_precision="round_trip") for part in parts],
                ignore_index=True,
            )
            for part in parts:
                part.unlink()
        # The first reading of each image (lowest rank, then order) is the one kept.
        images = tables["images"].sort_values(_OCCURRENCE, kind="stable")
        kept = set(images.drop_duplicates("image_id")[_OCCURRENCE])
        for table, frame in tables.items():
            if table == "ground_truth" and not has_lesions:
                continue
            frame = frame[frame[_OCCURRENCE].isin(kept)].drop(columns=_OCCURRENCE)
            temporary = directory / f".{split}_{table}.csv.tmp"
            frame.to_csv(temporary, index=False)
            os.replace(temporary, directory / _file_name(split, table))
        return len(kept)


    def _overlay(self, image_id: str, detection: dict, batch: dict, index: int,
                 modality: str) -> None:
        """The DICOM as stored (windowed for display), detections >= the minimum score in
        green with their scores, as ``overlays/<image id>.png``."""
        from PIL import Image, ImageDraw

        from datamodules.dicom import read_dicom, to_unit_range

        paths = batch.get(f"{modality}_path")
        if paths is None:
            raise ValueError(f"overlays need the batches' '{modality}_path' (the DICOM files)")
        pixels, dataset = read_dicom(paths[index])
        image = Image.fromarray((to_unit_range(pixels, dataset) * 255).astype("uint8")).convert(
            "RGB")
        draw = ImageDraw.Draw(image)
        width = max(2, round(max(image.size) / 400))
        for box, score in zip(_rows(detection["boxes_original"]),
                              detection["scores"].detach().cpu().tolist()):
            if score >= self.overlay_min_score:
                draw.rectangle(box, outline=(0, 255, 0), width=width)
                draw.text((box[0], max(box[1] - 12, 0)), f"{score:.2f}", fill=(0, 255, 0))
        path = self.directory(self._trainer) / "overlays" / f"{image_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)


def _file_name(split: str, table: str, suffix: str = "csv") -> str:
    """``{split}_{table}.csv`` for val and test; a predict run's files are plain
    ``predictions.csv``, ``images.csv``, ``info.json``."""
    return f"{table}.{suffix}" if split == "predict" else f"{split}_{table}.{suffix}"


def _rows(boxes: Any) -> list[list[float]]:
    """[n, 4] boxes (tensor or array) as rows of Python floats, full precision."""
    return torch.as_tensor(boxes).detach().cpu().double().reshape(-1, 4).tolist()
