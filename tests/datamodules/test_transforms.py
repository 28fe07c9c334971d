"""Paired augmentation: one draw moves both images and all their boxes identically."""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.transforms import PairedTransform, train_transforms

SIZE = (96, 80)


def _marker_image(rng, box, texture_seed):
    """Texture (different per modality) plus a bright square filling box."""
    image = np.random.default_rng(texture_seed).uniform(0.1, 0.4, SIZE).astype(np.float32)
    x1, y1, x2, y2 = (int(v) for v in box)
    image[y1:y2, x1:x2] = 1.0
    return image


def _centroid(image, level=0.8):
    rows, columns = np.nonzero(image > level)
    return np.array([columns.mean(), rows.mean()])


def test_one_draw_moves_both_images_and_all_boxes_identically():
    transform = train_transforms(["sm", "ffdm"], seed=7, photometric=0.0)
    marker = np.array([30.0, 40.0, 42.0, 52.0], dtype=np.float32)
    moved = 0
    for draw in range(40):
        rng = np.random.default_rng(draw)
        images = {
            "sm": _marker_image(rng, marker, texture_seed=1),
            "ffdm": _marker_image(rng, marker, texture_seed=2),
        }
        # each modality has its own boxes; the marker's box is in both
        boxes = {
            "sm": np.array([marker, [5, 5, 20, 15]], dtype=np.float32),
            "ffdm": np.array([[50, 70, 70, 90], marker], dtype=np.float32),
        }
        labels = {"sm": np.array([1, 0]), "ffdm": np.array([0, 1])}
        out_images, out_boxes, out_labels = transform(images, boxes, labels)

        # the same spatial draw: the marker is at the same place in both images (up to how
        # interpolation mixes its edge with each image's own texture)...
        np.testing.assert_allclose(
            _centroid(out_images["sm"]), _centroid(out_images["ffdm"]), atol=0.5
        )
        # ... and its box (label 1 in both sets) moved to the same place, around the marker
        sm_marker = out_boxes["sm"][out_labels["sm"] == 1]
        ffdm_marker = out_boxes["ffdm"][out_labels["ffdm"] == 1]
        np.testing.assert_allclose(sm_marker, ffdm_marker, atol=1e-4)
        centre = _centroid(out_images["sm"])
        box = sm_marker[0]
        assert box[0] - 1 <= centre[0] <= box[2] + 1 and box[1] - 1 <= centre[1] <= box[3] + 1
        # the other boxes moved by the same map: a box identical in both sets stays identical
        assert out_images["sm"].shape == out_images["ffdm"].shape == SIZE
        assert out_images["sm"].dtype == np.float32
        moved += not np.allclose(box, marker, atol=0.5)
    assert moved >= 10  # the draws are not all the identity


def test_identical_inputs_give_identical_outputs_including_photometric():
    transform = train_transforms(["sm", "ffdm"], seed=3)
    image = _marker_image(None, [10, 10, 20, 20], texture_seed=5)
    boxes = np.array([[10, 10, 20, 20], [60, 70, 75, 90]], dtype=np.float32)
    labels = np.array([0, 1])
    for _ in range(20):
        images, out_boxes, out_labels = transform(
            {"sm": image, "ffdm": image.copy()},
            {"sm": boxes, "ffdm": boxes.copy()},
            {"sm": labels, "ffdm": labels.copy()},
        )
        np.testing.assert_array_equal(images["sm"], images["ffdm"])
        np.testing.assert_array_equal(out_boxes["sm"], out_boxes["ffdm"])
        np.testing.assert_array_equal(out_labels["sm"], out_labels["ffdm"])


def test_labels_follow_their_boxes_when_a_box_is_pushed_out():
    transform = PairedTransform(
        [A.Affine(translate_px={"x": 30, "y": 0}, p=1.0)], modalities=["sm", "ffdm"]
    )
    images = {m: np.zeros(SIZE, np.float32) for m in ("sm", "ffdm")}
    boxes = {
        "sm": np.array([[70, 10, 78, 20], [10, 10, 20, 20]], dtype=np.float32),
        "ffdm": np.array([[10, 50, 20, 60]], dtype=np.float32),
    }
    labels = {"sm": np.array([4, 2]), "ffdm": np.array([3])}
    _, out_boxes, out_labels = transform(images, boxes, labels)
    np.testing.assert_allclose(out_boxes["sm"], [[40, 10, 50, 20]], atol=1e-4)
    assert out_labels["sm"].tolist() == [2] and out_labels["sm"].dtype == np.int64
    np.testing.assert_allclose(out_boxes["ffdm"], [[40, 50, 50, 60]], atol=1e-4)
    assert out_labels["ffdm"].tolist() == [3]


def test_a_single_modality_and_empty_boxes_work():
    transform = PairedTransform([A.VerticalFlip(p=1.0)], modalities=["sm"])
    image = np.zeros(SIZE, np.float32)
    images, boxes, labels = transform(
        {"sm": image}, {"sm": np.array([[5, 10, 15, 30]], np.float32)}, {"sm": np.array([0])}
    )
    np.testing.assert_allclose(boxes["sm"], [[5, 66, 15, 86]], atol=1e-4)  # 96 - 30, 96 - 10
    _, empty, empty_labels = transform({"sm": image}, {"sm": np.zeros((0, 4))}, {"sm": []})
    assert empty["sm"].shape == (0, 4) and empty_labels["sm"].shape == (0,)


class _Draws(Dataset):
    """Item i: the vertical position of a marker after the transform (its draw)."""

    def __init__(self):
        self.transform = train_transforms(["sm"], seed=0, photometric=0.0)
        self.image = np.zeros(SIZE, np.float32)
        self.image[5:15, 5:15] = 1.0

    def __len__(self):
        return 16

    def __getitem__(self, index):
        images, _, _ = self.transform({"sm": self.image}, {"sm": np.zeros((0, 4))}, {"sm": []})
        return torch.tensor(_centroid(images["sm"]))


def test_dataloader_workers_draw_different_augmentations():
    loader = DataLoader(_Draws(), batch_size=8, num_workers=2)  # batch b comes from worker b % 2
    first, second = list(loader)
    assert not torch.allclose(first, second)
