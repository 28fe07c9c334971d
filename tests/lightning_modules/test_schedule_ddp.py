"""Schedules that do not depend on the GPU count, and the non-finite-loss stop, on real DDP
processes (gloo, CPU).

One process and two processes with the same ``global_batch_size`` take the same optimiser
steps with the same learning rates (one accumulates two batches per step, the other does not).
A NaN loss on one rank stops both ranks before any checkpoint holds the weights it reached.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from repo_paths import CONFIGS
from tiny_runs import TINY_ARCHITECTURE, tiny_run_args

from lightning_modules.artifacts import read_artifact, read_checkpoint

ROOT = CONFIGS.parent
# global batch 4 = 2 pairs x 2 processes, or 2 pairs x 2 accumulated batches on one; the
# learning rate and warm-up are given at a global batch of 2: 2e-3 peak, 2 warm-up steps.
SCHEDULE = [
    "--data.init_args.batch_size",
    "2",
    "--data.init_args.samples_per_epoch",
    "16",
    "--model.init_args.optimizer.global_batch_size",
    "4",
    "--model.init_args.optimizer.reference_batch_size",
    "2",
    "--model.init_args.optimizer.learning_rate",
    "1e-3",
    "--model.init_args.optimizer.warmup_steps",
    "4",
    "--trainer.max_steps",
    "8",
]


def _fit(phantom: Path, root: Path, devices: int) -> None:
    command = [
        sys.executable,
        str(ROOT / "cli.py"),
        "fit",
        "--config",
        str(CONFIGS / "data" / "phantom.yaml"),
        "--config",
        str(CONFIGS / "demo" / "stage1_sm.yaml"),
        *tiny_run_args(phantom, root),
        *SCHEDULE,
        "--trainer.devices",
        str(devices),
        "--trainer.strategy",
        "ddp" if devices > 1 else "auto",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.callbacks+=pytorch_lightning.callbacks.LearningRateMonitor",
        "--trainer.callbacks.logging_interval=step",
        "--trainer.logger",
        "pytorch_lightning.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        str(root),
        "--trainer.logger.name",
        "csv",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=root.parent)
    assert finished.returncode == 0, finished.stderr[-4000:]


def _learning_rates(root: Path) -> list[float]:
    """The learning rate of each optimiser step, in step order."""
    metrics = pd.concat(pd.read_csv(path) for path in root.glob("csv/*/metrics.csv"))
    rates = metrics.dropna(subset=["lr-AdamW"]).drop_duplicates("step")
    return rates.sort_values("step")["lr-AdamW"].tolist()


@pytest.fixture(scope="module")
def one_and_two(tiny_phantom, tmp_path_factory):
    base = tmp_path_factory.mktemp("schedule")
    for devices in (1, 2):
        _fit(tiny_phantom, base / f"devices{devices}", devices)
    return {devices: base / f"devices{devices}" for devices in (1, 2)}


def test_one_and_two_processes_take_the_same_steps_with_the_same_learning_rates(one_and_two):
    one, two = (read_artifact(one_and_two[devices] / "artifact").meta for devices in (1, 2))
    assert one["global_step"] == two["global_step"] == 8
    assert one["trained_steps"] == 16 and two["trained_steps"] == 8  # batches per rank
    for meta, devices in ((one, 1), (two, 2)):
        assert meta["schedule"] == {
            "global_batch_size": 4,
            "batch_size": 2,
            "devices": devices,
            "num_nodes": 1,
            "accumulate_grad_batches": 3 - devices,
            "optimizer_steps": 8,
            "warmup_steps": 2,
            "learning_rate": 2e-3,
            "reference_batch_size": 2,
            "lr_schedule": "cosine",
        }
    rates = _learning_rates(one_and_two[1])
    expected = [1e-3, 2e-3] + [1e-3 * (1 + math.cos(math.pi * step / 6)) for step in range(6)]
    assert rates == pytest.approx(expected, rel=1e-12)
    assert _learning_rates(one_and_two[2]) == rates


NAN_ON_ONE_RANK = """
import json, sys
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from lightning_modules import TeacherDetector


class Batches(torch.utils.data.Dataset):
    # Rank 1's third batch is all NaN; pair ids say rank and batch.
    calls = 0

    def __len__(self):
        return 12

    def __getitem__(self, index):
        Batches.calls += 1
        rank = torch.distributed.get_rank()
        images = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(index))
        if rank == 1 and Batches.calls == 3:
            images = torch.full_like(images, float("nan"))
        name = f"r{rank}b{Batches.calls}"
        return {"pair_id": [f"{name}a", f"{name}b"], "sm": images,
                "sm_boxes": [torch.tensor([[8.0, 8.0, 30.0, 30.0]])] * 2,
                "sm_labels": [torch.tensor([0])] * 2}


torch.manual_seed(0)
model = TeacherDetector(modality="sm", architecture="efficientdet_d0", image_size=(64, 64),
                        architecture_overrides=json.loads(sys.argv[1]))
checkpoints = ModelCheckpoint(dirpath=sys.argv[2], filename="{step}", every_n_train_steps=1,
                              save_top_k=-1)
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=6, logger=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     callbacks=[checkpoints])
trainer.fit(model, torch.utils.data.DataLoader(Batches(), batch_size=None))
"""


def test_a_nan_on_one_rank_stops_both_before_a_checkpoint_holds_it(tmp_path):
    script = tmp_path / "nan_on_one_rank.py"
    script.write_text(NAN_ON_ONE_RANK)
    finished = subprocess.run(
        [sys.executable, str(script), json.dumps(TINY_ARCHITECTURE), str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert finished.returncode != 0
    assert (
        "FloatingPointError: non-finite training loss (nan) at training step 3 (pairs r1b3a, "
        "r1b3b on rank 1); training stopped"
    ) in finished.stderr, finished.stderr[-4000:]
    written = sorted(path.name for path in (tmp_path / "ckpt").glob("*.ckpt"))
    assert written == ["step=1.ckpt", "step=2.ckpt"]
    for name in written:
        state = read_checkpoint(tmp_path / "ckpt" / name)["state_dict"]
        assert all(
            torch.isfinite(value).all() for value in state.values() if value.is_floating_point()
        )


def test_a_global_batch_that_cannot_be_made_is_refused_naming_the_keys(
    tiny_phantom, tmp_path, capsys
):
    import cli

    base = [
        "fit",
        "--config",
        str(CONFIGS / "data" / "phantom.yaml"),
        "--config",
        str(CONFIGS / "demo" / "stage1_sm.yaml"),
        *tiny_run_args(tiny_phantom, tmp_path),
        "--trainer.logger",
        "false",
        "--data.init_args.batch_size",
        "2",
    ]
    assert cli.main([*base, "--model.init_args.optimizer.reference_batch_size", "4"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert lines == [
        "error: model.init_args.optimizer.reference_batch_size: scales the learning rate to "
        "the global batch: set optimizer.global_batch_size too"
    ]
    assert cli.main([*base, "--model.init_args.optimizer.global_batch_size", "5"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and lines[0].endswith(
        "model.init_args.optimizer.global_batch_size 5 must be a multiple of "
        "data.init_args.batch_size 2 x 1 devices x 1 nodes = 2"
    ), lines
