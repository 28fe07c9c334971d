"""Test settings: CPU only, offline, small models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# A small EfficientDet from the d0 config (ENVIRONMENT.md, "Sizing a CPU demo"): P3..P5,
# 32 BiFPN channels, MobileNetV3 backbone. About 1M parameters; learns from scratch on CPU.
TINY_ARCHITECTURE = {
    "backbone_name": "mobilenetv3_small_100",
    "backbone_args": {"drop_path_rate": 0.0},
    "fpn_channels": 32,
    "fpn_cell_repeats": 2,
    "box_class_repeats": 2,
    "max_level": 5,
    "anchor_scale": 2.0,
    "aspect_ratios": [[1.0, 1.0]],
}


@pytest.fixture
def tiny_architecture() -> dict:
    return {key: (dict(value) if isinstance(value, dict) else value)
            for key, value in TINY_ARCHITECTURE.items()}


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory):
    """A 30-pair phantom folder (manifest.csv, lesions.csv, DICOMs), made once per session."""
    from datamodules.phantom import PhantomSettings, generate

    folder = tmp_path_factory.mktemp("phantom")
    generate(folder, PhantomSettings(pairs=30, seed=3), workers=1, progress=False)
    return folder
