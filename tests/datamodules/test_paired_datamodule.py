"""PairedMammoDataModule and PairedMammoDataset: the batch contract, every evaluation pair
exactly once, only the modalities asked for, boxes in input and original pixels."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from dicom_factory import write_paired_folder
from jsonargparse import ArgumentParser

from datamodules.batch import validate_batch
from datamodules.dicom import Geometry
from datamodules.paired import PairedMammoDataModule
from datamodules.sampler import BalancedDistributedSampler

SIZE = (64, 48)


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paired")
    write_paired_folder(folder, pairs=40, pairs_per_patient=2)
    return folder


def _module(folder, **overrides):
    arguments = dict(manifest=str(folder), image_size=SIZE, batch_size=4, num_workers=0)
    arguments.update(overrides)
    module = PairedMammoDataModule(**arguments)
    module.setup("fit")
    return module


@pytest.mark.parametrize("num_workers", [0, 2])
def test_val_and_test_loaders_yield_every_pair_exactly_once_in_order(data_folder, num_workers):
    module = _module(data_folder, num_workers=num_workers)
    for split, loader in (("val", module.val_dataloader()), ("test", module.test_dataloader())):
        assert loader.persistent_workers == (num_workers > 0)
        seen = [pair_id for batch in loader for pair_id in batch["pair_id"]]
        assert seen == module.tables(split)["pair_id"].tolist()
        assert len(seen) == len(set(seen)) > 0
    assert module.predict_dataloader().dataset is module.dataset("test")
    splits = {s: set(module.tables(s)["pair_id"]) for s in ("train", "val", "test")}
    assert sum(map(len, splits.values())) == 40 and not splits["val"] & splits["test"]


def test_train_batches_follow_the_contract_and_are_balanced(data_folder):
    module = _module(data_folder, samples_per_epoch=40)
    loader = module.train_dataloader()
    assert isinstance(loader.sampler, BalancedDistributedSampler)
    labels = []
    for batch in loader:
        validate_batch(batch, ["sm", "ffdm"])
        for modality in ("sm", "ffdm"):
            images = batch[modality]
            assert images.dtype == torch.float32 and images.shape[1:] == (1, *SIZE)
            assert 0.0 <= images.min() and images.max() <= 1.0
            for boxes, classes, geometry in zip(
                batch[f"{modality}_boxes"],
                batch[f"{modality}_labels"],
                batch[f"{modality}_geometry"],
            ):
                assert boxes.dtype == torch.float32 and classes.dtype == torch.int64
                assert isinstance(geometry, Geometry)
                assert (boxes[:, 2:] <= torch.tensor([SIZE[1], SIZE[0]])).all()
        labels += batch["label"].tolist()
    assert len(labels) == 40 and sum(labels) == 20


def test_an_sm_model_never_opens_ffdm_files(tmp_path):
    write_paired_folder(tmp_path, pairs=8)
    for path in (tmp_path / "images").glob("*_ffdm.dcm"):
        path.write_bytes(b"unreadable")
    module = _module(tmp_path, modalities=["sm"], split_fractions=(0.5, 0.5, 0.0))
    for loader in (module.train_dataloader(), module.val_dataloader()):
        for batch in loader:
            validate_batch(batch, ["sm"])
            assert not [key for key in batch if key.startswith("ffdm")]


def test_boxes_in_input_pixels_and_original_pixels(data_folder):
    module = _module(data_folder, split_fractions=(0.0, 0.0, 1.0))
    dataset = module.dataset("test")
    lesions = module.lesion_table("test")
    checked = 0
    for index in range(len(dataset)):
        sample = dataset[index]
        for modality in ("sm", "ffdm"):
            mine = lesions[(lesions.pair_id == sample["pair_id"]) & (lesions.modality == modality)]
            original = mine[["x1", "y1", "x2", "y2"]].to_numpy(np.float32)
            np.testing.assert_allclose(sample[f"{modality}_boxes_original"], original)
            geometry = sample[f"{modality}_geometry"]
            expected = geometry.to_input(original)
            np.testing.assert_allclose(sample[f"{modality}_boxes"], expected, atol=1e-4)
            assert sample[f"{modality}_labels"].tolist() == [0] * len(original)
            # the lesion's marker is bright where its input box is
            image = sample[modality][0].numpy()
            for x1, y1, x2, y2 in expected:
                centre = image[int((y1 + y2) / 2), int((x1 + x2) / 2)]
                assert centre > 0.9
                checked += 1
        assert sample["label"] == int(len(mine) > 0)
    assert checked > 10


def test_pathology_classes_map_and_drop(data_folder):
    module = _module(
        data_folder, split_fractions=(0.0, 0.0, 1.0), pathology_classes={"malignant": 1}
    )
    dataset = module.dataset("test")
    lesions = module.lesion_table("test")
    counts = Counter()
    for index in range(len(dataset)):
        sample = dataset[index]
        mine = lesions[(lesions.pair_id == sample["pair_id"]) & (lesions.modality == "sm")]
        malignant = int((mine.pathology == "malignant").sum())
        assert sample["sm_labels"].tolist() == [1] * malignant
        assert len(sample["sm_boxes_original"]) == malignant  # the benign ones dropped
        counts[(malignant, len(mine) - malignant)] += 1
    assert counts[(1, 1)] > 0 and counts[(1, 0)] > 0 and counts[(0, 0)] > 0


def test_boxes_outside_the_breast_are_clipped_or_dropped_but_kept_in_original(tmp_path):
    manifest, lesions = write_paired_folder(tmp_path, pairs=1, positive_every=1)
    width = 96
    # inside the image (a box past its edge is refused by setup) but outside the breast
    lesions.loc[len(lesions)] = ["p0000", "sm", width - 8, 2, width, 10, "malignant"]
    lesions.to_csv(tmp_path / "lesions.csv", index=False)
    module = _module(tmp_path, split_fractions=(0.0, 0.0, 1.0))
    sample = module.dataset("test")[0]
    assert len(sample["sm_boxes_original"]) == 3  # malignant, benign and the one outside
    assert len(sample["sm_boxes"]) == 2  # outside the cropped breast: vanished


def test_a_data_folder_and_config_keys(data_folder):
    module = _module(data_folder, hit_min_distance=12.5)
    assert module.hit_min_distance == 12.5
    assert module.summary.pairs_kept == 40
    table = module.tables("test")
    assert {"pair_id", "patient_id", "laterality", "view", "split"} <= set(table.columns)
    parser = ArgumentParser()
    parser.add_class_arguments(PairedMammoDataModule, "data")
    config = parser.parse_args(
        [
            "--data.manifest",
            str(data_folder),
            "--data.image_size",
            "[64, 48]",
            "--data.modalities",
            "[sm]",
            "--data.pathology_classes",
            '{"malignant": 0}',
        ]
    )
    built = PairedMammoDataModule(**config.data.as_dict())
    assert built.image_size == SIZE and built.modalities == ("sm",)
    assert built.pathology_classes == {"malignant": 0}
