"""PairedMammoDataModule: the manifest's pairs as train/val/test/predict loaders.

Training draws balanced epochs (`BalancedDistributedSampler`) with paired augmentation;
validation, test and prediction read every pair of their split exactly once, in manifest
order, without augmentation. Under DDP Lightning gives those loaders a DistributedSampler,
which pads with repeats; the metric removes duplicates by pair id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from datamodules.batch import collate_pairs
from datamodules.dataset import PairedMammoDataset
from datamodules.dicom import DEFAULT_MARGIN
from datamodules.manifest import DEFAULT_FRACTIONS, SPLITS, LoadSummary, load_tables
from datamodules.sampler import BalancedDistributedSampler
from datamodules.transforms import train_transforms

logger = logging.getLogger(__name__)


class PairedMammoDataModule(pl.LightningDataModule):
    """Paired FFDM-SM data from a manifest and lesion table.

    Args:
        manifest: manifest file (CSV/Parquet), or a folder holding ``manifest.csv``.
        lesions: lesion table; default ``lesions.csv`` beside the manifest.
        cache_dir: an image cache made by ``python cli.py prepare`` for this image size and
            window; images missing from it are read from their DICOMs.
        image_size: (H, W) of the model's input.
        modalities: which images to read ("sm", "ffdm"); a Stage I SM model lists only "sm".
        batch_size: pairs per batch.
        num_workers: DataLoader worker processes (persistent when > 0).
        seed: seeds the patient split, the balanced sampler and the augmentation.
        augment: paired augmentation of the training pairs.
        pathology_classes: None: every lesion is class 0; else pathology -> class index, and
            lesions of other pathologies are dropped.
        window: "dicom" (the file's VOI LUT/window, else min-max) or "minmax".
        samples_per_epoch: pairs per training epoch (default: the training split's size).
        split_fractions: train/val/test fractions of the patients without a given split.
        hit_min_distance: the FROC hit rule's floor in original pixels (100 in the paper; it
            depends on the pixel size, so it belongs to the data). Stored for the models.
        margin: breast crop margin, a fraction of the image's longer side.
        predict_split: the split the predict loader reads ("train", "val", "test" or "all").
    """

    def __init__(
        self,
        manifest: str,
        lesions: str | None = None,
        cache_dir: str | None = None,
        image_size: tuple[int, int] = (1280, 1024),
        modalities: Sequence[str] = ("sm", "ffdm"),
        batch_size: int = 8,
        num_workers: int = 4,
        seed: int = 0,
        augment: bool = True,
        pathology_classes: dict[str, int] | None = None,
        window: Literal["dicom", "minmax"] = "dicom",
        samples_per_epoch: int | None = None,
        split_fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
        hit_min_distance: float = 100.0,
        margin: float = DEFAULT_MARGIN,
        predict_split: Literal["train", "val", "test", "all"] = "test",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.manifest = manifest
        self.lesions = lesions
        self.cache_dir = cache_dir
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.modalities = tuple(modalities)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.augment = augment
        self.pathology_classes = dict(pathology_classes) if pathology_classes else None
        self.window = window
        self.samples_per_epoch = samples_per_epoch
        self.split_fractions = tuple(split_fractions)
        self.hit_min_distance = float(hit_min_distance)
        self.margin = margin
        self.predict_split = predict_split
        self._manifest: pd.DataFrame | None = None
        self._lesions: pd.DataFrame | None = None
        self.summary: LoadSummary | None = None
        self._datasets: dict[str, PairedMammoDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self._manifest is None:
            self._manifest, self._lesions, self.summary = load_tables(
                self.manifest, self.lesions, seed=self.seed, fractions=self.split_fractions
            )
            logger.info("%s: %s", self.manifest, self.summary)

    def tables(self, split: str = "all") -> pd.DataFrame:
        """The manifest rows of one split ("train", "val", "test") or of all kept pairs, with
        every manifest column (for reports that look up per-pair metadata)."""
        self.setup()
        if split == "all":
            return self._manifest
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or 'all', got {split!r}")
        return self._manifest[self._manifest["split"] == split].reset_index(drop=True)

    def lesion_table(self, split: str = "all") -> pd.DataFrame:
        """The lesion rows of the pairs of one split (or of all kept pairs)."""
        self.setup()
        pair_ids = set(self.tables(split)["pair_id"])
        return self._lesions[self._lesions["pair_id"].isin(pair_ids)].reset_index(drop=True)

    def dataset(self, split: str) -> PairedMammoDataset:
        """The data set of a split; the training one augments when ``augment`` is set."""
        if split not in self._datasets:
            transform = None
            if split == "train" and self.augment:
                transform = train_transforms(self.modalities, seed=self.seed)
            self._datasets[split] = PairedMammoDataset(
                self.tables(split),
                self.lesion_table(split),
                self.image_size,
                modalities=self.modalities,
                cache_dir=self.cache_dir,
                window=self.window,
                margin=self.margin,
                transform=transform,
                pathology_classes=self.pathology_classes,
            )
        return self._datasets[split]

    def _loader(self, dataset, batch_size: int, sampler=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_pairs,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        if len(dataset) == 0:
            raise ValueError(f"{self.manifest}: the training split has no pairs")
        sampler = BalancedDistributedSampler(
            dataset.labels, num_samples=self.samples_per_epoch, seed=self.seed
        )
        return self._loader(dataset, self.batch_size, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.predict_split), self.batch_size)
