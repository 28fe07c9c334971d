"""SMFolderDataModule: every SM DICOM file under a folder, for ``predict`` with no manifest, no
FFDM and no lesions: what a trained fused model meets in use.

    python cli.py predict --config configs/stage3_fused.yaml --data configs/data/sm_folder.yaml \\
        --data.init_args.sm_dir DIR --ckpt_path runs/stage3/artifact [--overlays]

Each file is read like training data (modality LUT, window, MONOCHROME1 inverted, the right
breast flipped by its DICOM laterality, cropped to the breast, resized) and its ``Geometry``
maps the detections back to the file's own pixels. The image id is the file's path relative
to ``sm_dir``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.batch import PAIR_ID, collate_pairs, geometry_key
from datamodules.dicom import DEFAULT_MARGIN, load_image


class SMFolderDataset(Dataset):
    """One item per DICOM file: ``pair_id`` (the relative path), ``sm`` [1, H, W], ``sm_geometry``
    and ``sm_path`` (the file, for overlays)."""

    def __init__(self, root: str | os.PathLike, files: list[Path], image_size: tuple[int, int],
                 window: str = "dicom", margin: float = DEFAULT_MARGIN):
        self.root = Path(root)
        self.files = [str(file) for file in files]
        self.image_size = image_size
        self.window, self.margin = window, margin

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        image, geometry = load_image(path, self.image_size, window=self.window,
                                     margin=self.margin)
        return {
            PAIR_ID: Path(path).relative_to(self.root).as_posix(),
            "sm": torch.from_numpy(image.copy())[None],
            geometry_key("sm"): geometry,
            "sm_path": path,
        }


class SMFolderDataModule(pl.LightningDataModule):
    """SM DICOM files under ``sm_dir`` (recursively; ``pattern`` chooses them), predict only.

    Args:
        sm_dir: the folder.
        pattern: glob for the files under it (default every ``*.dcm``).
        image_size: the model's input (H, W), linked to the model by the CLI.
        batch_size, num_workers: the loader's.
        window: "dicom" (the file's VOI LUT/window, else min-max) or "minmax".
        margin: breast crop margin, a fraction of the longer side.
        hit_min_distance: the FROC hit rule's floor the model is given (unused in predict).
        modalities: what the stage config asks the data for; it must be ``["sm"]`` alone
            (a model that reads the FFDM, BASE_UB, cannot predict from an SM folder).
        samples_per_epoch: a training setting some stage configs carry; unused here.
    """

    def __init__(self, sm_dir: str, pattern: str = "**/*.dcm",
                 image_size: tuple[int, int] = (1280, 1024), batch_size: int = 8,
                 num_workers: int = 4, window: Literal["dicom", "minmax"] = "dicom",
                 margin: float = DEFAULT_MARGIN, hit_min_distance: float = 100.0,
                 modalities: Sequence[str] = ("sm",), samples_per_epoch: int | None = None):
        super().__init__()
        if list(modalities) != ["sm"]:
            raise ValueError(f"an SM folder holds SM images only, and this stage reads "
                             f"{list(modalities)}: BASE_UB needs each SM's paired FFDM (use a "
                             f"manifest and PairedMammoDataModule)")
        self.save_hyperparameters()
        self.sm_dir = Path(sm_dir)
        self.pattern = pattern
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.batch_size, self.num_workers = batch_size, num_workers
        self.window, self.margin = window, margin
        self.hit_min_distance = float(hit_min_distance)
        self._dataset: SMFolderDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if stage not in (None, "predict"):
            raise ValueError(f"SMFolderDataModule holds no labels: it serves `predict` only, "
                             f"not {stage!r}")
        if self._dataset is None:
            if not self.sm_dir.is_dir():
                raise FileNotFoundError(f"sm_dir {self.sm_dir} is not a folder")
            files = sorted(path for path in self.sm_dir.glob(self.pattern) if path.is_file())
            if not files:
                raise FileNotFoundError(f"no files match {self.pattern!r} under {self.sm_dir}")
            self._dataset = SMFolderDataset(self.sm_dir, files, self.image_size, self.window,
                                            self.margin)

    def predict_dataloader(self) -> DataLoader:
        self.setup("predict")
        return DataLoader(self._dataset, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, collate_fn=collate_pairs,
                          persistent_workers=self.num_workers > 0)
