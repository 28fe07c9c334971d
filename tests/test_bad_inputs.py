"""Bad inputs a new user tried, one test per case: each is refused (or warned about) before any
work, with a message that names the file, row or key and says what is wrong.

The data cases run on real DICOMs written with pydicom (`dicom_factory`); the run cases through
``cli.main`` as a user types them, on the tiny phantom and the session's tiny stage artifacts.
`bench/probe_bad_inputs.py` tries the same cases and more as subprocesses.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import wandb
import yaml
from dicom_factory import (
    breast_image,
    make_float_pixels,
    replace_pixels,
    rewrite_dicom,
    truncate,
    write_mammogram,
    write_paired_folder,
)
from repo_paths import CONFIGS

import cli
from data_tools import check
from data_tools.check import check_data
from data_tools.prepare import main as prepare_main
from datamodules import preflight
from datamodules.dicom import ImageContentError, image_kind, load_image
from datamodules.folder import SMFolderDataModule
from datamodules.manifest import load_tables, read_table
from datamodules.paired import PairedMammoDataModule
from datamodules.preflight import CheckSettings, DataCheckError
from pipeline.config import load_pipeline

SIZE = (64, 48)
# write_paired_folder(6 pairs, 2 per patient): pair p000i is manifest row i + 2; p0000 (L CC,
# row 2) has a malignant and a benign lesion in each modality (lesions.csv rows 2-5: sm
# malignant, sm benign, ffdm malignant, ffdm benign), p0003 (R MLO, row 5) a malignant one in
# each (rows 6-7); the others are negative. SMs are 120x96, FFDMs 160x128.
SM_TYPE = ["DERIVED", "PRIMARY", "TOMOSYNTHESIS", "GENERATED_2D"]
FFDM_TYPE = ["ORIGINAL", "PRIMARY"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pristine")
    write_paired_folder(folder, pairs=6, pairs_per_patient=2)
    for path in (folder / "images").glob("*.dcm"):  # what the scanners write
        rewrite_dicom(path, ImageType=SM_TYPE if path.stem.endswith("_sm") else FFDM_TYPE)
    return folder


def image(folder, pair: str, modality: str):
    return folder / "images" / f"{pair}_{modality}.dcm"


def run(folder, **settings):
    settings.setdefault("image_size", SIZE)
    return check_data(CheckSettings(manifest=str(folder), **settings), workers=0, progress=False)


def kinds(problems) -> list[tuple[str, str, int | None]]:
    return [(p.kind, p.file.rsplit("/", 1)[-1], p.row) for p in problems]


def edit_table(folder, name: str, edit) -> None:
    path = folder / name
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(table)
    table.to_csv(path, index=False)


def test_the_tagged_folder_is_clean(data):
    report = run(data)
    assert report.problems == [] and report.warnings == []


# -- 2. no lesion lost silently ---------------------------------------------------------------
def test_a_pathology_classes_key_that_no_lesion_has(data):
    report = run(data, pathology_classes={"malignant": 0, "unknown": 1})
    [problem] = report.problems
    assert (problem.kind, problem.file, problem.column) == (
        preflight.UNUSED_CLASS,
        str(data / "lesions.csv"),
        "pathology",
    )
    assert problem.reason.startswith(
        "pathology_classes maps 'unknown' to class 1, but no "
        "lesion of the pairs checked has pathology 'unknown' "
        "(they have: malignant 4, benign 2)"
    )


def test_a_box_in_the_background_is_reported_and_a_label_1_pair_left_without_one_is_an_error(data):
    def background(lesions):  # p0003's FFDM box (lesions.csv row 7), an R breast: the top
        lesions.loc[5, ["x1", "y1", "x2", "y2"]] = ["2", "2", "8", "8"]  # left is background

    edit_table(data, "lesions.csv", background)
    report = run(data)
    [warning] = report.warnings
    assert (warning.kind, warning.row, warning.pair_id) == (preflight.BOX_LOST, 7, "p0003")
    assert "lies outside the breast crop, where training drops it" in warning.reason
    [problem] = report.problems
    assert (problem.kind, problem.row, problem.column, problem.pair_id) == (
        preflight.NO_TARGET,
        5,
        "label",
        "p0003",
    )
    assert problem.reason == (
        f"label 1, but no ffdm box is left for training ({data}/lesions.csv "
        "row 7 lies outside the breast crop, where training drops it (in "
        "the background?))"
    )


def test_mirrored_boxes_are_named_as_such(data):
    def mirror(lesions):  # p0003 (an R breast, SM width 96): a box near the chest wall
        lesions.loc[4, ["x1", "x2"]] = ["6", "12"]  # written for the flipped image: 84-90

    edit_table(data, "lesions.csv", mirror)
    report = run(data, modalities=("sm",))
    assert [(w.kind, w.row) for w in report.warnings] == [(preflight.BOX_LOST, 6)]
    assert "mirrored (x -> width - x) it would lie inside" in report.warnings[0].reason
    assert kinds(report.problems) == [(preflight.NO_TARGET, "manifest.csv", 5)]


def test_a_sub_pixel_box_is_lost_and_said(data):
    def shrink(lesions):  # p0003's SM box: 0.3 pixels wide, 0.16 at the input
        lesions.loc[4, "x2"] = str(float(lesions.loc[4, "x1"]) + 0.3)

    edit_table(data, "lesions.csv", shrink)
    report = run(data, modalities=("sm",))
    [warning] = report.warnings
    assert warning.row == 6 and "at the model's input (less than 1): too small" in warning.reason
    assert kinds(report.problems) == [(preflight.NO_TARGET, "manifest.csv", 5)]


def test_a_label_1_pair_whose_only_box_is_outside_its_image(data):
    edit_table(data, "lesions.csv", lambda lesions: lesions.loc.__setitem__((4, "x2"), "500"))
    report = run(data, modalities=("sm",))
    assert kinds(report.problems) == [
        (preflight.NO_TARGET, "manifest.csv", 5),
        (preflight.BOX_OUTSIDE, "lesions.csv", 6),
    ]
    assert report.problems[0].reason.endswith("lesions.csv row 6 is not inside its image)")
    assert report.warnings == []


def test_class_mapping_that_drops_every_box_of_a_label_1_pair(data):
    report = run(data, pathology_classes={"benign": 0})
    assert kinds(report.problems) == [(preflight.NO_TARGET, "manifest.csv", 5)] * 2
    assert (
        "lesions.csv row 6 is malignant, not a class of pathology_classes"
        in report.problems[0].reason
    )


def test_a_near_black_image_with_one_bright_pixel(data):
    values = np.full((120, 96), 3, dtype=np.uint16)
    values[60, 50] = 60000
    replace_pixels(image(data, "p0001", "sm"), values)
    [problem] = run(data).problems
    assert (problem.kind, problem.row, problem.column) == (preflight.CROP_ENLARGED, 3, "sm_path")
    assert problem.reason.startswith(
        "the breast crop is 5x5 pixels (width x height) of 96x120: "
        "filling the model's input (48x64) enlarges it 9.6 times "
        "(more than 4); the breast was not found"
    )


def test_a_label_1_data_set_with_every_pair_unannotated(data):
    edit_table(data, "manifest.csv", lambda table: table.__setitem__("annotated", "false"))
    [problem] = run(data).problems
    assert (problem.kind, problem.column) == (check.NO_ROWS, "annotated")
    assert problem.reason == (
        "none of its 6 rows has annotated true: every pair is left out, "
        "and nothing would be trained or tested"
    )


def test_sm_and_ffdm_swapped_are_named_from_the_tags_with_and_without_lesions(data):
    def swap(manifest):
        for index in (0, 1):  # p0000 has lesions, p0001 has none
            manifest.loc[index, ["sm_path", "ffdm_path"]] = manifest.loc[
                index, ["ffdm_path", "sm_path"]
            ].values

    edit_table(data, "manifest.csv", swap)
    problems = [p for p in run(data).problems if p.kind == preflight.SWAPPED]
    assert [(p.row, p.pair_id) for p in problems] == [(2, "p0000"), (3, "p0001")]
    assert problems[1].reason == (
        "the DICOM tags say sm_path holds an FFDM (ImageType ORIGINAL\\PRIMARY) and ffdm_path an "
        "SM (ImageType DERIVED\\PRIMARY\\TOMOSYNTHESIS\\GENERATED_2D): SM and FFDM swapped in "
        "this row"
    )


def test_an_image_of_the_other_modality(data):
    rewrite_dicom(image(data, "p0002", "sm"), ImageType=FFDM_TYPE)
    [problem] = run(data).problems
    assert (problem.kind, problem.row, problem.column) == (preflight.WRONG_KIND, 4, "sm_path")
    assert problem.reason == (
        "the DICOM tags say this is an FFDM (ImageType ORIGINAL\\PRIMARY), not an SM"
    )


def test_the_image_kind_rule():
    def kind(**tags):
        dataset = pydicom.Dataset()
        for keyword, value in tags.items():
            setattr(dataset, keyword, value)
        return image_kind(dataset)[0]

    assert kind(ImageType=SM_TYPE) == "sm"
    assert kind(ImageType=["DERIVED", "PRIMARY"], SeriesDescription="R MLO C-View") == "sm"
    assert kind(ImageType=["DERIVED", "PRIMARY"], SeriesDescription="V-Preview") == "sm"
    assert kind(ImageType=["DERIVED", "PRIMARY", "TOMOSYNTHESIS"]) == "tomosynthesis"
    assert kind(ImageType=FFDM_TYPE, SeriesDescription="L CC") == "ffdm"
    assert kind(ImageType=["DERIVED", "SECONDARY"]) is None and kind() is None


# -- 3. image content -------------------------------------------------------------------------
def test_a_constant_image_with_a_voi_window_is_blank_whatever_the_resize(data):
    path = image(data, "p0002", "sm")
    replace_pixels(path, np.full((120, 96), 1234, dtype=np.uint16))
    rewrite_dicom(path, WindowCenter=1000.0, WindowWidth=3001.0)
    for size in ((64, 48), (96, 64), (128, 104)):
        with pytest.raises(ImageContentError, match="every pixel has the same value \\(1234\\)"):
            load_image(path, size)
    [problem] = run(data).problems
    assert (problem.kind, problem.row, problem.column) == (check.CONSTANT, 4, "sm_path")


def test_an_almost_constant_image_is_blank_within_the_tolerance(data):
    path = image(data, "p0002", "sm")
    noise = np.random.default_rng(0).integers(0, 3, (120, 96))
    replace_pixels(path, (1234 + noise).astype(np.uint16))
    with pytest.raises(
        ImageContentError,
        match=r"span only 2 \(from 1234 to 1236\), within "
        r"0.1% of the 65535 their format holds",
    ):
        load_image(path, SIZE)


def test_the_reader_refuses_non_finite_pixels_naming_the_file(data):
    path = image(data, "p0001", "ffdm")
    rewrite_dicom(path, RescaleSlope="NaN", RescaleIntercept="0")
    with pytest.raises(ImageContentError) as caught:
        load_image(path, SIZE)
    assert str(caught.value) == (
        f"cannot read {path}: 20480 of 20480 pixels are not finite (NaN "
        "or infinite) after the modality LUT (RescaleSlope/Intercept)"
    )


def test_prepare_refuses_what_check_data_refuses(data, capsys):
    rewrite_dicom(image(data, "p0001", "ffdm"), RescaleSlope="NaN", RescaleIntercept="0")
    replace_pixels(image(data, "p0002", "sm"), np.full((120, 96), 777, dtype=np.uint16))
    rewrite_dicom(image(data, "p0003", "sm"), Modality="CT")
    write_mammogram(image(data, "p0004", "ffdm"), breast_image(8, 8))
    argv = [
        "--manifest",
        str(data),
        "--out",
        str(data / "cache"),
        "--image-size",
        "64",
        "48",
        "--workers",
        "0",
        "--no-progress",
    ]
    assert prepare_main(argv) == 1
    err = capsys.readouterr().err
    for row, column, reason in (
        (
            3,
            "ffdm_path",
            "20480 of 20480 pixels are not finite (NaN or infinite) after the modality LUT",
        ),
        (4, "sm_path", "every pixel has the same value (777): a blank image"),
        (5, "sm_path", "modality CT, not MG (mammography)"),
        (6, "ffdm_path", "8x8 pixels (height x width), far smaller than the model's input"),
    ):
        assert f"manifest.csv row {row}, column {column}: {reason}" in err, err
    assert len(list((data / "cache").rglob("*.npz"))) == 12 - 4


@pytest.mark.parametrize(
    "size, configs, message",
    [
        (
            ("127", "129"),
            [],
            "--image-size: [127, 129] must be divisible by 8 on each side for any "
            "EfficientDet (e.g. [128, 128]); give the stage config",
        ),
        (
            ("320", "256"),
            [CONFIGS / "stage1_sm.yaml"],
            "--image-size: [320, 256] must be divisible by 128 on each side for tf_efficientdet_d0",
        ),
        (("0", "0"), [], "--image-size: must be at least 8 pixels a side, got [0, 0]"),
    ],
)
def test_prepare_checks_the_image_size_against_the_models_stride(
    data, size, configs, message, capsys
):
    argv = ["--manifest", str(data), "--out", str(data / "cache"), "--image-size", *size]
    for config in configs:
        argv += ["--config", str(config)]
    with pytest.raises(SystemExit) as exit_info:
        prepare_main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (data / "cache").exists()


def _module(folder, **overrides):
    arguments = dict(
        manifest=str(folder),
        image_size=SIZE,
        modalities=["sm"],
        batch_size=2,
        num_workers=0,
        augment=False,
        split_fractions=(0.5, 0.0, 0.5),
    )
    arguments.update(overrides)
    return PairedMammoDataModule(**arguments)


def test_setup_names_a_nan_image_of_the_test_split_before_any_step(data):
    module = _module(data)
    test_pair = module.tables("test")["pair_id"].iloc[0]
    path = image(data, test_pair, "sm")
    make_float_pixels(path, (10, 10, 40, 40))
    with pytest.raises(DataCheckError) as caught:
        _module(data).setup("test")
    [problem] = caught.value.problems
    assert (problem.kind, problem.path, problem.column) == (check.NON_FINITE, str(path), "sm_path")
    with pytest.raises(DataCheckError, match="not finite"):
        _module(data).setup("fit")  # and fit, which checks the split assess reads next


def test_setup_finds_what_training_would_lose(data, caplog):
    edit_table(
        data,
        "lesions.csv",
        lambda t: t.loc.__setitem__((4, ["x1", "y1", "x2", "y2"]), ["2", "2", "8", "8"]),
    )
    with pytest.raises(DataCheckError) as caught:
        _module(data, split_fractions=(1.0, 0.0, 0.0)).setup("fit")
    assert [(p.kind, p.row) for p in caught.value.problems] == [(preflight.NO_TARGET, 5)]
    assert "box lost in preprocessing: 1" in caplog.text and "lesions.csv row 6" in caplog.text


def test_a_missing_lesion_table_is_named_as_such(data):
    (data / "lesions.csv").unlink()
    [problem] = run(data).problems
    assert (problem.kind, problem.file) == (preflight.NO_LESION_TABLE, str(data / "manifest.csv"))
    assert problem.reason.startswith(
        "no lesion table: none was given (lesions) and there is "
        "no lesions.csv beside the manifest, so the 2 pair(s) with "
        "label 1 have no box to learn from"
    )
    with pytest.raises(DataCheckError, match="no lesion table"):
        _module(data, split_fractions=(1.0, 0.0, 0.0)).setup("fit")


# -- 6. files as people have them ---------------------------------------------------------------
def test_a_semicolon_separated_table_with_decimal_commas_is_read(data):
    lesions = pd.read_csv(data / "lesions.csv", dtype=str)
    lesions["x1"] = lesions["x1"].str.replace(".", ",", regex=False)
    lesions.to_csv(data / "lesions.csv", sep=";", index=False)
    manifest = pd.read_csv(data / "manifest.csv", dtype=str)
    manifest.to_csv(data / "manifest.csv", sep=";", index=False)
    assert read_table(data / "lesions.csv")["x1"].dtype == float
    assert run(data).problems == []


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: b"\xef\xbb\xbf" + text.encode(),  # Excel's "CSV UTF-8"
        lambda text: text.replace(",", "\t").encode("utf-16"),  # Excel's "Unicode text"
    ],
)
def test_a_bom_and_utf16_are_read(data, encode):
    path = data / "manifest.csv"
    path.write_bytes(encode(path.read_text()))
    assert list(read_table(path).columns[:2]) == ["pair_id", "patient_id"]
    assert run(data).problems == []


def test_a_latin1_table_is_refused_naming_the_line(data):
    path = data / "manifest.csv"
    path.write_bytes(path.read_text().replace("patient0001", "patiént0001", 1).encode("latin-1"))
    [problem] = run(data).problems
    assert problem.file == str(path) and problem.reason == (
        "not UTF-8 text: byte 0xe9 at line 4, column 11 cannot be decoded (saved as Latin-1 or "
        "Windows-1252? save the table as UTF-8)"
    )


def test_predict_finds_dicoms_by_content_and_refuses_other_modalities(data, tmp_path, caplog):
    folder = tmp_path / "sm"
    folder.mkdir()
    shutil.copy(image(data, "p0000", "sm"), folder / "a.dcm")
    shutil.copy(image(data, "p0001", "sm"), folder / "b")  # no .dcm name
    (folder / "notes.txt").write_text("not an image")
    module = SMFolderDataModule(str(folder), image_size=SIZE, num_workers=0)
    module.setup("predict")
    assert [Path(path).name for path in module._dataset.files] == ["a.dcm", "b"]
    assert module.skipped == ["notes.txt"]
    shutil.copy(image(data, "p0002", "ffdm"), folder / "c.dcm")
    shutil.copy(image(data, "p0003", "sm"), folder / "d.dcm")
    rewrite_dicom(folder / "d.dcm", Modality="CT")
    with pytest.raises(ValueError) as caught:
        SMFolderDataModule(str(folder), image_size=SIZE, num_workers=0).setup("predict")
    message = str(caught.value)
    assert (
        f"  {folder / 'c.dcm'}: its tags say it is an FFDM (ImageType ORIGINAL\\PRIMARY), "
        "not an SM: this model reads synthesized 2D mammograms (SM)" in message
    )
    assert f"  {folder / 'd.dcm'}: its Modality is CT, not MG (mammography)" in message
    assert "--allow-modality-mismatch" in message
    allowed = SMFolderDataModule(
        str(folder), image_size=SIZE, num_workers=0, allow_modality_mismatch=True
    )
    allowed.setup("predict")
    assert len(allowed._dataset) == 4
    assert f"allow_modality_mismatch: predicting {folder / 'c.dcm'} although" in caplog.text


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"stages": [{"name": "stage1_sm", "config": "x.yaml"}]},
            "stages: expected a mapping of stage name -> {config, inputs, overrides, data}, "
            "got a list",
        ),
        (
            {"overrides": ["trainer.max_epochs=1"]},
            "overrides: expected a mapping of dotted config key -> value (e.g. "
            "trainer.max_epochs: 3), "
            "got a list",
        ),
        ({"report": ["stage1_sm"]}, "report: expected a mapping of Table 2 row name -> stage name"),
        ({"comparisons": "Fused vs Model_SM"}, "comparisons: expected a list of [row, row] pairs"),
        (
            {
                "stages": {
                    "stage1_sm": {
                        "config": str(CONFIGS / "demo" / "stage1_sm.yaml"),
                        "inputs": ["stage1_ffdm"],
                    }
                }
            },
            "stages.stage1_sm.inputs: expected a mapping of init argument -> earlier stage name",
        ),
    ],
)
def test_a_pipeline_config_of_the_wrong_shape_names_the_key_and_the_form(tmp_path, change, message):
    config = {
        "data": str(CONFIGS / "data" / "phantom.yaml"),
        "stages": {"stage1_sm": {"config": str(CONFIGS / "demo" / "stage1_sm.yaml")}},
        **change,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError) as caught:
        load_pipeline(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


# -- 5. config values, and 1. the model a checkpoint holds --------------------------------------
def _main(*argv: str) -> int:
    try:
        return cli.main(list(argv))
    finally:
        wandb.finish()


def _error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]


@pytest.mark.parametrize(
    "argument, message",
    [
        (
            "--trainer.max_steps=0",
            "trainer.max_steps: must not be 0 in a fit: a fit writes the stage artifact",
        ),
        ("--data.init_args.samples_per_epoch=0", "data.init_args.samples_per_epoch: must be >= 1"),
        ("--data.init_args.image_size=[0, 0]", "data.init_args.image_size: must be at least 8"),
        (
            "--data.init_args.image_size=[-128, 128]",
            "data.init_args.image_size: must be at least 8",
        ),
        ("--model.init_args.num_classes=0", "model.init_args.num_classes: must be >= 1, got 0"),
        (
            '--data.init_args.pathology_classes={"malignant": 1}',
            "data.init_args.pathology_classes: class indices {'malignant': 1} must be below the "
            "model's num_classes (1)",
        ),
        (
            "--data.init_args.modalities=[ct]",
            "data.init_args.modalities: ['ct'] is not one of sm, ffdm",
        ),
        ("--data.init_args.margin=0.9", "data.init_args.margin: must lie in [0, 0.5), got 0.9"),
        (
            "--data.init_args.split_fractions=[0.5, 0.5, 0.5]",
            "data.init_args.split_fractions: must be three non-negative numbers summing to 1",
        ),
        (
            "--model.init_args.optimizer.lr_schedule=linear",
            "model.init_args.optimizer.lr_schedule: must be one of cosine, constant; got 'linear'",
        ),
    ],
)
def test_a_value_is_refused_in_one_line_before_any_work(argument, message, tiny_phantom, capsys):
    code = _main(
        "fit",
        "--config",
        str(CONFIGS / "data" / "phantom.yaml"),
        "--config",
        str(CONFIGS / "demo" / "stage1_sm.yaml"),
        "--data.init_args.manifest",
        str(tiny_phantom),
        "--data.init_args.cache_dir",
        "null",
        argument,
        "--trainer.logger=false",
    )
    assert code == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines


def test_no_data_config_at_all(capsys):
    assert (
        _main("fit", "--config", str(CONFIGS / "demo" / "stage1_sm.yaml"), "--trainer.logger=false")
        == 2
    )
    assert _error_lines(capsys) == [
        "error: data: no data module: give a data config first "
        "(--config configs/data/....yaml) or --data FILE"
    ]


def _run(tiny_phantom, root, config: str, *extra: str, command: str = "fit") -> int:
    from tiny_runs import tiny_run_args

    return _main(
        command,
        "--config",
        str(CONFIGS / "data" / "phantom.yaml"),
        "--config",
        str(CONFIGS / config),
        *tiny_run_args(tiny_phantom, root),
        "--trainer.logger",
        "false",
        "--trainer.max_steps",
        "1",
        *extra,
    )


def test_validate_refuses_a_checkpoint_of_another_stage(
    tiny_artifacts, tiny_phantom, tmp_path, capsys
):
    checkpoint = tiny_artifacts["sm"] / "checkpoints" / "last.ckpt"
    code = _run(
        tiny_phantom,
        tmp_path / "run",
        "demo/stage3_fused.yaml",
        "--model.init_args.sm_teacher",
        str(tiny_artifacts["sm"] / "artifact"),
        "--model.init_args.partner",
        str(tiny_artifacts["stage2"] / "artifact"),
        "--ckpt_path",
        str(checkpoint),
        command="validate",
    )
    assert code == 2
    [line] = _error_lines(capsys)
    assert line.startswith(
        f"error: ckpt_path: {checkpoint} holds a stage-1 TeacherDetector on "
        "sm, but the config builds a stage-3 FusedDetector (fused) "
        "(module_class 'TeacherDetector' there, 'FusedDetector' in the "
        "config; stage 1 there, 3 in the config"
    )
    assert not (tmp_path / "run" / "predictions").exists()


def test_test_refuses_an_artifact_of_the_other_modality(
    tiny_artifacts, tiny_phantom, tmp_path, capsys
):
    artifact = tiny_artifacts["ffdm"] / "artifact"
    assert (
        _run(
            tiny_phantom,
            tmp_path / "run",
            "demo/stage1_sm.yaml",
            "--ckpt_path",
            str(artifact),
            command="test",
        )
        == 2
    )
    [line] = _error_lines(capsys)
    assert line.startswith(
        f"error: ckpt_path: {artifact} holds a stage-1 TeacherDetector on "
        "ffdm, but the config builds a stage-1 TeacherDetector on sm "
        "(modality 'ffdm' there, 'sm' in the config)"
    )


@pytest.mark.parametrize(
    "config, inputs, message",
    [
        (
            "demo/stage2_distill.yaml",
            {"ffdm_teacher": "sm", "init_from": "ffdm"},
            "model.init_args.ffdm_teacher: {sm} is a stage-1 TeacherDetector on sm; expected a "
            "stage-1 "
            "TeacherDetector on ffdm",
        ),
        (
            "demo/stage2_distill.yaml",
            {"ffdm_teacher": "stage2", "init_from": "ffdm"},
            "model.init_args.ffdm_teacher: {stage2} is a stage-2 DistillStudent; expected",
        ),
        (
            "demo/stage2_distill.yaml",
            {"ffdm_teacher": "ffdm", "init_from": "stage2"},
            "model.init_args.init_from: {stage2} is a stage-2 DistillStudent; expected a stage-1 "
            "TeacherDetector",
        ),
        (
            "demo/stage3_fused.yaml",
            {"sm_teacher": "ffdm", "partner": "stage2"},
            "model.init_args.sm_teacher: {ffdm} is a stage-1 TeacherDetector on ffdm; expected a "
            "stage-1 TeacherDetector on sm",
        ),
        (
            "demo/stage3_fused.yaml",
            {"sm_teacher": "sm", "partner": "sm"},
            "model.init_args.partner: {sm} is a stage-1 TeacherDetector on sm; expected a stage-2 "
            "DistillStudent or a stage-1 TeacherDetector on ffdm",
        ),
        (
            "demo/stage3_fused.yaml",
            {"sm_teacher": "sm", "partner": "stage2", "pretrained": "sm"},
            "model.init_args.pretrained: {sm} is a stage-1 TeacherDetector on sm; expected a "
            "stage-3 "
            "FusedDetector",
        ),
    ],
)
def test_a_wrong_artifact_kind_is_one_line(
    tiny_artifacts, tiny_phantom, tmp_path, config, inputs, message, capsys
):
    paths = {name: str(path / "artifact") for name, path in tiny_artifacts.items()}
    extra = [
        item for key, name in inputs.items() for item in (f"--model.init_args.{key}", paths[name])
    ]
    assert _run(tiny_phantom, tmp_path / "run", config, *extra) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: " + message.format(**paths)), lines


def test_a_corrupt_weight_file_and_files_that_hold_no_weights(
    tiny_artifacts, tiny_phantom, tmp_path, capsys
):
    copy = tmp_path / "artifact"
    shutil.copytree(tiny_artifacts["sm"] / "artifact", copy)
    weights = copy / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    assert (
        _run(
            tiny_phantom,
            tmp_path / "a",
            "demo/stage3_fused.yaml",
            "--model.init_args.sm_teacher",
            str(copy),
            "--model.init_args.partner",
            str(tiny_artifacts["stage2"] / "artifact"),
        )
        == 2
    )
    [line] = _error_lines(capsys)
    assert line.startswith(
        f"error: model.init_args.sm_teacher: {weights} is corrupt or was changed: its SHA-256 is"
    )
    table = tiny_phantom / "lesions.csv"
    for pretrained, reason in (
        (
            table,
            f"cannot read weight file {table}: a text file (a table or a config?), not weights",
        ),
        (
            tiny_phantom,
            f"weight file {tiny_phantom} is a folder, neither a weight file nor a stage artifact",
        ),
    ):
        assert (
            _run(
                tiny_phantom,
                tmp_path / "b",
                "demo/stage1_sm.yaml",
                "--model.init_args.pretrained",
                str(pretrained),
            )
            == 2
        )
        [line] = _error_lines(capsys)
        assert line.startswith(f"error: model.init_args.pretrained: {reason}"), line


def test_an_empty_validation_split_is_refused_before_the_first_step(tiny_phantom, tmp_path, capsys):
    assert (
        _run(
            tiny_phantom,
            tmp_path / "run",
            "demo/stage1_sm.yaml",
            "--data.init_args.split_fractions",
            "[0.7, 0.0, 0.3]",
        )
        == 2
    )
    [line] = _error_lines(capsys)
    assert line.startswith(f"error: data: the val split of {tiny_phantom} has no pairs")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_empty_test_split_is_refused_before_any_prediction(
    tiny_phantom, tiny_artifacts, tmp_path, capsys
):
    checkpoint = str(tiny_artifacts["sm"] / "checkpoints" / "last.ckpt")
    assert (
        _run(
            tiny_phantom,
            tmp_path / "run",
            "demo/stage1_sm.yaml",
            "--ckpt_path",
            checkpoint,
            "--data.init_args.split_fractions",
            "[0.8, 0.2, 0.0]",
            command="test",
        )
        == 2
    )
    [line] = _error_lines(capsys)
    assert line.startswith(f"error: data: the test split of {tiny_phantom} has no pairs"), line
    assert "test assesses the model on test" in line
    assert not (tmp_path / "run" / "predictions").exists()


def test_setup_problems_reach_the_user_as_the_list_not_a_traceback(tiny_phantom, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_phantom, data)
    manifest = load_tables(data)[0]
    path = manifest.loc[manifest["split"] == "train", "sm_path"].iloc[0]
    truncate(path, 0.5)
    assert _run(data, tmp_path / "run", "demo/stage1_sm.yaml") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\nerror: ") + err.startswith("error") == 1
    assert "column sm_path: truncated: the pixel data needs" in err and str(path) in err
