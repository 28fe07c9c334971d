"""The labels: pathology carried back from the follow-up, bside and path_severity 6."""

from pathlib import Path

import pandas as pd
import pytest
from embed_copies import EmbedCopy, assert_on_markers

import cli
from data_tools.embed.adapter import build_tables
from data_tools.embed.options import EmbedOptions
from datamodules.manifest import read_table


def follow_up_copy(root: Path) -> EmbedCopy:
    """Screening exams and the diagnostic exams that follow them."""
    copy = EmbedCopy(root)
    # BI-RADS 0, cancer (R) on a diagnostic 30 days later: the screening ROIs are the cancer
    copy.pair("p1", "s1", "R", "CC", lesions=[(0.3, 0.4)])
    copy.pair("p1", "s1", "L", "CC")
    copy.finding("p1", "s1", "2016-01-10", "MG Screening Bilateral w/CAD", "R", "A")
    copy.finding("p1", "s1", "2016-01-10", "MG Screening Bilateral w/CAD", "L", "N")
    copy.finding("p1", "d1", "2016-02-09", "MG Diagnostic Right", "R", "S", "0")
    # the same, 400 days later: past the 180-day window
    copy.pair("p2", "s2", "R", "CC", lesions=[(0.3, 0.4)])
    copy.finding("p2", "s2", "2016-01-10", "MG Screening Bilateral", "R", "A")
    copy.finding("p2", "d2", "2017-02-13", "MG Diagnostic Right", "R", "S", "0")
    # BI-RADS 1, cancer (L) on a diagnostic 200 days later: an interval cancer (365 days)
    copy.pair("p3", "s3", "L", "MLO")
    copy.finding("p3", "s3", "2018-05-01", "MG Screening Bilateral", "", "N")
    copy.finding("p3", "d3", "2018-11-17", "MG Diagnostic Left", "L", "M", "1")
    return copy


def test_pathology_is_carried_back_from_the_follow_up_within_the_window(tmp_path, capsys):
    copy = follow_up_copy(tmp_path)
    manifest, lesions, summary = copy.build()

    assert list(manifest.index) == ["s1_L_CC", "s1_R_CC", "s2_R_CC", "s3_L_MLO"]
    assert manifest["label"].tolist() == [0, 1, 0, 1]
    assert manifest["label_source"].fillna("").tolist() == [
        "", "follow_up_diagnostic", "", "follow_up_diagnostic"
    ]  # fmt: skip
    assert manifest["follow_up_exam_id"].fillna("").tolist() == ["", "d1", "", "d3"]
    assert manifest["follow_up_days"].fillna(-1).tolist() == [-1, 30, -1, 200]
    assert manifest["annotated_basis"].tolist() == [
        "no_malignant_finding", "malignant_with_roi", "no_malignant_finding",
        "malignant_without_roi",
    ]  # fmt: skip
    assert manifest["pathology"].tolist() == ["unknown", "malignant", "unknown", "malignant"]
    assert lesions.groupby("pair_id")["pathology"].agg(set).to_dict() == {
        "s1_R_CC": {"malignant"},
        "s2_R_CC": {"unknown"},
    }
    assert_on_markers(copy, manifest, lesions, "s1", "R", "CC")
    assert_on_markers(copy, manifest, lesions, "s2", "R", "CC")
    assert summary["labels"]["positives_by_source"] == {
        "own_exam": 0,
        "follow_up_diagnostic": 2,
        "follow_up_ultrasound": 0,
    }
    assert summary["labels"]["screening_pairs_with_follow_up"] == 2
    assert summary["positives"] == 2
    assert summary["conventions"]["label_window_days"] == {
        "after_birads_0": 180,
        "after_birads_1_2": 365,
    }

    # --label-window 0 is the old rule: the screening cancer is trained as background
    manifest, _, summary = copy.build(label_window=0)
    assert manifest["label"].tolist() == [0, 0, 0, 0]
    assert summary["labels"]["screening_pairs_with_follow_up"] == 0
    assert summary["conventions"]["label_window_days"] == 0
    # a longer window reaches the 400-day diagnostic, through the command line
    metadata, clinical = copy.write()
    argv = ["adapt", "embed", "--metadata", str(metadata), "--clinical", str(clinical)]
    argv += ["--images-root", str(tmp_path / "images"), "--out", str(tmp_path / "out")]
    assert cli.main([*argv, "--label-window", "500", "365"]) == 0
    capsys.readouterr()
    manifest = read_table(tmp_path / "out" / "manifest.csv").set_index("pair_id")
    assert manifest["label"].tolist() == [0, 1, 1, 1]
    assert manifest.loc["s2_R_CC", "follow_up_days"] == 400


def test_the_follow_up_columns_are_required_while_the_rule_is_on(tmp_path):
    copy = follow_up_copy(tmp_path)
    metadata, clinical = copy.write()
    pd.read_csv(clinical).drop(columns=["desc"]).to_csv(clinical, index=False)
    with pytest.raises(ValueError, match="column desc: missing required column .*--label-window"):
        build_tables(metadata, clinical, EmbedOptions(images_root=tmp_path / "images"))
    options = EmbedOptions(images_root=tmp_path / "images", label_window=0)
    manifest, _, _ = build_tables(metadata, clinical, options)
    assert manifest["label"].tolist() == [0, 0, 0, 0]


def test_a_pathology_side_b_or_empty_follows_bside(tmp_path):
    copy = EmbedCopy(tmp_path)
    # a screening BI-RADS 0; its bilateral diagnostic has a side-B finding biopsied on the L
    copy.pair("p1", "s1", "R", "CC", lesions=[(0.3, 0.4)])
    copy.pair("p1", "s1", "L", "CC", lesions=[(0.3, 0.6)])
    copy.finding("p1", "s1", "2016-01-10", "MG Screening Bilateral", "B", "A")
    copy.finding("p1", "d1", "2016-01-30", "MG Diagnostic Mammo Bilateral", "B", "S", "0", "L")
    # a diagnostic exam's own finding without a side, biopsied on the R
    copy.pair("p2", "d2", "R", "MLO", lesions=[(0.35, 0.5)])
    copy.pair("p2", "d2", "L", "MLO")
    copy.finding("p2", "d2", "2017-03-03", "MG Diagnostic Mammo Bilateral", "", "S", "1", "R")
    manifest, lesions, summary = copy.build()

    assert list(manifest.index) == ["s1_L_CC", "s1_R_CC", "d2_L_MLO", "d2_R_MLO"]
    assert manifest["label"].tolist() == [1, 0, 0, 1]
    assert manifest["label_source"].fillna("").tolist() == [
        "follow_up_diagnostic", "", "", "own_exam"
    ]  # fmt: skip
    # the R of s1 had its diagnostic (bilateral) but no pathology on that side
    assert manifest["follow_up_exam_id"].fillna("").tolist() == ["d1", "d1", "", ""]
    assert manifest["pathology"].tolist() == ["malignant", "unknown", "unknown", "malignant"]
    assert manifest["n_findings"].tolist() == [1, 1, 1, 1]  # the findings join both sides
    assert lesions.groupby("pair_id")["pathology"].agg(set).to_dict() == {
        "s1_L_CC": {"malignant"},
        "s1_R_CC": {"unknown"},
        "d2_R_MLO": {"malignant"},
    }
    for exam, laterality, view in (("s1", "L", "CC"), ("s1", "R", "CC"), ("d2", "R", "MLO")):
        assert_on_markers(copy, manifest, lesions, exam, laterality, view)
    assert summary["columns_read"]["bside"] is True
    assert summary["labels"]["positives_by_source"] == {
        "own_exam": 1,
        "follow_up_diagnostic": 1,
        "follow_up_ultrasound": 0,
    }
    assert summary["annotated"]["by_basis"] == {"malignant_with_roi": 2, "no_malignant_finding": 2}


def test_path_severity_6_excludes_the_exam_and_is_counted(tmp_path):
    copy = EmbedCopy(tmp_path)
    # a diagnostic exam with a non-breast cancer on the L: both breasts go
    copy.pair("p1", "d1", "L", "CC", lesions=[(0.3, 0.4)])
    copy.pair("p1", "d1", "R", "CC")
    copy.finding("p1", "d1", "2016-01-10", "MG Diagnostic Mammo Bilateral", "L", "S", "6")
    copy.finding("p1", "d1", "2016-01-10", "MG Diagnostic Mammo Bilateral", "R", "S", "4")
    # a screening exam whose follow-up found one on the R: that breast goes
    copy.pair("p2", "s2", "R", "CC", lesions=[(0.3, 0.4)])
    copy.pair("p2", "s2", "L", "CC", lesions=[(0.3, 0.6)])
    copy.finding("p2", "s2", "2016-05-05", "MG Screening Bilateral", "B", "A")
    copy.finding("p2", "d2", "2016-05-20", "MG Diagnostic Right", "R", "S", "6")
    # BI-RADS 5 without any pathology: kept, label 0, counted
    copy.pair("p3", "d3", "L", "MLO", lesions=[(0.3, 0.5)])
    copy.finding("p3", "d3", "2016-07-07", "MG Diagnostic Left", "L", "M")
    manifest, lesions, summary = copy.build()

    assert list(manifest.index) == ["s2_L_CC", "d3_L_MLO"]
    assert manifest["label"].tolist() == [0, 0]
    assert manifest["pathology"].tolist() == ["unknown", "unknown"]
    assert_on_markers(copy, manifest, lesions, "s2", "L", "CC")
    assert_on_markers(copy, manifest, lesions, "d3", "L", "MLO")
    assert set(lesions["pair_id"]) == {"s2_L_CC", "d3_L_MLO"}
    assert summary["excluded_pairs"] == {
        "path_severity_6": 2,
        "follow_up_path_severity_6": 1,
        "dicom_file_not_found": 0,
        "dicom_unreadable": 0,
    }
    assert summary["excluded_exams"] == {"path_severity_6": 1, "path_severity_6_in_clinical": 2}
    assert summary["labels"]["birads_5_or_6_without_pathology"] == {"pairs": 1, "exams": 1}
    assert summary["pairs"] == 2 and summary["positives"] == 0
