"""Images per second of every stage on one GPU (issue B1, item 6): the full-size model of
``configs/stage1_sm.yaml`` at 1280 x 1024, fp32 against bf16 autocast with channels_last (what
``--trainer.precision bf16-mixed`` runs), peak memory, FLOPs per image
(``torch.utils.flop_counter``) and the share of the card's peak they reach.

One prepared script for a GPU machine; where there is no GPU it says so, writes nothing and
exits 0 (``make bench`` runs it last).

    .venv/bin/python bench/bench_gpu.py [--batch-size 8] [--steps 20] [--warmup 5]
        [--peak-tflops-bf16 989] [--peak-tflops-fp32 67]

Writes ``bench/results/gpu.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
import yaml  # noqa: E402
from bench_train import (  # noqa: E402
    STAGES,
    make_artifacts,
    make_batches,
    stage_modalities,
    stage_module,
)
from common import ROOT, summary, write_result  # noqa: E402

# Dense tensor-core peaks (TFLOP/s) of the cards this is run on; others: pass the flags.
PEAKS = {"H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5),
         "L40S": (362.0, 91.6), "A40": (150.0, 37.4), "V100": (125.0, 15.7)}


def full_settings(batch_size: int) -> dict:
    model = yaml.safe_load((ROOT / "configs/stage1_sm.yaml").read_text())["model"]["init_args"]
    data = yaml.safe_load((ROOT / "configs/data/embed.yaml").read_text())["data"]["init_args"]
    return {"architecture": model["architecture"],
            "architecture_overrides": model.get("architecture_overrides") or {},
            "image_size": list(data["image_size"]), "batch_size": batch_size}


def to_device(batch, device, channels_last: bool):
    moved = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if channels_last and value.ndim == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            value = [item.to(device) for item in value]
        moved[key] = value
    return moved


def measure(stage: str, settings, artifacts, mode: str, steps: int, warmup: int) -> dict:
    """One stage in one precision: steps/s, images/s, peak memory, FLOPs and their share."""
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device("cuda")
    channels_last = mode == "bf16_channels_last"
    module = stage_module(stage, settings, artifacts).to(device)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    module.train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    batches = [to_device(batch, device, channels_last)
               for batch in make_batches(settings, stage_modalities(stage), count=2)]

    def step(batch):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode != "fp32"):
            loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step(batches[0])
    flops_per_step = counter.get_total_flops()
    for index in range(warmup):
        step(batches[index % 2])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for index in range(steps):
        start = time.perf_counter()
        step(batches[index % 2])
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step_s = summary(times)
    return {"step_s": step_s, "images_per_s": settings["batch_size"] / step_s["median"],
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
            "flops_per_image": flops_per_step / settings["batch_size"],
            "achieved_tflops": flops_per_step / step_s["median"] / 1e12}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops-bf16", type=float, default=None)
    parser.add_argument("--peak-tflops-fp32", type=float, default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; nothing measured, nothing written. Run it on a "
              "GPU machine: .venv/bin/python bench/bench_gpu.py")
        return 0
    warnings.filterwarnings("ignore", message=".*self.log.*")
    name = torch.cuda.get_device_name(0)
    known = next((peaks for key, peaks in PEAKS.items() if key in name), (None, None))
    peak_bf16 = args.peak_tflops_bf16 or known[0]
    peak_fp32 = args.peak_tflops_fp32 or known[1]
    torch.backends.cudnn.benchmark = True
    settings = full_settings(args.batch_size)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        artifacts = make_artifacts(settings, Path(folder))
        for stage in STAGES:
            results[stage] = {}
            for mode in ("fp32", "bf16_channels_last"):
                entry = measure(stage, settings, artifacts, mode, args.steps, args.warmup)
                peak = peak_fp32 if mode == "fp32" else peak_bf16
                entry["share_of_peak"] = None if not peak else entry["achieved_tflops"] / peak
                results[stage][mode] = entry
                torch.cuda.empty_cache()
                share = entry["share_of_peak"]
                print(f"{stage:12s} {mode:18s} {entry['images_per_s']:7.1f} img/s  peak "
                      f"{entry['peak_memory_gib']:.1f} GiB  {entry['flops_per_image'] / 1e9:.0f} "
                      f"GFLOP/img  {entry['achieved_tflops']:.1f} TFLOP/s"
                      + ("" if share is None else f" ({100 * share:.1f}% of peak)"))
            results[stage]["bf16_speedup"] = (results[stage]["bf16_channels_last"]["images_per_s"]
                                              / results[stage]["fp32"]["images_per_s"])
    path = write_result("gpu", {"device": name, "settings": {
        **settings, "steps": args.steps, "warmup": args.warmup, "peak_tflops_bf16": peak_bf16,
        "peak_tflops_fp32": peak_fp32}, "stages": results})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
