"""The pipeline on a real SLURM (``make test-cluster`` starts one on this machine and sets
SLURM_CONF): ``pipeline --emit-slurm`` writes one job per stage and a submit.sh chaining them
with --dependency=afterok; on a tiny phantom with one-step stages, Stage I SM runs as a
two-task DDP job through srun (gloo on CPU). Every job must complete, in dependency order."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime

import pytest
import yaml
from conftest import CONFIGS

from lightning_modules.weights import read_artifact
from pipeline.runner import load_pipeline

pytestmark = pytest.mark.cluster
STAGES = ("stage1_sm", "stage1_ffdm", "stage2", "stage3", "upper_bound")


def _scontrol(job: str) -> dict[str, str]:
    text = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True,
                          check=True).stdout
    return dict(re.findall(r"(\w+)=(\S+)", text))


@pytest.fixture(scope="module")
def submitted(tiny_phantom, tmp_path_factory):
    if not os.environ.get("SLURM_CONF"):
        pytest.fail("no SLURM here: run `make test-cluster`, which starts one and sets "
                    "SLURM_CONF")
    folder = tmp_path_factory.mktemp("cluster")
    data = folder / "data.yaml"
    loaded = yaml.safe_load((CONFIGS / "data" / "phantom.yaml").read_text())
    loaded["data"]["init_args"].update(manifest=str(tiny_phantom), cache_dir=None,
                                       image_size=[128, 128], batch_size=2, num_workers=0,
                                       samples_per_epoch=4)
    data.write_text(yaml.safe_dump(loaded))
    detector = {"model.init_args.fauc_n_boot": 0}
    stages = {
        "stage1_sm": {"config": str(CONFIGS / "demo" / "stage1_sm.yaml"), "overrides": detector},
        "stage1_ffdm": {"config": str(CONFIGS / "demo" / "stage1_ffdm.yaml"),
                        "overrides": detector},
        "stage2": {"config": str(CONFIGS / "demo" / "stage2_distill.yaml"),
                   "inputs": {"ffdm_teacher": "stage1_ffdm", "init_from": "stage1_ffdm"}},
        "stage3": {"config": str(CONFIGS / "demo" / "stage3_fused.yaml"), "overrides": detector,
                   "inputs": {"sm_teacher": "stage1_sm", "partner": "stage2"}},
        "upper_bound": {"config": str(CONFIGS / "demo" / "upper_bound.yaml"),
                        "overrides": detector,
                        "inputs": {"sm_teacher": "stage1_sm", "partner": "stage1_ffdm"}},
    }
    pipeline = {
        "data": str(data), "run": str(folder / "run"), "stages": stages,
        "overrides": {"trainer.max_steps": 1, "trainer.max_epochs": 1,
                      "trainer.limit_val_batches": 1, "trainer.limit_test_batches": 1,
                      "trainer.num_sanity_val_steps": 0, "trainer.enable_progress_bar": False,
                      "trainer.logger": False},
        "report": {"Model_SM": "stage1_sm", "Model_FFDM": "stage1_ffdm",
                   "BASE_UB": "upper_bound", "Fused": "stage3"},
        "slurm": {"gpus": False, "accelerator": "cpu", "devices": 1, "cpus_per_task": 1,
                  "time": "00:30:00", "stages": {"stage1_sm": {"devices": 2}}},
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    jobs = folder / "jobs"
    emitted = subprocess.run(
        [sys.executable, str(CONFIGS.parent / "cli.py"), "pipeline", "--config", str(path),
         "--emit-slurm", str(jobs)], capture_output=True, text=True, cwd=folder)
    assert emitted.returncode == 0, emitted.stderr[-3000:]
    submit = subprocess.run(["bash", str(jobs / "submit.sh")], capture_output=True, text=True)
    assert submit.returncode == 0, submit.stderr
    ids = dict(line.split() for line in (jobs / "jobs.txt").read_text().splitlines())
    deadline = time.time() + 900
    while time.time() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", ",".join(ids.values()), "-o", "%i"],
                                capture_output=True, text=True).stdout.split()
        if not queued:
            break
        time.sleep(2)
    return folder, path, jobs, ids, {stage: _scontrol(job) for stage, job in ids.items()}


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_the_emitted_jobs_chain_each_stage_after_its_inputs(submitted):
    _, path, jobs, ids, _ = submitted
    assert set(ids) == {*STAGES, "report"}
    script = (jobs / "submit.sh").read_text()
    assert "stage2.sbatch" in script and "--dependency=afterok:$job_stage1_ffdm " in script
    sm = (jobs / "stage1_sm.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=2" in sm and "--launcher srun" in sm
    assert "--gpus-per-node" not in sm
    pipeline = load_pipeline(path)
    assert pipeline.order()[:2] == ["stage1_sm", "stage1_ffdm"]


def test_every_job_completed_in_dependency_order(submitted):
    folder, path, _, ids, states = submitted
    logs = sorted((folder / "run" / "slurm").glob("*.out"))
    failed = {stage: state.get("JobState") for stage, state in states.items()
              if state.get("JobState") != "COMPLETED"}
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-1500:]}" for log in logs)
    assert not failed, f"jobs not completed: {failed}\n{tails}"
    pipeline = load_pipeline(path)
    for stage in STAGES:
        for source in set(pipeline.stages[stage].inputs.values()):
            assert _time(states[stage]["StartTime"]) >= _time(states[source]["EndTime"]), (
                stage, source)
    for stage in STAGES:
        assert _time(states["report"]["StartTime"]) >= _time(states[stage]["EndTime"])


def test_the_artifacts_and_report_exist(submitted):
    folder = submitted[0]
    run = folder / "run"
    for stage in STAGES:
        assert read_artifact(run / stage / "artifact").meta["trained_steps"] == 1
        assert (run / stage / "predictions" / "val_predictions.parquet").is_file() or stage == (
            "stage2")
    assert (run / "report.md").is_file()


def test_the_two_task_stage_ran_with_world_size_two(submitted):
    run = submitted[0] / "run"
    events = [json.loads(line) for line in
              (run / "stage1_sm" / "handoff.jsonl").read_text().splitlines()]
    final = [event for event in events if event["event"] == "final_weights"]
    assert sorted(event["rank"] for event in final) == [0, 1]
    assert {event["world_size"] for event in events} == {2}
    assert len({event["digest"] for event in final}) == 1
    others = [json.loads(line) for line in
              (run / "stage2" / "handoff.jsonl").read_text().splitlines()]
    assert {event["world_size"] for event in others} == {1}
