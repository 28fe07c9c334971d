"""The optimiser and evaluation settings: one object each, checked by its own rules, taken by
every stage, and kept in checkpoints as plain values."""

import inspect
import io
from dataclasses import fields

import pytest
import torch

from lightning_modules import (
    DetectorModule,
    DistillStudent,
    EvaluationSettings,
    FusedDetector,
    OptimizerSettings,
    StageModule,
    TeacherDetector,
)

SIZE = (64, 64)


def test_each_rule_names_its_field_and_every_problem_is_reported_at_once():
    assert OptimizerSettings.problems({}) == []
    assert OptimizerSettings.problems(
        {"learning_rate": 0, "warmup_steps": -5, "lr_schedule": "linear"}
    ) == [
        ("learning_rate", "must be > 0, got 0"),
        ("warmup_steps", "must be >= 0, got -5"),
        ("lr_schedule", "must be one of cosine, constant; got 'linear'"),
    ]
    assert EvaluationSettings.problems({"fauc_max_fp": 0, "fauc_n_boot": 1.5}) == [
        ("fauc_max_fp", "must be > 0, got 0"),
        ("fauc_n_boot", "must be an integer, got 1.5"),
    ]


def test_the_joint_rule_sees_the_defaults_of_the_fields_left_out():
    assert OptimizerSettings.problems({"reference_batch_size": 32}) == [
        (
            "reference_batch_size",
            "scales the learning rate to the global batch: set optimizer.global_batch_size too",
        )
    ]
    assert OptimizerSettings.problems({"reference_batch_size": 32, "global_batch_size": 64}) == []


def test_of_takes_an_instance_a_mapping_or_none_and_refuses_what_cannot_work():
    settings = OptimizerSettings(learning_rate=1e-3)
    assert OptimizerSettings.of(settings) is settings
    assert OptimizerSettings.of({"learning_rate": 1e-3, "warmup_steps": 7}) == OptimizerSettings(
        learning_rate=1e-3, warmup_steps=7
    )
    assert OptimizerSettings.of(None) == OptimizerSettings()
    with pytest.raises(ValueError, match="learning_rate: must be > 0, got -1"):
        OptimizerSettings.of(OptimizerSettings(learning_rate=-1))
    with pytest.raises(ValueError, match="OptimizerSettings has no setting learning_rat$"):
        OptimizerSettings.of({"learning_rat": 1e-3})
    with pytest.raises(ValueError, match="expected a mapping of settings, got 0.001"):
        EvaluationSettings.of(1e-3)


def test_the_peak_learning_rate_and_warm_up_scale_with_the_global_batch():
    assert OptimizerSettings(learning_rate=2e-3, warmup_steps=10).peak() == (2e-3, 10)
    scaled = OptimizerSettings(
        learning_rate=1.5e-4, warmup_steps=500, global_batch_size=256, reference_batch_size=64
    )
    assert scaled.peak() == (1.5e-4 * 256 / 64, 125)
    assert OptimizerSettings(
        learning_rate=1e-3, warmup_steps=5, global_batch_size=3, reference_batch_size=2
    ).peak() == (1e-3 * 3 / 2, 4)  # ceil(5 * 2 / 3): the same warm-up pairs, rounded up


def test_no_stage_restates_a_setting_of_the_two_objects():
    restated = {item.name for item in fields(OptimizerSettings)} | {
        item.name for item in fields(EvaluationSettings)
    }
    for stage in (StageModule, DetectorModule, TeacherDetector, DistillStudent, FusedDetector):
        parameters = set(inspect.signature(stage.__init__).parameters)
        assert not parameters & restated, (stage.__name__, parameters & restated)
        assert "optimizer" in parameters
    for detector in (DetectorModule, TeacherDetector, FusedDetector):
        assert "evaluation" in inspect.signature(detector.__init__).parameters


def test_a_stage_keeps_its_settings_as_plain_values_a_checkpoint_loads_without_code(
    tiny_architecture,
):
    model = TeacherDetector(
        architecture="efficientdet_d0",
        image_size=SIZE,
        architecture_overrides=tiny_architecture,
        optimizer=OptimizerSettings(learning_rate=5e-3, lr_schedule="constant"),
        evaluation={"fauc_n_boot": 0},
    )
    assert model.optimizer_settings.learning_rate == 5e-3
    assert model.evaluation == EvaluationSettings(fauc_n_boot=0)
    assert model.hparams["optimizer"] == {
        "learning_rate": 5e-3,
        "weight_decay": 1e-4,
        "warmup_steps": 0,
        "lr_schedule": "constant",
        "global_batch_size": None,
        "reference_batch_size": None,
    }
    assert model.hparams["evaluation"] == {
        "fauc_max_fp": 1.0,
        "fauc_n_boot": 0,
        "hit_min_distance": 100.0,
    }
    assert model.hparams_initial["optimizer"]["learning_rate"] == 5e-3
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": dict(model.hparams)}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["hyper_parameters"]
    assert loaded["evaluation"]["fauc_n_boot"] == 0
    rebuilt = TeacherDetector(**{key: value for key, value in loaded.items()})
    assert rebuilt.optimizer_settings == model.optimizer_settings
    assert rebuilt.evaluation == model.evaluation


def test_a_setting_at_its_old_place_is_refused_naming_where_it_moved(tmp_path, capsys):
    import yaml
    from repo_paths import CONFIGS

    import cli

    stage = yaml.safe_load((CONFIGS / "demo" / "stage1_sm.yaml").read_text())
    init_args = stage["model"]["init_args"]
    init_args["learning_rate"] = init_args.pop("optimizer")["learning_rate"]
    init_args["fauc_n_boot"] = init_args.pop("evaluation")["fauc_n_boot"]
    old = tmp_path / "old_stage1_sm.yaml"
    old.write_text(yaml.safe_dump(stage))
    data = str(CONFIGS / "data" / "phantom.yaml")
    argv = ["fit", "--config", data, "--config", str(old), "--model.init_args.warmup_steps=5"]
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    # in the order given: the file's keys (as safe_dump sorts them), then the flag
    assert lines == [
        f"error: model.init_args.fauc_n_boot ({old}): moved to "
        "model.init_args.evaluation.fauc_n_boot, one object for the optimiser and one for the "
        'evaluation (README, "Stage by stage")',
        f"error: model.init_args.learning_rate ({old}): moved to "
        "model.init_args.optimizer.learning_rate, one object for the optimiser and one for the "
        'evaluation (README, "Stage by stage")',
        "error: model.init_args.warmup_steps (the command line): moved to "
        "model.init_args.optimizer.warmup_steps, one object for the optimiser and one for the "
        'evaluation (README, "Stage by stage")',
    ]
