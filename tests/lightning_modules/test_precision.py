"""Precision and the GPU paths on CPU: every stage's fit, validation and prediction under
``bf16-mixed`` (the autocast paths a GPU takes), float32 decoding, the refused precisions,
channels_last and timm's sync-BatchNorm conversion. Real CLI runs on the tiny phantom."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from timm.layers import BatchNormAct2d, SyncBatchNormAct
from tiny_runs import run_stage

import cli
from datamodules import PairedMammoDataModule
from lightning_modules import FusedDetector, TeacherDetector
from lightning_modules.artifacts import read_artifact
from lightning_modules.effdet_parts import TimmSyncBatchNorm, use_channels_last
from lightning_modules.stage import default_precision

SIZE = (128, 128)
BF16 = ["--trainer.precision", "bf16-mixed"]
STAGES = {  # name: (config, inputs: init argument -> tiny artifact, modalities)
    "stage1_sm": ("demo/stage1_sm.yaml", {}, ["sm"]),
    "stage2": (
        "demo/stage2_distill.yaml",
        {"ffdm_teacher": "ffdm", "init_from": "sm"},
        ["sm", "ffdm"],
    ),
    "stage3": ("demo/stage3_fused.yaml", {"sm_teacher": "sm", "partner": "stage2"}, ["sm"]),
    "upper_bound": (
        "demo/upper_bound.yaml",
        {"sm_teacher": "sm", "partner": "ffdm"},
        ["sm", "ffdm"],
    ),
}


@pytest.fixture(scope="module")
def bf16_runs(tiny_artifacts, tiny_phantom, tmp_path_factory):
    """Each stage fitted for 3 steps under bf16-mixed (BASE_UB also in channels_last)."""
    base = tmp_path_factory.mktemp("bf16")
    for name, (config, inputs, _) in STAGES.items():
        root = base / name
        extra = [
            f"--model.init_args.{argument}={tiny_artifacts[source] / 'artifact'}"
            for argument, source in inputs.items()
        ]
        if name == "upper_bound":
            extra += ["--model.init_args.channels_last", "true"]
        run_stage(
            config,
            tiny_phantom,
            root,
            *BF16,
            *extra,
            "--data.init_args.samples_per_epoch",
            "12",  # 3 steps, then validation
            "--trainer.max_steps",
            "3",
            "--trainer.limit_val_batches",
            "2",
            "--trainer.check_val_every_n_epoch",
            "1",
            "--trainer.log_every_n_steps",
            "1",
            "--trainer.logger",
            "pytorch_lightning.loggers.CSVLogger",
            "--trainer.logger.save_dir",
            str(root),
            "--trainer.logger.name",
            "csv",
        )
    return base


def _data(phantom, modalities, split="val"):
    return PairedMammoDataModule(
        manifest=str(phantom),
        lesions=str(phantom / "lesions.csv"),
        image_size=SIZE,
        modalities=modalities,
        batch_size=4,
        num_workers=0,
        augment=False,
        hit_min_distance=12.5,
        predict_split=split,
    )


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_fits_validates_and_predicts_in_bf16_mixed(
    stage, bf16_runs, tiny_phantom, tiny_artifacts
):
    config, inputs, modalities = STAGES[stage]
    root = bf16_runs / stage
    metrics = pd.concat(pd.read_csv(path) for path in root.glob("csv/*/metrics.csv"))
    losses = metrics["train_loss_step"].dropna()
    assert len(losses) == 3 and all(math.isfinite(value) for value in losses)
    monitored = "val_cosine" if stage == "stage2" else "val_fauc"
    assert math.isfinite(metrics[monitored].dropna().iloc[-1])
    artifact = read_artifact(root / "artifact")
    assert all(torch.isfinite(tensor).all() for tensor in artifact.state().values())
    assert artifact.meta["schedule"]["optimizer_steps"] == 3

    validated = cli.run_lightning(
        [  # `cli.py validate` of the last checkpoint, in bf16-mixed
            "validate",
            "--config",
            "configs/data/phantom.yaml",
            "--config",
            f"configs/{config}",
            "--data.init_args.manifest",
            str(tiny_phantom),
            "--data.init_args.lesions",
            str(tiny_phantom / "lesions.csv"),
            "--data.init_args.cache_dir",
            "null",
            "--data.init_args.image_size",
            "[128, 128]",
            "--data.init_args.num_workers",
            "0",
            "--trainer.accelerator",
            "cpu",
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(root),
            *BF16,
            *(
                f"--model.init_args.{argument}={tiny_artifacts[source] / 'artifact'}"
                for argument, source in inputs.items()
            ),
            "--ckpt_path",
            str(root / "checkpoints" / "last.ckpt"),
            "--weights_only",
            "true",
        ]
    )
    assert validated.trainer.precision == "bf16-mixed"
    assert math.isfinite(float(validated.trainer.callback_metrics[monitored]))
    if stage == "stage2":  # the student detects nothing: there is no prediction to make
        return
    model_class = TeacherDetector if stage == "stage1_sm" else FusedDetector
    model = model_class(
        pretrained=str(root / "artifact"),
        image_size=SIZE,
        **(
            {
                "architecture": "efficientdet_d0",
                "architecture_overrides": artifact.meta["architecture_overrides"],
            }
            if stage == "stage1_sm"
            else {}
        ),
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    batches = trainer.predict(model, datamodule=_data(tiny_phantom, modalities, "test"))
    detections = [image for batch in batches for image in batch]
    assert detections and sum(len(image["scores"]) for image in detections) > 0
    for image in detections:
        assert image["scores"].dtype == image["boxes"].dtype == torch.float32
        assert torch.all(image["scores"][:-1] >= image["scores"][1:])
        assert torch.all((image["scores"] > 0) & (image["scores"] < 1))


def _distinct_scores(model, phantom, precision: str, old_path: bool = False) -> tuple[int, int]:
    """(distinct scores, detections) of ``model`` over every pair of the phantom; with
    ``old_path`` the head's last convolution and the decoding run under autocast, as before."""
    data = _data(phantom, ["sm"], "all")
    data.setup("predict")
    scores = []
    model.eval()
    with (
        torch.no_grad(),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"),
    ):
        for batch in data.predict_dataloader():
            if old_path:
                features = model.features(batch)
                outputs = model.head.class_net(features), model.head.box_net(features)
                decoded = _decode_under_autocast(model.criterion, *outputs)
            else:
                decoded = model.detections(batch)
            scores += [image["scores"].float() for image in decoded]
    scores = torch.cat(scores)
    return int(torch.unique(scores).numel()), int(scores.numel())


def _decode_under_autocast(criterion, class_out, box_out):
    """The decoding as it was: effdet's post-processing on the head's (bfloat16) outputs."""
    from effdet.bench import _batch_detection, _post_process

    config = criterion.config
    class_top, box_top, indices, classes = _post_process(
        class_out,
        box_out,
        num_levels=config.num_levels,
        num_classes=config.num_classes,
        max_detection_points=config.max_detection_points,
    )
    detections = _batch_detection(
        class_out[0].shape[0],
        class_top,
        box_top,
        criterion.anchors.boxes,
        indices,
        classes,
        max_det_per_image=config.max_det_per_image,
    )
    return [{"scores": image[image[:, 5] > 0, 4]} for image in detections]


def test_bf16_and_fp32_decoding_give_as_many_distinct_scores(tiny_artifacts, tiny_phantom):
    sm = tiny_artifacts["sm"] / "artifact"
    model = TeacherDetector(
        pretrained=str(sm),
        image_size=SIZE,
        architecture="efficientdet_d0",
        architecture_overrides=read_artifact(sm).meta["architecture_overrides"],
    )
    fp32, fp32_count = _distinct_scores(model, tiny_phantom, "32-true")
    bf16, bf16_count = _distinct_scores(model, tiny_phantom, "bf16-mixed")
    old, _ = _distinct_scores(model, tiny_phantom, "bf16-mixed", old_path=True)
    assert fp32_count > 1000 and bf16_count > 1000
    assert abs(bf16 - fp32) <= 0.01 * fp32, (bf16, fp32)
    assert old < 0.5 * fp32, (old, fp32)  # what the float32 head output and decoding fixed


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_true_half_precision_is_refused_in_one_line(precision, tiny_phantom, capsys):
    code = cli.main(
        [
            "fit",
            "--config",
            "configs/data/phantom.yaml",
            "--config",
            "configs/demo/stage1_sm.yaml",
            *_tiny_data(tiny_phantom),
            f"--trainer.precision={precision}",
            "--trainer.logger=false",
        ]
    )
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert lines == [lines[0]] and lines[0].startswith(
        f"error: trainer.precision: {precision} casts the whole model to"
    ), lines


def _tiny_data(phantom) -> list[str]:
    """The tiny phantom in place of the demo's (which a clean clone does not have)."""
    return [
        f"--data.init_args.manifest={phantom}",
        f"--data.init_args.lesions={phantom / 'lesions.csv'}",
        "--data.init_args.cache_dir=null",
    ]


def _configured_trainer(phantom, *args: str) -> pl.Trainer:
    """The trainer ``cli.py`` builds from the phantom data and the real-data Stage I config."""
    cli_class = cli.lightning_cli_class()
    built = cli_class(
        save_config_callback=None,
        **cli.CLI_KWARGS,
        run=False,
        args=[
            "--config",
            "configs/data/phantom.yaml",
            "--config",
            "configs/stage1_sm.yaml",
            *_tiny_data(phantom),
            "--data.init_args.image_size=[256, 256]",
            "--trainer.logger=false",
            *args,
        ],
    )
    return built.trainer


def test_unset_precision_is_bf16_mixed_on_a_gpu_only(tiny_phantom):
    gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    assert default_precision("auto") == default_precision("gpu") == ("bf16-mixed" if gpu else None)
    assert default_precision("cpu") is None
    assert _configured_trainer(tiny_phantom).precision == ("bf16-mixed" if gpu else "32-true")
    assert _configured_trainer(tiny_phantom, "--trainer.accelerator=cpu").precision == "32-true"
    assert (
        _configured_trainer(
            tiny_phantom, "--trainer.accelerator=cpu", "--trainer.precision=bf16-mixed"
        ).precision
        == "bf16-mixed"
    )


def _tiny_teacher(tiny_architecture, seed=0):
    torch.manual_seed(seed)
    return TeacherDetector(
        modality="sm",
        architecture="efficientdet_d0",
        image_size=SIZE,
        architecture_overrides=tiny_architecture,
    )


def _outputs(model, images):
    class_out, box_out = model({"sm": images})
    return torch.cat([level.flatten() for level in [*class_out, *box_out]])


def test_sync_batchnorm_keeps_each_activation(tiny_architecture):
    model = _tiny_teacher(tiny_architecture).eval()
    images = torch.rand(2, 1, *SIZE, generator=torch.Generator().manual_seed(1))
    before = _outputs(model, images)
    acts = [type(module.act) for module in model.modules() if isinstance(module, BatchNormAct2d)]
    assert acts and any(act is not torch.nn.Identity for act in acts)

    # Lightning's default conversion drops the activations: the outputs change.
    dropped = pl.plugins.TorchSyncBatchNorm().apply(_tiny_teacher(tiny_architecture).eval())
    assert (_outputs(dropped, images) - before).abs().max() > 1e-3

    plugin = TimmSyncBatchNorm()
    converted = plugin.apply(model)
    synced = [module for module in converted.modules() if isinstance(module, SyncBatchNormAct)]
    assert [type(module.act) for module in synced] == acts
    assert not any(isinstance(module, BatchNormAct2d) for module in converted.modules())
    assert torch.equal(_outputs(converted, images), before)
    reverted = plugin.revert(converted)
    assert not any(isinstance(module, torch.nn.SyncBatchNorm) for module in reverted.modules())
    assert [
        type(module.act) for module in reverted.modules() if isinstance(module, BatchNormAct2d)
    ] == acts
    assert torch.equal(_outputs(reverted, images), before)


def test_trainer_sync_batchnorm_gets_timms_converter(tiny_architecture):
    model = _tiny_teacher(tiny_architecture)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, strategy="ddp", sync_batchnorm=True, logger=False
    )
    model.trainer = trainer
    model.setup("validate")
    assert type(trainer.strategy._layer_sync) is TimmSyncBatchNorm
    with pytest.raises(
        ValueError, match="trainer.sync_batchnorm: torch's SyncBatchNorm trains on GPUs only"
    ):
        model.setup("fit")


def test_channels_last_converts_weights_and_inputs_and_keeps_the_outputs(tiny_architecture):
    model = _tiny_teacher(tiny_architecture).eval()
    images = torch.rand(2, 1, *SIZE, generator=torch.Generator().manual_seed(2))
    before = _outputs(model, images)
    use_channels_last(model)
    convolutions = [
        module.weight
        for module in model.modules()
        if isinstance(module, torch.nn.Conv2d) and module.weight.shape[1] > 1
    ]
    assert convolutions and all(
        weight.is_contiguous(memory_format=torch.channels_last) for weight in convolutions
    )
    seen = []
    model.extractor.backbone.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
    after = _outputs(model, images)
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and seen[0].shape[1] == 3
    assert torch.allclose(after, before, atol=1e-4)
