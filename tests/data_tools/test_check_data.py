"""``cli.py check-data``: one test per problem kind, each on real DICOM files with one thing
broken, asserting the reported row (or pair), column and reason; a clean phantom passes; the
command's exit status, JSON report, config reading and worker processes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from dicom_factory import (
    breast_image,
    corrupt_compressed,
    make_colour,
    make_float_pixels,
    make_multiframe,
    replace_pixels,
    rewrite_dicom,
    truncate,
    write_mammogram,
    write_paired_folder,
)
from pydicom.uid import generate_uid

import cli
from data_tools import check
from data_tools.check import check_data
from data_tools.prepare import prepare_cache
from datamodules import preflight
from datamodules.cache import ImageCache
from datamodules.manifest import load_tables
from datamodules.preflight import CheckSettings

SIZE = (64, 48)
# write_paired_folder(6 pairs, 2 per patient): pair p000i is manifest row i + 2; p0000 (L CC)
# has a malignant and a benign lesion in each modality, p0003 (R MLO) a malignant one; the
# others are negative. p0000/p0001 are patient0000, p0002/p0003 patient0001, p0004/p0005
# patient0002 (their exam ids follow the same numbering).


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pristine")
    write_paired_folder(folder, pairs=6, pairs_per_patient=2)
    return folder


def image(folder, pair: str, modality: str):
    return folder / "images" / f"{pair}_{modality}.dcm"


def run(folder, **settings) -> list:
    settings.setdefault("image_size", SIZE)
    return check_data(
        CheckSettings(manifest=str(folder), **settings), workers=0, progress=False
    ).problems


def only(problems, kind):
    """The one problem of ``kind``, and no problem of another kind."""
    assert [p.kind for p in problems] == [kind], "\n".join(map(str, problems))
    return problems[0]


def edit_table(folder, name: str, edit) -> None:
    path = folder / name
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(table)
    table.to_csv(path, index=False)


def test_a_clean_folder_has_no_problem(data):
    assert run(data) == []


# -- files ------------------------------------------------------------------------------------
def test_missing_file(data):
    path = image(data, "p0001", "sm")
    path.unlink()
    problem = only(run(data), preflight.MISSING_FILE)
    assert (problem.file, problem.row, problem.column) == (str(data / "manifest.csv"), 3, "sm_path")
    assert problem.pair_id == "p0001" and problem.path == str(path)
    assert problem.reason == "file not found"
    assert str(problem) == (
        f"{data / 'manifest.csv'} row 3, column sm_path: file not found (pair p0001, file {path})"
    )


def test_unreadable_file(data):
    path = image(data, "p0002", "ffdm")
    path.unlink()
    path.mkdir()
    problem = only(run(data), preflight.UNREADABLE_FILE)
    assert (problem.row, problem.column, problem.pair_id) == (4, "ffdm_path", "p0002")
    assert problem.reason == "is a folder, not a file"


def test_not_a_dicom_file(data):
    image(data, "p0003", "sm").write_bytes(b"this is a JPEG, honestly" * 40)
    problem = only(run(data), preflight.NOT_DICOM)
    assert (problem.row, problem.column, problem.pair_id) == (5, "sm_path", "p0003")
    assert problem.reason.startswith("not a DICOM file (")


def test_truncated_dicom(data):
    path = truncate(image(data, "p0004", "ffdm"), 0.5)
    problem = only(run(data), preflight.TRUNCATED_DICOM)
    assert (problem.row, problem.column, problem.pair_id, problem.path) == (
        6,
        "ffdm_path",
        "p0004",
        str(path),
    )
    rows, columns = 160, 128  # the FFDM's size: 12-bit values in 16-bit words
    assert problem.reason.startswith(f"truncated: the pixel data needs {rows * columns * 2} bytes")


def test_truncated_compressed_dicom(tmp_path):
    write_paired_folder(tmp_path, pairs=2, compression="rle")
    truncate(image(tmp_path, "p0001", "sm"), 0.6)
    problem = only(run(tmp_path), preflight.TRUNCATED_DICOM)
    assert (problem.row, problem.pair_id) == (3, "p0001")
    assert "a fragment of the compressed pixel data needs" in problem.reason


def test_undecodable_pixel_data(tmp_path):
    write_paired_folder(tmp_path, pairs=2, compression="rle")
    corrupt_compressed(image(tmp_path, "p0001", "ffdm"))
    problem = only(run(tmp_path), preflight.UNDECODABLE)
    assert (problem.row, problem.column, problem.pair_id) == (3, "ffdm_path", "p0001")
    assert "RLE" in problem.reason and "cannot read" not in problem.reason


def test_no_pixel_data(data):
    rewrite_dicom(image(data, "p0005", "sm"), PixelData=None)
    problem = only(run(data), preflight.NO_PIXEL_DATA)
    assert (problem.row, problem.pair_id) == (7, "p0005")
    assert problem.reason.startswith("no pixel data: the file ends after its header")


# -- tags -------------------------------------------------------------------------------------
def test_modality_not_mg(data):
    rewrite_dicom(image(data, "p0001", "ffdm"), Modality="CT")
    problem = only(run(data), preflight.NOT_MG)
    assert (problem.row, problem.column, problem.pair_id) == (3, "ffdm_path", "p0001")
    assert problem.reason == "modality CT, not MG (mammography)"


def test_multi_frame(data):
    make_multiframe(image(data, "p0002", "sm"), frames=3)
    problem = only(run(data), preflight.MULTI_FRAME)
    assert (problem.row, problem.column, problem.pair_id) == (4, "sm_path", "p0002")
    assert problem.reason.startswith("3 frames where one 2D image is expected")


def test_colour_image(data):
    make_colour(image(data, "p0001", "sm"))
    problem = only(run(data), preflight.COLOUR)
    assert (problem.row, problem.pair_id) == (3, "p0001")
    assert problem.reason.startswith("a colour image (RGB, 3 sample(s) per pixel)")


def test_laterality_disagrees(data):
    rewrite_dicom(image(data, "p0000", "sm"), ImageLaterality="R", Laterality="R")
    problem = only(run(data), preflight.LATERALITY)
    assert (problem.row, problem.column, problem.pair_id) == (2, "sm_path", "p0000")
    assert problem.reason == "the DICOM's laterality is R, the manifest says L"


def test_view_disagrees(data):
    rewrite_dicom(image(data, "p0002", "ffdm"), ViewPosition="CC")  # p0002 is an MLO
    problem = only(run(data), preflight.VIEW)
    assert (problem.row, problem.column, problem.pair_id) == (4, "ffdm_path", "p0002")
    assert problem.reason == "the DICOM's view (ViewPosition) is CC, the manifest says MLO"


def test_sm_and_ffdm_of_different_patients_are_named_without_the_ids(data, capsys):
    rewrite_dicom(image(data, "p0001", "ffdm"), PatientID="SECRET-4711")
    problem = only(run(data), check.PATIENT_DIFFERS)
    assert (problem.row, problem.column, problem.pair_id) == (3, None, "p0001")
    assert problem.reason.startswith(
        "the SM's and the FFDM's DICOM PatientID differ (compared by hash; not shown)"
    )
    report = data / "report.json"
    assert (
        cli.main(
            [
                "check-data",
                "--manifest",
                str(data),
                "--image-size",
                "64",
                "48",
                "--workers",
                "0",
                "--no-progress",
                "--json",
                str(report),
            ]
        )
        == 1
    )
    printed = capsys.readouterr()
    assert "row 3" in printed.out and "SM and FFDM of different patients" in printed.out
    for text in (printed.out, printed.err, report.read_text()):
        assert "SECRET-4711" not in text and "patient0000" not in text
        assert pydicom.dcmread(image(data, "p0001", "sm")).StudyInstanceUID not in text


def test_sm_and_ffdm_of_different_studies(data):
    rewrite_dicom(image(data, "p0004", "sm"), StudyInstanceUID=generate_uid())
    problem = only(run(data), check.STUDY_DIFFERS)
    assert (problem.row, problem.pair_id) == (6, "p0004")
    assert "DICOM StudyInstanceUID differ (compared by hash; not shown)" in problem.reason
    assert problem.path == f"{image(data, 'p0004', 'sm')} and {image(data, 'p0004', 'ffdm')}"


# -- pixels -----------------------------------------------------------------------------------
def test_constant_pixels(data):
    path = image(data, "p0002", "sm")
    replace_pixels(path, np.full((120, 96), 1234, dtype=np.uint16))
    problem = only(run(data), check.CONSTANT)
    assert (problem.row, problem.column, problem.pair_id) == (4, "sm_path", "p0002")
    assert problem.reason.startswith("every pixel has the same value")


def test_non_finite_pixels(data):
    make_float_pixels(image(data, "p0005", "ffdm"), nan_box=(10, 10, 40, 40))
    problem = only(run(data), check.NON_FINITE)
    assert (problem.row, problem.column, problem.pair_id) == (7, "ffdm_path", "p0005")
    assert "pixels are not finite (NaN or infinite)" in problem.reason


def test_image_far_smaller_than_the_input(data):
    path = image(data, "p0004", "sm")
    old = pydicom.dcmread(path)
    write_mammogram(
        path,
        breast_image(8, 8),
        laterality="L",
        view="CC",
        patient_id=old.PatientID,
        study_uid=old.StudyInstanceUID,
    )
    problem = only(run(data), preflight.TOO_SMALL)
    assert (problem.row, problem.column, problem.pair_id) == (6, "sm_path", "p0004")
    assert problem.reason == (
        "8x8 pixels (height x width), far smaller than the model's input "
        "64x48: it would be enlarged 6.0 times (more than 4)"
    )


# -- boxes and labels -------------------------------------------------------------------------
def test_box_outside_its_image(data):
    def widen(lesions):
        lesions.loc[0, "x2"] = "200"  # lesion row 2: p0000's malignant SM box, image 96 wide

    edit_table(data, "lesions.csv", widen)
    problem = only(run(data), preflight.BOX_OUTSIDE)
    assert (problem.file, problem.row, problem.column) == (str(data / "lesions.csv"), 2, "x2")
    assert problem.pair_id == "p0000" and problem.path == str(image(data, "p0000", "sm"))
    assert problem.reason.endswith("is not inside its sm image (width 96, height 120 pixels)")


def test_box_of_zero_size(data):
    def flatten(lesions):
        lesions.loc[1, "y2"] = lesions.loc[1, "y1"]

    edit_table(data, "lesions.csv", flatten)
    problem = only(run(data), "y2 <= y1")
    assert (problem.file, problem.row, problem.column) == (str(data / "lesions.csv"), 3, "y2")
    assert problem.pair_id == "p0000" and "is not greater than y1=" in problem.reason


def test_label_1_without_a_malignant_lesion(data):
    def positive(manifest):
        manifest.loc[1, "label"] = "1"  # p0001 has no lesion at all

    edit_table(data, "manifest.csv", positive)
    problem = only(run(data), check.LABEL_WITHOUT_LESION)
    assert (problem.row, problem.column, problem.pair_id) == (3, "label", "p0001")
    assert problem.reason == (
        "label 1 (malignant), but the lesion table has no malignant lesion for this pair"
    )


def test_label_1_with_benign_lesions_only(data):
    edit_table(data, "lesions.csv", lambda table: table.__setitem__("pathology", "benign"))
    problems = run(data)
    assert [(p.kind, p.row, p.pair_id) for p in problems] == [
        (check.LABEL_WITHOUT_LESION, 2, "p0000"),
        (check.LABEL_WITHOUT_LESION, 5, "p0003"),
    ]


def test_malignant_lesion_with_label_0(data):
    def negative(manifest):
        manifest.loc[3, "label"] = "0"  # p0003 (row 5) has a malignant lesion

    edit_table(data, "manifest.csv", negative)
    problem = only(run(data), check.LESION_WITH_LABEL_0)
    assert (problem.row, problem.column, problem.pair_id) == (5, "label", "p0003")
    lesions = pd.read_csv(data / "lesions.csv")
    first = int(np.flatnonzero(lesions["pair_id"] == "p0003")[0]) + 2
    assert problem.reason == (
        "label 0, but the lesion table has a malignant lesion for this "
        f"pair ({data / 'lesions.csv'} row {first})"
    )


# -- duplicates and splits --------------------------------------------------------------------
def test_duplicate_pair_id(data):
    def duplicate(manifest):
        manifest.loc[2, "pair_id"] = "p0001"

    edit_table(data, "manifest.csv", duplicate)
    problems = [p for p in run(data) if p.kind == "duplicate pair_id"]
    assert [(p.row, p.column, p.pair_id, p.reason) for p in problems] == [
        (4, "pair_id", "p0001", "same pair_id as row 3")
    ]


def test_duplicate_image(data):
    # the FFDM of p0005 replaced by a copy of p0004's (same SOPInstanceUID)
    shutil.copy(image(data, "p0004", "ffdm"), image(data, "p0005", "ffdm"))
    problems = [p for p in run(data) if p.kind == check.DUPLICATE_IMAGE]
    assert [(p.row, p.column, p.pair_id) for p in problems] == [(7, "ffdm_path", "p0005")]
    assert problems[0].reason == (
        "the same DICOM image (SOPInstanceUID, compared by hash) as row 6, column ffdm_path"
    )


def test_one_exam_view_paired_twice_and_an_exam_of_two_patients(data):
    def same_exam(manifest):
        manifest.loc[4, "exam_id"] = "exam0000"  # p0004 is L CC, as p0000 of exam0000

    edit_table(data, "manifest.csv", same_exam)
    problems = run(data)
    assert sorted((p.kind, p.row, p.column, p.pair_id) for p in problems) == [
        (check.DUPLICATE_VIEW, 6, "view", "p0004"),
        (check.EXAM_OF_TWO_PATIENTS, 6, "exam_id", "p0004"),
    ]
    view = next(p for p in problems if p.kind == check.DUPLICATE_VIEW)
    assert view.reason == (
        "the same exam, laterality and view as row 2: one breast view paired twice"
    )


def test_patient_in_two_given_splits(data):
    def split(manifest):
        manifest["split"] = ["train", "test", "train", "train", "test", "test"]

    edit_table(data, "manifest.csv", split)
    problem = only(run(data), "patient in two splits")
    assert (problem.row, problem.column, problem.pair_id) == (3, "split", "p0001")
    assert "in split 'test' here and in 'train' at row 2" in problem.reason


def test_one_dicom_patient_in_two_splits_under_two_patient_ids(data):
    def split(manifest):
        manifest["split"] = ["train", "train", "train", "train", "test", "test"]

    edit_table(data, "manifest.csv", split)
    for modality in ("sm", "ffdm"):  # p0004's images are of patient0000 after all
        rewrite_dicom(image(data, "p0004", modality), PatientID="patient0000")
    problem = only(run(data), check.PATIENT_IN_TWO_SPLITS)
    assert (problem.row, problem.column, problem.pair_id) == (6, "patient_id", "p0004")
    assert problem.reason == (
        "this pair's DICOM patient (PatientID, compared by hash) is also that of row 2, which "
        "is in split 'train' while this pair is in 'test': one patient in two splits under two "
        "patient_ids"
    )


def test_an_anonymised_placeholder_patient_id_is_not_a_patient(tmp_path):
    write_paired_folder(tmp_path, pairs=14, pairs_per_patient=2)
    for path in (tmp_path / "images").glob("*.dcm"):
        rewrite_dicom(path, PatientID="ANONYMOUS")
    assert run(tmp_path) == []


def test_header_only_manifest(data):
    (data / "manifest.csv").write_text((data / "manifest.csv").read_text().splitlines()[0])
    problems = run(data)
    assert [(p.kind, p.row) for p in problems if p.kind == check.NO_ROWS] == [(check.NO_ROWS, None)]
    assert any(p.kind == "lesion of unknown pair" for p in problems)


# -- the cache --------------------------------------------------------------------------------
def _cache(folder, size=SIZE, **options):
    manifest = load_tables(folder)[0]
    prepare_cache(manifest, folder / "cache", size, workers=0, progress=False, **options)
    return ImageCache(folder / "cache", size)


def test_truncated_cache_entry(data):
    cache = _cache(data)
    entry = cache.path("p0001", "ffdm")
    truncate(entry, 0.5)
    problem = only(run(data, cache_dir=str(data / "cache")), preflight.UNREADABLE_CACHE_ENTRY)
    assert (problem.row, problem.column, problem.pair_id, problem.path) == (
        3,
        "ffdm_path",
        "p0001",
        str(entry),
    )
    assert problem.reason.startswith("cannot read the cache entry (")


def test_cache_made_for_another_size_or_margin(data):
    _cache(data, size=(32, 32))
    problem = only(run(data, cache_dir=str(data / "cache")), preflight.CACHE_SETTINGS)
    assert problem.file == str(data / "cache" / "cache.json") and problem.row is None
    assert "was made for image size (32, 32) (H, W)" in problem.reason
    shutil.rmtree(data / "cache")
    _cache(data, margin=0.05)
    problem = only(run(data, cache_dir=str(data / "cache")), preflight.CACHE_SETTINGS)
    assert problem.column == "margin"
    assert problem.reason == (
        "the cache was made with margin 0.05, the config says 0.01; training would use the cache's"
    )


def test_cache_entry_of_another_image(data):
    cache = _cache(data)
    shutil.copy(cache.path("p0002", "sm"), cache.path("p0000", "sm"))  # both L, other view
    problem = only(run(data, cache_dir=str(data / "cache")), preflight.CACHE_ENTRY_DIFFERS)
    assert (problem.row, problem.column, problem.pair_id) == (2, "sm_path", "p0000")
    assert problem.path == str(cache.path("p0000", "sm"))
    assert "made from another image or with other settings" in problem.reason


def test_a_cached_image_whose_dicom_is_gone_is_still_reported(data):
    _cache(data)
    image(data, "p0003", "sm").unlink()
    problem = only(run(data, cache_dir=str(data / "cache")), preflight.MISSING_FILE)
    assert problem.row == 5
    assert problem.reason == (
        "file not found (its cache entry is there, so training still reads the image)"
    )


# -- the command ------------------------------------------------------------------------------
def test_the_phantom_passes_with_its_data_config_and_cache(tiny_phantom, tmp_path, capsys):
    manifest = load_tables(tiny_phantom)[0]
    prepare_cache(manifest, tmp_path / "cache", (128, 128), workers=0, progress=False)
    config = tmp_path / "data.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "class_path": "datamodules.PairedMammoDataModule",
                    "init_args": {
                        "manifest": str(tiny_phantom),
                        "cache_dir": str(tmp_path / "cache"),
                        "image_size": [128, 128],
                        "batch_size": 4,
                    },
                }
            }
        )
    )
    report = tmp_path / "report.json"
    code = cli.main(
        ["check-data", "--config", str(config), "--workers", "0", "--json", str(report)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.out
    assert captured.out.startswith("check-data: 30 pairs, 60 images checked in ")
    assert captured.out.strip().endswith(": no problems")
    assert "30/30" in captured.err  # the progress bar reached the end
    document = json.loads(report.read_text())
    assert document["problems"] == [] and document["pairs_checked"] == 30
    assert document["settings"]["cache_dir"] == str(tmp_path / "cache")
    assert document["settings"]["image_size"] == [128, 128]


def test_every_problem_at_once_in_processes_and_in_the_json(data, capsys):
    truncate(image(data, "p0001", "sm"), 0.5)
    rewrite_dicom(image(data, "p0002", "ffdm"), Modality="CT")

    def widen(lesions):
        lesions.loc[0, "x2"] = "200"

    edit_table(data, "lesions.csv", widen)
    expected = [
        (preflight.TRUNCATED_DICOM, 3, "p0001"),
        (preflight.NOT_MG, 4, "p0002"),
        (preflight.BOX_OUTSIDE, 2, "p0000"),
    ]
    settings = CheckSettings(manifest=str(data), image_size=SIZE)
    in_processes = check_data(settings, workers=2, progress=False).problems
    assert [(p.kind, p.row, p.pair_id) for p in in_processes] == expected
    assert in_processes == run(data)
    report = data / "report.json"
    assert (
        cli.main(
            [
                "check-data",
                "--manifest",
                str(data),
                "--image-size",
                "64",
                "48",
                "--workers",
                "0",
                "--no-progress",
                "--json",
                str(report),
            ]
        )
        == 1
    )
    out = capsys.readouterr().out
    assert out.startswith("3 problem(s) in the data of")
    assert f"  {data / 'manifest.csv'} row 3, column sm_path: truncated" in out
    assert out.strip().endswith(": 3 problem(s)")
    document = json.loads(report.read_text())
    assert [(p["kind"], p["row"], p["pair_id"]) for p in document["problems"]] == expected
    assert document["by_kind"] == {kind: 1 for kind, _, _ in expected}


def test_a_config_of_another_data_module_is_refused(tmp_path, capsys):
    config = tmp_path / "folder.yaml"
    config.write_text("class_path: datamodules.folder.SMFolderDataModule\ninit_args: {sm_dir: x}\n")
    assert cli.main(["check-data", "--config", str(config)]) == 2
    assert "only a PairedMammoDataModule reads a manifest" in capsys.readouterr().err


def test_a_missing_manifest_is_a_problem(tmp_path):
    problem = only(run(tmp_path / "nowhere.csv"), preflight.MISSING_FILE)
    assert problem.file == str(tmp_path / "nowhere.csv") and problem.reason == "no such file"
