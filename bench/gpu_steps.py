"""Part 1 of the GPU benchmark: training steps of a stage in fp32, bf16-mixed and bf16-mixed with
channels_last (pairs/s, peak memory, FLOPs per pair and their share of the card's peak)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from shared import summary
from train_models import make_artifacts, make_batches, stage_modalities, stage_module

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
