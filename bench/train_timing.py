"""What the training benchmark times: steps under a Lightning Trainer and in effdet's own loop
(the overhead), and a step's FLOPs, its parts' times and a stage's peak memory."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from shared import peak_rss_mib, reset_peak_rss, rss_mib, summary
from train_models import LR, make_batches, stage_modalities, stage_module, teacher


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
