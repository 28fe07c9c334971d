"""Artifacts and checkpoints between stages: refused when they do not fit, export, pretrained."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from stage_states import SIZE, _artifact_state, _identical

from lightning_modules import DistillStudent, FusedDetector, TeacherDetector
from lightning_modules.artifacts import export_checkpoint, read_artifact

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
