"""What makes a stage a seconds-long CPU run: the tiny EfficientDet, the overrides that point a
demo stage config at the tiny phantom, ``cli.py fit`` of a stage in this process, and the
overrides that make every stage of a pipeline one short epoch."""

from __future__ import annotations

from repo_paths import CONFIGS

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

TINY_SIZE = "[128, 128]"

# a pipeline's `overrides`: every stage one short epoch at 128x128, no logger
TINY_PIPELINE = {
    "data.init_args.cache_dir": None,
    "data.init_args.image_size": [128, 128],
    "data.init_args.batch_size": 4,
    "data.init_args.samples_per_epoch": 8,
    "trainer.max_epochs": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.enable_progress_bar": False,
    "trainer.logger": False,
}


def tiny_run_args(phantom, root, *extra: str) -> list[str]:
    """Overrides that make any demo stage config a seconds-long run on the tiny phantom."""
    return [
        "--data.init_args.manifest",
        str(phantom),
        "--data.init_args.lesions",
        str(phantom / "lesions.csv"),
        "--data.init_args.cache_dir",
        "null",
        "--data.init_args.image_size",
        TINY_SIZE,
        "--data.init_args.batch_size",
        "4",
        "--data.init_args.num_workers",
        "0",
        "--trainer.accelerator",
        "cpu",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(root),
        *extra,
    ]


def run_stage(config: str, phantom, root, *extra: str) -> None:
    """``cli.py fit`` of ``configs/<config>`` with the phantom data config, in this process."""
    import wandb

    import cli

    try:
        code = cli.main(
            [
                "fit",
                "--config",
                str(CONFIGS / "data" / "phantom.yaml"),
                "--config",
                str(CONFIGS / config),
                *tiny_run_args(phantom, root, *extra),
            ]
        )
    finally:
        wandb.finish()
    assert code == 0
