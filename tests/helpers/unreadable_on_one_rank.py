"""One rank of a two-process (gloo, CPU) fit in which each rank's file system fails to read one
DICOM the other rank reads: rank 0 cannot read file A while the data check runs, rank 1 cannot
read file B while it trains (as a flaky mount shows one node). Run by
tests/datamodules/test_data_check_ddp.py as two processes (``LOCAL_RANK`` 0 and 1); writes what
the rank trained on to ``<out>/rank<r>.json``.

    python tests/helpers/unreadable_on_one_rank.py PHANTOM OUT FILE_A FILE_B
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytorch_lightning as pl  # noqa: E402
from tiny_runs import TINY_ARCHITECTURE  # noqa: E402

from datamodules import PairedMammoDataModule  # noqa: E402
from lightning_modules import TeacherDetector  # noqa: E402
from lightning_modules.settings import EvaluationSettings, OptimizerSettings

RANK = int(os.environ["LOCAL_RANK"])
_open = builtins.open


def main(phantom: str, out: str, file_a: str, file_b: str) -> None:
    unreadable = Path(file_a if RANK == 0 else file_b).resolve()

    def failing_open(file, *args, **kwargs):
        if isinstance(file, str | os.PathLike) and Path(file).resolve() == unreadable:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(file))
        return _open(file, *args, **kwargs)

    builtins.open = failing_open
    data = PairedMammoDataModule(
        manifest=phantom,
        image_size=(128, 128),
        modalities=["sm"],
        batch_size=2,
        num_workers=0,
        samples_per_epoch=12,
        augment=False,
        on_bad_sample="skip",
        check_dir=out,
    )
    model = TeacherDetector(
        modality="sm",
        architecture="efficientdet_d0",
        image_size=(128, 128),
        architecture_overrides=TINY_ARCHITECTURE,
        evaluation=EvaluationSettings(fauc_n_boot=0),
        optimizer=OptimizerSettings(lr_schedule="constant"),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=out,
    )
    trainer.fit(model, datamodule=data)
    report = {
        "rank": trainer.global_rank,
        "train_pairs": sorted(data.tables("train")["pair_id"]),
        "val_pairs": sorted(data.tables("val")["pair_id"]),
        "train_batches": trainer.num_training_batches,
        "val_batches": trainer.num_val_batches,
        "global_step": trainer.global_step,
        "skipped": sorted(data.summary.skipped),
    }
    Path(out, f"rank{RANK}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:5])
