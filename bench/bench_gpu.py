"""GPU figures: one prepared run on one GPU, in three parts.

1. ``steps``: training steps of Stage I and BASE_UB at the real configs' size
   (``configs/stage1_sm.yaml`` at ``configs/data/embed.yaml``'s 1280 x 1024, batch 8) in fp32,
   bf16-mixed (autocast) and bf16-mixed with channels_last: pairs/s, peak memory, FLOPs per
   pair (``torch.utils.flop_counter``) and their share of the card's peak, looked up by device
   name. TF32 is noted: with PyTorch's defaults fp32 convolutions run on TF32 tensor cores
   (``torch.backends.cudnn.allow_tf32``) and fp32 matmuls do not.
2. ``loader``: a 30-step bf16-mixed, channels_last Lightning fit of Stage I on a synthetic
   cache of full-size inputs with 4, 8 and 12 loader workers: pairs/s against part 1's, and
   the share of each step spent waiting for the next batch (is the GPU starved?). The cache is
   written just before, so it is read from the page cache: a cluster file system can only be
   slower.
3. ``validation``: one validation pass of an untrained Stage I in 32-true and in bf16-mixed:
   distinct scores of each (decoding runs in float32 either way), and the prediction writer's
   time.

    .venv/bin/python bench/bench_gpu.py [--parts steps loader validation] [--dry-run]

Writes ``bench/results/gpu.json``, ``gpu_loader.json`` and ``gpu_validation.json``.
``bench/gpu_check.sh`` runs all three within 8 minutes. Without a CUDA device it says so,
writes nothing and exits 0 (``make bench`` runs it last); ``--dry-run`` runs every part on the
CPU at a tiny size, to check the script, and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from bench_train import (  # noqa: E402
    make_artifacts,
    make_batches,
    stage_modalities,
    stage_module,
)
from shared import RESULTS, ROOT, summary, write_result  # noqa: E402

from common.defaults import HIT_MIN_DISTANCE  # noqa: E402

# Dense peaks (TFLOP/s: bf16, tf32, fp32) from NVIDIA's data sheets, by device name (the first
# key found in torch.cuda.get_device_name wins); others: --peak-tflops.
PEAKS = {
    "H100 PCIe": (756.0, 378.0, 51.2),
    "H100 NVL": (835.5, 417.5, 60.0),
    "H100": (989.4, 494.7, 66.9),  # SXM ("NVIDIA H100 80GB HBM3")
    "H200": (989.4, 494.7, 66.9),
    "A100": (312.0, 156.0, 19.5),
    "L40S": (362.1, 183.0, 91.6),
}
MODES = ("fp32", "bf16", "bf16_channels_last")
STAGES = ("stage1", "upper_bound")
SM_SIZE = (2457, 1996)  # the paper's SM images (H, W)


def full_settings(batch_size: int) -> dict:
    model = yaml.safe_load((ROOT / "configs/stage1_sm.yaml").read_text())["model"]["init_args"]
    data = yaml.safe_load((ROOT / "configs/data/embed.yaml").read_text())["data"]["init_args"]
    return {
        "architecture": model["architecture"],
        "architecture_overrides": model.get("architecture_overrides") or {},
        "image_size": list(data["image_size"]),
        "batch_size": batch_size,
    }


def tiny_settings() -> dict:
    """The CPU demo's model at 128 x 128, batch 2: what --dry-run runs."""
    model = yaml.safe_load((ROOT / "configs/demo/stage1_sm.yaml").read_text())["model"]
    return {
        "architecture": model["init_args"]["architecture"],
        "architecture_overrides": model["init_args"]["architecture_overrides"],
        "image_size": [128, 128],
        "batch_size": 2,
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# -- 1. training steps ----------------------------------------------------------------------
def to_device(batch, device):
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            value = [item.to(device) for item in value]
        moved[key] = value
    return moved


def measure_steps(
    stage: str, settings, artifacts, mode: str, steps: int, warmup: int, device: torch.device
) -> dict:
    """One stage in one mode: pairs/s, peak memory, FLOPs per pair and achieved TFLOP/s."""
    from torch.utils.flop_counter import FlopCounterMode

    from lightning_modules.effdet_parts import use_channels_last

    module = stage_module(stage, settings, artifacts).to(device)
    if mode == "bf16_channels_last":
        use_channels_last(module)  # what model.init_args.channels_last does in setup
    module.train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    batches = [
        to_device(batch, device)
        for batch in make_batches(settings, stage_modalities(stage), count=2)
    ]

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode != "fp32"):
            loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step(batches[0])
    flops_per_step = counter.get_total_flops()
    for index in range(warmup):
        step(batches[index % 2])
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for index in range(steps):
        start = time.perf_counter()
        step(batches[index % 2])
        synchronize(device)
        times.append(time.perf_counter() - start)
    step_s = summary(times)
    pairs = settings["batch_size"]
    return {
        "step_s": step_s,
        "pairs_per_s": pairs / step_s["median"],
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        ),
        "gflops_per_pair": flops_per_step / pairs / 1e9,
        "achieved_tflops": flops_per_step / step_s["median"] / 1e12,
    }


def part_steps(args, settings, device, peaks) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        artifacts = make_artifacts(settings, Path(folder))
        for stage in args.stages:
            results[stage] = {}
            for mode in MODES:
                entry = measure_steps(
                    stage, settings, artifacts, mode, args.steps, args.warmup, device
                )
                # fp32 convolutions run on TF32 tensor cores unless cudnn.allow_tf32 is off
                tf32 = torch.backends.cudnn.allow_tf32
                peak = peaks[0] if mode != "fp32" else (peaks[1] if tf32 else peaks[2])
                entry["peak_used"] = "bf16" if mode != "fp32" else "tf32" if tf32 else "fp32"
                entry["share_of_peak"] = (entry["achieved_tflops"] / peak) if peak else None
                results[stage][mode] = entry
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                share = entry["share_of_peak"]
                print(
                    f"steps  {stage:12s} {mode:18s} {entry['pairs_per_s']:7.1f} pairs/s  "
                    f"{entry['gflops_per_pair']:.0f} GFLOP/pair  "
                    f"{entry['achieved_tflops']:.1f} TFLOP/s"
                    + (
                        ""
                        if share is None
                        else f" ({100 * share:.1f}% of the {entry['peak_used']} peak)"
                    ),
                    flush=True,
                )
            for mode in MODES[1:]:
                results[stage][f"{mode}_speedup"] = (
                    results[stage][mode]["pairs_per_s"] / results[stage]["fp32"]["pairs_per_s"]
                )
    return results


# -- a synthetic cache of full-size inputs ------------------------------------------------------
def _entry(arguments) -> None:
    folder, image_size, pair_id, seed = arguments
    import cv2

    from datamodules.cache import ImageCache
    from datamodules.dicom import Geometry

    cache = ImageCache(folder, image_size, create=False)
    generator = np.random.default_rng(seed)
    height, width = image_size
    # smooth tissue-like texture plus fine noise: compresses like an image, not like noise
    coarse = generator.random((height // 32, width // 32), dtype=np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) * 0.6 + 0.2
    image += generator.normal(0, 0.02, (height, width)).astype(np.float32)
    geometry = Geometry.build(SM_SIZE, False, (0, 0, SM_SIZE[1], SM_SIZE[0]), image_size)
    cache.write(pair_id, "sm", np.clip(image, 0, 1), geometry)


def synthetic_data(folder: Path, pairs: int, val_pairs: int, image_size) -> Path:
    """A manifest, lesion table and SM cache of ``pairs`` training and ``val_pairs`` validation
    pairs (half with one lesion), the DICOMs never read (every image is cached)."""
    from datamodules.cache import ImageCache

    cache = folder / "cache"
    ImageCache(cache, image_size, create=True)
    rows, lesions = [], []
    for index in range(pairs + val_pairs):
        pair_id = f"S{index:05d}"
        rows.append(
            {
                "pair_id": pair_id,
                "patient_id": f"P{index:05d}",
                "exam_id": f"E{index}",
                "laterality": "L",
                "view": "CC",
                "sm_path": f"images/{pair_id}_sm.dcm",
                "ffdm_path": f"images/{pair_id}_ffdm.dcm",
                "label": index % 2,
                "annotated": True,
                "split": "train" if index < pairs else "val",
            }
        )
        if index % 2:
            x, y = 600 + index % 500, 900 + index % 700
            lesions.append(
                {
                    "pair_id": pair_id,
                    "modality": "sm",
                    "x1": x,
                    "y1": y,
                    "x2": x + 80,
                    "y2": y + 80,
                    "pathology": "malignant",
                }
            )
    import pandas as pd

    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(lesions).to_csv(folder / "lesions.csv", index=False)
    jobs = [(str(cache), tuple(image_size), row["pair_id"], seed) for seed, row in enumerate(rows)]
    with get_context("spawn").Pool(8) as pool:
        pool.map(_entry, jobs)
    return cache


def data_module(folder: Path, cache: Path, settings, workers: int, samples: int | None = None):
    from datamodules import PairedMammoDataModule

    return PairedMammoDataModule(
        manifest=str(folder),
        cache_dir=str(cache),
        image_size=tuple(settings["image_size"]),
        modalities=["sm"],
        batch_size=settings["batch_size"],
        num_workers=workers,
        samples_per_epoch=samples,
        augment=True,
        hit_min_distance=HIT_MIN_DISTANCE,
    )


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("steps", "loader", "validation"),
        default=["steps", "loader", "validation"],
    )
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--fit-steps", type=int, default=30)
    parser.add_argument("--workers", nargs="+", type=int, default=[4, 8, 12])
    parser.add_argument("--val-pairs", type=int, default=64)
    parser.add_argument("--peak-tflops", nargs=3, type=float, metavar=("BF16", "TF32", "FP32"))
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="every part on the CPU at a tiny size; nothing written",
    )
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*self.log.*")
    if args.dry_run:
        device, settings = torch.device("cpu"), tiny_settings()
        args.steps, args.warmup, args.fit_steps, args.val_pairs = 2, 1, 4, 4
        args.workers = [min(w, 2) for w in args.workers[:1]] + [0]
        name, peaks = "cpu (dry run)", (None, None, None)
    elif not torch.cuda.is_available():
        print(
            "bench_gpu: no CUDA device here; nothing measured, nothing written. Run it on a "
            "GPU machine: bash bench/gpu_check.sh"
        )
        return 0
    else:
        device, settings = torch.device("cuda"), full_settings(args.batch_size)
        name = torch.cuda.get_device_name(0)
        known = next((value for key, value in PEAKS.items() if key in name), (None,) * 3)
        peaks = tuple(args.peak_tflops) if args.peak_tflops else known
        torch.backends.cudnn.benchmark = True
    context = {
        "device": name,
        "settings": settings,
        "peak_tflops": dict(zip(("bf16", "tf32", "fp32"), peaks)),
        "tf32": {
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
    }

    def write(result_name: str, result: dict) -> None:
        if not args.dry_run:
            print(f"wrote {write_result(result_name, {**context, **result})}", flush=True)

    gpu_rate = None  # part 1's bare bf16 Stage I rate, this run's or the last one's here
    previous = RESULTS / "gpu.json"
    if previous.is_file() and not args.dry_run:
        document = json.loads(previous.read_text())
        if document.get("device") == name:
            gpu_rate = document["stages"].get("stage1", {}).get("bf16", {}).get("pairs_per_s")
    if "steps" in args.parts:
        steps = part_steps(args, settings, device, peaks)
        write("gpu", {"steps": args.steps, "warmup": args.warmup, "stages": steps})
        gpu_rate = steps.get("stage1", {}).get("bf16", {}).get("pairs_per_s")
    if "loader" in args.parts or "validation" in args.parts:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            pairs = settings["batch_size"] * (args.fit_steps + 2)
            started = time.perf_counter()
            cache = synthetic_data(folder, pairs, args.val_pairs, settings["image_size"])
            print(
                f"synthetic cache: {pairs + args.val_pairs} SM entries of "
                f"{settings['image_size']} in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
            if "loader" in args.parts:
                loader = part_loader(args, settings, device, folder, cache, gpu_rate)
                write(
                    "gpu_loader",
                    {
                        "fit_steps": args.fit_steps,
                        "precision": "bf16-mixed",
                        "stage": "stage1",
                        "by_num_workers": loader,
                    },
                )
            if "validation" in args.parts:
                validation = part_validation(args, settings, device, folder, cache)
                write("gpu_validation", {"val_pairs": args.val_pairs, **validation})
    return 0


if __name__ == "__main__":
    sys.exit(main())
