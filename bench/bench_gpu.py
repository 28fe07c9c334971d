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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
import yaml  # noqa: E402
from gpu_cache import synthetic_data  # noqa: E402
from gpu_loader_validation import part_loader, part_validation  # noqa: E402
from gpu_steps import PEAKS, part_steps  # noqa: E402
from shared import RESULTS, ROOT, write_result  # noqa: E402

STAGES = ("stage1", "upper_bound")


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
