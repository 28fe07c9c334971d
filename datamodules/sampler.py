"""DDP-safe balanced sampling: each epoch draws equal numbers of positive and negative pairs.

The paper addresses class imbalance with "a weighted sampling strategy that samples an equal
number of positive and negative images per epoch". This sampler draws the epoch's indices
stratified rather than by weighted multinomial draws: half of the epoch from the positives,
half from the negatives, each half without replacement while the class has enough members and
otherwise every member repeated as evenly as possible plus a random remainder. Compared with a
WeightedRandomSampler this gives exactly half positives (not half in expectation, with binomial
spread), no negative drawn twice while unseen negatives remain, and each positive repeated
floor or ceil of (half / positives) times.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

logger = logging.getLogger(__name__)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # SeedSequence mixes (seed, epoch) so that (0, 1) and (1, 0) give unrelated draws.
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def _draw(pool: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """count members of pool: without replacement if it can, else as evenly repeated as can be."""
    if count == 0 or len(pool) == 0:
        return pool[:0]
    repeats, remainder = divmod(count, len(pool))
    rest = pool[torch.randperm(len(pool), generator=generator)[:remainder]]
    return torch.cat([pool.repeat(repeats), rest])


class BalancedDistributedSampler(DistributedSampler):
    """Per epoch, ``num_samples`` indices (default: the data set's length), half positives.

    ``labels`` holds one 0/1 label per item of the data set. The draw comes from one
    generator seeded by (seed, epoch), so every rank computes the same global draw; it is
    padded (wrapping around) or, with ``drop_last``, trimmed to a multiple of the world size,
    and rank r takes positions r, r + world, ...: disjoint positions, equal lengths.
    ``num_replicas`` and ``rank`` default to the process group's, or 1 and 0 without one.
    With an odd ``num_samples`` the extra index is a positive or a negative by a coin flip.
    If one class is empty, the epoch is drawn from the other (with a warning).

    After construction ``len(sampler)`` and ``sampler.num_samples`` are per rank (as in
    DistributedSampler); ``sampler.epoch_size`` is the global count per epoch. With
    ``with_seeds`` it yields ``(index, seed)``: a seed per draw for the data set's augmentation,
    a function of (seed, epoch, position in the global draw).
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        num_samples: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
        with_seeds: bool = False,
    ):
        self.with_seeds = with_seeds
        labels = torch.as_tensor(np.array(labels, dtype=np.int64)).reshape(-1)
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
        super().__init__(
            labels,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=drop_last,
        )
        if len(labels) == 0:
            raise ValueError("cannot sample from an empty data set")
        if not torch.isin(labels, torch.tensor([0, 1])).all():
            raise ValueError("labels must be 0 or 1")
        self.positives = torch.nonzero(labels == 1).flatten()
        self.negatives = torch.nonzero(labels == 0).flatten()
        if len(self.positives) == 0 or len(self.negatives) == 0:
            logger.warning(
                "balanced sampling: %d positives and %d negatives; drawing from one class only",
                len(self.positives),
                len(self.negatives),
            )
        self.epoch_size = len(labels) if num_samples is None else int(num_samples)
        if self.epoch_size <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if drop_last:
            self.num_samples = self.epoch_size // self.num_replicas
            if self.num_samples == 0:
                raise ValueError(f"{self.epoch_size} samples cannot fill {num_replicas} ranks")
        else:
            self.num_samples = math.ceil(self.epoch_size / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self._resume: tuple[int, int] | None = None

    def global_indices(self, epoch: int | None = None) -> torch.Tensor:
        """The whole epoch's draw (all ranks), before padding and slicing."""
        generator = _epoch_generator(self.seed, self.epoch if epoch is None else epoch)
        coin = int(torch.randint(2, (1,), generator=generator))
        half = self.epoch_size // 2 + (self.epoch_size % 2) * coin
        if len(self.negatives) == 0:
            half = self.epoch_size
        elif len(self.positives) == 0:
            half = 0
        chosen = torch.cat(
            [
                _draw(self.positives, half, generator),
                _draw(self.negatives, self.epoch_size - half, generator),
            ]
        )
        return chosen[torch.randperm(len(chosen), generator=generator)]

    def resume(self, epoch: int, done: int) -> None:
        """Leave out this rank's first ``done`` draws of ``epoch`` the next time that epoch is
        iterated: a fit resumed from a checkpoint taken mid-epoch goes on with the draws it had
        not trained on (``len`` stays the whole epoch's, as Lightning's progress counts it)."""
        self._resume = (int(epoch), int(done))

    def __iter__(self) -> Iterator[int]:
        indices = self.global_indices()
        if len(indices) < self.total_size:
            repeats = math.ceil(self.total_size / len(indices))
            indices = indices.repeat(repeats)
        indices = indices[: self.total_size]
        start = 0
        if self._resume is not None and self.epoch >= self._resume[0]:
            start = self._resume[1] if self.epoch == self._resume[0] else 0
            self._resume = None
        positions = range(self.rank + start * self.num_replicas, self.total_size, self.num_replicas)
        mine = indices[self.rank : self.total_size : self.num_replicas].tolist()[start:]
        if not self.with_seeds:
            return iter(mine)
        # One seed per draw, a function of (seed, epoch, position in the epoch's global draw):
        # the augmentation of each draw is then the same whatever the world size or workers,
        # and a resumed epoch repeats it.
        seeds = np.random.SeedSequence([int(self.seed), int(self.epoch), 0x5EED]).generate_state(
            self.total_size, dtype=np.uint32
        )
        return iter((index, int(seeds[position])) for index, position in zip(mine, positions))

    def __len__(self) -> int:
        return self.num_samples
