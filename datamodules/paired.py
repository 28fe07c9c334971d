"""PairedMammoDataModule: the manifest's pairs as train/val/test/predict loaders.

Training draws balanced epochs (`BalancedDistributedSampler`) with paired augmentation;
validation, test and prediction read every pair of their split exactly once, in manifest
order, without augmentation. Under DDP Lightning gives those loaders a DistributedSampler,
which pads with repeats; the metric removes duplicates by pair id.

``setup`` checks the images and boxes before the first step (`setup_check`: every image
decoded or its cache entry read, every box followed through what training does to it) and
fails with every problem of the stage's splits at once; with ``on_bad_sample="skip"`` it leaves
those pairs out instead, and the data set skips a pair that still fails to read later. Each
skipped pair is logged with its reason and counted in ``summary.skipped``; warnings (boxes lost
to the crop, ...) are logged. The check runs once per manifest, lesion table, cache and
settings: under DDP on rank 0 alone, every rank receiving its report (so all ranks leave out
the same pairs), and its report is kept in ``check_dir`` for the next stage, resume or
assessment of the same data. That check is the data module's mixin `DataCheckMixin`
(``paired_check.py``).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from typing import Literal

import cv2
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from common.defaults import HIT_MIN_DISTANCE, IMAGE_SIZE, MODALITIES, SPLIT_FRACTIONS
from datamodules.batch import collate_pairs
from datamodules.dataset import SKIPPED_PAIRS, PairedMammoDataset
from datamodules.dicom import DEFAULT_MARGIN
from datamodules.manifest import SPLITS, LoadSummary, load_tables
from datamodules.paired_check import DataCheckMixin
from datamodules.preflight import CheckReport
from datamodules.sampler import BalancedDistributedSampler
from datamodules.transforms import train_transforms

logger = logging.getLogger(__name__)


class PairedMammoDataModule(DataCheckMixin, pl.LightningDataModule):
    """Paired FFDM-SM data from a manifest and lesion table.

    Args:
        manifest: manifest file (CSV/Parquet), or a folder holding ``manifest.csv``.
        lesions: lesion table; default ``lesions.csv`` beside the manifest.
        cache_dir: an image cache made by ``python cli.py prepare`` for this image size and
            window; images missing from it are read from their DICOMs.
        image_size: (H, W) of the model's input.
        modalities: which images to read ("sm", "ffdm"); a Stage I SM model lists only "sm".
        batch_size: pairs per batch.
        num_workers: DataLoader worker processes (persistent when > 0); None: what this
            process's CPUs allow (`default_workers`).
        seed: seeds the patient split, and (unless ``train_seed`` is set) the balanced sampler
            and the augmentation.
        train_seed: seeds the balanced sampler and the augmentation alone, so that training
            seeds vary what training sees while the split stays fixed (default: ``seed``).
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
        on_bad_sample: "error": ``setup`` fails, naming every file that cannot be read and
            every box outside its image; "skip": those pairs are left out, as is a pair whose
            image fails to read during the run, each logged with its reason and counted in
            ``summary.skipped`` (pair id -> reason) and ``summary.pairs_skipped``.
        check_dir: where the data check's result is kept (one JSON file per manifest, lesion
            table, cache and modalities); None: nowhere. ``cli.py`` runs keep it in
            ``<run folder>/data_checks``; ``cli.py pipeline`` gives every stage
            ``<pipeline run>/data_checks``.
    """

    def __init__(
        self,
        manifest: str,
        lesions: str | None = None,
        cache_dir: str | None = None,
        image_size: tuple[int, int] = IMAGE_SIZE,
        modalities: Sequence[str] = MODALITIES,
        batch_size: int = 8,
        num_workers: int | None = None,
        seed: int = 0,
        augment: bool = True,
        pathology_classes: dict[str, int] | None = None,
        window: Literal["dicom", "minmax"] = "dicom",
        samples_per_epoch: int | None = None,
        split_fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
        hit_min_distance: float = HIT_MIN_DISTANCE,
        margin: float = DEFAULT_MARGIN,
        predict_split: Literal["train", "val", "test", "all"] = "test",
        on_bad_sample: Literal["error", "skip"] = "error",
        train_seed: int | None = None,
        check_dir: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.manifest = manifest
        self.lesions = lesions
        self.cache_dir = cache_dir
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.modalities = tuple(modalities)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_seed = seed if train_seed is None else train_seed
        self.augment = augment
        self.pathology_classes = dict(pathology_classes) if pathology_classes else None
        self.window = window
        self.samples_per_epoch = samples_per_epoch
        self.split_fractions = tuple(split_fractions)
        self.hit_min_distance = float(hit_min_distance)
        self.margin = margin
        self.predict_split = predict_split
        if on_bad_sample not in ("error", "skip"):
            raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample
        self.check_dir = check_dir
        self._manifest: pd.DataFrame | None = None
        self._lesions: pd.DataFrame | None = None
        self.summary: LoadSummary | None = None
        self._datasets: dict[str, PairedMammoDataset] = {}
        self._checked: set[str] = set()
        self._report: CheckReport | None = None  # the whole manifest's, once
        self._resume: dict[str, int] | None = None  # from a checkpoint (`load_state_dict`)

    def setup(self, stage: str | None = None) -> None:
        """Read the tables (once), then check the files of the splits the stage reads."""
        if self._manifest is None:
            self._manifest, self._lesions, self.summary = load_tables(
                self.manifest,
                self.lesions,
                seed=self.seed,
                fractions=self.split_fractions,
                row_numbers=True,
            )
            logger.info("%s: %s", self.manifest, self.summary)
        if stage is not None:
            self._check(self._stage_splits(stage))

    def _stage_splits(self, stage: str) -> tuple[str, ...]:
        if stage == "predict":
            return SPLITS if self.predict_split == "all" else (self.predict_split,)
        # fit checks the test split too: the stage's assessment reads it right after training,
        # and a broken test image found then would have cost the whole fit
        return {"fit": SPLITS, "validate": ("val",), "test": ("test",)}.get(stage, ())

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Count the pairs the data set skipped in its workers (``on_bad_sample="skip"``),
        which come in the batch, and take them out of it."""
        if isinstance(batch, dict) and SKIPPED_PAIRS in batch:
            for skipped in batch.pop(SKIPPED_PAIRS):
                for pair_id, reason in skipped:
                    if self.summary is not None and pair_id not in self.summary.skipped:
                        self.summary.skipped[pair_id] = reason
        return batch

    def teardown(self, stage: str) -> None:
        if self.summary is not None and self.summary.skipped:
            logger.warning(
                "%s: %d pair(s) skipped (on_bad_sample=skip): %s",
                self.manifest,
                self.summary.pairs_skipped,
                ", ".join(self.summary.skipped),
            )

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
        """The data set of a split; the training one augments when ``augment`` is set. Its
        files are checked first (as `setup` does) if they were not yet."""
        if split not in self._datasets:
            self.setup()
            self._check(SPLITS if split == "all" else (split,))
            transform = None
            if split == "train" and self.augment:
                transform = train_transforms(self.modalities, seed=self.train_seed)
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
                on_bad_sample=self.on_bad_sample,
            )
        return self._datasets[split]

    def workers(self) -> int:
        """``num_workers``, or by default what this process's CPUs allow."""
        if self.num_workers is not None:
            return int(self.num_workers)
        return default_workers(self.trainer.num_devices if self.trainer is not None else 1)

    def _loader(self, dataset, batch_size: int, sampler=None) -> DataLoader:
        workers = self.workers()
        if workers > 0:
            # One OpenCV thread in each loader worker (they share the CPUs), set here, before
            # they fork: set inside a forked worker (worker_init_fn) after this process used
            # OpenCV's thread pool, it deadlocked (3 of 6 runs, opencv 5.1, pthreads).
            cv2.setNumThreads(1)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            collate_fn=collate_pairs,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        if len(dataset) == 0:
            raise ValueError(f"{self.manifest}: the training split has no pairs")
        # Each draw carries its augmentation seed: an epoch augments the same whatever the
        # number of workers or ranks, and a resumed run repeats it exactly.
        sampler = BalancedDistributedSampler(
            dataset.labels,
            num_samples=self.samples_per_epoch,
            seed=self.train_seed,
            with_seeds=True,
        )
        if self._resume:
            # Set now: Lightning starts the loader's workers before it sets a resumed epoch.
            sampler.set_epoch(self._resume["train_epoch"])
            sampler.resume(
                self._resume["train_epoch"], self._resume["train_batches"] * self.batch_size
            )
            self._resume = None
            # Lightning warns that a plain DataLoader resumed mid-epoch repeats batches; this
            # one does not (the sampler skips them).
            warnings.filterwarnings(
                "ignore",
                message="You're resuming from a checkpoint that ended before the epoch ended",
            )
        return self._loader(dataset, self.batch_size, sampler)

    def state_dict(self) -> dict[str, int]:
        """Where the fit's training epoch stands (Lightning keeps it in each checkpoint): a fit
        resumed from a checkpoint taken mid-epoch goes on with the batches it had not trained
        on, as the uninterrupted fit would."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        epochs = trainer.fit_loop.epoch_progress.current
        # The epoch Lightning iterates next (it sets the sampler's epoch to this count) and the
        # batches of it already trained: none when the checkpoint is taken at an epoch's end.
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        within = epochs.processed < epochs.started
        return {
            "train_epoch": int(epochs.processed),
            "train_batches": int(batches) if within else 0,
        }

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume = dict(state_dict) if state_dict else None

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.predict_split), self.batch_size)


def default_workers(local_processes: int = 1) -> int:
    """Loader workers for one training process: its CPUs less one (for itself). Inside an srun
    step each task is one process with ``SLURM_CPUS_PER_TASK`` CPUs; elsewhere the CPUs this
    process may run on (``os.sched_getaffinity``) are shared by the ``local_processes``."""
    per_task = os.environ.get("SLURM_CPUS_PER_TASK")
    if per_task and "SLURM_STEP_ID" in os.environ:
        cpus = int(per_task)
    else:
        cpus = len(os.sched_getaffinity(0)) // max(1, int(local_processes))
    return max(0, cpus - 1)
