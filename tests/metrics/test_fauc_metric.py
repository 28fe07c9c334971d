"""The torchmetrics ``FAUC``: equal to the functional core, deduplicates repeated image ids, and
on two real gloo processes with DistributedSampler-style padded shards equals one process."""

from __future__ import annotations

import datetime
import math

import numpy as np
import pytest
import torch
import torch.distributed
import torch.multiprocessing

from metrics.fauc import FAUC, image_key
from metrics.froc import (
    bootstrap_fauc,
    fauc,
    match_detections,
    sensitivity_at_fp,
    threshold_at_fp,
)

WORLD_SIZE = 2


def synthetic_images(n_images: int = 45, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Per-image prediction and target dicts, as a LightningModule would pass them (tensors,
    float32 scores, some images without lesions or detections; ids that sort differently as
    strings and numbers)."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for index in range(n_images):
        image_id = f"{index:03d}" if index % 2 else str(index)
        n_lesions = int(rng.choice([0, 0, 1, 2]))
        centres = rng.uniform(200, 2500, size=(n_lesions, 2))
        lesion_boxes = np.hstack([centres - 50, centres + 50])
        detections = [rng.uniform(0, 2700, size=2) for _ in range(int(rng.poisson(1.5)))]
        detections += [centre + rng.normal(0, 30, 2) for centre in centres if rng.random() < 0.7]
        detection_centres = np.array(detections).reshape(-1, 2)
        preds.append(
            {
                "boxes": torch.tensor(np.hstack([detection_centres - 20, detection_centres + 20])),
                "scores": torch.tensor(
                    np.round(rng.random(len(detections)), 2), dtype=torch.float32
                ),
                "image_id": image_id,
            }
        )
        targets.append(
            {"boxes": torch.tensor(lesion_boxes, dtype=torch.float32), "image_id": image_id}
        )
    return preds, targets


def functional_matched(preds: list[dict], targets: list[dict]):
    detection_image = np.concatenate(
        [np.full(len(pred["scores"]), index) for index, pred in enumerate(preds)]
    ).astype(np.int64)
    lesion_image = np.concatenate(
        [np.full(len(target["boxes"]), index) for index, target in enumerate(targets)]
    ).astype(np.int64)
    return match_detections(
        detection_image,
        np.concatenate([pred["boxes"].numpy().reshape(-1, 4) for pred in preds]),
        np.concatenate([pred["scores"].numpy().astype(np.float64) for pred in preds]),
        lesion_image,
        np.concatenate([target["boxes"].numpy().reshape(-1, 4) for target in targets]),
        n_images=len(preds),
    )


def update_in_batches(metric: FAUC, preds: list[dict], targets: list[dict], batch_size: int = 4):
    for start in range(0, len(preds), batch_size):
        metric.update(preds[start : start + batch_size], targets[start : start + batch_size])


def test_metric_equals_the_functional_core():
    preds, targets = synthetic_images()
    metric = FAUC(n_boot=300, seed=5)
    update_in_batches(metric, preds, targets)
    result = metric.compute()
    matched = functional_matched(preds, targets)
    positive = matched.positive_images()
    assert result["fauc"].item() == fauc(matched)
    assert result["fauc_pos"].item() == fauc(positive)
    assert 0 < result["fauc"].item() < 1
    assert result["threshold_at_target_fp"].item() == threshold_at_fp(matched, 1.0)
    assert result["sensitivity_at_target_fp"].item() == sensitivity_at_fp(matched, 1.0)[0]
    # the metric orders images by key, so its resamples differ from the functional call's
    # on the caller's order; the interval must still bracket the estimate
    assert result["fauc_low"] <= result["fauc"] <= result["fauc_high"]
    assert result["fauc_pos_low"] <= result["fauc_pos"] <= result["fauc_pos_high"]
    records = metric.matched()
    by_key = np.argsort([image_key(pred["image_id"]) for pred in preds], kind="stable")
    assert records.image_ids.tolist() == [preds[index]["image_id"] for index in by_key]
    interval = bootstrap_fauc(records, 1.0, n_boot=300, seed=5)
    assert (result["fauc_low"].item(), result["fauc_high"].item()) == (interval.low, interval.high)


def test_calling_the_metric_only_updates_it():
    preds, targets = synthetic_images(20)
    called, updated = FAUC(n_boot=0), FAUC(n_boot=0)
    assert called(preds[:10], targets[:10]) is None
    called(preds[10:], targets[10:])
    updated.update(preds, targets)
    assert called.compute() == updated.compute()


def test_repeated_image_ids_count_once():
    preds, targets = synthetic_images()
    single = FAUC(n_boot=100)
    update_in_batches(single, preds, targets)
    repeated = FAUC(n_boot=100)
    # DistributedSampler-style repeats at the end, and an image seen three times
    update_in_batches(repeated, preds + preds[:5] + preds[:1], targets + targets[:5] + targets[:1])
    first, second = single.compute(), repeated.compute()
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert repeated.matched().n_images == len(preds)


def test_no_bootstrap_skips_the_intervals_and_reset_empties_the_state():
    preds, targets = synthetic_images(12)
    metric = FAUC(n_boot=0, max_fp=2.0, target_fp=0.5)
    metric.update(preds, targets)
    result = metric.compute()
    assert set(result) == {"fauc", "fauc_pos", "threshold_at_target_fp", "sensitivity_at_target_fp"}
    matched = functional_matched(preds, targets)
    assert result["fauc"].item() == fauc(matched, 2.0)
    assert result["threshold_at_target_fp"].item() == threshold_at_fp(matched, 0.5)
    metric.reset()
    metric.update(preds[:3], targets[:3])
    assert metric.matched().n_images == 3


def test_min_distance_and_inclusive_reach_the_matching():
    lesion = {"boxes": torch.tensor([[0.0, 0.0, 6.0, 8.0]]), "image_id": "a"}
    detection = {
        "boxes": torch.tensor([[10.5, -1.0, 20.5, 9.0]]),
        "scores": torch.tensor([0.9]),
        "image_id": "a",
    }
    # centres 12.5 px apart: a hit only at the phantom's floor of 12.5 and with <=
    for min_distance, inclusive, expected in (
        (12.5, True, 1.0),
        (12.5, False, 0.0),
        (10.0, True, 0.0),
    ):
        metric = FAUC(min_distance=min_distance, inclusive=inclusive, n_boot=0)
        metric.update([detection], [lesion])
        assert metric.compute()["fauc"].item() == expected


def test_inconsistent_batches_are_refused():
    metric = FAUC(n_boot=0)
    pred = {"boxes": torch.zeros(1, 4), "scores": torch.zeros(1), "image_id": "a"}
    with pytest.raises(ValueError, match="targets\\[0\\] is image 'b'"):
        metric.update([pred], [{"boxes": torch.zeros(0, 4), "image_id": "b"}])
    with pytest.raises(ValueError, match="2 predictions but 1 targets"):
        metric.update([pred, pred], [{"boxes": torch.zeros(0, 4), "image_id": "a"}])
    with pytest.raises(ValueError, match="shape \\[n, 4\\]"):
        metric.update(
            [dict(pred, boxes=torch.zeros(1, 5))], [{"boxes": torch.zeros(0, 4), "image_id": "a"}]
        )
    with pytest.raises(ValueError, match="1 boxes but 2 scores"):
        metric.update(
            [dict(pred, scores=torch.zeros(2))], [{"boxes": torch.zeros(0, 4), "image_id": "a"}]
        )


def shard(n_items: int, rank: int, world_size: int) -> list[int]:
    """DistributedSampler's indices (shuffle=False, drop_last=False): padded with the first
    indices to a multiple of the world size, then every world_size-th from rank."""
    indices = list(range(n_items))
    total = math.ceil(n_items / world_size) * world_size
    indices += indices[: total - n_items]
    return indices[rank:total:world_size]


def ddp_worker(rank: int, init_file: str, out_dir: str, n_images: int) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        preds, targets = synthetic_images(n_images)
        mine = shard(n_images, rank, WORLD_SIZE)
        metric = FAUC(n_boot=200, seed=3)
        update_in_batches(metric, [preds[i] for i in mine], [targets[i] for i in mine], 3)
        computed, compute_here = [], metric._compute_here
        metric._compute_here = lambda: computed.append(rank) or compute_here()
        result = metric.compute()
        records = metric.matched()
        torch.save(
            {
                "result": result,
                "n_updates_images": len(mine),
                "computed_here": len(computed),
                "detection_image": records.detection_image,
                "detection_score": records.detection_score,
                "detection_outcome": records.detection_outcome,
                "lesion_score": records.lesion_score,
                "image_ids_known": records.image_ids is not None,
            },
            f"{out_dir}/rank{rank}.pt",
        )
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("n_images", [45])
def test_two_gloo_processes_on_padded_shards_equal_one_process(tmp_path, n_images):
    assert len(shard(n_images, 0, WORLD_SIZE)) == len(shard(n_images, 1, WORLD_SIZE)) == 23
    torch.multiprocessing.spawn(
        ddp_worker,
        args=(str(tmp_path / "init"), str(tmp_path), n_images),
        nprocs=WORLD_SIZE,
        join=True,
    )
    preds, targets = synthetic_images(n_images)
    single = FAUC(n_boot=200, seed=3)
    update_in_batches(single, preds, targets)
    expected = single.compute()
    records = single.matched()
    for rank in range(WORLD_SIZE):
        saved = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert saved["n_updates_images"] == 23  # one image repeated by the padding
        assert saved["computed_here"] == (1 if rank == 0 else 0)  # rank 0 broadcasts
        assert saved["result"].keys() == expected.keys()
        for name, value in expected.items():
            assert torch.equal(saved["result"][name], value), (rank, name)
        assert np.array_equal(saved["detection_image"], records.detection_image)
        assert np.array_equal(saved["detection_score"], records.detection_score)
        assert np.array_equal(saved["detection_outcome"], records.detection_outcome)
        assert np.array_equal(saved["lesion_score"], records.lesion_score)
        assert not saved["image_ids_known"]  # each rank saw only its shard's ids
