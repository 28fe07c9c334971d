"""The image paths: every path form resolved, and missing or unreadable files counted."""

import json

import pytest
from embed_copies import (
    E1,
    E2,
    E3,
    NAS2,
    P2,
    P3,
    EmbedCopy,
    assert_on_markers,
    boxes_of,
    write_embed_copy,
)

import cli
from data_tools.embed.adapter import build_tables
from data_tools.embed.options import EmbedOptions
from data_tools.embed.paths import EmbedPathError
from datamodules.manifest import read_table


def test_every_path_form_resolves_and_a_given_prefix_still_works(tmp_path, capsys):
    copy = EmbedCopy(tmp_path)
    forms = [NAS2, "./images/", "images/", "/mnt/NAS3/mammo/anon_dicom/", "/data/embed/dicom/"]
    for index, form in enumerate(forms):
        copy.pair(f"p{index}", f"e{index}", lesions=[(0.3, 0.4)], form=form)
        copy.finding(f"p{index}", f"e{index}", "2020-02-02", "MG Diagnostic Right", "R", "S", "0")
    metadata, clinical = copy.write()
    out = tmp_path / "out"
    argv = ["adapt", "embed", "--metadata", str(metadata), "--clinical", str(clinical)]
    argv += ["--images-root", str(tmp_path / "images"), "--out", str(out)]
    assert cli.main([*argv, "--strip-prefix", "/data/embed/dicom/"]) == 0
    capsys.readouterr()
    manifest = read_table(out / "manifest.csv").set_index("pair_id")
    lesions = read_table(out / "lesions.csv")
    summary = json.loads((out / "adapter_summary.json").read_text())

    assert list(manifest.index) == [f"e{index}_R_CC" for index in range(5)]
    assert manifest["label"].tolist() == [1] * 5 and manifest["annotated"].all()
    for index in range(5):
        expected = tmp_path / "images" / "cohort_1" / f"p{index}" / f"e{index}" / "2d_RCC.dcm"
        assert manifest.loc[f"e{index}_R_CC", "ffdm_path"] == str(expected.resolve())
        assert_on_markers(copy, manifest, lesions, f"e{index}", "R", "CC")
    assert summary["paths"] == {
        "prefix_removed": {
            "./images/": 2,
            "/data/embed/dicom/": 2,
            "/mnt/NAS*/mammo/anon_dicom/": 4,
            "images/": 2,
        },
        "files_found": 10,
        "files_not_found": 0,
    }
    assert summary["excluded_pairs"]["dicom_file_not_found"] == 0
    assert (summary["pairs"], summary["positives"]) == (5, 5)

    # without the flag that start is not known: those two files are missing, and counted
    assert cli.main(argv) == 0
    summary = json.loads((out / "adapter_summary.json").read_text())
    assert summary["paths"]["prefix_removed"]["none"] == 2
    assert summary["paths"]["files_not_found"] == 2
    assert summary["excluded_pairs"]["dicom_file_not_found"] == 1
    assert summary["pairs"] == 4


def test_no_file_found_at_all_stops_with_the_path_and_folder(tmp_path, capsys):
    copy = EmbedCopy(tmp_path)
    copy.pair("p1", "e1", form="./images/")
    copy.finding("p1", "e1", "2020-02-02", "MG Screening Bilateral")
    metadata, clinical = copy.write()
    wrong_root = tmp_path / "images" / "cohort_1"  # one folder too deep
    with pytest.raises(EmbedPathError) as caught:
        build_tables(metadata, clinical, EmbedOptions(images_root=wrong_root))
    message = str(caught.value)
    assert f"{metadata} row 2, column anon_dicom_path" in message
    assert "none of the 2 image files listed was found" in message
    assert "'./images/cohort_1/p1/e1/2d_RCC.dcm'" in message
    assert f"as {wrong_root / 'cohort_1/p1/e1/2d_RCC.dcm'}" in message
    assert f"in the folder {wrong_root}" in message

    out = tmp_path / "out"
    argv = ["adapt", "embed", "--metadata", str(metadata), "--clinical", str(clinical)]
    assert cli.main([*argv, "--images-root", str(wrong_root), "--out", str(out)]) == 1
    assert "none of the 2 image files listed was found" in capsys.readouterr().err
    assert not (out / "manifest.csv").exists()


def test_missing_files_exclude_their_pair_and_are_counted(tmp_path):
    metadata, clinical = write_embed_copy(tmp_path)
    (tmp_path / "images" / "cohort_1" / P3 / E3 / "sm_lcc.dcm").unlink()
    # without the file of the chosen candidate, the other 2D image of that key is taken
    (tmp_path / "images" / "cohort_1" / P2 / E2 / "b_ffdm_rcc.dcm").unlink()
    options = EmbedOptions(images_root=tmp_path / "images")
    manifest, lesions, summary = build_tables(metadata, clinical, options)
    assert f"{E3}_L_CC" not in set(manifest["pair_id"])
    assert summary["excluded_pairs"]["dicom_file_not_found"] == 1
    row = manifest[manifest["pair_id"] == f"{E2}_R_CC"].iloc[0]
    assert row["ffdm_path"].endswith("a_ffdm_rcc.dcm") and row["ffdm_rois"] == 0
    assert boxes_of(lesions, f"{E2}_R_CC", "ffdm") == []
    assert boxes_of(lesions, f"{E2}_R_CC", "sm") == [[21, 20, 28, 28]]


def test_an_unreadable_image_drops_its_pair_and_is_counted(tmp_path):
    metadata, clinical = write_embed_copy(tmp_path)
    (tmp_path / "images" / "cohort_1" / P2 / E2 / "sm_rcc.dcm").unlink()
    options = EmbedOptions(images_root=tmp_path / "images", check_files=False)
    manifest, lesions, summary = build_tables(metadata, clinical, options)
    assert summary["excluded_pairs"] == {
        "path_severity_6": 0,
        "follow_up_path_severity_6": 0,
        "dicom_unreadable": 1,
    }
    assert f"{E2}_R_CC" not in set(manifest["pair_id"]) and len(manifest) == 5
    assert set(lesions["pair_id"]) == {f"{E1}_L_CC", f"{E1}_R_CC"}
    assert summary["rois"]["mirrored_images"] == 2
