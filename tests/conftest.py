"""Test settings: CPU only, offline, small models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

# at most 2 threads, and no more than the CPUs this process may use (taskset, SLURM's cgroup)
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
torch.set_num_threads(max(1, min(2, _CPUS or 1)))

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
    from data_tools.phantom import PhantomSettings, generate

    folder = tmp_path_factory.mktemp("phantom")
    generate(folder, PhantomSettings(pairs=30, seed=3), workers=1, progress=False)
    return folder


CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"
TINY_SIZE = "[128, 128]"


def tiny_run_args(phantom, root, *extra: str) -> list[str]:
    """Overrides that make any demo stage config a seconds-long run on the tiny phantom."""
    return [
        "--data.init_args.manifest", str(phantom),
        "--data.init_args.lesions", str(phantom / "lesions.csv"),
        "--data.init_args.cache_dir", "null",
        "--data.init_args.image_size", TINY_SIZE,
        "--data.init_args.batch_size", "4",
        "--data.init_args.num_workers", "0",
        "--trainer.accelerator", "cpu",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(root),
        *extra,
    ]


def run_stage(config: str, phantom, root, *extra: str) -> None:
    """``cli.py fit`` of ``configs/<config>`` with the phantom data config, in this process."""
    import wandb

    import cli

    try:
        code = cli.main(["fit", "--config", str(CONFIGS / "data" / "phantom.yaml"),
                         "--config", str(CONFIGS / config), *tiny_run_args(phantom, root, *extra)])
    finally:
        wandb.finish()
    assert code == 0


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_phantom, tmp_path_factory):
    """Stage I SM and FFDM and Stage II, a few steps each at 128x128, with their artifacts:
    {"sm": run folder, "ffdm": ..., "stage2": ...}."""
    base = tmp_path_factory.mktemp("stages")
    short = ["--trainer.max_steps", "3", "--trainer.limit_val_batches", "2",
             "--trainer.check_val_every_n_epoch", "1", "--trainer.logger", "false"]
    for modality in ("sm", "ffdm"):
        run_stage(f"demo/stage1_{modality}.yaml", tiny_phantom, base / modality, *short)
    run_stage("demo/stage2_distill.yaml", tiny_phantom, base / "stage2", *short,
              "--model.init_args.ffdm_teacher", str(base / "ffdm" / "artifact"),
              "--model.init_args.init_from", str(base / "sm" / "artifact"))
    return {name: base / name for name in ("sm", "ffdm", "stage2")}
