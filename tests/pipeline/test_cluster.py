"""The pipeline on a real SLURM (``make test-cluster`` starts one on this machine and sets
SLURM_CONF): ``pipeline --emit-slurm`` writes one job per stage and a submit.sh chaining them
with --dependency=afterok; on a tiny phantom with one-step stages, Stage I SM runs as a
two-task DDP job through srun (gloo on CPU). Stage I FFDM trains longer and gets SLURM's
warning signal mid-fit (``scancel --signal=USR1``, as ``--signal=USR1@grace`` sends it before a
time limit): it saves, is requeued, resumes, and ends with the weights of an uninterrupted run;
the stages after it wait for it. Every job must complete, in dependency order."""

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
from repo_paths import CONFIGS

from lightning_modules.artifacts import read_artifact
from pipeline.config import load_pipeline

pytestmark = pytest.mark.cluster
STAGES = ("stage1_sm", "stage1_ffdm", "stage2", "stage3", "upper_bound")


def _scontrol(job: str) -> dict[str, str]:
    text = subprocess.run(
        ["scontrol", "show", "job", job], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"(\w+)=(\S+)", text))


@pytest.fixture(scope="module")
def submitted(tiny_phantom, tmp_path_factory):
    if not os.environ.get("SLURM_CONF"):
        pytest.fail("no SLURM here: run `make test-cluster`, which starts one and sets SLURM_CONF")
    folder = tmp_path_factory.mktemp("cluster")
    data = folder / "data.yaml"
    loaded = yaml.safe_load((CONFIGS / "data" / "phantom.yaml").read_text())
    loaded["data"]["init_args"].update(
        manifest=str(tiny_phantom),
        cache_dir=None,
        image_size=[128, 128],
        batch_size=2,
        num_workers=0,
        samples_per_epoch=4,
    )
    data.write_text(yaml.safe_dump(loaded))
    detector = {"model.init_args.evaluation.fauc_n_boot": 0}
    # 4 epochs of 6 steps, validated after the 2nd and 4th; the signal is acted on at any step
    longer = {
        **detector,
        "trainer.max_steps": -1,
        "trainer.max_epochs": 4,
        "data.init_args.samples_per_epoch": 12,
        "trainer.deterministic": True,
        "requeue.check_every_n_steps": 1,
    }
    stages = {
        "stage1_sm": {"config": str(CONFIGS / "demo" / "stage1_sm.yaml"), "overrides": detector},
        "stage1_ffdm": {"config": str(CONFIGS / "demo" / "stage1_ffdm.yaml"), "overrides": longer},
        "stage2": {
            "config": str(CONFIGS / "demo" / "stage2_distill.yaml"),
            "inputs": {"ffdm_teacher": "stage1_ffdm", "init_from": "stage1_ffdm"},
        },
        "stage3": {
            "config": str(CONFIGS / "demo" / "stage3_fused.yaml"),
            "overrides": detector,
            "inputs": {"sm_teacher": "stage1_sm", "partner": "stage2"},
        },
        "upper_bound": {
            "config": str(CONFIGS / "demo" / "upper_bound.yaml"),
            "overrides": detector,
            "inputs": {"sm_teacher": "stage1_sm", "partner": "stage1_ffdm"},
        },
    }
    pipeline = {
        "data": str(data),
        "run": str(folder / "run"),
        "stages": stages,
        "overrides": {
            "trainer.max_steps": 1,
            "trainer.max_epochs": 1,
            "trainer.limit_val_batches": 1,
            "trainer.limit_test_batches": 1,
            "trainer.num_sanity_val_steps": 0,
            "trainer.enable_progress_bar": False,
            "trainer.logger": False,
        },
        "report": {
            "Model_SM": "stage1_sm",
            "Model_FFDM": "stage1_ffdm",
            "BASE_UB": "upper_bound",
            "Fused": "stage3",
        },
        "slurm": {
            "gpus": False,
            "accelerator": "cpu",
            "devices": 1,
            "cpus_per_task": 1,
            "time": "00:30:00",
            "stages": {"stage1_sm": {"devices": 2}},
        },
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    jobs = folder / "jobs"
    emitted = subprocess.run(
        [
            sys.executable,
            str(CONFIGS.parent / "cli.py"),
            "pipeline",
            "--config",
            str(path),
            "--emit-slurm",
            str(jobs),
        ],
        capture_output=True,
        text=True,
        cwd=folder,
    )
    assert emitted.returncode == 0, emitted.stderr[-3000:]
    # one thread per process: the jobs (they inherit the environment) and the uninterrupted run
    # compute alike, and the processes do not crowd the CPUs
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    submit = subprocess.run(
        ["bash", str(jobs / "submit.sh")], capture_output=True, text=True, env=environment
    )
    assert submit.returncode == 0, submit.stderr
    ids = dict(line.split() for line in (jobs / "jobs.txt").read_text().splitlines())
    reference = subprocess.Popen(
        [
            sys.executable,
            str(CONFIGS.parent / "cli.py"),
            "pipeline",
            "--config",
            str(path),
            "--run",
            str(folder / "uninterrupted"),
            "--only",
            "stage1_ffdm",
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = folder / "run" / "stage1_ffdm" / "handoff.jsonl"
    signalled = None
    deadline = time.time() + 900
    while time.time() < deadline:
        if signalled is None and journal.is_file() and '"inputs"' in journal.read_text():
            time.sleep(1)  # a few steps into the fit
            subprocess.run(["scancel", "--signal=USR1", ids["stage1_ffdm"]], check=True)
            signalled = time.time()
        queued = subprocess.run(
            ["squeue", "-h", "-j", ",".join(ids.values()), "-o", "%i"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if not queued:
            break
        time.sleep(0.5)
    _, errors = reference.communicate(timeout=600)
    assert reference.returncode == 0, errors[-3000:]
    states = {stage: _scontrol(job) for stage, job in ids.items()}
    return folder, path, jobs, ids, states


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
    failed = {
        stage: state.get("JobState")
        for stage, state in states.items()
        if state.get("JobState") != "COMPLETED"
    }
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-1500:]}" for log in logs)
    assert not failed, f"jobs not completed: {failed}\n{tails}"
    pipeline = load_pipeline(path)
    for stage in STAGES:
        for source in set(pipeline.stages[stage].inputs.values()):
            assert _time(states[stage]["StartTime"]) >= _time(states[source]["EndTime"]), (
                stage,
                source,
            )
    for stage in STAGES:
        assert _time(states["report"]["StartTime"]) >= _time(states[stage]["EndTime"])


def test_the_artifacts_and_report_exist(submitted):
    folder = submitted[0]
    run = folder / "run"
    for stage in STAGES:
        steps = 24 if stage == "stage1_ffdm" else 1
        assert read_artifact(run / stage / "artifact").meta["trained_steps"] == steps
        assert (run / stage / "predictions" / "val_predictions.parquet").is_file() or stage == (
            "stage2"
        )
    assert (run / "report.md").is_file()


def test_the_two_task_stage_ran_with_world_size_two(submitted):
    run = submitted[0] / "run"
    events = [
        json.loads(line) for line in (run / "stage1_sm" / "handoff.jsonl").read_text().splitlines()
    ]
    final = [event for event in events if event["event"] == "final_weights"]
    assert sorted(event["rank"] for event in final) == [0, 1]
    assert {event["world_size"] for event in events} == {2}
    assert len({event["digest"] for event in final}) == 1
    others = [
        json.loads(line) for line in (run / "stage2" / "handoff.jsonl").read_text().splitlines()
    ]
    assert {event["world_size"] for event in others} == {1}


def test_a_stage_signalled_mid_fit_is_requeued_and_resumes_to_the_same_weights(submitted):
    folder, _, _, ids, states = submitted
    run = folder / "run"
    log = (run / "slurm" / f"stage1_ffdm-{ids['stage1_ffdm']}.out").read_text()
    assert states["stage1_ffdm"]["Restarts"] == "1", log[-3000:]
    assert states["stage1_ffdm"]["JobState"] == "COMPLETED", log[-3000:]
    assert ", start 1" in log and ", start 2" in log  # the same job ran twice, log appended
    assert "saved " in log and "hpc_ckpt_1.ckpt" in log
    resumed = [line for line in log.splitlines() if "resuming the interrupted fit" in line]
    assert len(resumed) == 1 and "hpc_ckpt_1.ckpt" in resumed[0], log[-3000:]
    artifact = read_artifact(run / "stage1_ffdm" / "artifact").meta
    uninterrupted = read_artifact(folder / "uninterrupted" / "stage1_ffdm" / "artifact").meta
    assert artifact["trained_steps"] == uninterrupted["trained_steps"] == 24
    assert artifact["weights_sha256"] == uninterrupted["weights_sha256"]
    assert not list((run / "stage1_ffdm").glob("hpc_ckpt_*.ckpt"))  # removed once fitted
    for dependent in ("stage2", "upper_bound", "report"):  # afterok: after its last end
        assert states[dependent]["JobState"] == "COMPLETED"
        assert _time(states[dependent]["StartTime"]) >= _time(states["stage1_ffdm"]["EndTime"])
