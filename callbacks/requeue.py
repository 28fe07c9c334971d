"""Time limits and pre-emption: a fit that SLURM stops resumes where it stood.

`Requeue` keeps ``last.ckpt`` every ``train_time_interval`` of wall-clock time (Lightning's
``ModelCheckpoint`` timer), and handles SLURM's warning signal (``sbatch --signal=USR1@<grace>``,
sent to the job's steps) when Lightning runs under SLURM with auto-requeue
(``SLURMEnvironment``, the default under ``srun``). The signal handler only notes the signal.
Every ``check_every_n_steps`` batches the ranks agree on it (one all-reduce of one number);
then, as that batch starts (the previous one complete, with its validation and hooks), every
rank saves Lightning's requeue checkpoint ``<run>/hpc_ckpt_<n>.ckpt``, rank 0 asks SLURM to
requeue the job (``scontrol requeue``, as Lightning does) and every rank exits with
``EXIT_REQUEUED``. The requeued job reruns the same command; ``cli.py pipeline`` resumes the
stage from the newest of that checkpoint and ``last.ckpt``. In ``validate``, ``test`` and
``predict`` nothing is saved: the job is requeued and the assessment starts over.

Lightning's own handler saves from inside the signal handler, wherever the process is: between
an optimiser's updates of two parameter groups, or, under DDP, while another rank waits in a
collective. This callback saves between two batches, so the resumed run repeats exactly what
the uninterrupted run would have done (the data module skips the batches already trained).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.connectors.checkpoint_connector import _CheckpointConnector

logger = logging.getLogger(__name__)

# sysexits.h's EX_TEMPFAIL: stopped for a requeue, to be run again (pipeline/runner.py reads it)
EXIT_REQUEUED = 75


class Requeue(ModelCheckpoint):
    """``last.ckpt`` on a wall-clock timer, and a save-and-requeue on SLURM's signal.

    Args:
        dirpath: where ``last.ckpt`` goes; default the main checkpoint callback's folder.
        train_time_interval: wall-clock time between two ``last.ckpt`` saves (Lightning's
            ``ModelCheckpoint(train_time_interval=...)``, e.g. ``"0:30:00"``); None: no timer.
            Under DDP Lightning's timer broadcasts rank 0's clock at every batch.
        check_every_n_steps: batches between two agreements on the signal (one all-reduce of
            one number under DDP). Keep that many batches well inside the signal's grace time.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        train_time_interval: timedelta | None = timedelta(minutes=30),
        check_every_n_steps: int = 10,
    ):
        if int(check_every_n_steps) < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        # save_top_k=0 and no epoch trigger: this callback writes last.ckpt on its timer only
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            every_n_epochs=0,
            train_time_interval=train_time_interval,
            enable_version_counter=False,
        )
        self.check_every_n_steps = int(check_every_n_steps)
        self._signum: int | None = None  # the signal we handle, once installed
        self._signalled = False
        self._batches = 0

    # -- the signal ---------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.dirpath is None and trainer.checkpoint_callback not in (None, self):
            self.dirpath = trainer.checkpoint_callback.dirpath
        super().setup(trainer, pl_module, stage)
        self._batches = 0
        environment = getattr(trainer._accelerator_connector, "cluster_environment", None)
        if (
            isinstance(environment, SLURMEnvironment)
            and environment.auto_requeue
            and environment.requeue_signal is not None
            and self._signum is None
        ):
            # Installed before Lightning registers its signal handlers (after the callbacks'
            # setup), so Lightning, finding a handler, does not install its own; before the
            # loader workers fork, which inherit it (the signal reaches them too); and kept
            # for the process's life (assess runs validate, then test).
            self._signum = int(environment.requeue_signal)
            signal.signal(self._signum, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        logger.warning(
            "received signal %d: saving and requeueing at the next step boundary", signum
        )
        self._signalled = True

    def _agreed(self, trainer: pl.Trainer) -> bool:
        """Whether any rank got the signal; called by every rank at the same point."""
        if self._signum is None:
            return False
        flag = self._signalled
        if dist.is_available() and dist.is_initialized() and trainer.world_size > 1:
            tensor = torch.tensor([int(flag)], device=trainer.strategy.root_device)
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
            flag = bool(tensor.item())
        return flag

    # -- fit ----------------------------------------------------------------------------------
    # Both saves happen as a batch starts: the previous batch is then complete, with its
    # validation, its checkpoints and every hook (the module counts the batch in its own
    # on_train_batch_end, which runs after the callbacks'), and a resumed fit starts there.
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, None, batch, batch_idx)  # the timer
        self._batches += 1
        if (
            self._signum is not None
            and self._batches % self.check_every_n_steps == 0
            and self._agreed(trainer)
        ):
            self._save_and_requeue(trainer)

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        pass  # see on_train_batch_start

    def on_train_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_validation_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def _save_and_requeue(self, trainer: pl.Trainer) -> None:
        path = _CheckpointConnector.hpc_save_path(trainer.default_root_dir)
        trainer.save_checkpoint(path)  # every rank: a collective under DDP
        logger.warning("saved %s at step %d", path, trainer.global_step)
        self._requeue(trainer)

    # -- validate, test, predict -------------------------------------------------------------
    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._evaluation_batch_end(trainer)

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._evaluation_batch_end(trainer)

    def on_predict_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._evaluation_batch_end(trainer)

    def _evaluation_batch_end(self, trainer: pl.Trainer) -> None:
        # every rank reads as many batches (DistributedSampler pads): the same checks
        if trainer.state.fn == "fit" or self._signum is None:
            return
        self._batches += 1
        if self._batches % self.check_every_n_steps == 0 and self._agreed(trainer):
            self._requeue(trainer)

    def _requeue(self, trainer: pl.Trainer) -> None:
        """Rank 0 asks SLURM to requeue this job; every rank then exits with EXIT_REQUEUED."""
        # The requeue sends SIGTERM to the job: each rank exits by itself instead, from here,
        # rather than in Lightning's SIGTERM handler (which broadcasts from inside a handler).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if trainer.is_global_zero:
            array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
            job = (
                f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
                if array_job
                else os.environ["SLURM_JOB_ID"]
            )
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            if done.returncode == 0:
                logger.warning("requeued SLURM job %s; it resumes when it runs again", job)
            else:
                logger.error(
                    "`scontrol requeue %s` failed (%s): submit the job again; it resumes from %s",
                    job,
                    done.stderr.strip(),
                    trainer.default_root_dir,
                )
        raise SystemExit(EXIT_REQUEUED)
