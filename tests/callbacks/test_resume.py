"""A stage fit killed with SIGKILL mid-epoch and restarted with ``--ckpt_path last`` completes,
and (deterministic on CPU, augmentation seeded per draw by the sampler) ends with weights
equal, bit for bit, to those of an uninterrupted run. Its last.ckpt was written mid-epoch, by
the wall-clock timer (``requeue.train_time_interval``): the resumed epoch goes on with the
batches it had not trained on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch
from repo_paths import CONFIGS
from tiny_runs import tiny_run_args

from lightning_modules.artifacts import read_checkpoint

EPOCHS, STEPS = 2, 16


def _command(phantom, root, *extra):
    return [
        sys.executable,
        str(CONFIGS.parent / "cli.py"),
        "fit",
        "--config",
        str(CONFIGS / "data" / "phantom.yaml"),
        "--config",
        str(CONFIGS / "demo" / "stage1_sm.yaml"),
        *tiny_run_args(phantom, root),
        "--data.init_args.samples_per_epoch",
        str(4 * STEPS),
        "--trainer.max_epochs",
        str(EPOCHS),
        "--trainer.limit_val_batches",
        "1",
        "--trainer.check_val_every_n_epoch",
        "1",  # last.ckpt is written at each validation
        "--trainer.logger",
        "false",
        "--trainer.deterministic",
        "true",
        *extra,
    ]


def test_a_killed_fit_resumes_to_the_uninterrupted_weights(tiny_phantom, tmp_path):
    whole = tmp_path / "whole"
    done = subprocess.run(
        _command(tiny_phantom, whole), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]

    killed = tmp_path / "killed"
    # the timer writes last.ckpt as every batch starts
    process = subprocess.Popen(
        _command(tiny_phantom, killed, "--requeue.train_time_interval", "0:00:00"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed / "checkpoints" / "last.ckpt"
    deadline, steps = time.time() + 300, None
    while time.time() < deadline and process.poll() is None:
        if last.exists():
            os.killpg(process.pid, signal.SIGSTOP)  # the file cannot change while we read it
            try:
                steps = read_checkpoint(last)["global_step"]
            except ValueError:  # caught while written
                steps = None
            if steps is not None and steps > STEPS and steps % STEPS:
                break  # mid-way through the second epoch or later
            os.killpg(process.pid, signal.SIGCONT)
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert steps is not None and steps % STEPS and steps < EPOCHS * STEPS, (
        f"no mid-epoch last.ckpt before the fit ended (steps {steps})"
    )

    resumed = subprocess.run(
        _command(tiny_phantom, killed, "--ckpt_path", "last"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    first = read_checkpoint(whole / "checkpoints" / "last.ckpt")["state_dict"]
    second = read_checkpoint(last)["state_dict"]
    assert int(second["trained_steps"]) == EPOCHS * STEPS
    assert set(first) == set(second)
    different = [key for key in first if not torch.equal(first[key], second[key])]
    assert not different, f"{len(different)} tensors differ, first: {different[:3]}"
