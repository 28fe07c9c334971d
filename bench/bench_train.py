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
import math
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from shared import ROOT, peak_rss_mib, reset_peak_rss, rss_mib, summary, write_result  # noqa: E402

STAGES = ("stage1", "stage2", "stage3", "upper_bound")
LR = 1e-3


# -- models and data ---------------------------------------------------------------------------
def demo_settings(image_size=None, batch_size=None) -> dict[str, Any]:
    model = yaml.safe_load((ROOT / "configs/demo/stage1_sm.yaml").read_text())["model"]
    data = yaml.safe_load((ROOT / "configs/data/phantom.yaml").read_text())["data"]["init_args"]
    args = model["init_args"]
    return {
        "architecture": args["architecture"],
        "architecture_overrides": args.get("architecture_overrides") or {},
        "image_size": list(image_size or data["image_size"]),
        "batch_size": int(batch_size or data["batch_size"]),
    }


def make_batches(settings, modalities, count=4, seed=0) -> list[dict[str, Any]]:
    """``count`` distinct batches of the batch contract, one or two lesions per image."""
    generator = torch.Generator().manual_seed(seed)
    height, width = settings["image_size"]
    size = settings["batch_size"]
    batches = []
    for index in range(count):
        batch: dict[str, Any] = {"pair_id": [f"b{index}p{i}" for i in range(size)]}
        boxes = []
        for _ in range(size):
            n = int(torch.randint(1, 3, (1,), generator=generator))
            centre = torch.rand(n, 2, generator=generator) * torch.tensor([width, height]) * 0.6
            centre += torch.tensor([width, height]) * 0.2
            half = 8 + torch.rand(n, 2, generator=generator) * 24
            boxes.append(torch.cat([centre - half, centre + half], dim=1))
        for modality in modalities:
            batch[modality] = torch.rand(size, 1, height, width, generator=generator)
            batch[f"{modality}_boxes"] = boxes
            batch[f"{modality}_labels"] = [torch.zeros(len(b), dtype=torch.int64) for b in boxes]
        batches.append(batch)
    return batches


def teacher(settings, modality="sm"):
    from lightning_modules import OptimizerSettings, TeacherDetector

    return TeacherDetector(
        modality=modality,
        architecture=settings["architecture"],
        image_size=tuple(settings["image_size"]),
        architecture_overrides=settings["architecture_overrides"],
        optimizer=OptimizerSettings(learning_rate=LR),
    )


def write_module_artifact(module, out: Path) -> str:
    from lightning_modules.artifacts import write_artifact

    spec = module.full_artifact_spec()
    prefixes = tuple(spec["weights"])
    state = {key: value for key, value in module.state_dict().items() if key.startswith(prefixes)}
    write_artifact(out, state, spec)
    return str(out)


def make_artifacts(settings, folder: Path) -> dict[str, str]:
    """Stage I SM and FFDM and Stage II artifacts of freshly initialised modules."""
    from lightning_modules import DistillStudent, OptimizerSettings

    torch.manual_seed(0)
    paths = {
        "sm": write_module_artifact(teacher(settings, "sm"), folder / "sm"),
        "ffdm": write_module_artifact(teacher(settings, "ffdm"), folder / "ffdm"),
    }
    student = DistillStudent(
        ffdm_teacher=paths["ffdm"],
        image_size=tuple(settings["image_size"]),
        optimizer=OptimizerSettings(learning_rate=LR),
    )
    paths["stage2"] = write_module_artifact(student, folder / "stage2")
    return paths


def stage_module(stage: str, settings, artifacts):
    from lightning_modules import DistillStudent, FusedDetector, OptimizerSettings

    torch.manual_seed(0)
    size = tuple(settings["image_size"])
    if stage == "stage1":
        return teacher(settings, "sm")
    if stage == "stage2":
        return DistillStudent(
            ffdm_teacher=artifacts["ffdm"],
            image_size=size,
            init_from=artifacts["ffdm"],
            optimizer=OptimizerSettings(learning_rate=LR),
        )
    partner = artifacts["stage2"] if stage == "stage3" else artifacts["ffdm"]
    return FusedDetector(
        sm_teacher=artifacts["sm"],
        partner=partner,
        image_size=size,
        optimizer=OptimizerSettings(learning_rate=LR),
    )


def stage_modalities(stage: str) -> tuple[str, ...]:
    return ("sm",) if stage in ("stage1", "stage3") else ("sm", "ffdm")


# -- timing -------------------------------------------------------------------------------------
class StepTimer(pl.Callback):
    """The time at the end of every training step."""

    def __init__(self):
        self.marks: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.marks:
            self.marks.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.marks.append(time.perf_counter())


def intervals(marks: list[float], warmup: int) -> list[float]:
    return [b - a for a, b in zip(marks[:-1], marks[1:])][warmup:]


def lightning_steps(module, batches, steps: int, warmup: int) -> list[float]:
    """Step times of ``module`` trained by a Lightning Trainer (no logger, bar or checkpoints:
    what a cluster job's step costs beyond them)."""
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    data = [batches[index % len(batches)] for index in range(warmup + steps)]
    loader = torch.utils.data.DataLoader(
        data, batch_size=None, shuffle=False, collate_fn=lambda batch: batch
    )
    trainer.fit(module, train_dataloaders=loader)
    return intervals(timer.marks, warmup)


def effdet_bench(module):
    """effdet's ``DetBenchTrain`` around an ``EfficientDet`` holding ``module``'s weights."""
    from effdet import DetBenchTrain, EfficientDet

    net = EfficientDet(module.config, pretrained_backbone=False)
    state = {**module.extractor.state_dict(), **module.head.state_dict()}
    net.load_state_dict(state)
    return DetBenchTrain(net, create_labeler=True)


def effdet_targets(batch, modality="sm"):
    """effdet's padded targets: yxyx boxes, 1-based classes, padding rows of class -1."""
    boxes = batch[f"{modality}_boxes"]
    rows = max(len(b) for b in boxes)
    bbox = torch.zeros(len(boxes), rows, 4)
    cls = torch.full((len(boxes), rows), -1.0)
    for index, image_boxes in enumerate(boxes):
        bbox[index, : len(image_boxes)] = image_boxes[:, [1, 0, 3, 2]]
        cls[index, : len(image_boxes)] = batch[f"{modality}_labels"][index].float() + 1
    return {"bbox": bbox, "cls": cls}


def effdet_steps(bench, batches, steps: int, warmup: int, normalize) -> list[float]:
    """Step times of effdet's own training loop: forward, backward, AdamW, LambdaLR."""
    inputs = [(normalize(batch["sm"]), effdet_targets(batch)) for batch in batches]
    optimizer = torch.optim.AdamW(bench.parameters(), lr=LR, weight_decay=1e-4)
    total = warmup + steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total))
    )
    bench.train()
    marks = [time.perf_counter()]
    for step in range(total):
        images, target = inputs[step % len(inputs)]
        optimizer.zero_grad(set_to_none=True)
        loss = bench(images, target)["loss"]
        loss.backward()
        optimizer.step()
        scheduler.step()
        marks.append(time.perf_counter())
    return intervals(marks, warmup)


def overhead(settings, rounds: int, steps: int, warmup: int) -> dict[str, Any]:
    torch.manual_seed(0)
    module = teacher(settings)
    bench = effdet_bench(module)
    batches = make_batches(settings, ("sm",))

    def normalize(images):  # effdet's loop gets images already normalised, as its loader does
        with torch.no_grad():
            return module.extractor.normalize(images)

    ours, theirs = [], []
    for round_index in range(rounds):
        order = ("effdet", "lightning") if round_index % 2 == 0 else ("lightning", "effdet")
        for arm in order:
            if arm == "effdet":
                theirs += effdet_steps(bench, batches, steps, warmup, normalize)
            else:
                ours += lightning_steps(module, batches, steps, warmup)
    ratio = summary(ours)["median"] / summary(theirs)["median"]
    return {
        "lightning_teacher_s": summary(ours),
        "effdet_detbenchtrain_s": summary(theirs),
        "ratio": ratio,
        "steps_per_arm": len(ours),
    }


# -- stage costs --------------------------------------------------------------------------------
def step_flops(module, batch) -> int:
    """FLOPs of one training step's forward and backward (``torch.utils.flop_counter``)."""
    from torch.utils.flop_counter import FlopCounterMode

    module.train()
    counter = FlopCounterMode(display=False)
    with counter, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = module.training_step(batch, 0)
        loss.backward()
    module.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def timed(function, repeats: int, warmup: int = 1) -> dict[str, float]:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return summary(times)


def part_times(settings, repeats: int) -> dict[str, dict[str, float]]:
    """A trained extractor's forward + backward, a frozen one's forward under no_grad, and
    the 1x and 2x heads' forward + backward (features as inputs that need gradients)."""
    from lightning_modules.effdet_parts import DetectionHead

    torch.manual_seed(0)
    module = teacher(settings)
    module.train()
    images = make_batches(settings, ("sm",), count=1)[0]["sm"]
    extractor = module.extractor
    with torch.no_grad():
        features = [f.detach() for f in extractor(images)]
    wide = DetectionHead(module.config, in_multiplier=2).train()

    def trained():
        extractor.zero_grad(set_to_none=True)
        sum(f.float().mean() for f in extractor(images)).backward()

    def frozen():
        extractor.eval()
        with torch.no_grad():
            extractor(images)
        extractor.train()

    def head(net, multiplier):
        inputs = [torch.cat([f] * multiplier, 1).requires_grad_(True) for f in features]

        def run():
            net.zero_grad(set_to_none=True)
            class_out, box_out = net(inputs)
            (sum(c.mean() for c in class_out) + sum(b.mean() for b in box_out)).backward()

        return run

    return {
        "extractor_trained_s": timed(trained, repeats),
        "extractor_frozen_s": timed(frozen, repeats),
        "head_1x_s": timed(head(module.head, 1), repeats),
        "head_2x_s": timed(head(wide, 2), repeats),
    }


def stage_memory(stage: str, settings, artifacts, steps: int = 3) -> dict[str, Any]:
    """Run in a fresh process: peak resident memory while ``stage`` trains ``steps`` steps."""
    module = stage_module(stage, settings, artifacts)
    batches = make_batches(settings, stage_modalities(stage))
    before = rss_mib()
    reset = reset_peak_rss()
    lightning_steps(module, batches, steps, 0)
    peak = peak_rss_mib()
    return {
        "rss_before_mib": before,
        "peak_rss_mib": peak,
        "training_peak_mib": None if not reset or peak is None else peak - before,
    }


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
