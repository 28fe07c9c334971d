"""The data check runs once, on rank 0, and every rank receives its result: in a real
two-process fit where each rank's file system fails to read a file the other reads, both ranks
leave out the same pairs, run as many batches and finish. The result is kept for the next run
of the same data, and is checked again when the data change."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from repo_paths import REPO_ROOT

from datamodules import PairedMammoDataModule
from datamodules.manifest import load_tables
from datamodules.paired import default_workers

SCRIPT = REPO_ROOT / "tests" / "helpers" / "unreadable_on_one_rank.py"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_file_one_rank_cannot_read_leaves_the_ranks_in_agreement(tiny_phantom, tmp_path):
    manifest, _, _ = load_tables(tiny_phantom)
    file_a = manifest[manifest["split"] == "train"]["sm_path"].iloc[0]  # rank 0 fails: check
    pair_a = manifest[manifest["split"] == "train"]["pair_id"].iloc[0]
    file_b = manifest[manifest["split"] == "val"]["sm_path"].iloc[1]  # rank 1 reads val item 1
    pair_b = manifest[manifest["split"] == "val"]["pair_id"].iloc[1]
    environment = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": "2",
        "NODE_RANK": "0",
    }
    ranks = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), str(tiny_phantom), str(tmp_path), file_a, file_b],
            env={**environment, "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = []
    try:
        for process in ranks:
            outputs.append(process.communicate(timeout=600)[0])
    finally:
        for process in ranks:
            process.kill()
    assert [process.returncode for process in ranks] == [0, 0], outputs[0][-3000:]
    zero, one = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1))
    for key in ("train_pairs", "val_pairs", "train_batches", "val_batches", "global_step"):
        assert zero[key] == one[key], key
    assert pair_a not in zero["train_pairs"]  # found by rank 0's check, left out by both
    assert pair_a in zero["skipped"] and pair_a in one["skipped"]
    assert pair_b in one["skipped"] and pair_b not in zero["skipped"]  # read on rank 1 only
    assert pair_b in one["val_pairs"]  # the check (rank 0) could read it: not left out
    kept = list(tmp_path.glob("check-*.json"))
    assert len(kept) == 1
    assert [problem["pair_id"] for problem in json.loads(kept[0].read_text())["problems"]] == [
        pair_a
    ]


def _module(folder: Path, **extra) -> PairedMammoDataModule:
    return PairedMammoDataModule(
        manifest=str(folder),
        image_size=(128, 128),
        modalities=["sm"],
        num_workers=0,
        on_bad_sample="skip",
        **extra,
    )


def test_the_check_result_is_kept_and_used_until_the_data_change(tiny_phantom, tmp_path):
    checks = tmp_path / "checks"
    first = _module(tiny_phantom, check_dir=str(checks))
    first.setup("fit")
    assert first.summary.pairs_skipped == 0
    (path,) = checks.glob("check-*.json")
    kept = json.loads(path.read_text())
    pair = first.tables("train")["pair_id"].iloc[0]
    kept["problems"] = [
        {
            "file": "manifest.csv",
            "row": 2,
            "column": "sm_path",
            "reason": "written into the kept result",
            "kind": "test",
            "pair_id": pair,
            "path": None,
        }
    ]
    path.write_text(json.dumps(kept))
    again = _module(tiny_phantom, check_dir=str(checks))
    again.setup("fit")  # the same data: the kept result, not a new check
    assert pair in again.summary.skipped and pair not in set(again.tables()["pair_id"])
    # a changed lesion table is other data: checked again (a copy of the folder, one box moved)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "manifest.csv").write_text(
        (tiny_phantom / "manifest.csv").read_text().replace("images/", f"{tiny_phantom}/images/")
    )
    lesions = pd.read_csv(tiny_phantom / "lesions.csv")
    lesions.loc[0, "x1"] += 1
    lesions.to_csv(copy / "lesions.csv", index=False)
    changed = _module(copy, check_dir=str(checks))
    changed.setup("fit")
    assert changed.summary.pairs_skipped == 0 and len(list(checks.glob("check-*.json"))) == 2


def test_loader_workers_default_to_the_task_cpus(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    assert default_workers(local_processes=4) == 5  # srun: each task is one process
    monkeypatch.delenv("SLURM_STEP_ID")
    cpus = len(os.sched_getaffinity(0))
    assert default_workers(local_processes=1) == max(0, cpus - 1)
    assert default_workers(local_processes=cpus) == 0


@pytest.mark.parametrize("workers", [None, 0])
def test_the_loader_uses_the_default_workers(tiny_phantom, workers):
    module = _module(tiny_phantom, batch_size=2)
    module.num_workers = workers
    module.setup("fit")
    expected = default_workers() if workers is None else 0
    assert module.val_dataloader().num_workers == expected
