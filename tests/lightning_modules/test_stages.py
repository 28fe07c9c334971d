"""Stages II and III and BASE_UB: what stays frozen, Eq. 2, the head start at Model_SM, SM-only
inference, and the refusal of artifacts that do not fit. Real CLI runs on the tiny phantom."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import run_stage

from datamodules import PairedMammoDataModule
from lightning_modules import DistillStudent, FusedDetector, TeacherDetector
from lightning_modules.artifacts import export_checkpoint, read_artifact, read_checkpoint
from lightning_modules.distillation import FeatureProjection, level_similarities

SIZE = (128, 128)


def _state(path, prefix):
    """The ``prefix*`` tensors of a checkpoint's state dict, prefix stripped."""
    state = read_checkpoint(path)["state_dict"]
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def _artifact_state(run, prefix):
    return read_artifact(run / "artifact").state(prefix)


def _identical(first, second):
    assert set(first) == set(second) and first
    return all(torch.equal(first[key], second[key]) for key in first)


def _changed(before, after):
    return [key for key in before if not torch.equal(before[key], after[key])]


@pytest.fixture(scope="module")
def stage3_runs(tiny_artifacts, tiny_phantom, tmp_path_factory):
    base = tmp_path_factory.mktemp("stage3")
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
    sm = str(tiny_artifacts["sm"] / "artifact")
    run_stage(
        "demo/stage3_fused.yaml",
        tiny_phantom,
        base / "fused",
        *short,
        "--model.init_args.sm_teacher",
        sm,
        "--model.init_args.partner",
        str(tiny_artifacts["stage2"] / "artifact"),
    )
    run_stage(
        "demo/upper_bound.yaml",
        tiny_phantom,
        base / "upper_bound",
        *short,
        "--model.init_args.sm_teacher",
        sm,
        "--model.init_args.partner",
        str(tiny_artifacts["ffdm"] / "artifact"),
    )
    return {"fused": base / "fused", "upper_bound": base / "upper_bound"}


def _batch(modalities=("sm",), size=SIZE, pairs=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch = {"pair_id": [f"p{index}" for index in range(pairs)]}
    for modality in modalities:
        batch[modality] = torch.rand(pairs, 1, *size, generator=generator)
        batch[f"{modality}_boxes"] = [torch.tensor([[20.0, 30.0, 50.0, 60.0]])] * pairs
        batch[f"{modality}_labels"] = [torch.tensor([0])] * pairs
    return batch


# -- what stays frozen, what trains -----------------------------------------------------------
def test_stage2_leaves_the_ffdm_teacher_bit_identical(tiny_artifacts):
    stage2 = tiny_artifacts["stage2"]
    teacher = _state(stage2 / "checkpoints" / "last.ckpt", "teacher.")
    assert any("running_mean" in key for key in teacher)  # BatchNorm statistics included
    assert _identical(teacher, _artifact_state(tiny_artifacts["ffdm"], "extractor."))
    # B itself trained: it started from the SM teacher A and moved away from it
    start = _artifact_state(tiny_artifacts["sm"], "extractor.")
    assert _changed(start, _state(stage2 / "checkpoints" / "last.ckpt", "extractor."))


def test_stage3_leaves_the_student_bit_identical_and_fine_tunes_a(tiny_artifacts, stage3_runs):
    last = stage3_runs["fused"] / "checkpoints" / "last.ckpt"
    assert _identical(
        _state(last, "partner."), _artifact_state(tiny_artifacts["stage2"], "extractor.")
    )
    changed = _changed(
        _artifact_state(tiny_artifacts["sm"], "extractor."), _state(last, "extractor.")
    )
    assert len(changed) > 10, "A was not fine-tuned"


def test_upper_bound_trains_both_extractors(tiny_artifacts, stage3_runs):
    last = stage3_runs["upper_bound"] / "checkpoints" / "last.ckpt"
    assert _changed(_artifact_state(tiny_artifacts["sm"], "extractor."), _state(last, "extractor."))
    assert _changed(_artifact_state(tiny_artifacts["ffdm"], "extractor."), _state(last, "partner."))


def test_stage3_artifact_holds_the_inference_model(stage3_runs, tiny_artifacts):
    artifact = read_artifact(stage3_runs["fused"] / "artifact")
    assert artifact.meta["stage"] == 3 and artifact.meta["variant"] == "fused"
    assert artifact.meta["input_modalities"] == ["sm"]
    prefixes = {key.split(".")[0] for key in artifact.state()}
    assert prefixes == {"extractor", "partner", "head"}
    assert (
        artifact.meta["inputs"]["partner"]["sha256"]
        == read_artifact(tiny_artifacts["stage2"] / "artifact").meta["weights_sha256"]
    )
    upper = read_artifact(stage3_runs["upper_bound"] / "artifact")
    assert upper.meta["variant"] == "upper_bound"
    assert upper.meta["input_modalities"] == ["sm", "ffdm"]


# -- Eq. 2 -------------------------------------------------------------------------------------
def test_stage2_loss_equals_negative_eq2_by_hand(tiny_artifacts):
    student = DistillStudent(
        ffdm_teacher=str(tiny_artifacts["ffdm"] / "artifact"),
        image_size=SIZE,
        levels=[3, 4],
        level_weights=[1.0, 3.0],
        eps=1e-6,
    )
    assert student.level_numbers == [3, 4, 5]
    generator = torch.Generator().manual_seed(1)
    shapes = [(2, 4, 3, 5), (2, 4, 2, 2), (2, 4, 1, 1)]
    z = [torch.randn(*shape, generator=generator, dtype=torch.float64) for shape in shapes]
    h = [torch.randn(*shape, generator=generator, dtype=torch.float64) for shape in shapes]
    z[0][1, :, 2, 4] = 0.0  # a zero-norm position: Eq. 2's max(., eps) keeps it finite (0)
    loss = student.loss(level_similarities(z, h, eps=1e-6))

    def by_hand(zl, hl):
        total, count = 0.0, 0
        for b in range(zl.shape[0]):
            for y in range(zl.shape[2]):
                for x in range(zl.shape[3]):
                    u, v = zl[b, :, y, x].tolist(), hl[b, :, y, x].tolist()
                    dot = sum(a * c for a, c in zip(u, v))
                    norms = sum(a * a for a in u) ** 0.5 * sum(c * c for c in v) ** 0.5
                    total += dot / max(norms, 1e-6)
                    count += 1
        return total / count

    expected = -(1.0 * by_hand(z[0], h[0]) + 3.0 * by_hand(z[1], h[1])) / 4.0
    assert loss.dtype == torch.float64
    assert float(loss) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert torch.isfinite(loss)


def test_stage2_loss_of_a_batch_is_the_cosine_of_projected_student_and_teacher(tiny_artifacts):
    student = DistillStudent(
        ffdm_teacher=str(tiny_artifacts["ffdm"] / "artifact"), image_size=SIZE
    ).eval()
    batch = _batch(("sm", "ffdm"))
    with torch.no_grad():
        z = student.project(student.student_features(batch["sm"]))
        h = student.teacher_features(batch["ffdm"])
        expected = -torch.stack(
            [
                torch.nn.functional.cosine_similarity(
                    zl.double(), hl.double(), dim=1, eps=1e-8
                ).mean()
                for zl, hl in zip(z, h)
            ]
        ).mean()
        assert float(student(batch)) == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize("kind", ["conv3x3", "shared"])
def test_projection_keeps_each_levels_shape(kind):
    projection = FeatureProjection(channels=8, num_levels=3, kind=kind)
    features = [torch.randn(2, 8, side, side + 1) for side in (16, 8, 4)]
    projected = projection(features)
    assert [p.shape for p in projected] == [f.shape for f in features]
    assert len(projection.convs) == (1 if kind == "shared" else 3)
    assert all(conv.kernel_size == (3, 3) and conv.padding == (1, 1) for conv in projection.convs)


# -- the head's start, and inference from the SM alone ------------------------------------------
def test_head_init_from_sm_teacher_starts_exactly_at_model_sm(tiny_artifacts):
    sm = str(tiny_artifacts["sm"] / "artifact")
    model_sm = TeacherDetector(
        modality="sm",
        architecture="efficientdet_d0",
        image_size=SIZE,
        architecture_overrides=read_artifact(sm).meta["architecture_overrides"],
        pretrained=sm,
    ).eval()
    fused = FusedDetector(
        sm_teacher=sm,
        partner=str(tiny_artifacts["stage2"] / "artifact"),
        image_size=SIZE,
        head_init="sm_teacher",
    ).eval()
    batch = _batch(seed=4)
    expected, actual = model_sm.detections(batch), fused.detections(batch)
    assert sum(len(d["scores"]) for d in expected) > 10
    for one, other in zip(expected, actual):
        assert torch.allclose(one["scores"], other["scores"], atol=1e-5)
        assert torch.allclose(one["boxes"], other["boxes"], atol=1e-5)
    random_head = FusedDetector(
        sm_teacher=sm,
        partner=str(tiny_artifacts["stage2"] / "artifact"),
        image_size=SIZE,
        head_init="random",
    ).eval()
    scores = random_head.detections(batch)[0]["scores"]
    assert not torch.allclose(scores[:5], expected[0]["scores"][:5], atol=1e-5)


def test_fused_model_predicts_from_the_sm_alone_and_base_ub_refuses(tiny_artifacts, tiny_phantom):
    sm = str(tiny_artifacts["sm"] / "artifact")
    fused = FusedDetector(
        sm_teacher=sm, partner=str(tiny_artifacts["stage2"] / "artifact"), image_size=SIZE
    ).eval()
    data = PairedMammoDataModule(
        str(tiny_phantom),
        image_size=SIZE,
        modalities=["sm"],
        num_workers=0,
        batch_size=3,
        cache_dir=None,
    )
    data.setup()
    batch = next(iter(data.test_dataloader()))
    assert "ffdm" not in batch
    detections = fused.predict_step(batch, 0)
    assert len(detections) == 3 and all(len(d["boxes_original"]) > 0 for d in detections)
    upper = FusedDetector(
        sm_teacher=sm, partner=str(tiny_artifacts["ffdm"] / "artifact"), image_size=SIZE
    ).eval()
    with pytest.raises(ValueError, match="BASE_UB .* reads the FFDM as well as the SM"):
        upper.predict_step(batch, 0)


# -- artifacts that do not fit -----------------------------------------------------------------
def test_a_d0_teacher_is_refused_by_a_student_built_for_d1(tiny_artifacts):
    with pytest.raises(
        ValueError,
        match=r"fpn_channels 32 \(efficientdet_d0\).*fpn_channels "
        r"88 \(efficientdet_d1\)",
    ):
        DistillStudent(
            ffdm_teacher=str(tiny_artifacts["ffdm"] / "artifact"),
            image_size=SIZE,
            architecture="efficientdet_d1",
        )


def test_a_stage2_artifact_is_refused_as_sm_teacher(tiny_artifacts):
    stage2 = tiny_artifacts["stage2"] / "artifact"
    with pytest.raises(
        ValueError,
        match=f"sm_teacher {stage2} is a stage-2 DistillStudent; "
        "expected a stage-1 TeacherDetector on sm",
    ):
        FusedDetector(sm_teacher=str(stage2), partner=str(stage2), image_size=SIZE)


def test_an_sm_teacher_is_refused_as_ffdm_teacher(tiny_artifacts):
    sm = tiny_artifacts["sm"] / "artifact"
    with pytest.raises(
        ValueError,
        match=f"ffdm_teacher {sm} is a stage-1 TeacherDetector on "
        "sm; expected a stage-1 TeacherDetector on ffdm",
    ):
        DistillStudent(ffdm_teacher=str(sm), image_size=SIZE)
    with pytest.raises(
        ValueError, match="expected a stage-2 DistillStudent or a stage-1 TeacherDetector on ffdm"
    ):
        FusedDetector(sm_teacher=str(sm), partner=str(sm), image_size=SIZE)


def test_an_artifact_of_another_image_size_is_refused(tiny_artifacts):
    with pytest.raises(
        ValueError,
        match=r"trained at image_size \[128, 128\]; this model is "
        r"built for image_size \[256, 256\]",
    ):
        DistillStudent(ffdm_teacher=str(tiny_artifacts["ffdm"] / "artifact"), image_size=(256, 256))


def test_a_changed_weight_file_is_refused(tiny_artifacts, tmp_path):
    import shutil

    copy = tmp_path / "artifact"
    shutil.copytree(tiny_artifacts["ffdm"] / "artifact", copy)
    weights = copy / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt or was changed: its SHA-256 is"):
        DistillStudent(ffdm_teacher=str(copy), image_size=SIZE)


# -- export, and pretrained from our own files ----------------------------------------------
def test_export_is_a_no_op_for_the_same_checkpoint(tiny_artifacts, tmp_path, capsys):
    import cli

    checkpoint = tiny_artifacts["sm"] / "checkpoints" / "last.ckpt"
    out = tmp_path / "exported"
    assert cli.main(["export", "--ckpt", str(checkpoint), "--out", str(out)]) == 0
    assert "written" in capsys.readouterr().out
    first = (out / "artifact.json").read_text()
    mtime = (out / "weights.safetensors").stat().st_mtime_ns
    path, written = export_checkpoint(checkpoint, out)
    assert not written and (out / "artifact.json").read_text() == first
    assert (out / "weights.safetensors").stat().st_mtime_ns == mtime
    assert cli.main(["export", "--ckpt", str(checkpoint), "--out", str(out)]) == 0
    assert "unchanged" in capsys.readouterr().out
    # the hand export holds the same weights as the handoff's artifact of that checkpoint
    exported = load_file(str(out / "weights.safetensors"))
    assert _identical(exported, read_artifact(tiny_artifacts["sm"] / "artifact").state())
    assert json.loads(first)["stage"] == 1
    assert not list(tmp_path.glob(".exported.*")), "temporary folders left behind"


def test_export_refuses_a_foreign_checkpoint(tmp_path, capsys):
    import cli

    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, path)
    assert cli.main(["export", "--ckpt", str(path), "--out", str(tmp_path / "a")]) == 1
    assert "is not a checkpoint of a mammofuse stage module" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["artifact", "checkpoint"])
def test_pretrained_accepts_our_artifacts_and_checkpoints(tiny_artifacts, source):
    run = tiny_artifacts["ffdm"]
    path = run / "artifact" if source == "artifact" else run / "checkpoints" / "last.ckpt"
    overrides = read_artifact(run / "artifact").meta["architecture_overrides"]
    model = TeacherDetector(
        modality="ffdm",
        architecture="efficientdet_d0",
        image_size=SIZE,
        architecture_overrides=overrides,
        pretrained=str(path),
    )
    expected = _artifact_state(run, "extractor.")
    assert _identical({key: value for key, value in model.extractor.state_dict().items()}, expected)
    assert _identical(model.head.state_dict(), _artifact_state(run, "head."))


def test_a_fused_artifact_as_pretrained_of_a_single_detector_is_refused(
    tiny_artifacts, stage3_runs
):
    path = stage3_runs["fused"] / "artifact"
    overrides = read_artifact(tiny_artifacts["sm"] / "artifact").meta["architecture_overrides"]
    with pytest.raises(ValueError) as error:
        TeacherDetector(
            modality="sm",
            architecture="efficientdet_d0",
            image_size=SIZE,
            architecture_overrides=overrides,
            pretrained=str(path),
        )
    assert str(error.value).startswith(
        f"{path} is a stage-3 FusedDetector (fused), whose head reads two feature sets side by side"
    )
    assert "SM teacher's (Stage I) artifact" in str(error.value)


def test_a_truncated_weight_file_is_refused_naming_it(tiny_artifacts, tmp_path):
    import shutil

    copy = tmp_path / "artifact"
    shutil.copytree(tiny_artifacts["ffdm"] / "artifact", copy)
    weights = copy / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=f"{weights} is corrupt or was changed"):
        DistillStudent(ffdm_teacher=str(copy), image_size=SIZE)


def test_a_truncated_checkpoint_is_named_in_one_line(tiny_artifacts, tmp_path, capsys):
    import cli

    checkpoint = tmp_path / "cut.ckpt"
    checkpoint.write_bytes((tiny_artifacts["sm"] / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    code = cli.main(
        [
            "test",
            "--config",
            "configs/data/phantom.yaml",
            "--config",
            "configs/demo/stage1_sm.yaml",
            "--ckpt_path",
            str(checkpoint),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [error[0]] and error[0].startswith(
        f"error: ckpt_path: cannot read checkpoint {checkpoint}"
    )
    with pytest.raises(ValueError, match=f"cannot read checkpoint {checkpoint}"):
        export_checkpoint(checkpoint, tmp_path / "out")


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
