"""Test settings: CPU only, offline, small models."""

import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402
from tiny_runs import TINY_ARCHITECTURE, run_stage  # noqa: E402

# at most 2 threads, and no more than the CPUs this process may use (taskset, SLURM's cgroup)
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
torch.set_num_threads(max(1, min(2, _CPUS or 1)))


@pytest.fixture
def tiny_architecture() -> dict:
    return {
        key: (dict(value) if isinstance(value, dict) else value)
        for key, value in TINY_ARCHITECTURE.items()
    }


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory):
    """A 30-pair phantom folder (manifest.csv, lesions.csv, DICOMs), made once per session."""
    from data_tools.phantom import PhantomSettings, generate

    folder = tmp_path_factory.mktemp("phantom")
    generate(folder, PhantomSettings(pairs=30, seed=3), workers=1, progress=False)
    return folder


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_phantom, tmp_path_factory):
    """Stage I SM and FFDM and Stage II, a few steps each at 128x128, with their artifacts:
    {"sm": run folder, "ffdm": ..., "stage2": ...}."""
    base = tmp_path_factory.mktemp("stages")
    short = [
        "--trainer.max_steps",
        "3",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.logger",
        "false",
    ]
    for modality in ("sm", "ffdm"):
        run_stage(f"demo/stage1_{modality}.yaml", tiny_phantom, base / modality, *short)
    run_stage(
        "demo/stage2_distill.yaml",
        tiny_phantom,
        base / "stage2",
        *short,
        "--model.init_args.ffdm_teacher",
        str(base / "ffdm" / "artifact"),
        "--model.init_args.init_from",
        str(base / "sm" / "artifact"),
    )
    return {name: base / name for name in ("sm", "ffdm", "stage2")}


@pytest.fixture
def data(pristine, tmp_path):
    """A fresh copy of the test module's own ``pristine`` data folder, for a test to break."""
    folder = tmp_path / "data"
    shutil.copytree(pristine, folder)
    return folder
