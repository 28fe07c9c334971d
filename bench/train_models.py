"""The training benchmarks' models and data: the CPU demo's settings, batches of the batch
contract in memory, each stage's module and the stage artifacts it is built from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from shared import ROOT

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
