"""PairedMammoDataset: one dict per FFDM-SM pair in the batch contract of `datamodules.batch`.

Only the modalities asked for are read (a Stage I SM model never opens an FFDM file). Each
image comes from the preprocessing cache when its entry exists, else from the DICOM. With
``on_bad_sample="skip"`` a pair whose image cannot be read is logged and replaced by the next
readable pair of the same label, and the sample names it under ``SKIPPED_PAIRS``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from common.defaults import MODALITIES
from datamodules.batch import (
    LABEL,
    PAIR_ID,
    boxes_key,
    check_modality,
    geometry_key,
    labels_key,
    original_boxes_key,
)
from datamodules.cache import CacheEntryError, ImageCache
from datamodules.dicom import DEFAULT_MARGIN, DicomReadError, Geometry, input_boxes, load_image
from datamodules.transforms import PairedTransform

logger = logging.getLogger(__name__)

# Sample key (with on_bad_sample="skip"): [(pair id, reason)] of the pairs skipped to make
# this sample; the data module takes it out of the batch and counts the pairs.
SKIPPED_PAIRS = "skipped_pairs"
_READ_ERRORS = (DicomReadError, CacheEntryError, OSError)


def _text_array(values) -> np.ndarray:
    # One numpy buffer of UTF-8 bytes, not a list of Python str: DataLoader workers forked from
    # the main process would otherwise copy every page they touch through reference counts.
    return np.array([str(value).encode() for value in values], dtype=bytes)


class PairedMammoDataset(Dataset):
    """Pairs of a manifest (from `load_tables`) with their lesions.

    Item i is a dict: ``pair_id`` (str), ``label`` (int), and for each modality m asked for:
    ``m`` float32 [1, H, W] in [0, 1]; ``m_boxes`` float32 [n, 4] xyxy input pixels (clipped,
    vanished boxes dropped); ``m_labels`` int64 [n]; ``m_geometry``; ``m_boxes_original``
    float32 [k, 4], the lesions in the original DICOM's pixels, unclipped (the metric's ground
    truth). With a ``transform`` (training), boxes and images are augmented; the geometry and
    original boxes then still describe the un-augmented image.

    ``pathology_classes``: None puts every lesion in class 0; a dict maps pathology to class
    index and drops lesions of other pathologies, from the targets and the original boxes.

    ``on_bad_sample``: "error" raises when an image cannot be read (the error names the
    file); "skip" logs the pair and its reason and returns the next readable pair with the
    same label instead (the balance of the epoch is kept), listing the skipped pairs under
    ``SKIPPED_PAIRS``.
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        lesions: pd.DataFrame,
        image_size: Sequence[int],
        modalities: Sequence[str] = MODALITIES,
        cache_dir: str | os.PathLike | None = None,
        window: str = "dicom",
        margin: float = DEFAULT_MARGIN,
        transform: PairedTransform | None = None,
        pathology_classes: Mapping[str, int] | None = None,
        on_bad_sample: str = "error",
    ):
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample
        self._bad: dict[int, str] = {}  # index -> reason, found bad in this process
        self.modalities = tuple(check_modality(m) for m in modalities)
        if not self.modalities:
            raise ValueError("at least one modality is needed")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.window, self.margin, self.transform = window, margin, transform
        self.cache = None
        if cache_dir is not None:
            self.cache = ImageCache(cache_dir, self.image_size, window, margin)
            self.margin = self.cache.margin
        self.pathology_classes = dict(pathology_classes) if pathology_classes else None
        manifest = manifest.reset_index(drop=True)
        self.pair_ids = _text_array(manifest["pair_id"])
        self.lateralities = _text_array(manifest["laterality"])
        self.labels = manifest["label"].to_numpy(dtype=np.int64)
        self.paths = {m: _text_array(manifest[f"{m}_path"]) for m in self.modalities}
        self.lesions = self._group_lesions(manifest, lesions)

    def _group_lesions(self, manifest: pd.DataFrame, lesions: pd.DataFrame) -> dict:
        """{(row, modality): (original boxes float32 [k, 4], class indices int64 [k])}."""
        row_of = dict(zip(manifest["pair_id"], range(len(manifest))))
        rows = np.array([row_of.get(pair_id, -1) for pair_id in lesions["pair_id"]], dtype=np.int64)
        keep = (rows >= 0) & lesions["modality"].isin(self.modalities).to_numpy()
        if self.pathology_classes is not None:
            keep &= lesions["pathology"].isin(list(self.pathology_classes)).to_numpy()
        lesions, rows = lesions[keep], rows[keep]
        if self.pathology_classes is None:
            classes = np.zeros(len(lesions), dtype=np.int64)
        else:
            classes = lesions["pathology"].map(self.pathology_classes).to_numpy(dtype=np.int64)
        boxes = lesions[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float32)
        positions: dict[tuple[int, str], list[int]] = {}
        for position, key in enumerate(zip(rows.tolist(), lesions["modality"])):
            positions.setdefault(key, []).append(position)
        return {key: (boxes[p], classes[p]) for key, p in positions.items()}

    def __len__(self) -> int:
        return len(self.pair_ids)

    def read(self, index: int, modality: str) -> tuple[np.ndarray, Geometry]:
        """The model-input image of one modality of pair ``index`` and its Geometry."""
        # No cv2.setNumThreads(1) in DataLoader workers: in a worker forked after the parent
        # used cv2's thread pool it deadlocks (seen with opencv 5.0, pthreads backend).
        pair_id = self.pair_ids[index].decode()
        if self.cache is not None:
            entry = self.cache.read(pair_id, modality)
            if entry is not None:
                return entry
        return load_image(
            self.paths[modality][index].decode(),
            self.image_size,
            laterality=self.lateralities[index].decode() or None,
            window=self.window,
            margin=self.margin,
        )

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """Pair ``item``; or ``(index, seed)``, as the training sampler gives them, where
        ``seed`` fixes this draw's augmentation (see ``BalancedDistributedSampler``)."""
        index, seed = item if isinstance(item, tuple) else (item, None)
        index = int(index)
        if self.on_bad_sample == "error":
            return self._sample(index, self._read_pair(index), seed)
        skipped = []
        for candidate in self._candidates(index):
            if candidate in self._bad:
                continue
            try:
                read = self._read_pair(candidate)
            except _READ_ERRORS as error:
                pair_id = self.pair_ids[candidate].decode()
                self._bad[candidate] = str(error)
                logger.warning("on_bad_sample=skip: skipping pair %s: %s", pair_id, error)
                skipped.append((pair_id, str(error)))
                continue
            sample = self._sample(candidate, read, seed)
            sample[SKIPPED_PAIRS] = skipped
            return sample
        raise RuntimeError(f"no pair of the data set can be read (the last: {skipped[-1:]})")

    def _candidates(self, index: int):
        """``index``, then the other pairs with its label in order, then the rest."""
        yield index
        same = np.flatnonzero(self.labels == self.labels[index])
        yield from np.roll(same, -int(np.searchsorted(same, index)) - 1)[:-1].tolist()
        yield from np.flatnonzero(self.labels != self.labels[index]).tolist()

    def _read_pair(self, index: int) -> dict[str, tuple[np.ndarray, Geometry]]:
        return {modality: self.read(index, modality) for modality in self.modalities}

    def _sample(
        self, index: int, read: dict[str, tuple[np.ndarray, Geometry]], seed: int | None = None
    ) -> dict[str, Any]:
        images, geometries, boxes, labels, originals = {}, {}, {}, {}, {}
        for modality in self.modalities:
            images[modality], geometries[modality] = read[modality]
            empty = (np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))
            originals[modality], classes = self.lesions.get((index, modality), empty)
            boxes[modality], kept = input_boxes(originals[modality], geometries[modality])
            labels[modality] = classes[kept]
        if self.transform is not None:
            images, boxes, labels = self.transform(images, boxes, labels, seed=seed)
        sample: dict[str, Any] = {
            PAIR_ID: self.pair_ids[index].decode(),
            LABEL: int(self.labels[index]),
        }
        for modality in self.modalities:
            image = np.clip(images[modality].astype(np.float32, copy=False), 0.0, 1.0)
            sample[modality] = torch.from_numpy(np.ascontiguousarray(image))[None]
            sample[boxes_key(modality)] = torch.as_tensor(
                boxes[modality], dtype=torch.float32
            ).reshape(-1, 4)
            sample[labels_key(modality)] = torch.as_tensor(labels[modality], dtype=torch.int64)
            sample[geometry_key(modality)] = geometries[modality]
            sample[f"{modality}_path"] = self.paths[modality][index].decode()
            sample[original_boxes_key(modality)] = torch.as_tensor(
                originals[modality], dtype=torch.float32
            ).reshape(-1, 4)
        return sample
