"""Write the detections of a validation, test or predict run as Parquet tables, in original
pixels, each image's highest-scoring ``max_detections`` at most.

Files (in ``output_dir``, default ``<run folder>/predictions``), one set per split (``val``,
``test``): ``{split}_predictions.parquet`` (``image_id, x1, y1, x2, y2, score, label``),
``{split}_images.parquet`` (every image read, with or without detections: ``image_id``, the
image's ``height`` and ``width`` in stored pixels, how many ``detections`` the model gave and
``dropped_score``, the highest score the cap left out, empty when it left none) and, where the
batches carry lesions, ``{split}_ground_truth.parquet`` (``image_id, x1, y1, x2, y2``): exactly
what ``cli.py evaluate`` reads, so its FAUC equals the one logged during the run (and
``cli.py evaluate --export-csv`` writes them as CSV). ``{split}_info.json`` says which weights
made them (the module's ``trained_steps``, the checkpoint) and how to score them (the boxes'
modality, the hit rule), so a report can refuse to apply a threshold chosen on validation to
test predictions of other weights. ``predict`` writes ``predictions.parquet``,
``images.parquet`` and ``info.json``, and with ``overlays`` one PNG per image
(``overlays/<image id>.png``): the DICOM as stored, its detections drawn.

Each rank appends its batches to its own Parquet part files (columns, a row group at a time);
at the end of the run rank 0 merges them, row group by row group, keeping the first reading
of each image (lowest rank, then order): the images DistributedSampler padding repeated go.

Why a cap: FAUC-x reads the detections down to the score where false positives reach x per
image, about x of an image's detections on average; effdet gives 100 per image, so most rows
would never be read (``bench/bench_scale.py`` measures how many lie above the 1 and 2 FP/image
cuts). ``cli.py evaluate`` says how many images had a detection above its cut left out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytorch_lightning as pl
import torch

from common.io import atomic_path
from datamodules.batch import PAIR_ID, geometry_key, original_boxes_key

# The default cap: the demo's models have at most 8 detections per image above their
# 2 FP/image threshold (validation and test, every model; bench/bench_scale.py), the paper's
# detector about 3 per image above 1 FP/image; 32 leaves a margin of 4x and is a third of
# effdet's 100 per image.
MAX_DETECTIONS = 32
_IMAGE = "_image"  # a row's image: its running index on the rank that read it
_BOX = [("x1", pa.float32()), ("y1", pa.float32()), ("x2", pa.float32()), ("y2", pa.float32())]
SCHEMAS = {
    # the decoder's float32 values as they are: float64 readers see the same numbers
    "predictions": pa.schema(
        [("image_id", pa.string()), *_BOX, ("score", pa.float32()), ("label", pa.int32())]
    ),
    "images": pa.schema(
        [
            ("image_id", pa.string()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("detections", pa.int32()),
            ("dropped_score", pa.float32()),
        ]
    ),
    "ground_truth": pa.schema(
        [("image_id", pa.string()), *[(name, pa.float64()) for name, _ in _BOX]]
    ),
}
_FLUSH_ROWS = 1 << 18  # rows buffered per table before they become a row group


class PredictionWriter(pl.Callback):
    """Writes detections (``boxes_original``) of ``validate``/``test``/``predict`` runs.

    Args:
        output_dir: where the tables go; default ``<trainer.default_root_dir>/predictions``.
        during_fit: also write the validation runs inside ``fit`` (overwritten each epoch).
        overlays: ``predict`` also draws each image's detections into a PNG.
        overlay_min_score: the lowest score drawn.
        max_detections: the most detections kept per image, the highest-scoring.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        during_fit: bool = False,
        overlays: bool = False,
        overlay_min_score: float = 0.3,
        max_detections: int = MAX_DETECTIONS,
    ):
        super().__init__()
        if max_detections < 1:
            raise ValueError(f"max_detections must be at least 1, got {max_detections}")
        self.output_dir = output_dir
        self.during_fit = during_fit
        self.overlays = overlays
        self.overlay_min_score = overlay_min_score
        self.max_detections = int(max_detections)
        self._parts: RankParts | None = None

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
    def _open(self, trainer: pl.Trainer, split: str) -> None:
        self._trainer = trainer
        self._parts = RankParts(
            self.directory(trainer), split, trainer.global_rank, self.max_detections
        )

    def _write(self, outputs: Any, batch: dict[str, Any], pl_module) -> None:
        if self._parts is None or not outputs:
            return
        modality = pl_module.modality
        lesions = batch.get(original_boxes_key(modality))
        geometries = batch.get(geometry_key(modality))
        for index, detection in enumerate(outputs):
            if "boxes_original" not in detection or geometries is None:
                raise ValueError(
                    "detections carry no boxes in original pixels: the batches need "
                    f"'{modality}_geometry' (PairedMammoDataModule provides it)"
                )
            image_id = str(batch[PAIR_ID][index])
            if self.overlays and self._parts.split == "predict":
                self._overlay(image_id, detection, batch, index, modality)
            self._parts.add(
                image_id,
                geometries[index].original_size,
                _numpy(detection["boxes_original"], np.float32).reshape(-1, 4),
                _numpy(detection["scores"], np.float32),
                _numpy(detection["labels"], np.int32),
                None if lesions is None else _numpy(lesions[index], np.float64),
            )

    def _close(self, trainer: pl.Trainer, split: str) -> None:
        if self._parts is None or self._parts.split != split:
            return
        parts, self._parts = self._parts, None
        parts.close()
        trainer.strategy.barrier("prediction_writer")
        if trainer.is_global_zero:
            images, capped = merge_parts(self.directory(trainer), split, trainer.world_size)
            module = trainer.lightning_module
            trained_steps = getattr(module, "trained_steps", None)
            info = {
                "split": split,
                "model": type(module).__name__,
                # what the report needs to score these tables: whose boxes they are, the hit rule
                "modality": module.modality,
                "input_modalities": list(module.input_modalities),
                "hit_min_distance": float(module.evaluation.hit_min_distance),
                "trained_steps": None if trained_steps is None else int(trained_steps),
                "ckpt_path": getattr(trainer, "ckpt_path", None),
                "during_fit": trainer.state.fn == "fit",
                "world_size": int(trainer.world_size),
                "n_images": images,
                "max_detections": self.max_detections,
                "images_capped": capped,
            }
            path = self.directory(trainer) / file_name(split, "info", "json")
            path.write_text(json.dumps(info, indent=2) + "\n")
        trainer.strategy.barrier("prediction_writer_merged")

    def _overlay(
        self, image_id: str, detection: dict, batch: dict, index: int, modality: str
    ) -> None:
        """The DICOM as stored (windowed for display), detections >= the minimum score in
        green with their scores, as ``overlays/<image id>.png``."""
        from PIL import Image, ImageDraw

        from datamodules.dicom import read_dicom, to_unit_range

        paths = batch.get(f"{modality}_path")
        if paths is None:
            raise ValueError(f"overlays need the batches' '{modality}_path' (the DICOM files)")
        pixels, dataset = read_dicom(paths[index])
        image = Image.fromarray((to_unit_range(pixels, dataset) * 255).astype("uint8")).convert(
            "RGB"
        )
        draw = ImageDraw.Draw(image)
        width = max(2, round(max(image.size) / 400))
        boxes = _numpy(detection["boxes_original"], np.float64).reshape(-1, 4).tolist()
        for box, score in zip(boxes, detection["scores"].detach().cpu().tolist()):
            if score >= self.overlay_min_score:
                draw.rectangle(box, outline=(0, 255, 0), width=width)
                draw.text((box[0], max(box[1] - 12, 0)), f"{score:.2f}", fill=(0, 255, 0))
        path = self.directory(self._trainer) / "overlays" / f"{image_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)


class RankParts:
    """One rank's part files of one split: every image it reads, in order, with its kept
    detections and its lesions, buffered as columns and written a row group at a time."""

    def __init__(
        self, directory: Path, split: str, rank: int, max_detections: int = MAX_DETECTIONS
    ):
        self.directory, self.split, self.rank = Path(directory), split, rank
        self.max_detections = max_detections
        self.directory.mkdir(parents=True, exist_ok=True)
        self.has_lesions = False
        self._count = 0
        self._buffers: dict[str, list[dict[str, np.ndarray]]] = {table: [] for table in SCHEMAS}
        self._rows = dict.fromkeys(SCHEMAS, 0)
        self._writers: dict[str, pq.ParquetWriter] = {}
        for table in SCHEMAS:  # a rank that reads nothing still leaves (empty) parts
            part_path(self.directory, split, table, rank).unlink(missing_ok=True)

    def add(
        self,
        image_id: str,
        original_size,
        boxes: np.ndarray,
        scores: np.ndarray,
        labels: np.ndarray,
        lesions: np.ndarray | None = None,
    ) -> None:
        """One image read: its detections (``[n, 4]`` boxes, scores, labels) and, where the
        batch has them, its lesion boxes ``[m, 4]``."""
        image = self._count
        self._count += 1
        n = scores.size
        dropped = np.nan
        if n > self.max_detections:
            order = np.argsort(-scores, kind="stable")
            dropped = scores[order[self.max_detections]]
            keep = np.sort(order[: self.max_detections])  # the highest, in the model's order
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        height, width = (int(side) for side in original_size)
        self._append(
            "images",
            image,
            1,
            {
                "height": np.array([height], np.int32),
                "width": np.array([width], np.int32),
                "detections": np.array([n], np.int32),
                "dropped_score": np.array([dropped], np.float32),
            },
            image_id,
        )
        self._append(
            "predictions",
            image,
            scores.size,
            {
                "x1": boxes[:, 0],
                "y1": boxes[:, 1],
                "x2": boxes[:, 2],
                "y2": boxes[:, 3],
                "score": scores,
                "label": labels,
            },
            image_id,
        )
        if lesions is not None:
            self.has_lesions = True
            lesions = lesions.reshape(-1, 4)
            self._append(
                "ground_truth",
                image,
                lesions.shape[0],
                {
                    "x1": lesions[:, 0],
                    "y1": lesions[:, 1],
                    "x2": lesions[:, 2],
                    "y2": lesions[:, 3],
                },
                image_id,
            )

    def _append(
        self, table: str, image: int, rows: int, columns: dict[str, np.ndarray], image_id: str
    ) -> None:
        if not rows:
            return
        columns[_IMAGE] = np.full(rows, image, np.int64)
        columns["image_id"] = (image_id, rows)
        self._buffers[table].append(columns)
        self._rows[table] += rows
        if self._rows[table] >= _FLUSH_ROWS:
            self._flush(table)

    def _flush(self, table: str) -> None:
        buffered = self._buffers[table]
        if not buffered:
            return
        schema = part_schema(table)
        ids = [chunk["image_id"] for chunk in buffered]
        # one id string per image; the rows point at it (dictionary indices), Arrow expands
        id_index = np.repeat(np.arange(len(ids), dtype=np.int32), [rows for _, rows in ids])
        image_id = pa.DictionaryArray.from_arrays(id_index, pa.array([i for i, _ in ids]))
        arrays = [image_id.cast(pa.string())]
        for field in list(schema)[1:]:
            values = np.concatenate([chunk[field.name] for chunk in buffered])
            # a nan dropped_score is "none dropped": stored as missing
            arrays.append(
                pa.array(values, type=field.type, from_pandas=field.name == "dropped_score")
            )
        if table not in self._writers:
            self._writers[table] = pq.ParquetWriter(
                part_path(self.directory, self.split, table, self.rank), schema
            )
        self._writers[table].write_table(pa.Table.from_arrays(arrays, schema=schema))
        self._buffers[table], self._rows[table] = [], 0

    def close(self) -> None:
        for table in SCHEMAS:
            self._flush(table)
            if table in self._writers:
                self._writers[table].close()
            elif table != "ground_truth" or self.has_lesions:  # an empty part, no rows
                pq.write_table(
                    part_schema(table).empty_table(),
                    part_path(self.directory, self.split, table, self.rank),
                )
        self._writers = {}


def part_schema(table: str) -> pa.Schema:
    return SCHEMAS[table].append(pa.field(_IMAGE, pa.int64()))


def part_path(directory: Path, split: str, table: str, rank: int) -> Path:
    return Path(directory) / f"{split}_{table}.rank{rank}.part.parquet"


def file_name(split: str, table: str, suffix: str = "parquet") -> str:
    """``{split}_{table}.parquet`` for val and test; a predict run's files are plain
    ``predictions.parquet``, ``images.parquet``, ``info.json``."""
    return f"{table}.{suffix}" if split == "predict" else f"{split}_{table}.{suffix}"


def merge_parts(directory: Path, split: str, world_size: int) -> tuple[int, int]:
    """Merge the ranks' part files into the split's tables and remove the parts: the first
    reading of each image (lowest rank, then order) is kept, the repeats DistributedSampler
    padding added are dropped with their rows. Returns (images, images whose detections the
    cap cut). No ground-truth table when no rank read lesions."""
    directory = Path(directory)
    parts = {
        table: [part_path(directory, split, table, rank) for rank in range(world_size)]
        for table in SCHEMAS
    }
    read = [pq.read_table(part, columns=["image_id", "dropped_score"]) for part in parts["images"]]
    ids = pa.chunked_array(
        [chunk for part in read for chunk in part.column("image_id").chunks], type=pa.string()
    ).to_numpy(zero_copy_only=False)
    kept = ~pd.Index(ids).duplicated(keep="first")
    starts = np.cumsum([0, *(part.num_rows for part in read)])
    keep = [kept[starts[rank] : starts[rank + 1]] for rank in range(world_size)]
    dropped = pa.chunked_array(
        [chunk for part in read for chunk in part.column("dropped_score").chunks], type=pa.float32()
    ).to_numpy(zero_copy_only=False)
    capped = int(np.count_nonzero(~np.isnan(dropped[kept])))
    # a rank whose batches carried lesions wrote a ground-truth part, if only an empty one
    has_lesions = any(part.is_file() for part in parts["ground_truth"])
    for table, paths in parts.items():
        if table != "ground_truth" or has_lesions:
            # rank zero alone writes it: a fixed temporary name, made by ParquetWriter (umask mode)
            with (
                atomic_path(directory / file_name(split, table), unique=False) as temporary,
                pq.ParquetWriter(temporary, SCHEMAS[table]) as writer,
            ):
                for rank, path in enumerate(paths):
                    if not path.is_file():  # a rank whose batches had no lesions
                        continue
                    for batch in pq.ParquetFile(path).iter_batches(batch_size=_FLUSH_ROWS):
                        rows = keep[rank][batch.column(_IMAGE).to_numpy()]
                        writer.write_batch(
                            batch.filter(pa.array(rows)).select(SCHEMAS[table].names)
                        )
        for path in paths:
            path.unlink(missing_ok=True)
    return int(kept.sum()), capped


def _numpy(values: Any, dtype) -> np.ndarray:
    """A tensor or array as a numpy array of ``dtype``."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)
