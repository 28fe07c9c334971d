"""Parts 2 and 3 of the GPU benchmark: a bf16-mixed fit of Stage I per loader worker count (is
the GPU starved?) and one validation pass in 32-true and bf16-mixed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from gpu_cache import data_module
from gpu_steps import synchronize
from shared import summary


def trainer(device: torch.device, precision: str, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator=device.type,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


# -- 2. the loader ------------------------------------------------------------------------------
class WaitTimer(pl.Callback):
    """Per step: the time from the previous step's end to this one's start (the loop waiting for
    its next batch), and the step's end, with the device synchronised at each end."""

    def __init__(self):
        self.starts: list[float] = []
        self.ends: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        synchronize(pl_module.device)
        self.ends.append(time.perf_counter())


def part_loader(args, settings, device, folder: Path, cache: Path, gpu_pairs_per_s) -> dict:
    from lightning_modules import EvaluationSettings, TeacherDetector

    results = {}
    samples = settings["batch_size"] * (args.fit_steps + 2)
    for workers in args.workers:
        torch.manual_seed(0)
        module = TeacherDetector(
            modality="sm",
            architecture=settings["architecture"],
            image_size=tuple(settings["image_size"]),
            architecture_overrides=settings["architecture_overrides"],
            evaluation=EvaluationSettings(fauc_n_boot=0),
            channels_last=True,
        )
        timer = WaitTimer()
        run = trainer(
            device,
            "bf16-mixed",
            max_steps=args.fit_steps,
            limit_val_batches=0,
            callbacks=[timer],
            default_root_dir=str(folder / f"fit{workers}"),
        )
        run.fit(module, datamodule=data_module(folder, cache, settings, workers, samples))
        skip = min(args.warmup, len(timer.ends) - 2)
        waits = [start - end for start, end in zip(timer.starts[skip + 1 :], timer.ends[skip:])]
        steps = [end - start for start, end in zip(timer.ends[skip:], timer.ends[skip + 1 :])]
        pairs_per_s = settings["batch_size"] / summary(steps)["median"]
        entry = {
            "num_workers": workers,
            "steps": len(timer.ends),
            "step_s": summary(steps),
            "wait_s": summary(waits),
            "wait_share": sum(waits) / sum(steps),
            "pairs_per_s": pairs_per_s,
            "of_the_gpu_rate": (pairs_per_s / gpu_pairs_per_s) if gpu_pairs_per_s else None,
        }
        results[str(workers)] = entry
        print(
            f"loader {workers:2d} workers: {pairs_per_s:6.1f} pairs/s, waiting "
            f"{100 * entry['wait_share']:.0f}% of each step"
            + (
                ""
                if gpu_pairs_per_s is None
                else f" ({100 * entry['of_the_gpu_rate']:.0f}% of the bare GPU step's rate)"
            ),
            flush=True,
        )
    return results


# -- 3. validation ------------------------------------------------------------------------------
def part_validation(args, settings, device, folder: Path, cache: Path) -> dict:
    from callbacks import PredictionWriter
    from lightning_modules import EvaluationSettings, TeacherDetector

    class TimedWriter(PredictionWriter):
        """The prediction writer, its time in the validation hooks summed (device idle)."""

        seconds = 0.0
        scores: list[np.ndarray] = []

        def on_validation_batch_end(
            self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
        ):
            self.scores.append(
                np.concatenate(
                    [d["scores"].float().cpu().numpy() for d in outputs] or [np.zeros(0)]
                )
            )
            synchronize(device)
            start = time.perf_counter()
            super().on_validation_batch_end(
                trainer, pl_module, outputs, batch, batch_idx, dataloader_idx
            )
            TimedWriter.seconds += time.perf_counter() - start

        def on_validation_epoch_end(self, trainer, pl_module):
            start = time.perf_counter()
            super().on_validation_epoch_end(trainer, pl_module)
            TimedWriter.seconds += time.perf_counter() - start

    results = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(0)
        module = TeacherDetector(
            modality="sm",
            architecture=settings["architecture"],
            image_size=tuple(settings["image_size"]),
            architecture_overrides=settings["architecture_overrides"],
            evaluation=EvaluationSettings(fauc_n_boot=0),
        )
        TimedWriter.seconds, TimedWriter.scores = 0.0, []
        writer = TimedWriter(output_dir=str(folder / f"predictions-{precision}"))
        run = trainer(
            device,
            precision,
            callbacks=[writer],
            default_root_dir=str(folder / f"validate-{precision}"),
        )
        started = time.perf_counter()
        run.validate(module, datamodule=data_module(folder, cache, settings, args.workers[0]))
        seconds = time.perf_counter() - started
        scores = np.concatenate(TimedWriter.scores)
        results[precision] = {
            "seconds": seconds,
            "writer_seconds": TimedWriter.seconds,
            "detections": int(scores.size),
            "distinct_scores": int(np.unique(scores).size),
        }
        print(
            f"validation {precision:10s}: {scores.size} detections, "
            f"{results[precision]['distinct_scores']} distinct scores; {seconds:.1f} s, "
            f"writer {TimedWriter.seconds:.2f} s",
            flush=True,
        )
    fp32, bf16 = (results[p]["distinct_scores"] for p in ("32-true", "bf16-mixed"))
    results["distinct_bf16_over_fp32"] = bf16 / fp32 if fp32 else None
    return results
