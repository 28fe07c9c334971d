"""The batch contract: the one dict the paired DataModule yields and every LightningModule reads.

A batch is a dict. For each modality present (``"sm"``, ``"ffdm"``; a Stage I SM model's
batches hold only ``"sm"`` keys):

====================  =========================================================================
key                   value
====================  =========================================================================
``"{m}"``             float32 tensor [B, C, H, W], C = 1 or 3, values in [0, 1]; the model
                      repeats a single channel to its backbone's channels and normalises.
``"{m}_boxes"``       list of B float32 tensors [n, 4]: lesion boxes, xyxy, input pixels.
``"{m}_labels"``      list of B int64 tensors [n]: class indices starting at 0.
``"{m}_geometry"``    list of B ``Geometry`` (optional): maps input pixels to the original
                      DICOM's pixels and back (``datamodules.dicom.Geometry``).
``"{m}_boxes_original"`` list of B float32 tensors [n, 4] (optional): the same lesions, xyxy,
                      in the original DICOM's pixels, unclipped: the metric's ground truth.
``"{m}_path"``        list of B str (optional): the DICOM file each image was read from.
====================  =========================================================================

And for every batch: ``"pair_id"``, a list of B str (also the image id of each model's
predictions, one image per pair per modality), and optionally ``"label"``, an int64 tensor
[B] (1 = the pair holds a malignant finding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from common.defaults import MODALITIES

PAIR_ID = "pair_id"
LABEL = "label"


def boxes_key(modality: str) -> str:
    return f"{modality}_boxes"


def labels_key(modality: str) -> str:
    return f"{modality}_labels"


def geometry_key(modality: str) -> str:
    return f"{modality}_geometry"


def original_boxes_key(modality: str) -> str:
    return f"{modality}_boxes_original"


def check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return modality


def collate_pairs(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate per-pair dicts into one batch dict of the contract.

    Images and the pair label are stacked; boxes, labels, geometries and ids stay lists,
    since every image has its own number of lesions.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        if key in MODALITIES:
            batch[key] = torch.stack(values)
        elif key == LABEL:
            batch[key] = torch.as_tensor(values, dtype=torch.int64)
        else:
            batch[key] = values
    return batch


def validate_batch(batch: dict[str, Any], modalities: Sequence[str], targets: bool = True) -> None:
    """Raise a ValueError naming the key when a batch does not follow the contract.
    ``targets=False`` (prediction) needs the images alone, no boxes or labels."""
    if PAIR_ID not in batch:
        raise ValueError(f"batch has no {PAIR_ID!r} key (keys: {sorted(batch)})")
    size = len(batch[PAIR_ID])
    for modality in modalities:
        required = (modality, boxes_key(modality), labels_key(modality)) if targets else (modality,)
        for key in required:
            if key not in batch:
                raise ValueError(f"batch has no {key!r} key (keys: {sorted(batch)})")
        images = batch[modality]
        if images.ndim != 4 or images.shape[0] != size or images.shape[1] not in (1, 3):
            raise ValueError(
                f"batch[{modality!r}] must be [B, 1|3, H, W] with B={size}, "
                f"got {tuple(images.shape)}"
            )
        if not targets:
            continue
        for key in (boxes_key(modality), labels_key(modality)):
            if len(batch[key]) != size:
                raise ValueError(f"batch[{key!r}] has {len(batch[key])} entries, expected {size}")
        for index, (boxes, labels) in enumerate(
            zip(batch[boxes_key(modality)], batch[labels_key(modality)])
        ):
            if boxes.ndim != 2 or boxes.shape[-1] != 4 or len(labels) != len(boxes):
                raise ValueError(
                    f"batch[{boxes_key(modality)!r}][{index}] must be [n, 4] with n labels, "
                    f"got boxes {tuple(boxes.shape)} and {len(labels)} labels "
                    f"(pair {batch[PAIR_ID][index]!r})"
                )
