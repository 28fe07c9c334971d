"""The torchmetrics ``FAUC`` metric: accumulates per-image detections and lesion boxes (xyxy, in
the original image's pixels), gathers them across DDP ranks, drops the images that
DistributedSampler padding repeats, and computes FAUC-x, FAUC-x+ and their bootstrap CIs with
``metrics.froc``: on rank 0 alone, which broadcasts the numbers to the other ranks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from common.defaults import HIT_MIN_DISTANCE
from metrics.froc import (
    MatchedDetections,
    bootstrap_fauc,
    fauc,
    match_detections,
    sensitivity_at_fp,
    threshold_at_fp,
)

_RANK_SHIFT = 40  # an occurrence token is rank << 40 | its position among the rank's images


def image_key(image_id: str) -> int:
    """A stable signed 64-bit key of an image id (blake2b), the same on every rank and run:
    strings cannot travel through ``all_gather``."""
    digest = hashlib.blake2b(str(image_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


class FAUC(Metric):
    """FAUC-``max_fp`` and FAUC-``max_fp``+ (images with at least one lesion) of a detector.

    ``update(preds, targets)`` takes one dict per image: ``preds[i] = {"boxes": [n, 4] xyxy,
    "scores": [n], "image_id": str}`` and ``targets[i] = {"boxes": [m, 4] xyxy, "image_id":
    str}``, boxes in the original image's pixels. An image id seen more than once (the
    repeats DistributedSampler adds to even out the ranks) counts once: its first occurrence
    on the lowest rank. Every rank must call ``update`` at least once before ``compute``.

    ``compute()`` returns float64 tensors: ``fauc``, ``fauc_pos``, ``threshold_at_target_fp``
    (the lowest score keeping at most ``target_fp`` false positives per image) and
    ``sensitivity_at_target_fp``; with ``n_boot > 0`` also ``fauc_low``, ``fauc_high``,
    ``fauc_pos_low`` and ``fauc_pos_high`` (percentile bootstrap, ``level``).
    :meth:`matched` gives the deduplicated, matched records themselves.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        max_fp: float = 1.0,
        min_distance: float = HIT_MIN_DISTANCE,
        inclusive: bool = False,
        n_boot: int = 2000,
        seed: int = 0,
        level: float = 0.95,
        target_fp: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not max_fp > 0:
            raise ValueError(f"max_fp must be positive, got {max_fp}")
        if n_boot < 0:
            raise ValueError(f"n_boot must be >= 0, got {n_boot}")
        self.max_fp = float(max_fp)
        self.min_distance = float(min_distance)
        self.inclusive = bool(inclusive)
        self.n_boot = int(n_boot)
        self.seed = int(seed)
        self.level = float(level)
        self.target_fp = float(target_fp)
        # per image occurrence: its id's key and a token unique to the occurrence
        self.add_state("image_keys", default=[], dist_reduce_fx="cat")
        self.add_state("image_tokens", default=[], dist_reduce_fx="cat")
        # per detection / lesion: the token of its image occurrence and its box (and score)
        self.add_state("detection_tokens", default=[], dist_reduce_fx="cat")
        self.add_state("detection_boxes", default=[], dist_reduce_fx="cat")
        self.add_state("detection_scores", default=[], dist_reduce_fx="cat")
        self.add_state("lesion_tokens", default=[], dist_reduce_fx="cat")
        self.add_state("lesion_boxes", default=[], dist_reduce_fx="cat")
        self._ids_by_key: dict[int, str] = {}
        self._n_occurrences = 0

    def update(self, preds: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]]) -> None:
        """Add one batch of images (see the class docstring for the dicts)."""
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predictions but {len(targets)} targets")
        rank = _rank()
        keys, tokens = [], []
        detection_tokens, detection_boxes, detection_scores = [], [], []
        lesion_tokens, lesion_boxes = [], []
        for position, (pred, target) in enumerate(zip(preds, targets)):
            image_id = str(pred["image_id"])
            if str(target["image_id"]) != image_id:
                raise ValueError(
                    f"preds[{position}] is image {image_id!r} but targets[{position}] is "
                    f"image {target['image_id']!r}"
                )
            key = image_key(image_id)
            if self._ids_by_key.setdefault(key, image_id) != image_id:
                raise ValueError(
                    f"image ids {image_id!r} and {self._ids_by_key[key]!r} have the same key"
                )
            token = (rank << _RANK_SHIFT) | self._n_occurrences
            self._n_occurrences += 1
            keys.append(key)
            tokens.append(token)
            boxes = _as_boxes(pred["boxes"], f"preds[{position}]['boxes']")
            scores = torch.as_tensor(pred["scores"]).detach().reshape(-1).to(torch.float64)
            if scores.numel() != boxes.shape[0]:
                raise ValueError(
                    f"preds[{position}] has {boxes.shape[0]} boxes but {scores.numel()} scores"
                )
            detection_boxes.append(boxes.to(self.device))
            detection_scores.append(scores.to(self.device))
            detection_tokens.extend([token] * boxes.shape[0])
            target_boxes = _as_boxes(target["boxes"], f"targets[{position}]['boxes']")
            lesion_boxes.append(target_boxes.to(self.device))
            lesion_tokens.extend([token] * target_boxes.shape[0])

        # one tensor per state per batch, even when empty, so every rank gathers every state
        def int64(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64, device=self.device)

        self.image_keys.append(int64(keys))
        self.image_tokens.append(int64(tokens))
        self.detection_tokens.append(int64(detection_tokens))
        self.detection_boxes.append(_cat_boxes(detection_boxes, self.device))
        self.detection_scores.append(
            torch.cat(detection_scores)
            if detection_scores
            else torch.zeros(0, dtype=torch.float64, device=self.device)
        )
        self.lesion_tokens.append(int64(lesion_tokens))
        self.lesion_boxes.append(_cat_boxes(lesion_boxes, self.device))

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Calling the metric only updates it: FAUC of one batch means nothing, and computing
        it (with its bootstrap) every step would waste time."""
        self.update(*args, **kwargs)

    def _matched_from_states(self) -> MatchedDetections:
        def numpy(state: Any) -> np.ndarray:
            if isinstance(state, list):
                state = dim_zero_cat(state) if state else torch.zeros(0)
            return state.detach().cpu().numpy()

        keys = numpy(self.image_keys).astype(np.int64)
        tokens = numpy(self.image_tokens).astype(np.int64)
        # keep each image's lowest token: its first occurrence on the lowest rank
        order = np.lexsort((tokens, keys))
        first = np.ones(order.size, dtype=bool)
        first[1:] = keys[order][1:] != keys[order][:-1]
        kept_keys, kept_tokens = keys[order][first], tokens[order][first]  # sorted by key
        token_order = np.argsort(kept_tokens)
        sorted_tokens = kept_tokens[token_order]

        def image_of(state_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Image index (in key order) of each record, and whether its occurrence is kept."""
            state_tokens = state_tokens.astype(np.int64)
            if sorted_tokens.size == 0:
                return np.zeros(state_tokens.size, np.int64), np.zeros(state_tokens.size, bool)
            where = np.minimum(np.searchsorted(sorted_tokens, state_tokens), sorted_tokens.size - 1)
            return token_order[where], sorted_tokens[where] == state_tokens

        detection_image, detection_kept = image_of(numpy(self.detection_tokens))
        lesion_image, lesion_kept = image_of(numpy(self.lesion_tokens))
        # records in image order, each image's own in the order they were given
        detection_order = np.argsort(detection_image[detection_kept], kind="stable")
        lesion_order = np.argsort(lesion_image[lesion_kept], kind="stable")
        ids = [self._ids_by_key.get(int(key)) for key in kept_keys]
        return match_detections(
            detection_image[detection_kept][detection_order],
            numpy(self.detection_boxes).reshape(-1, 4)[detection_kept][detection_order],
            numpy(self.detection_scores).reshape(-1)[detection_kept][detection_order],
            lesion_image[lesion_kept][lesion_order],
            numpy(self.lesion_boxes).reshape(-1, 4)[lesion_kept][lesion_order],
            n_images=kept_keys.size,
            min_distance=self.min_distance,
            inclusive=self.inclusive,
            image_ids=None if any(image_id is None for image_id in ids) else np.array(ids, str),
        )

    def matched(self) -> MatchedDetections:
        """The deduplicated records of every rank, matched, images in the order of their keys.
        ``image_ids`` is filled only where this rank saw every image (one process), else None.
        Under DDP, call it on every rank (it gathers)."""
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
        ):
            return self._matched_from_states()

    def compute(self) -> dict[str, torch.Tensor]:
        """The numbers of the class docstring. Under DDP every rank holds every record here
        (torchmetrics gathered them), but only rank 0 matches and bootstraps: it broadcasts the
        results, so each rank returns the same tensors without doing the work."""
        group = self.process_group
        if not (
            self.sync_on_compute and _distributed() and torch.distributed.get_world_size(group) > 1
        ):
            return self._compute_here()
        names = ["fauc", "fauc_pos", "threshold_at_target_fp", "sensitivity_at_target_fp"]
        if self.n_boot > 0:
            names += ["fauc_low", "fauc_high", "fauc_pos_low", "fauc_pos_high"]
        values = torch.zeros(len(names), dtype=torch.float64, device=self.device)
        if torch.distributed.get_rank(group) == 0:
            result = self._compute_here()
            values = torch.stack([result[name] for name in names]).to(self.device)
        source = 0 if group is None else torch.distributed.get_global_rank(group, 0)
        torch.distributed.broadcast(values, src=source, group=group)
        return dict(zip(names, values.cpu().unbind()))

    def _compute_here(self) -> dict[str, torch.Tensor]:
        matched = self._matched_from_states()
        positive = matched.positive_images()
        result = {
            "fauc": fauc(matched, self.max_fp),
            "fauc_pos": fauc(positive, self.max_fp),
            "threshold_at_target_fp": threshold_at_fp(matched, self.target_fp),
            "sensitivity_at_target_fp": float(sensitivity_at_fp(matched, self.target_fp)[0]),
        }
        if self.n_boot > 0:
            for name, records in (("fauc", matched), ("fauc_pos", positive)):
                interval = bootstrap_fauc(
                    records, self.max_fp, n_boot=self.n_boot, seed=self.seed, level=self.level
                )
                result[f"{name}_low"] = interval.low
                result[f"{name}_high"] = interval.high
        return {name: torch.tensor(value, dtype=torch.float64) for name, value in result.items()}

    def reset(self) -> None:
        super().reset()
        self._ids_by_key = {}
        self._n_occurrences = 0


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _rank() -> int:
    return torch.distributed.get_rank() if _distributed() else 0


def _as_boxes(boxes: Any, name: str) -> torch.Tensor:
    boxes = torch.as_tensor(boxes).detach().to(torch.float64)
    if boxes.numel() == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape [n, 4] (xyxy), got {tuple(boxes.shape)}")
    return boxes


def _cat_boxes(boxes: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    if not boxes:
        return torch.zeros((0, 4), dtype=torch.float64, device=device)
    return torch.cat(boxes)
