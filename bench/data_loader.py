"""Part 2 of the data benchmark: the cached training loader's pairs/s on a prepared phantom per
worker count, and what one training sample costs in this process."""

from __future__ import annotations

import contextlib
import gc
import io
import itertools
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from data_files import timed
from shared import summary


# -- 2. the cached loader ------------------------------------------------------------------------
def make_phantom(folder: Path, pairs: int, scale: str, image_size) -> dict[str, Any]:
    """``cli.py phantom`` and ``cli.py prepare`` as the Makefile runs them (untimed setup)."""
    from data_tools.phantom import main as phantom_main
    from data_tools.prepare import main as prepare_main

    started = time.perf_counter()
    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = phantom_main(
            [
                "--out",
                str(folder),
                "--pairs",
                str(pairs),
                "--seed",
                "0",
                "--scale",
                scale,
                "--quiet",
            ]
        )
        phantom_s = time.perf_counter() - started
        if code == 0:
            code = prepare_main(
                [
                    "--manifest",
                    str(folder),
                    "--out",
                    str(folder / "cache"),
                    "--image-size",
                    *(str(v) for v in image_size),
                    "--no-progress",
                ]
            )
    if code != 0:
        raise RuntimeError(f"making the phantom cache failed:\n{text.getvalue()}")
    entries = list((folder / "cache").rglob("*.npz"))
    return {
        "pairs": pairs,
        "scale": scale,
        "phantom_s": phantom_s,
        "prepare_s": time.perf_counter() - started - phantom_s,
        "cache_entries": len(entries),
        "cache_entry_kib_mean": sum(p.stat().st_size for p in entries) / len(entries) / 1024,
    }


def data_module(folder: Path, modalities, workers: int, args):
    from datamodules.paired import PairedMammoDataModule

    module = PairedMammoDataModule(
        str(folder),
        cache_dir=str(folder / "cache"),
        image_size=tuple(args.image_size),
        modalities=modalities,
        batch_size=args.batch_size,
        num_workers=workers,
        seed=0,
        augment=True,
        samples_per_epoch=(args.warmup_batches + args.batches) * args.batch_size,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        module.setup("fit")
    return module


def loader_rates(folder: Path, modalities, args) -> dict[str, Any]:
    """Pairs/s of the training loader per worker count, interleaved across repeats."""
    loaders = {w: data_module(folder, modalities, w, args).train_dataloader() for w in args.workers}
    rates: dict[int, list[float]] = defaultdict(list)
    startup: dict[int, float] = {}
    for repeat in range(args.loader_repeats):
        shift = repeat % len(args.workers)
        for workers in args.workers[shift:] + args.workers[:shift]:
            started = time.perf_counter()
            iterator = iter(loaders[workers])
            for _ in range(args.warmup_batches):
                next(iterator)
            startup.setdefault(workers, time.perf_counter() - started)
            start, pairs = time.perf_counter(), 0
            for batch in iterator:
                pairs += len(batch["pair_id"])
            rates[workers].append(pairs / (time.perf_counter() - start))
    for loader in loaders.values():  # persistent workers: stop them now
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
    del loaders
    gc.collect()
    return {
        "pairs_per_s": {str(w): summary(rates[w]) for w in args.workers},
        "first_iteration_with_warmup_s": {str(w): startup[w] for w in args.workers},
    }


def loader_steps(folder: Path, modalities, args, count: int) -> dict[str, Any]:
    """What one training sample costs in this process: cache read per image (zlib inflation and
    the float conversion apart), augmentation per pair, the whole ``__getitem__``, collation."""
    from datamodules.batch import collate_pairs
    from datamodules.dataset import input_boxes

    module = data_module(folder, modalities, 0, args)
    dataset = module.dataset("train")
    draws = list(itertools.islice(iter(module.train_dataloader().sampler), count))
    parts: dict[str, list[float]] = defaultdict(list)
    samples = []
    for index, seed in draws:
        images, boxes, labels = {}, {}, {}
        for modality in modalities:
            pair_id = dataset.pair_ids[index].decode()
            entry = dataset.cache.path(pair_id, modality)

            def inflate(entry=entry):
                with np.load(entry, allow_pickle=False) as stored:
                    return stored["image"]

            parts["cache_inflate_per_image"].append(timed(inflate)[0])
            seconds, (image, geometry) = timed(dataset.read, index, modality)
            parts["cache_read_per_image"].append(seconds)
            empty = (np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))
            original, classes = dataset.lesions.get((index, modality), empty)
            images[modality] = image
            boxes[modality], kept = input_boxes(original, geometry)
            labels[modality] = classes[kept]
        parts["augment_per_pair"].append(
            timed(dataset.transform, images, boxes, labels, seed=seed)[0]
        )
        seconds, sample = timed(dataset.__getitem__, (index, seed))
        parts["getitem_per_pair"].append(seconds)
        samples.append(sample)
    for start in range(0, len(samples) - args.batch_size + 1, args.batch_size):
        seconds, _ = timed(collate_pairs, samples[start : start + args.batch_size])
        parts["collate_per_pair"].append(seconds / args.batch_size)
    # the mean too: augmentation is a mixture (each transform applies with p = 0.5)
    result = {
        name: {**summary(values), "mean": statistics.fmean(values)}
        for name, values in parts.items()
    }
    per_image = result["cache_read_per_image"]["mean"] * len(modalities)
    result["rest_of_getitem_per_pair_mean_s"] = (
        result["getitem_per_pair"]["mean"] - per_image - result["augment_per_pair"]["mean"]
    )
    return result


def bench_loader(args, folder: Path) -> dict[str, Any]:
    phantom = make_phantom(folder, args.pairs, args.phantom_scale, args.image_size)
    configs = {"stage1_one_modality": ("sm",), "two_modalities": ("sm", "ffdm")}
    results = {}
    for name, modalities in configs.items():
        results[name] = {
            "modalities": list(modalities),
            **loader_rates(folder, modalities, args),
            "steps_s": loader_steps(folder, modalities, args, args.step_samples),
        }
    return {
        "phantom": phantom,
        "batch_size": args.batch_size,
        "batches": args.batches,
        "warmup_batches": args.warmup_batches,
        "repeats": args.loader_repeats,
        "augment": True,
        **results,
    }
