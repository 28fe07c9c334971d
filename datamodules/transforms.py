"""Paired augmentation: one random draw applied to the SM, the FFDM and both box sets.

Only spatial transforms that keep the pair aligned are used, and each is applied identically
to both images (they share the model's input size and the canonical orientation): a vertical
flip and a mild affine (scale, shift, rotation). No horizontal flip: it would put the chest
wall on the right, against the canonical orientation. Photometric changes are mild and the
same for both. Validation and test use no transform.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from datamodules.batch import check_modality


def _bbox_target(modality: str, first: str) -> str:
    return "bboxes" if modality == first else f"{modality}_bboxes"


def _image_target(modality: str, first: str) -> str:
    return "image" if modality == first else modality


class PairedTransform:
    """Apply one albumentations draw to the images and boxes of every modality of a pair.

    Call with dicts keyed by modality: images float32 [H, W], boxes float32 [n, 4] xyxy input
    pixels, labels int64 [n]; returns the three dicts transformed. Boxes are clipped to the
    image and dropped when less than ``min_visibility`` of them stays inside; their labels
    follow them (each box carries its index through albumentations as an extra column, since
    albumentations' ``label_fields`` cannot serve two box sets).

    Randomness: called with ``seed`` (what the training sampler gives each draw of an epoch),
    the draw is a function of that seed alone, so an epoch's augmentations do not depend on
    the number of workers or ranks, and a run resumed from a checkpoint repeats them exactly.
    Without it, a DataLoader worker reseeds the draw from its own seed (and the DDP rank), so
    workers and ranks do not repeat each other's augmentations; the main process uses
    ``seed``.
    """

    def __init__(
        self,
        transforms: Sequence[A.BasicTransform],
        modalities: Sequence[str],
        seed: int = 0,
        min_visibility: float = 0.25,
    ):
        self.modalities = tuple(check_modality(m) for m in modalities)
        if not self.modalities:
            raise ValueError("at least one modality is needed")
        first = self.modalities[0]
        additional = {}
        for modality in self.modalities[1:]:
            additional[_image_target(modality, first)] = "image"
            additional[_bbox_target(modality, first)] = "bboxes"
        self.seed = seed
        self.compose = A.Compose(
            list(transforms),
            bbox_params=A.BboxParams("pascal_voc", clip=True, min_visibility=min_visibility),
            additional_targets=additional,
            seed=seed,
            strict=True,
        )
        self._seeded_for: tuple | None = None

    def _reseed_for_worker(self) -> None:
        info = torch.utils.data.get_worker_info()
        key = (os.getpid(), None if info is None else info.seed)
        if key == self._seeded_for:
            return
        if info is not None:
            rank = 0
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank = torch.distributed.get_rank()
            seed = np.random.SeedSequence([self.seed, info.seed % 2**63, rank])
            self.compose.set_random_seed(int(seed.generate_state(1)[0]))
        self._seeded_for = key

    def __call__(
        self,
        images: dict[str, np.ndarray],
        boxes: dict[str, np.ndarray],
        labels: dict[str, np.ndarray],
        seed: int | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        if seed is None:
            self._reseed_for_worker()
        else:
            self.compose.set_random_seed(int(seed))
        first = self.modalities[0]
        data = {}
        for modality in self.modalities:
            box_array = np.asarray(boxes[modality], dtype=np.float32).reshape(-1, 4)
            index = np.arange(len(box_array), dtype=np.float32)[:, None]
            data[_image_target(modality, first)] = images[modality]
            data[_bbox_target(modality, first)] = np.hstack([box_array, index])
        out = self.compose(**data)
        new_images, new_boxes, new_labels = {}, {}, {}
        for modality in self.modalities:
            new_images[modality] = np.ascontiguousarray(out[_image_target(modality, first)])
            kept = np.asarray(out[_bbox_target(modality, first)], dtype=np.float64)
            if kept.size == 0:
                new_boxes[modality] = np.zeros((0, 4), dtype=np.float32)
                new_labels[modality] = np.zeros((0,), dtype=np.int64)
                continue
            new_boxes[modality] = kept[:, :4].astype(np.float32)
            # the index column comes back as a float: round before using it
            new_labels[modality] = np.asarray(labels[modality], dtype=np.int64)[
                np.rint(kept[:, 4]).astype(np.int64)
            ]
        return new_images, new_boxes, new_labels


def train_transforms(
    modalities: Sequence[str],
    seed: int = 0,
    vertical_flip: float = 0.5,
    affine: float = 0.5,
    scale: tuple[float, float] = (0.9, 1.1),
    shift: float = 0.05,
    rotate: float = 10.0,
    photometric: float = 0.5,
) -> PairedTransform:
    """The default training augmentation; the floats are probabilities, ``shift`` a fraction
    of the image size and ``rotate`` degrees."""
    return PairedTransform(
        [
            A.VerticalFlip(p=vertical_flip),
            A.Affine(
                scale=scale,
                translate_percent=(-shift, shift),
                rotate=(-rotate, rotate),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=affine,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.05, contrast_limit=0.1, p=photometric),
            A.RandomGamma(gamma_limit=(85, 115), p=photometric),
        ],
        modalities=modalities,
        seed=seed,
    )
