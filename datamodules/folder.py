"""SMFolderDataModule: every SM DICOM file under a folder, for ``predict`` with no manifest, no
FFDM and no lesions: what a trained fused model meets in use.

    python cli.py predict --config configs/stage3_fused.yaml --data configs/data/sm_folder.yaml \\
        --data.init_args.sm_dir DIR --ckpt_path runs/stage3/artifact [--overlays]

DICOM files are found by their content (the ``DICM`` mark at byte 128), whatever their names;
the count of files read and skipped is printed. Before anything is predicted, each file's
header is read and a file the model cannot read is refused, every one named: a DICOM whose
Modality is not MG, one whose tags say it is not an SM (an FFDM: ImageType ORIGINAL\\PRIMARY;
a tomosynthesis slice; see `datamodules.dicom.image_kind`), a multi-frame or colour image, a
truncated file. ``allow_modality_mismatch`` (``cli.py predict --allow-modality-mismatch``)
predicts the first two kinds anyway, with a warning for each.

Each file is read like training data (modality LUT, window, MONOCHROME1 inverted, the right
breast flipped by its DICOM laterality, cropped to the breast, resized) and its ``Geometry``
maps the detections back to the file's own pixels. The image id is the file's path relative
to ``sm_dir``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from common.defaults import HIT_MIN_DISTANCE, IMAGE_SIZE
from common.problems import NOT_AN_SM, Problem, format_problems
from datamodules.batch import PAIR_ID, collate_pairs, geometry_key
from datamodules.dicom import DEFAULT_MARGIN, image_kind, load_image

logger = logging.getLogger(__name__)
DICOM_MARK = b"DICM"  # at byte 128, after the preamble (DICOM PS3.10, 7.1)
SHOWN = 10  # skipped file names printed


class SMFolderDataset(Dataset):
    """One item per DICOM file: ``pair_id`` (the relative path), ``sm`` [1, H, W], ``sm_geometry``
    and ``sm_path`` (the file, for overlays)."""

    def __init__(
        self,
        root: str | os.PathLike,
        files: list[Path],
        image_size: tuple[int, int],
        window: str = "dicom",
        margin: float = DEFAULT_MARGIN,
    ):
        self.root = Path(root)
        self.files = [str(file) for file in files]
        self.image_size = image_size
        self.window, self.margin = window, margin

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        image, geometry = load_image(path, self.image_size, window=self.window, margin=self.margin)
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
        pattern: glob for the files under it (default every file; DICOMs are found by their
            content, not their names).
        image_size: the model's input (H, W), linked to the model by the CLI.
        batch_size, num_workers: the loader's.
        window: "dicom" (the file's VOI LUT/window, else min-max) or "minmax".
        margin: breast crop margin, a fraction of the longer side.
        hit_min_distance: the FROC hit rule's floor the model is given (unused in predict).
        modalities: what the stage config asks the data for; it must be ``["sm"]`` alone
            (a model that reads the FFDM, BASE_UB, cannot predict from an SM folder).
        samples_per_epoch: a training setting some stage configs carry; unused here.
        allow_modality_mismatch: predict files whose tags say they are not SMs (or not MG)
            anyway, each with a warning, instead of refusing them.
    """

    def __init__(
        self,
        sm_dir: str,
        pattern: str = "**/*",
        image_size: tuple[int, int] = IMAGE_SIZE,
        batch_size: int = 8,
        num_workers: int = 4,
        window: Literal["dicom", "minmax"] = "dicom",
        margin: float = DEFAULT_MARGIN,
        hit_min_distance: float = HIT_MIN_DISTANCE,
        modalities: Sequence[str] = ("sm",),
        samples_per_epoch: int | None = None,
        allow_modality_mismatch: bool = False,
    ):
        super().__init__()
        if list(modalities) != ["sm"]:
            raise ValueError(
                f"an SM folder holds SM images only, and this stage reads "
                f"{list(modalities)}: BASE_UB needs each SM's paired FFDM (use a "
                f"manifest and PairedMammoDataModule)"
            )
        self.save_hyperparameters()
        self.sm_dir = Path(sm_dir)
        self.pattern = pattern
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.batch_size, self.num_workers = batch_size, num_workers
        self.window, self.margin = window, margin
        self.hit_min_distance = float(hit_min_distance)
        self.allow_modality_mismatch = bool(allow_modality_mismatch)
        self.skipped: list[str] = []  # files under sm_dir that are not DICOM, by setup
        self._dataset: SMFolderDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if stage not in (None, "predict"):
            raise ValueError(
                f"SMFolderDataModule holds no labels: it serves `predict` only, not {stage!r}"
            )
        if self._dataset is None:
            if not self.sm_dir.is_dir():
                raise FileNotFoundError(f"sm_dir {self.sm_dir} is not a folder")
            files = sorted(path for path in self.sm_dir.glob(self.pattern) if path.is_file())
            found = {path: _is_dicom(path) for path in files}
            dicoms = [path for path in files if found[path]]
            skipped = [
                path.relative_to(self.sm_dir).as_posix() for path in files if not found[path]
            ]
            self.skipped = skipped
            shown = ", ".join(skipped[:SHOWN]) + (", ..." if len(skipped) > SHOWN else "")
            report = (
                f"predict: {len(files)} file(s) match {self.pattern!r} under "
                f"{self.sm_dir}: {len(dicoms)} DICOM file(s) to read, {len(skipped)} "
                f"skipped (no 'DICM' mark at byte 128: not DICOM)"
                + (f": {shown}" if skipped else "")
            )
            rank_zero_info(report)
            if not dicoms:
                raise FileNotFoundError(f"no DICOM file under {self.sm_dir} ({report})")
            self._refuse(dicoms)
            self._dataset = SMFolderDataset(
                self.sm_dir, dicoms, self.image_size, self.window, self.margin
            )

    def _refuse(self, files: list[Path]) -> None:
        """Refuse, naming each, the files the model cannot read (see the module's docstring);
        with ``allow_modality_mismatch`` the other modalities are a warning each."""
        from datamodules.preflight import (
            EXPECTED_MODALITY,
            ImageProblem,
            read_header,
            structure_problems,
        )

        refused, allowed = [], []
        for path in files:
            try:
                dataset = read_header(path)
            except ImageProblem as problem:
                refused.append(Problem(str(path), None, None, problem.reason, problem.kind))
                continue
            refused += [
                Problem(str(path), None, None, reason, kind)
                for kind, reason in structure_problems(dataset)
            ]
            mismatch = []
            modality = str(dataset.get("Modality", "") or "").strip().upper()
            if modality and modality != EXPECTED_MODALITY:
                mismatch.append(
                    f"its Modality is {modality}, not {EXPECTED_MODALITY} (mammography)"
                )
            kind, why = image_kind(dataset)
            if kind not in (None, "sm"):
                shown = "an FFDM" if kind == "ffdm" else f"a {kind} image"
                mismatch.append(f"its tags say it is {shown} ({why}), not an SM")
            if mismatch:
                problem = Problem(
                    str(path),
                    None,
                    None,
                    "; ".join(mismatch) + ": this model reads synthesized 2D mammograms (SM)",
                    NOT_AN_SM,
                )
                (allowed if self.allow_modality_mismatch else refused).append(problem)
        for problem in allowed:
            logger.warning(
                "allow_modality_mismatch: predicting %s although %s", problem.file, problem.reason
            )
        if refused:
            hint = (
                ""
                if self.allow_modality_mismatch
                else "\nRemove them, or predict them "
                "anyway with --allow-modality-mismatch (other modalities only)"
            )
            raise ValueError(
                format_problems(
                    refused,
                    f"the SM folder {self.sm_dir}: files this model cannot read",
                    rows_note=False,
                )
                + hint
            )

    def predict_dataloader(self) -> DataLoader:
        self.setup("predict")
        return DataLoader(
            self._dataset,
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_pairs,
            persistent_workers=self.num_workers > 0,
        )


def _is_dicom(path: Path) -> bool:
    """A DICOM file by its content: the ``DICM`` mark after the 128-byte preamble."""
    try:
        with open(path, "rb") as stream:
            stream.seek(128)
            return stream.read(4) == DICOM_MARK
    except OSError:
        return False
