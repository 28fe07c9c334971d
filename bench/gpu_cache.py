"""The GPU benchmark's data: a manifest, lesion table and synthetic SM cache of full-size inputs
(written by spawned processes), and the data module that reads them."""

from __future__ import annotations

from multiprocessing import get_context
from pathlib import Path

import numpy as np
import shared  # noqa: F401  (puts the repository root on sys.path, for common)

from common.defaults import HIT_MIN_DISTANCE

SM_SIZE = (2457, 1996)  # the paper's SM images (H, W)


# -- a synthetic cache of full-size inputs ------------------------------------------------------
def _entry(arguments) -> None:
    folder, image_size, pair_id, seed = arguments
    import cv2

    from datamodules.cache import ImageCache
    from datamodules.dicom import Geometry

    cache = ImageCache(folder, image_size, create=False)
    generator = np.random.default_rng(seed)
    height, width = image_size
    # smooth tissue-like texture plus fine noise: compresses like an image, not like noise
    coarse = generator.random((height // 32, width // 32), dtype=np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) * 0.6 + 0.2
    image += generator.normal(0, 0.02, (height, width)).astype(np.float32)
    geometry = Geometry.build(SM_SIZE, False, (0, 0, SM_SIZE[1], SM_SIZE[0]), image_size)
    cache.write(pair_id, "sm", np.clip(image, 0, 1), geometry)


def synthetic_data(folder: Path, pairs: int, val_pairs: int, image_size) -> Path:
    """A manifest, lesion table and SM cache of ``pairs`` training and ``val_pairs`` validation
    pairs (half with one lesion), the DICOMs never read (every image is cached)."""
    from datamodules.cache import ImageCache

    cache = folder / "cache"
    ImageCache(cache, image_size, create=True)
    rows, lesions = [], []
    for index in range(pairs + val_pairs):
        pair_id = f"S{index:05d}"
        rows.append(
            {
                "pair_id": pair_id,
                "patient_id": f"P{index:05d}",
                "exam_id": f"E{index}",
                "laterality": "L",
                "view": "CC",
                "sm_path": f"images/{pair_id}_sm.dcm",
                "ffdm_path": f"images/{pair_id}_ffdm.dcm",
                "label": index % 2,
                "annotated": True,
                "split": "train" if index < pairs else "val",
            }
        )
        if index % 2:
            x, y = 600 + index % 500, 900 + index % 700
            lesions.append(
                {
                    "pair_id": pair_id,
                    "modality": "sm",
                    "x1": x,
                    "y1": y,
                    "x2": x + 80,
                    "y2": y + 80,
                    "pathology": "malignant",
                }
            )
    import pandas as pd

    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    pd.DataFrame(lesions).to_csv(folder / "lesions.csv", index=False)
    jobs = [(str(cache), tuple(image_size), row["pair_id"], seed) for seed, row in enumerate(rows)]
    with get_context("spawn").Pool(8) as pool:
        pool.map(_entry, jobs)
    return cache


def data_module(folder: Path, cache: Path, settings, workers: int, samples: int | None = None):
    from datamodules import PairedMammoDataModule

    return PairedMammoDataModule(
        manifest=str(folder),
        cache_dir=str(cache),
        image_size=tuple(settings["image_size"]),
        modalities=["sm"],
        batch_size=settings["batch_size"],
        num_workers=workers,
        samples_per_epoch=samples,
        augment=True,
        hit_min_distance=HIT_MIN_DISTANCE,
    )
