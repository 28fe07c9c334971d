"""`cli.py pipeline` on the tiny phantom: every stage trained, wired and reported; a rerun
trains nothing; a changed Stage I FFDM config retrains exactly the stages downstream of it; a
killed fit resumes from its last.ckpt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from repo_paths import CONFIGS
from tiny_runs import TINY_PIPELINE

from lightning_modules.artifacts import read_artifact
from pipeline.config import load_pipeline
from pipeline.runner import run_pipeline

DETECTOR = {"model.init_args.evaluation.fauc_n_boot": 0}  # DistillStudent has no bootstrap to skip


def _write_pipeline(folder: Path, phantom: Path, ffdm_overrides: dict | None = None) -> Path:
    data = folder / "data.yaml"
    config = yaml.safe_load((CONFIGS / "data" / "phantom.yaml").read_text())
    config["data"]["init_args"]["manifest"] = str(phantom)
    data.write_text(yaml.safe_dump(config))
    stages = {
        "stage1_sm": {"config": str(CONFIGS / "demo" / "stage1_sm.yaml"), "overrides": DETECTOR},
        "stage1_ffdm": {
            "config": str(CONFIGS / "demo" / "stage1_ffdm.yaml"),
            "overrides": {**DETECTOR, **(ffdm_overrides or {})},
        },
        "stage2": {
            "config": str(CONFIGS / "demo" / "stage2_distill.yaml"),
            "inputs": {"ffdm_teacher": "stage1_ffdm", "init_from": "stage1_ffdm"},
        },
        "stage3": {
            "config": str(CONFIGS / "demo" / "stage3_fused.yaml"),
            "overrides": DETECTOR,
            "inputs": {"sm_teacher": "stage1_sm", "partner": "stage2"},
        },
        "upper_bound": {
            "config": str(CONFIGS / "demo" / "upper_bound.yaml"),
            "overrides": DETECTOR,
            "inputs": {"sm_teacher": "stage1_sm", "partner": "stage1_ffdm"},
        },
    }
    pipeline = {
        "data": str(data),
        "run": str(folder / "run"),
        "overrides": TINY_PIPELINE,
        "stages": stages,
        "report": {
            "Model_SM": "stage1_sm",
            "Model_FFDM": "stage1_ffdm",
            "BASE_UB": "upper_bound",
            "Fused": "stage3",
        },
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return path


def _trained(summary: dict) -> set[str]:
    return {name for name, state in summary["stages"].items() if not state.get("skipped")}


@pytest.fixture(scope="module")
def first_run(tiny_phantom, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    path = _write_pipeline(folder, tiny_phantom)
    lines: list[str] = []
    summary = run_pipeline(load_pipeline(path), log=lines.append)
    return folder, path, summary, lines


def test_every_stage_trains_and_is_wired_to_its_inputs(first_run):
    folder, path, summary, lines = first_run
    run = folder / "run"
    assert _trained(summary) == {"stage1_sm", "stage1_ffdm", "stage2", "stage3", "upper_bound"}
    stage3 = read_artifact(run / "stage3" / "artifact").meta
    assert (
        stage3["inputs"]["partner"]["sha256"]
        == read_artifact(run / "stage2" / "artifact").meta["weights_sha256"]
    )
    assert stage3["config_hash"] == json.loads((run / "stage3" / "stage.json").read_text())["hash"]
    for stage in ("stage1_sm", "stage3", "upper_bound"):
        assert (run / stage / "predictions" / "val_predictions.parquet").is_file()
        assert (run / stage / "predictions" / "test_predictions.parquet").is_file()
    assert any("1/5 stage1_sm: training" in line for line in lines)
    assert any("ETA" in line for line in lines)
    report = json.loads((run / "report.json").read_text())
    assert [row["model"] for row in report["fauc"]] == [
        "Model_SM",
        "Model_FFDM",
        "BASE_UB",
        "Fused",
    ]
    assert [d["models"] for d in report["differences"]][:2] == [
        "Fused - Model_SM",
        "Fused - Model_FFDM",
    ]
    assert set(report["section6"]) >= {"missed by Model_SM", "missed by the fused model"}
    assert (run / "froc.png").stat().st_size > 0
    assert len(list(run.glob("gallery_*.png"))) == 7


def test_a_rerun_with_nothing_changed_trains_nothing(first_run):
    folder, path, _, _ = first_run
    lines: list[str] = []
    summary = run_pipeline(load_pipeline(path), report=False, log=lines.append)
    assert _trained(summary) == set()
    assert sum("up to date" in line for line in lines) == 5


def test_a_changed_ffdm_teacher_retrains_its_students_but_not_the_sm_teacher(
    first_run, tiny_phantom
):
    folder, _, _, _ = first_run
    before = read_artifact(folder / "run" / "stage1_sm" / "artifact").meta["weights_sha256"]
    changed = _write_pipeline(folder, tiny_phantom, {"model.init_args.focal_gamma": 2.0})
    summary = run_pipeline(load_pipeline(changed), report=False)
    assert _trained(summary) == {"stage1_ffdm", "stage2", "stage3", "upper_bound"}
    assert read_artifact(folder / "run" / "stage1_sm" / "artifact").meta["weights_sha256"] == before
    assert read_artifact(folder / "run" / "stage1_ffdm" / "artifact").meta["focal_gamma"] == 2.0


def test_bad_pipeline_configs_are_refused_with_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": "nowhere.yaml",
                "stages": {
                    "stage2": {
                        "config": str(CONFIGS / "demo" / "stage2_distill.yaml"),
                        "inputs": {"ffdm_teacher": "stage1_ffdm"},
                    }
                },
                "report": {"X": "stage9"},
            }
        )
    )
    with pytest.raises(ValueError) as error:
        load_pipeline(path)
    message = str(error.value)
    assert "stages.stage2.inputs.ffdm_teacher: no stage 'stage1_ffdm'" in message
    assert "report.X: no stage 'stage9'" in message
    assert "data: nowhere.yaml not found" in message


def test_a_number_as_stage_name_and_a_file_as_run_folder_are_refused(tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text((CONFIGS / "data" / "phantom.yaml").read_text())
    run = tmp_path / "run"
    run.write_text("not a folder")
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": str(data),
                "run": str(run),
                "stages": {1: {"config": str(CONFIGS / "demo" / "stage1_sm.yaml")}},
            }
        )
    )
    with pytest.raises(ValueError) as error:
        load_pipeline(path)
    message = str(error.value)
    assert (
        "stages: the stage name 1 is not text (int); stage names are text (each names a "
        "folder of the run): write '1'"
    ) in message
    assert f"run: {run} is a file, not a folder" in message


@pytest.mark.parametrize(
    "path", sorted((CONFIGS / "pipeline").glob("*.yaml")), ids=lambda path: path.name
)
def test_every_pipeline_config_parses_and_reuses_the_demo_stages(path):
    pipeline = load_pipeline(path)
    assert pipeline.order()[:2] == ["stage1_sm", "stage1_ffdm"]
    demo = load_pipeline(CONFIGS / "pipeline" / "phantom.yaml")
    assert set(demo.report) >= {"Model_SM", "Model_FFDM", "BASE_UB", "Fused"}
    for name, stage in pipeline.stages.items():  # a shared stage is the demo's own
        if name in demo.stages:
            assert (stage.config, stage.inputs, stage.overrides) == (
                demo.stages[name].config,
                demo.stages[name].inputs,
                demo.stages[name].overrides,
            )
    for pair in pipeline.comparisons or []:
        assert set(pair) <= set(pipeline.report)


def test_a_killed_fit_resumes_from_its_last_checkpoint(tiny_phantom, tmp_path):
    config = {
        "data": None,
        "run": str(tmp_path / "run"),
        "overrides": {**TINY_PIPELINE, "trainer.max_epochs": 4},
        "stages": {"stage1_sm": {"config": str(CONFIGS / "demo" / "stage1_sm.yaml")}},
    }
    data = tmp_path / "data.yaml"
    loaded = yaml.safe_load((CONFIGS / "data" / "phantom.yaml").read_text())
    loaded["data"]["init_args"]["manifest"] = str(tiny_phantom)
    data.write_text(yaml.safe_dump(loaded))
    config["data"] = str(data)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, str(CONFIGS.parent / "cli.py"), "pipeline", "--config", str(path)]
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = tmp_path / "run" / "stage1_sm" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # let Lightning finish writing it
    os.killpg(process.pid, signal.SIGKILL)  # the pipeline and its fit, mid-run
    process.wait()
    assert last.exists(), "the fit never wrote last.ckpt"
    assert not (tmp_path / "run" / "stage1_sm" / "artifact").exists(), "killed too late"
    lines: list[str] = []
    run_pipeline(load_pipeline(path), log=lines.append)
    assert any("resuming the interrupted fit" in line for line in lines), lines
    artifact = read_artifact(tmp_path / "run" / "stage1_sm" / "artifact").meta
    assert artifact["trained_steps"] == 4 * 2  # 4 epochs of 8 samples in batches of 4
