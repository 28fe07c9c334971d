"""``evaluate``'s report against the FROC core, its options, and a model with no detection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from evaluate_files import run_main

from metrics.evaluate import evaluation_report, read_evaluation_tables
from metrics.froc import bootstrap_fauc, fauc, operating_point, threshold_at_fp


def test_report_values(csv_files, capsys):
    assert run_main(csv_files, "--n-boot", "300", "--seed", "2") == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    report = json.loads(out)
    # curve: 0.9 TP (0, 1/3); 0.8 FP (1/4, 1/3); 0.7 FP (1/2, 1/3); 0.6 TP (1/2, 2/3);
    # 0.3 TP (1/2, 1); held flat to 1 FP/image
    expected = (0.25 * 1 / 3 + 0.25 * 1 / 3 + 0.5 * 1.0) / 1.0
    assert report["fauc"] == pytest.approx(expected, abs=1e-15)
    matched = read_evaluation_tables(**csv_files).match()
    assert report["fauc"] == fauc(matched)
    interval = bootstrap_fauc(matched, 1.0, n_boot=300, seed=2)
    assert report["fauc_ci95"] == [interval.low, interval.high]
    positive = matched.positive_images()
    assert report["fauc_positive"] == fauc(positive)
    positive_interval = bootstrap_fauc(positive, 1.0, n_boot=300, seed=2)
    assert report["fauc_positive_ci95"] == [positive_interval.low, positive_interval.high]
    assert report["n_images"] == 4 and report["n_positive_images"] == 3
    assert report["n_lesions"] == 3 and report["n_detections"] == 6
    assert report["threshold_at_target_fp"] == 0.3 == threshold_at_fp(matched, 1.0)
    assert report["sensitivity_at_threshold"] == 1.0
    assert report["fp_rate_at_threshold"] == 0.5


def test_given_threshold_and_target(csv_files, capsys):
    assert run_main(csv_files, "--threshold", "0.65", "--target-fp", "0.25", "--n-boot", "0") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["threshold_at_target_fp"] == 0.8
    assert report["threshold"] == 0.65 and report["threshold_source"] == "given"
    assert report["sensitivity_at_threshold"] == pytest.approx(1 / 3)
    assert report["fauc_ci95"] is None and report["fauc_positive_ci95"] is None


def test_min_distance_and_inclusive_options(csv_files, capsys):
    # at a 50 px floor the 90 px detection on image 3 misses; at 90 it hits only with <=
    for options, found in ((("--min-distance", "50"), 2), (("--min-distance", "90"), 2)):
        assert run_main(csv_files, *options, "--n-boot", "0", "--threshold", "0") == 0
        assert json.loads(capsys.readouterr().out)["lesions_found_at_threshold"] == found
    assert (
        run_main(
            csv_files, "--min-distance", "90", "--inclusive", "--n-boot", "0", "--threshold", "0"
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["lesions_found_at_threshold"] == 3


def test_report_of_a_model_without_any_detection_is_json_clean(csv_files, tmp_path):
    tables = read_evaluation_tables(**csv_files)
    matched = tables.match().subset(np.array([False, False, True, False]))  # image "02" only
    report = evaluation_report(matched, n_boot=20)
    assert math.isnan(fauc(matched))
    assert report["fauc"] is None and report["threshold_at_target_fp"] is None
    assert operating_point(matched, math.inf).n_false_positives == 0
    json.dumps(report, allow_nan=False)
