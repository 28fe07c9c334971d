"""``check-data`` per image and pair: files, DICOM tags, pixels and cache entries, one broken."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
from check_data_cases import SIZE, image, only, run
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
from data_tools.prepare import prepare_cache
from datamodules import preflight
from datamodules.cache import ImageCache
from datamodules.manifest import load_tables

# the ``data`` folder's pairs, rows and patients: see ``pristine`` in conftest.py


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
