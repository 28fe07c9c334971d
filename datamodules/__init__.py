"""The paired FFDM-SM data: manifest, DICOM reading, cache, dataset, sampler, DataModule.

Names are imported lazily, so that ``import datamodules.manifest`` (an adapter) or a cache
worker process does not pay for importing torch and Lightning.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MANIFEST_COLUMNS": "manifest",
    "LESION_COLUMNS": "manifest",
    "ManifestError": "manifest",
    "LoadSummary": "manifest",
    "read_table": "manifest",
    "validate": "manifest",
    "write_tables": "manifest",
    "load_tables": "manifest",
    "assign_splits": "manifest",
    "Geometry": "dicom",
    "DicomReadError": "dicom",
    "load_image": "dicom",
    "ImageCache": "cache",
    "PairedMammoDataset": "dataset",
    "PairedTransform": "transforms",
    "train_transforms": "transforms",
    "BalancedDistributedSampler": "sampler",
    "PairedMammoDataModule": "paired",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
    return getattr(importlib.import_module(f"datamodules.{_EXPORTS[name]}"), name)
