"""Balanced sampling: half positives per epoch, seeded per (seed, epoch), disjoint equal rank
slices, and the same through a real two-process Lightning DDP run (gloo, CPU).

Run as a script (``python tests/datamodules/test_sampler.py OUT_DIR``), this file is the DDP
training program: Lightning's "ddp" strategy starts the second rank by running the same command
again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.sampler import BalancedDistributedSampler


def _labels(size: int, positives: int) -> np.ndarray:
    labels = np.zeros(size, dtype=np.int64)
    labels[np.random.default_rng(0).choice(size, positives, replace=False)] = 1
    return labels


def test_five_percent_positives_are_half_of_every_epoch():
    labels = _labels(1000, 50)
    sampler = BalancedDistributedSampler(labels, num_replicas=1, rank=0, seed=0)
    shares = []
    for epoch in range(20):
        sampler.set_epoch(epoch)
        drawn = np.fromiter(iter(sampler), dtype=np.int64)
        assert len(drawn) == 1000
        shares.append(labels[drawn].mean())
        counts = Counter(drawn.tolist())
        # positives repeated as evenly as possible (500 draws over 50: 10 each) ...
        assert {counts[i] for i in np.flatnonzero(labels == 1)} == {10}
        # ... and no negative twice while unseen negatives remain (500 of 950)
        assert max(counts[i] for i in np.flatnonzero(labels == 0)) == 1
    assert all(abs(share - 0.5) <= 0.03 for share in shares), shares
    assert abs(np.mean(shares) - 0.5) <= 0.03


def test_odd_epochs_and_uneven_repeats():
    labels = _labels(101, 7)
    sampler = BalancedDistributedSampler(labels, num_samples=101, num_replicas=1, rank=0)
    for epoch in range(10):
        sampler.set_epoch(epoch)
        drawn = sampler.global_indices()
        positives = int(labels[drawn].sum())
        assert positives in (50, 51)
        counts = Counter(drawn[labels[drawn] == 1].tolist())
        assert set(counts.values()) <= {positives // 7, positives // 7 + 1}


@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_slices_are_disjoint_and_equal_in_length(world):
    labels = _labels(240, 120)  # half positives and 120 draws: no repeats within an epoch
    for num_samples in (120, 119):  # divisible by 1, 2 and 3, and not
        samplers = [
            BalancedDistributedSampler(labels, num_samples, num_replicas=world, rank=r, seed=5)
            for r in range(world)
        ]
        for sampler in samplers:
            sampler.set_epoch(3)
        slices = [list(sampler) for sampler in samplers]
        assert len({len(s) for s in slices}) == 1
        assert len(slices[0]) == len(samplers[0]) == -(-num_samples // world)
        # positions r::world of one padded global draw
        padded = samplers[0].global_indices().tolist()
        padded = (padded * 2)[: world * len(slices[0])]
        for rank, indices in enumerate(slices):
            assert indices == padded[rank::world]
        if num_samples % world == 0:  # no padding: disjoint data set indices
            union = set().union(*map(set, slices))
            assert len(union) == num_samples


def test_same_seed_and_epoch_same_order_other_epochs_and_seeds_differ():
    labels = _labels(500, 25)

    def order(seed, epoch):
        sampler = BalancedDistributedSampler(labels, num_replicas=1, rank=0, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 4) == order(0, 4)
    assert order(0, 4) != order(0, 5)
    assert order(0, 4) != order(1, 4)
    assert order(0, 1) != order(1, 0)  # (seed, epoch) are not simply added


def test_drop_last_trims_and_one_class_alone_is_sampled():
    sampler = BalancedDistributedSampler(_labels(10, 5), 10, num_replicas=3, rank=2, drop_last=True)
    assert len(sampler) == len(list(sampler)) == 3
    negatives_only = BalancedDistributedSampler(np.zeros(6, dtype=int), num_replicas=1, rank=0)
    assert sorted(negatives_only) == list(range(6))
    with pytest.raises(ValueError, match="0 or 1"):
        BalancedDistributedSampler([0, 2], num_replicas=1, rank=0)


def test_without_a_process_group_it_is_one_replica():
    sampler = BalancedDistributedSampler(_labels(20, 10))
    assert (sampler.num_replicas, sampler.rank, len(sampler)) == (1, 0, 20)


def test_two_process_ddp_ranks_get_disjoint_indices_through_lightning(tmp_path):
    """A real Trainer(strategy="ddp", devices=2) on CPU (gloo) in a child process."""
    # imported here: run as a script, this file has no tests/helpers on its path
    from repo_paths import REPO_ROOT

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    run = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    labels = _ddp_labels()
    for rank, record in enumerate(records):
        # the sampler took world size and rank from the process group, and Lightning kept it
        assert record["sampler"] == "BalancedDistributedSampler"
        assert (record["num_replicas"], record["rank"]) == (2, rank)
        assert record["epochs"] == [0, 1]
    for epoch in ("0", "1"):
        first, second = (record["seen"][epoch] for record in records)
        assert len(first) == len(second) == DDP_SAMPLES // 2
        assert not set(first) & set(second)  # disjoint data set indices
        both = first + second
        assert len(set(both)) == DDP_SAMPLES and labels[both].sum() == DDP_SAMPLES // 2
    assert records[0]["seen"]["0"] != records[0]["seen"]["1"]


DDP_SIZE, DDP_SAMPLES = 64, 32


def _ddp_labels() -> np.ndarray:
    return np.arange(DDP_SIZE) % 2  # half positives, 32 per epoch: no repeats in an epoch


def _ddp_main(out_dir: str) -> None:
    """The training program of the DDP test; every rank runs it."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    class Indices(torch.utils.data.Dataset):
        def __len__(self):
            return DDP_SIZE

        def __getitem__(self, index):
            return torch.tensor(index)

    class Recorder(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen: dict[int, list[int]] = {}

        def train_dataloader(self):  # built after the process group exists
            sampler = BalancedDistributedSampler(_ddp_labels(), num_samples=DDP_SAMPLES, seed=3)
            return DataLoader(Indices(), batch_size=4, sampler=sampler)

        def training_step(self, batch, batch_index):
            self.seen.setdefault(self.current_epoch, []).extend(batch.tolist())
            return (self.weight * batch.float()).sum() * 0.0 + self.weight.sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def on_train_end(self):
            sampler = self.trainer.train_dataloader.sampler
            record = {
                "sampler": type(sampler).__name__,
                "num_replicas": sampler.num_replicas,
                "rank": sampler.rank,
                "epochs": sorted(self.seen),
                "seen": self.seen,
            }
            Path(out_dir, f"rank{self.global_rank}.json").write_text(json.dumps(record))

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Recorder())


if __name__ == "__main__":
    _ddp_main(sys.argv[1])
