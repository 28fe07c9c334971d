"""Training-step cost: our Lightning modules against effdet's own loop, and each stage against
Stage I.

1. Overhead: ``TeacherDetector`` under a Lightning ``Trainer`` against effdet's
   ``DetBenchTrain`` in a plain PyTorch loop: the same architecture, weights, batch, image
   size, optimiser (AdamW with the same per-step LambdaLR schedule), data in memory. Rounds
   alternate the order (ABBA) so drift hits both; the step time is the interval between
   consecutive ends of a step (data fetch, forward, loss, backward, optimiser, hooks).
2. Stage cost: Stage II (``DistillStudent``), Stage III (``FusedDetector`` on a student) and
   BASE_UB (``FusedDetector`` on the FFDM teacher) against Stage I, interleaved the same way,
   under the same ``Trainer``; beside each, what its extra work predicts: FLOPs of one training
   step (``torch.utils.flop_counter``) and the sum of its parts' measured times (a trained
   extractor's forward + backward, a frozen one's forward under ``no_grad``, the 1x and 2x
   heads), and peak memory (resident set of a fresh process running the stage; on CPU).

The model is the CPU demo's (``configs/demo/stage1_sm.yaml``) at the phantom's input size and
batch (``configs/data/phantom.yaml``) unless overridden.

    .venv/bin/python bench/bench_train.py [--rounds 4] [--steps 6] [--warmup 3] [--quick]

Writes ``bench/results/train.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from shared import summary, write_result  # noqa: E402
from train_models import (  # noqa: E402
    demo_settings,
    make_artifacts,
    make_batches,
    stage_modalities,
    stage_module,
)
from train_timing import (  # noqa: E402
    lightning_steps,
    overhead,
    part_times,
    stage_memory,
    step_flops,
)

STAGES = ("stage1", "stage2", "stage3", "upper_bound")


def memory_in_subprocess(stage: str, settings, artifacts) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--memory-of",
        stage,
        "--settings",
        json.dumps({"settings": settings, "artifacts": artifacts}),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def stage_costs(settings, rounds: int, steps: int, warmup: int, folder: Path) -> dict[str, Any]:
    artifacts = make_artifacts(settings, folder)
    modules = {stage: stage_module(stage, settings, artifacts) for stage in STAGES}
    batches = {stage: make_batches(settings, stage_modalities(stage)) for stage in STAGES}
    flops = {stage: step_flops(modules[stage], batches[stage][0]) for stage in STAGES}
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for round_index in range(rounds):
        order = STAGES if round_index % 2 == 0 else tuple(reversed(STAGES))
        for stage in order:
            times[stage] += lightning_steps(modules[stage], batches[stage], steps, warmup)
    parts = part_times(settings, repeats=max(5, steps))
    part = {name: value["median"] for name, value in parts.items()}
    base = summary(times["stage1"])["median"]
    extra_head = part["head_2x_s"] - part["head_1x_s"]
    # What each stage adds to Stage I's work, from its parts' measured times.
    predicted = {
        "stage1": base,
        "stage2": base - part["head_1x_s"] + part["extractor_frozen_s"],
        "stage3": base + part["extractor_frozen_s"] + extra_head,
        "upper_bound": base + part["extractor_trained_s"] + extra_head,
    }
    result = {"parts": parts, "stages": {}}
    for stage in STAGES:
        measured = summary(times[stage])
        result["stages"][stage] = {
            "step_s": measured,
            "ratio_to_stage1": measured["median"] / base,
            "flops_per_step": flops[stage],
            "flops_ratio_to_stage1": flops[stage] / flops["stage1"],
            "predicted_from_parts_s": predicted[stage],
            "measured_over_predicted": measured["median"] / predicted[stage],
            "memory": memory_in_subprocess(stage, settings, artifacts),
        }
    result["frozen_forward_over_trained_step"] = (
        part["extractor_frozen_s"] / part["extractor_trained_s"]
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per arm per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per arm per round")
    parser.add_argument("--image-size", type=int, nargs=2, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds of 2 steps")
    parser.add_argument("--memory-of", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*self.log.*")
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.memory_of:
        given = json.loads(args.settings)
        print(json.dumps(stage_memory(args.memory_of, given["settings"], given["artifacts"])))
        return 0
    if args.quick:
        args.rounds, args.steps, args.warmup = 2, 2, 1
    settings = demo_settings(args.image_size, args.batch_size)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result = {
            "settings": {
                **settings,
                "rounds": args.rounds,
                "steps": args.steps,
                "warmup": args.warmup,
                "optimizer": "AdamW + LambdaLR per step",
                "torch_threads": torch.get_num_threads(),
            },
            "overhead": overhead(settings, args.rounds, args.steps, args.warmup),
            "stage_costs": stage_costs(
                settings, args.rounds, args.steps, args.warmup, Path(folder)
            ),
        }
    result["wall_s"] = time.perf_counter() - started
    path = write_result("train", result)
    o = result["overhead"]
    print(
        f"training-step overhead: Lightning TeacherDetector "
        f"{o['lightning_teacher_s']['median'] * 1e3:.1f} ms vs effdet DetBenchTrain "
        f"{o['effdet_detbenchtrain_s']['median'] * 1e3:.1f} ms per step "
        f"(median of {o['steps_per_arm']}): ratio {o['ratio']:.3f}"
    )
    costs = result["stage_costs"]
    for stage, entry in costs["stages"].items():
        memory = entry["memory"]["training_peak_mib"]
        print(
            f"  {stage:12s} {entry['step_s']['median'] * 1e3:7.1f} ms  "
            f"x{entry['ratio_to_stage1']:.2f} of Stage I (FLOPs x"
            f"{entry['flops_ratio_to_stage1']:.2f}; parts predict "
            f"{entry['predicted_from_parts_s'] * 1e3:.1f} ms, measured/predicted "
            f"{entry['measured_over_predicted']:.2f}); training peak "
            f"{memory if memory is None else round(memory)} MiB"
        )
    print(
        f"  frozen extractor forward / trained forward+backward: "
        f"{costs['frozen_forward_over_trained_step']:.2f}"
    )
    print(f"wrote {path} in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
