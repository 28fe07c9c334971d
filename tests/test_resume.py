"""A stage fit killed with SIGKILL mid-epoch and restarted with ``--ckpt_path last`` completes,
and (deterministic on CPU, augmentation seeded per draw by the sampler) ends with weights
equal, bit for bit, to those of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch
from conftest import CONFIGS, tiny_run_args

from lightning_modules.weights import read_checkpoint

EPOCHS, STEPS = 3, 40


def _command(phantom, root, *extra):
    return [
        sys.executable, str(CONFIGS.parent / "cli.py"), "fit",
        "--config", str(CONFIGS / "data" / "phantom.yaml"),
        "--config", str(CONFIGS / "demo" / "stage1_sm.yaml"),
        *tiny_run_args(phantom, root),
        "--data.init_args.samples_per_epoch", str(4 * STEPS),
        "--trainer.max_epochs", str(EPOCHS), "--trainer.limit_val_batches", "1",
        "--trainer.check_val_every_n_epoch", "1",  # last.ckpt is written at each validation
        "--trainer.logger", "false", "--trainer.deterministic", "true", *extra,
    ]


def test_a_killed_fit_resumes_to_the_uninterrupted_weights(tiny_phantom, tmp_path):
    whole = tmp_path / "whole"
    done = subprocess.run(_command(tiny_phantom, whole), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = tmp_path / "killed"
    process = subprocess.Popen(_command(tiny_phantom, killed), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # into the next epoch: a few of its steps done, not saved
    os.killpg(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the fit ended before it could be killed"
    assert read_checkpoint(last)["epoch"] < EPOCHS - 1, "killed too late to test a resume"

    resumed = subprocess.run(_command(tiny_phantom, killed, "--ckpt_path", "last"),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    first = read_checkpoint(whole / "checkpoints" / "last.ckpt")["state_dict"]
    second = read_checkpoint(last)["state_dict"]
    assert int(second["trained_steps"]) == EPOCHS * STEPS
    assert set(first) == set(second)
    different = [key for key in first if not torch.equal(first[key], second[key])]
    assert not different, f"{len(different)} tensors differ, first: {different[:3]}"
