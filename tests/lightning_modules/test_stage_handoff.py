"""Stages II and III and BASE_UB handed on: what stays frozen, Eq. 2, the head's start, SM only."""

from __future__ import annotations

import pytest
import torch
from stage_states import SIZE, _artifact_state, _batch, _identical
from tiny_runs import run_stage

from datamodules import PairedMammoDataModule
from lightning_modules import DistillStudent, FusedDetector, TeacherDetector
from lightning_modules.artifacts import read_artifact, read_checkpoint
from lightning_modules.distillation import FeatureProjection, level_similarities


def _state(path, prefix):
    """The ``prefix*`` tensors of a checkpoint's state dict, prefix stripped."""
    state = read_checkpoint(path)["state_dict"]
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


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
