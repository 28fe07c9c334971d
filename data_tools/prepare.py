"""``python cli.py prepare``: every image of a manifest converted once to the model's input,
into the preprocessing cache (`datamodules.cache`, which describes its layout).

``python cli.py prepare --manifest M --out DIR --image-size H W`` reads each DICOM (both
modalities of every annotated pair), applies `datamodules.dicom.load_image` and stores the
result beside its `Geometry`, in parallel processes, resumably (finished entries are read back
and skipped; one that cannot be read back is written again), atomically (temporary file, then
``os.replace``) and shardably (``--shard i/n`` takes a fixed 1/n of the images, for cluster
array jobs).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from common.defaults import IMAGE_SIZE, MODALITIES, SPLIT_FRACTIONS
from common.io import write_atomically
from common.parallel import run_parallel
from common.problems import (
    UNREADABLE_CACHE_ENTRY,
    UNREADABLE_IMAGE,
    Problem,
    format_problems,
)
from datamodules.cache import CacheEntryError, ImageCache, _entry_key
from datamodules.dicom import DEFAULT_MARGIN, WINDOWS, load_image


@dataclass(frozen=True, slots=True)
class _Task:
    pair_id: str
    modality: str
    dicom_path: str
    laterality: str
    existing: bool = False  # an entry is there: read it back, write it again if that fails


@dataclass
class PrepareResult:
    """Counts of one `prepare_cache` run (this shard only)."""

    total: int = 0  # images in this shard
    written: int = 0  # including the entries written again
    skipped: int = 0  # already in the cache, and read back
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (pair_id, modality, error)
    # (pair_id, modality, why the entry there could not be read back, its path): each is
    # written again (and is also in ``failed`` if its DICOM cannot be read either)
    rewritten: list[tuple[str, str, str, str]] = field(default_factory=list)
    worker_pids: set[int] = field(default_factory=set)


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ValueError(f"--shard must be i/n with 0 <= i < n (0-based), got {text!r}")
    return int(match[1]), int(match[2])


def in_shard(pair_id: str, modality: str, shard: tuple[int, int]) -> bool:
    """Whether an image belongs to shard (i, n): a hash of its id, so any order gives the same."""
    digest = hashlib.blake2b(f"{modality}:{pair_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shard[1] == shard[0]


# Set once per worker process by _init_worker (ProcessPool initializer).
_worker_cache: ImageCache | None = None


def _init_worker(folder: str, image_size: tuple[int, int], window: str, margin: float) -> None:
    global _worker_cache
    import cv2

    cv2.setNumThreads(1)  # the processes are the parallelism
    _worker_cache = ImageCache(folder, image_size, window, margin)


def _prepare_one(task: _Task) -> tuple[str, str, int, str | None, str | None]:
    """(pair id, modality, worker pid, error or None, rewritten): ``rewritten`` is None when
    nothing was written (an existing entry read back, or a failure), "" for a new entry, and
    for an existing entry that could not be read back, why (it is then written again). An
    image check-data refuses (not MG, multi-frame, colour, far smaller than the input, blank,
    non-finite, its breast not found) is a failure too, with check-data's reason."""
    from data_tools.check import refusals

    cache = _worker_cache
    rewritten = None
    if task.existing:
        try:
            if cache.read(task.pair_id, task.modality) is not None:
                return task.pair_id, task.modality, os.getpid(), None, None
        except CacheEntryError as error:
            rewritten = error.reason
    try:
        refused = refusals(task.dicom_path, cache.image_size)
        if not refused:
            image, geometry = load_image(
                task.dicom_path,
                cache.image_size,
                task.laterality or None,
                cache.window,
                cache.margin,
            )
            refused = refusals(task.dicom_path, cache.image_size, geometry)
        if refused:  # in load_image's words, which name the file
            error = f"cannot read {task.dicom_path}: {'; '.join(refused)}"
            return task.pair_id, task.modality, os.getpid(), error, rewritten
        cache.write(task.pair_id, task.modality, image, geometry)
        return task.pair_id, task.modality, os.getpid(), None, rewritten or ""
    except Exception as error:  # noqa: BLE001 - one bad file must not stop 2.4 million
        return task.pair_id, task.modality, os.getpid(), str(error), rewritten


def prepare_cache(
    manifest,
    out_dir: str | os.PathLike,
    image_size: Sequence[int],
    modalities: Iterable[str] = MODALITIES,
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    window: str = "dicom",
    margin: float = DEFAULT_MARGIN,
    progress: bool = True,
) -> PrepareResult:
    """Cache every image of ``manifest`` (a DataFrame from `load_tables`) in this shard.

    ``workers`` > 1 runs that many processes (spawned, cv2 single-threaded); 0 or 1 runs here.
    """
    cache = ImageCache(out_dir, image_size, window, margin, create=True)
    modalities = tuple(modalities)
    existing = {modality: cache.existing(modality) for modality in modalities}
    tasks, result = [], PrepareResult()
    for row in manifest[["pair_id", "laterality", "sm_path", "ffdm_path"]].itertuples(index=False):
        for modality in modalities:
            if not in_shard(row.pair_id, modality, shard):
                continue
            result.total += 1
            path = row.sm_path if modality == "sm" else row.ffdm_path
            done = _entry_key(row.pair_id) in existing[modality]
            tasks.append(_Task(row.pair_id, modality, path, row.laterality, done))
    initargs = (str(cache.folder), cache.image_size, window, cache.margin)
    for pair_id, modality, pid, error, rewritten in run_parallel(
        _prepare_one,
        tasks,
        workers=workers,
        initializer=_init_worker,
        initargs=initargs,
        serial_setup=partial(_init_worker, *initargs),
        ordered=False,
        max_chunksize=64,
        desc="prepare",
        unit="image",
        progress=progress,
    ):
        result.worker_pids.add(pid)
        if rewritten:
            entry = str(cache.path(pair_id, modality))
            result.rewritten.append((pair_id, modality, rewritten, entry))
        if error is not None:
            result.failed.append((pair_id, modality, error))
        elif rewritten is None:
            result.skipped += 1
        else:
            result.written += 1
    return result


def _write_failures(out_dir: Path, shard: tuple[int, int], failed) -> Path:
    import pandas as pd

    path = out_dir / f"failed-shard{shard[0]}of{shard[1]}.csv"
    table = pd.DataFrame(failed, columns=["pair_id", "modality", "error"])
    write_atomically(path, table.to_csv(index=False).encode())
    return path


def image_size_problem(size: Sequence[int], configs: Sequence[str]) -> str | None:
    """What is wrong with ``--image-size`` for the model of the stage configs given (its
    2**max_level), or for any EfficientDet (2**3) when none names an architecture."""
    from datamodules.values import SMALLEST_STRIDE, divisible, image_size, model_stride

    wrong = image_size(list(size))
    if wrong:
        return wrong
    architecture, overrides = _architecture_of(configs)
    if architecture is None:
        wrong = divisible(size, SMALLEST_STRIDE, "any EfficientDet")
        return wrong and (
            f"{wrong}; give the stage config (--config STAGE.yaml) to check it "
            "against its model's own stride"
        )
    return divisible(size, model_stride(architecture, overrides), architecture)


def _architecture_of(configs: Sequence[str]) -> tuple[str | None, dict | None]:
    """The model's architecture and overrides named by YAML run configs (later ones win)."""
    import yaml

    architecture = overrides = None
    for path in configs:
        with open(path) as stream:
            config = yaml.safe_load(stream) or {}
        model = config.get("model") if isinstance(config, dict) else None
        init_args = (model or {}).get("init_args") or {} if isinstance(model, dict) else {}
        architecture = init_args.get("architecture", architecture)
        overrides = init_args.get("architecture_overrides", overrides)
    return architecture, overrides


def main(argv: list[str]) -> int:
    """``python cli.py prepare``: fill an image cache from a manifest."""
    from data_tools.check import settings_from_configs
    from datamodules.manifest import ManifestError, load_tables, resolve_table_paths
    from datamodules.values import RULES

    parser = argparse.ArgumentParser(
        prog="cli.py prepare",
        description="Convert every image of a manifest once to the model's input size.",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        help="data and stage configs (as given to fit): their image_size, "
        "window, margin and the model whose stride the size must fit",
    )
    parser.add_argument("--manifest", help="manifest file, or its folder (default: the config's)")
    parser.add_argument("--lesions", help="lesion table (default: lesions.csv beside manifest)")
    parser.add_argument("--out", required=True, help="cache folder")
    parser.add_argument(
        "--image-size",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help=f"the model's input (default: the config's, else {IMAGE_SIZE[0]} {IMAGE_SIZE[1]})",
    )
    parser.add_argument(
        "--workers", type=int, default=len(os.sched_getaffinity(0)), help="processes (0: none)"
    )
    parser.add_argument("--shard", default="0/1", help="i/n: this job's share (0-based i)")
    parser.add_argument("--window", choices=WINDOWS)
    parser.add_argument("--margin", type=float)
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        shard = parse_shard(args.shard)
        values = settings_from_configs(args.config)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    size = args.image_size or values.get("image_size") or IMAGE_SIZE
    window = args.window or values.get("window", "dicom")
    margin = args.margin if args.margin is not None else values.get("margin", DEFAULT_MARGIN)
    manifest_path = args.manifest or values.get("manifest")
    lesions_path = args.lesions or values.get("lesions")
    if not manifest_path:
        parser.error("give --manifest, or a --config whose data.init_args name a manifest")
    for name, value in (("--image-size", size), ("--margin", margin), ("--workers", args.workers)):
        wrong = RULES[
            {"--image-size": "image_size", "--margin": "margin", "--workers": "num_workers"}[name]
        ](value)
        if name == "--image-size" and not wrong:
            try:
                wrong = image_size_problem(size, args.config)
            except (OSError, ValueError) as error:
                wrong = str(error)
        if wrong:
            parser.error(f"{name}: {wrong}")
    try:
        manifest, _, summary = load_tables(
            manifest_path, lesions_path, 0, SPLIT_FRACTIONS, row_numbers=True
        )
    except (ManifestError, FileNotFoundError, ValueError) as error:
        print(error, file=sys.stderr)
        return 2
    print(f"manifest: {summary}", file=sys.stderr)
    started = time.monotonic()
    try:
        result = prepare_cache(
            manifest,
            args.out,
            size,
            modalities=args.modalities,
            workers=args.workers,
            shard=shard,
            window=window,
            margin=margin,
            progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError) as error:
        print(error, file=sys.stderr)
        return 2
    print(
        f"shard {shard[0]}/{shard[1]}: {result.total} images, {result.written} written, "
        f"{result.skipped} skipped (already cached), {len(result.failed)} failed, "
        f"{len(result.worker_pids)} worker process(es), {time.monotonic() - started:.1f} s"
    )
    manifest_file = str(resolve_table_paths(manifest_path, lesions_path)[0])
    if result.rewritten:
        problems = _problems(manifest, manifest_file, result.rewritten, UNREADABLE_CACHE_ENTRY)
        subject = "the cache: entries that could not be read back, each written again"
        print(format_problems(problems, subject, limit=_REASONS_SHOWN), file=sys.stderr)
    if result.failed:
        path = _write_failures(Path(args.out), shard, result.failed)
        problems = _problems(manifest, manifest_file, result.failed, UNREADABLE_IMAGE)
        print(
            format_problems(problems, "the images", limit=_REASONS_SHOWN, more=f"all in {path}"),
            file=sys.stderr,
        )
        print(f"failures listed in {path}", file=sys.stderr)
        return 1
    return 0


_REASONS_SHOWN = 10


def _problems(manifest, manifest_file: str, outcomes, kind: str) -> list[Problem]:
    """(pair id, modality, reason[, cache entry]) outcomes as Problems at their manifest rows,
    naming the cache entry when there is one, else the DICOM."""
    rows = dict(zip(manifest["pair_id"], manifest["source_row"]))
    paths = {
        modality: dict(zip(manifest["pair_id"], manifest[f"{modality}_path"]))
        for modality in MODALITIES
    }
    problems = []
    for pair_id, modality, reason, *entry in outcomes:
        path = entry[0] if entry else paths[modality].get(pair_id)
        # load_image's message starts with "cannot read <path>:"; the path is shown apart
        prefix = f"cannot read {path}: "
        reason = reason[len(prefix) :] if path and reason.startswith(prefix) else reason
        problems.append(
            Problem(
                manifest_file,
                int(rows[pair_id]) if pair_id in rows else None,
                f"{modality}_path",
                reason,
                kind,
                pair_id,
                path,
            )
        )
    return problems
