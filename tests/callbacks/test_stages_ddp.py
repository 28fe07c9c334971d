"""Stage I -> hand-off -> Stage II -> hand-off -> Stage III on two real DDP processes (gloo, CPU).

Each stage is a real ``cli.py fit --trainer.devices 2 --trainer.strategy ddp`` (with DDP's
default ``find_unused_parameters=False``: the frozen parts are frozen before the wrap). The
hand-off journal each run writes says which rank wrote and received which artifact, which
inputs each rank loaded and the digest of each rank's final weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from repo_paths import CONFIGS
from tiny_runs import tiny_run_args

from lightning_modules.artifacts import read_artifact

STAGES = {
    "stage1_sm": ("demo/stage1_sm.yaml", {}),
    "stage1_ffdm": ("demo/stage1_ffdm.yaml", {}),
    "stage2": (
        "demo/stage2_distill.yaml",
        {"ffdm_teacher": "stage1_ffdm", "init_from": "stage1_sm"},
    ),
    "stage3": ("demo/stage3_fused.yaml", {"sm_teacher": "stage1_sm", "partner": "stage2"}),
}


def _fit_ddp(config: str, phantom: Path, root: Path, inputs: dict[str, Path]) -> None:
    command = [
        sys.executable,
        str(CONFIGS.parent / "cli.py"),
        "fit",
        "--config",
        str(CONFIGS / "data" / "phantom.yaml"),
        "--config",
        str(CONFIGS / config),
        *tiny_run_args(phantom, root),
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.max_steps",
        "4",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.logger",
        "pytorch_lightning.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        str(root),
        "--trainer.logger.name",
        "csv",
        "--data.init_args.batch_size",
        "2",
    ]
    for argument, path in inputs.items():
        command += [f"--model.init_args.{argument}", str(path)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=root.parent)
    assert finished.returncode == 0, finished.stderr[-4000:]


def _journal(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "handoff.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp_chain(tiny_phantom, tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp_chain")
    for name, (config, inputs) in STAGES.items():
        _fit_ddp(
            config,
            tiny_phantom,
            base / name,
            {argument: base / stage / "artifact" for argument, stage in inputs.items()},
        )
    return base


@pytest.mark.parametrize("stage", list(STAGES))
def test_each_artifact_is_written_once_and_every_rank_receives_it(ddp_chain, stage):
    events = _journal(ddp_chain / stage)
    assert {event["world_size"] for event in events} == {2}
    wrote = [event for event in events if event["event"] in ("wrote", "unchanged")]
    assert [(event["event"], event["rank"]) for event in wrote] == [("wrote", 0)]
    received = [event for event in events if event["event"] == "received"]
    assert sorted(event["rank"] for event in received) == [0, 1]
    artifact = read_artifact(ddp_chain / stage / "artifact")
    assert {(event["path"], event["sha256"]) for event in received} == {
        (str(ddp_chain / stage / "artifact"), artifact.meta["weights_sha256"])
    }
    assert not list((ddp_chain / stage).glob(".artifact.*")), "temporary folders left behind"


@pytest.mark.parametrize("stage", list(STAGES))
def test_both_ranks_end_with_equal_weights(ddp_chain, stage):
    final = [event for event in _journal(ddp_chain / stage) if event["event"] == "final_weights"]
    assert sorted(event["rank"] for event in final) == [0, 1]
    assert len({event["digest"] for event in final}) == 1
    assert {event["trained_steps"] for event in final} == {4}


@pytest.mark.parametrize("stage", ["stage2", "stage3"])
def test_both_ranks_load_the_same_input_artifacts(ddp_chain, stage):
    _, inputs = STAGES[stage]
    loaded = [
        event["inputs"] for event in _journal(ddp_chain / stage) if event["event"] == "inputs"
    ]
    assert len(loaded) == 2 and loaded[0] == loaded[1]
    roles = {"ffdm_teacher", "init_from"} if stage == "stage2" else {"sm_teacher", "partner"}
    assert set(loaded[0]) == roles
    for argument, source in inputs.items():
        expected = read_artifact(ddp_chain / source / "artifact").meta["weights_sha256"]
        assert loaded[0][argument] == {
            "path": str(ddp_chain / source / "artifact"),
            "sha256": expected,
        }


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_trains(ddp_chain, stage):
    metrics = pd.concat(
        [pd.read_csv(path) for path in (ddp_chain / stage).glob("csv/*/metrics.csv")]
    )
    losses = metrics["train_loss_step"].dropna().tolist()
    assert len(losses) >= 3
    assert losses[0] != losses[-1] and len(set(losses)) > 1, losses
