"""What tests/lightning_modules/test_stage_*.py share: the tiny image size, an artifact's
tensors, the comparison of two state dicts, and a random batch with one box per image."""

from __future__ import annotations

import torch

from lightning_modules.artifacts import read_artifact

SIZE = (128, 128)


def _artifact_state(run, prefix):
    return read_artifact(run / "artifact").state(prefix)


def _identical(first, second):
    assert set(first) == set(second) and first
    return all(torch.equal(first[key], second[key]) for key in first)


def _batch(modalities=("sm",), size=SIZE, pairs=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch = {"pair_id": [f"p{index}" for index in range(pairs)]}
    for modality in modalities:
        batch[modality] = torch.rand(pairs, 1, *size, generator=generator)
        batch[f"{modality}_boxes"] = [torch.tensor([[20.0, 30.0, 50.0, 60.0]])] * pairs
        batch[f"{modality}_labels"] = [torch.tensor([0])] * pairs
    return batch
