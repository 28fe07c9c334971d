"""Time limits and pre-emption, the parts that need no SLURM (``make test-cluster`` runs the
requeue itself): what the emitted jobs ask SLURM for, how the runner starts a stage, which
checkpoint an interrupted stage resumes from, and the sampler going on mid-epoch."""

from __future__ import annotations

import os
import time

import pytest
import torch
import yaml
from repo_paths import CONFIGS

from datamodules.sampler import BalancedDistributedSampler
from pipeline.config import load_pipeline
from pipeline.runner import Launch
from pipeline.slurm import emit_slurm
from pipeline.state import _newest_checkpoint


@pytest.fixture
def pipeline(tmp_path):
    path = tmp_path / "pipeline.yaml"
    config = yaml.safe_load((CONFIGS / "pipeline" / "phantom.yaml").read_text())
    config["data"] = str(CONFIGS / "data" / "phantom.yaml")
    for stage in config["stages"].values():
        stage["config"] = str(CONFIGS.parent / stage["config"])
    config["run"] = str(tmp_path / "run")
    config["slurm"] = {"mem_per_gpu": "60G", "stages": {"stage2": {"grace": 0, "requeue": False}}}
    path.write_text(yaml.safe_dump(config))
    return load_pipeline(path)


def _options(text: str) -> list[str]:
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("#SBATCH")]


def test_emitted_jobs_ask_for_the_signal_requeue_memory_and_cpus(pipeline, tmp_path):
    emit_slurm(pipeline, tmp_path / "jobs", {"cpus_per_task": 6, "devices": 4})
    sm = (tmp_path / "jobs" / "stage1_sm.sbatch").read_text()
    options = _options(sm)
    # USR1 without "B:" goes to the job's steps (the srun tasks, where Lightning listens)
    assert "--signal=USR1@300" in options and "--requeue" in options
    assert "--open-mode=append" in options  # a requeued run appends to the same log
    assert "--mem-per-gpu=60G" in options and "--cpus-per-task=6" in options
    assert "--cpus-per-task 6" in sm and "--devices 4" in sm and "--launcher srun" in sm
    student = _options((tmp_path / "jobs" / "stage2.sbatch").read_text())
    assert not any(option.startswith(("--signal", "--requeue")) for option in student)
    with pytest.raises(ValueError, match="mem or mem_per_gpu"):
        emit_slurm(pipeline, tmp_path / "both", {"mem": "200G"})
    pipeline.slurm.pop("mem_per_gpu")
    emit_slurm(pipeline, tmp_path / "other", {"grace": 90, "requeue": False, "mem": "200G"})
    options = _options((tmp_path / "other" / "stage1_sm.sbatch").read_text())
    assert "--signal=USR1@90" in options and "--mem=200G" in options
    assert "--requeue" not in options


def test_fit_and_assessment_start_on_the_same_devices():
    srun = Launch("srun", num_nodes=2, devices=4, accelerator="gpu", cpus_per_task=8)
    assert srun.prefix() == ["srun", "--kill-on-bad-exit=1", "--cpus-per-task=8"]
    assert srun.trainer_args() == [
        "--trainer.num_nodes=2",
        "--trainer.devices=4",
        "--trainer.strategy=ddp",
        "--trainer.accelerator=gpu",
    ]
    assert Launch().prefix() == [] and Launch().trainer_args() == []


def _checkpoint(path, steps: int, readable: bool = True):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": steps, "state_dict": {}}, path)
    if not readable:
        path.write_bytes(path.read_bytes()[:40])  # cut off while written


def test_the_stage_resumes_from_the_newest_readable_checkpoint(tmp_path):
    folder = tmp_path / "stage"
    last = folder / "checkpoints" / "last.ckpt"
    assert _newest_checkpoint(folder) is None
    _checkpoint(last, 20)
    _checkpoint(folder / "hpc_ckpt_1.ckpt", 12)
    assert _newest_checkpoint(folder) == last
    _checkpoint(folder / "hpc_ckpt_2.ckpt", 27)
    assert _newest_checkpoint(folder) == folder / "hpc_ckpt_2.ckpt"
    _checkpoint(folder / "hpc_ckpt_3.ckpt", 31, readable=False)
    lines = []
    assert _newest_checkpoint(folder, lines.append) == folder / "hpc_ckpt_2.ckpt"
    assert "hpc_ckpt_3.ckpt is unreadable" in lines[0]
    time.sleep(0.01)
    _checkpoint(last, 27)  # as many steps, written later
    os.utime(last, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert _newest_checkpoint(folder) == last


@pytest.mark.parametrize("world", [1, 3])
def test_a_resumed_epoch_goes_on_with_the_draws_not_trained(world):
    labels = [1] * 7 + [0] * 30
    for rank in range(world):
        whole = BalancedDistributedSampler(
            labels, num_samples=24, num_replicas=world, rank=rank, seed=5, with_seeds=True
        )
        whole.set_epoch(2)
        expected = list(whole)
        resumed = BalancedDistributedSampler(
            labels, num_samples=24, num_replicas=world, rank=rank, seed=5, with_seeds=True
        )
        resumed.resume(2, 3)
        resumed.set_epoch(2)
        assert list(resumed) == expected[3:]  # the same draws and augmentation seeds
        assert len(resumed) == len(expected)  # Lightning counts the epoch whole
        assert list(resumed) == expected  # once: the next iteration is the whole epoch
        later = BalancedDistributedSampler(
            labels, num_samples=24, num_replicas=world, rank=rank, seed=5, with_seeds=True
        )
        later.resume(1, 3)  # a checkpoint of an earlier epoch skips nothing of this one
        later.set_epoch(2)
        assert list(later) == expected
