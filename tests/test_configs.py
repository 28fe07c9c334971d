"""Every YAML under configs/ runs: one training step through the real CLI on a tiny phantom.

Stage configs are paired with a data config and data configs with a stage config, both
pointed at the tiny phantom at a small input size; the W&B logger is the CLI's default
(offline). Stage II and III configs get the tiny Stage I/II artifacts as their inputs.
`--print_config` works for each.
"""

from pathlib import Path

import pytest
import wandb
import yaml
from repo_paths import CONFIGS

import cli

# Lightning configs given with --config. Not here: configs/pipeline/ (pipeline configs, tested
# by test_pipeline_runner), configs/sweeps/ (W&B sweep files, test_sweep), configs/cluster/
# (test_cluster) and data/sm_folder.yaml (a --data file, tested by test_predict).
PREDICT_DATA = CONFIGS / "data" / "sm_folder.yaml"
OTHER_FOLDERS = ("pipeline", "sweeps", "cluster")
ALL_YAMLS = sorted(
    path
    for path in CONFIGS.rglob("*.yaml")
    if path.parent.name not in OTHER_FOLDERS and path != PREDICT_DATA
)
DATA_CONFIGS = sorted(path for path in (CONFIGS / "data").glob("*.yaml") if path != PREDICT_DATA)
STAGE_CONFIGS = [path for path in ALL_YAMLS if path not in DATA_CONFIGS]
TINY_STAGE = CONFIGS / "demo" / "stage1_sm.yaml"
TINY_DATA = CONFIGS / "data" / "phantom.yaml"


def _run_plan(config: Path) -> list[str]:
    """The --config arguments to run ``config``: data config first, then stage config."""
    if config in DATA_CONFIGS:
        return ["--config", str(config), "--config", str(TINY_STAGE)]
    return ["--config", str(TINY_DATA), "--config", str(config)]


def _inputs(config: Path, artifacts: dict[str, Path]) -> list[str]:
    """The artifact paths a Stage II or III config reads, pointed at the tiny ones."""
    if config in DATA_CONFIGS:
        return []
    loaded = yaml.safe_load(config.read_text())
    model = loaded["model"]["class_path"].rsplit(".", 1)[-1]
    art = {name: str(path / "artifact") for name, path in artifacts.items()}
    pretrained = loaded["model"]["init_args"].get("pretrained")
    if pretrained:  # a probe on B's features, or a control from Model_SM
        source = "stage2" if "stage2" in pretrained else "sm"
        return ["--model.init_args.pretrained", art[source]]
    if model == "DistillStudent":
        return [
            "--model.init_args.ffdm_teacher",
            art["ffdm"],
            "--model.init_args.init_from",
            art["sm"],
        ]
    if model == "FusedDetector":
        upper_bound = "ffdm" in loaded["data"]["init_args"]["modalities"]
        return [
            "--model.init_args.sm_teacher",
            art["sm"],
            "--model.init_args.partner",
            art["ffdm" if upper_bound else "stage2"],
        ]
    return []


def _tiny_overrides(phantom: Path, root: Path) -> list[str]:
    return [
        "--data.init_args.manifest",
        str(phantom),
        "--data.init_args.lesions",
        str(phantom / "lesions.csv"),
        "--data.init_args.cache_dir",
        "null",
        "--data.init_args.image_size",
        "[128, 128]",
        "--data.init_args.batch_size",
        "2",
        "--model.init_args.optimizer.global_batch_size",
        "2",  # the real configs' 64 would accumulate 32
        "--data.init_args.num_workers",
        "0",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.max_steps",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.num_sanity_val_steps",
        "0",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(root),
    ]


def test_every_yaml_is_covered():
    assert {path.name for path in DATA_CONFIGS} >= {"phantom.yaml", "embed.yaml"}
    stages = {
        "stage1_sm.yaml",
        "stage1_ffdm.yaml",
        "stage2_distill.yaml",
        "stage3_fused.yaml",
        "upper_bound.yaml",
    }
    assert {path.relative_to(CONFIGS).as_posix() for path in STAGE_CONFIGS} >= {
        *stages,
        *(f"demo/{name}" for name in stages),
    }
    for path in ALL_YAMLS:
        assert yaml.safe_load(path.read_text()), f"{path} is empty"


@pytest.mark.parametrize("config", ALL_YAMLS, ids=lambda path: path.relative_to(CONFIGS).as_posix())
def test_config_trains_one_step(config, tiny_phantom, tiny_artifacts, tmp_path):
    root = tmp_path / "run"
    try:
        cli.main(
            [
                "fit",
                *_run_plan(config),
                *_tiny_overrides(tiny_phantom, root),
                *_inputs(config, tiny_artifacts),
            ]
        )
    finally:
        wandb.finish()
    assert (root / "checkpoints" / "last.ckpt").is_file()
    assert (root / "artifact" / "artifact.json").is_file()
    saved = yaml.safe_load((root / "config.yaml").read_text())
    assert saved["trainer"]["max_steps"] == 1
    assert saved["data"]["init_args"]["image_size"] == [128, 128]
    assert list((root / "wandb").glob("offline-run-*")), "W&B wrote no offline run"


@pytest.mark.parametrize("config", ALL_YAMLS, ids=lambda path: path.relative_to(CONFIGS).as_posix())
def test_print_config_works(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["fit", *_run_plan(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    model, init = printed["model"]["class_path"], printed["model"]["init_args"]
    modalities = printed["data"]["init_args"]["modalities"]
    if model.endswith("TeacherDetector"):
        assert modalities == [init["modality"]]
    elif model.endswith("DistillStudent"):  # reads the SM and the paired FFDM
        assert modalities == ["sm", "ffdm"] and init["ffdm_teacher"].endswith("artifact")
        assert printed["checkpoint"]["monitor"] == "val_cosine"
    else:  # FusedDetector: the fused model reads the SM alone, BASE_UB both
        assert model.endswith("FusedDetector")
        upper_bound = "ffdm" in Path(init["partner"]).parent.name
        assert modalities == (["sm", "ffdm"] if upper_bound else ["sm"])
        assert init["sm_teacher"].endswith("artifact")
    if not model.endswith("DistillStudent"):
        assert init["focal_alpha"] == 0.9
        assert init["focal_gamma"] == 2.5
