"""Stage runs refused early: config values that cannot work, and a non-finite training loss."""

from __future__ import annotations

import pytest
import torch
from stage_states import SIZE, _batch

from lightning_modules import TeacherDetector
from lightning_modules.artifacts import read_artifact


@pytest.mark.parametrize(
    "argument, message",
    [
        ("--model.init_args.focal_alpha=2.0", "model.init_args.focal_alpha: must lie in [0, 1]"),
        ("--model.init_args.focal_gamma=-1", "model.init_args.focal_gamma: must be >= 0"),
        (
            "--model.init_args.optimizer.learning_rate=0",
            "model.init_args.optimizer.learning_rate: must be > 0",
        ),
        ("--data.init_args.batch_size=0", "data.init_args.batch_size: must be >= 1"),
        (
            "--model.init_args.architecture=efficientdet_d9",
            "model.init_args.architecture: unknown effdet architecture 'efficientdet_d9'; did you "
            "mean efficientdet_d5",
        ),
        (
            "--data.init_args.image_size=[300, 256]",
            "data.init_args.image_size: [300, 256] must be divisible by 2**max_level = 32",
        ),
        (
            "--model.init_args.pretrained=nowhere.pth",
            "model.init_args.pretrained: nowhere.pth does not exist",
        ),
    ],
)
def test_a_config_value_that_cannot_work_is_refused_in_one_line(
    argument, message, tiny_phantom, capsys
):
    import cli

    code = cli.main(
        [
            "fit",
            "--config",
            "configs/data/phantom.yaml",
            "--config",
            "configs/demo/stage1_sm.yaml",
            "--data.init_args.manifest",
            str(tiny_phantom),
            "--data.init_args.cache_dir",
            "null",
            argument,
            "--trainer.logger=false",
        ]
    )
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines


def test_the_modules_refuse_the_same_values_when_built_in_python(tiny_architecture):
    with pytest.raises(ValueError, match="focal_alpha must lie in"):
        TeacherDetector(
            architecture="efficientdet_d0",
            image_size=SIZE,
            focal_alpha=2.0,
            architecture_overrides=tiny_architecture,
        )
    with pytest.raises(ValueError, match="did you mean efficientdet_d0"):
        TeacherDetector(architecture="efficientdet_d00", image_size=SIZE)
    with pytest.raises(ValueError, match="learning_rate: must be > 0"):
        TeacherDetector(
            architecture="efficientdet_d0",
            image_size=SIZE,
            optimizer={"learning_rate": 0.0},
            architecture_overrides=tiny_architecture,
        )


def test_a_non_finite_loss_stops_the_run_and_leaves_the_checkpoint(tiny_artifacts, tmp_path):
    import pytorch_lightning as pl

    sm = tiny_artifacts["sm"] / "artifact"
    model = TeacherDetector(
        modality="sm",
        architecture="efficientdet_d0",
        image_size=SIZE,
        architecture_overrides=read_artifact(sm).meta["architecture_overrides"],
        pretrained=str(sm),
    )
    batch = _batch(seed=2, pairs=2)
    bad = dict(batch, sm=torch.full_like(batch["sm"], float("nan")))
    checkpoint = tmp_path / "good.ckpt"
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=4,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader([batch], batch_size=None))
    trainer.save_checkpoint(checkpoint)
    saved = checkpoint.read_bytes()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=4,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite training loss \(nan\) at training step 5 \(pairs p0, p1",
    ):
        trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader([bad], batch_size=None))
    assert checkpoint.read_bytes() == saved
