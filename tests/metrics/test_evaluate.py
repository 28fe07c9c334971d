"""``cli.py evaluate``: CSV reading and validation (every problem named by file, row and column,
all at once), the JSON report against the functional core, and the FROC plot."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from repo_paths import REPO_ROOT

from metrics.evaluate import (
    EvaluationInputError,
    evaluation_report,
    main,
    read_evaluation_tables,
)
from metrics.froc import bootstrap_fauc, fauc, froc_curve, operating_point, threshold_at_fp
from metrics.plot import plot_froc


def write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


@pytest.fixture
def csv_files(tmp_path: Path) -> dict[str, Path]:
    """Four images: "001" and "1" are different images; "02" has no lesion and no detection."""
    images = write(tmp_path / "images.csv", "image_id,view\n001,CC\n1,MLO\n02,CC\n3,CC")
    truth = write(
        tmp_path / "truth.csv",
        "image_id,x1,y1,x2,y2,kind\n001,100,100,200,200,mass\n1,1000,1000,1600,1400,calc\n"
        "3,500,500,540,560,mass",
    )
    predictions = write(
        tmp_path / "predictions.csv",
        "image_id,x1,y1,x2,y2,score,label\n"
        "001,120,120,180,180,0.9,0\n"  # hits 001's lesion
        "001,130,110,170,150,0.4,0\n"  # a duplicate on it
        "1,100,100,150,150,0.8,0\n"  # far from 1's lesion: FP
        "1,1300,1450,1340,1490,0.6,0\n"  # 270 px below the large lesion's centre: hit (r=360)
        "3,2000,2000,2050,2050,0.7,0\n"  # FP
        "3,590,510,630,550,0.3,0",  # 90 px from 3's lesion: hit (100 px floor)
    )
    return {"predictions": predictions, "ground_truth": truth, "images": images}


def run_main(files: dict[str, Path], *options: str) -> tuple[int, str, str]:
    argv = [
        "--predictions",
        str(files["predictions"]),
        "--ground-truth",
        str(files["ground_truth"]),
        "--images",
        str(files["images"]),
        *options,
    ]
    return main(argv)


def test_tables_keep_ids_as_strings_and_rows_in_order(csv_files):
    tables = read_evaluation_tables(**csv_files)
    assert tables.image_ids.tolist() == ["001", "1", "02", "3"]
    assert tables.ground_truth["kind"].tolist() == ["mass", "calc", "mass"]
    assert tables.ground_truth["image_index"].tolist() == [0, 1, 3]
    assert tables.predictions["image_index"].tolist() == [0, 0, 1, 1, 3, 3]
    matched = tables.match()
    assert matched.detection_outcome.tolist() == [1, 2, 0, 1, 0, 1]
    assert matched.lesion_score.tolist() == [0.9, 0.6, 0.3]


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


def test_an_id_missing_from_the_images_file_is_named(csv_files, capsys):
    with csv_files["predictions"].open("a") as handle:
        handle.write("4,10,10,20,20,0.5,0\n")
    with csv_files["ground_truth"].open("a") as handle:
        handle.write("0001,10,10,20,20,mass\n")
    assert run_main(csv_files, "--n-boot", "0") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    error = captured.err
    not_listed = f"is not listed in {csv_files['images']}"
    assert f"{csv_files['predictions']} row 8, column image_id: '4' {not_listed}" in error
    assert f"{csv_files['ground_truth']} row 5, column image_id: '0001' {not_listed}" in error


def test_every_problem_of_every_file_is_reported_at_once(tmp_path):
    images = write(tmp_path / "I.csv", "image_id\na\nb\na")
    truth = write(tmp_path / "G.csv", "image_id,x1,y1,x2\na,1,1,5")
    predictions = write(
        tmp_path / "P.csv",
        "image_id,x1,y1,x2,y2,score\na,1,1,5,5,0.5\nb,abc,1,5,5,0.5\nb,9,1,5,5,0.5\n"
        ",1,1,5,5,\nb,1,1,5,1,nan",
    )
    with pytest.raises(EvaluationInputError) as caught:
        read_evaluation_tables(predictions, truth, images)
    problems = [str(problem) for problem in caught.value.problems]
    assert problems == [
        f"{images} row 4, column image_id: 'a' is listed more than once (first at row 2)",
        f"{predictions} row 5, column image_id: empty value",
        f"{predictions} row 3, column x1: 'abc' is not a finite number",
        f"{predictions} row 5, column score: '' is not a finite number",
        f"{predictions} row 6, column score: 'nan' is not a finite number",
        f"{predictions} row 4, column x2: x2=5 is not greater than x1=9",
        f"{predictions} row 6, column y2: y2=1 is not greater than y1=1",
        f"{truth} column y2: missing required column (has 'image_id', 'x1', 'y1', 'x2')",
    ]
    lines = str(caught.value).splitlines()
    assert lines[0].startswith(
        "8 problem(s) in the evaluation files (row numbers count the header as row 1"
    )
    assert lines[1:9] == [f"  {problem}" for problem in problems]


def test_ids_are_checked_alongside_other_problems(tmp_path):
    images = write(tmp_path / "I.csv", "image_id\na\nb")
    truth = write(tmp_path / "G.csv", "image_id,x1,y1,x2,y2\nc,1,1,5,5")
    predictions = write(tmp_path / "P.csv", "image_id,x1,y1,x2,y2,score\na,1,1,5,x,0.5")
    with pytest.raises(EvaluationInputError) as caught:
        read_evaluation_tables(predictions, truth, images)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{predictions} row 2, column y2: 'x' is not a finite number",
        f"{truth} row 2, column image_id: 'c' is not listed in {images}",
    ]


def test_missing_and_empty_files_are_named(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(EvaluationInputError) as caught:
        read_evaluation_tables(tmp_path / "nope.csv", empty, empty)
    assert [str(problem) for problem in caught.value.problems] == [
        f"{empty}: empty file (no header line)",
        f"{tmp_path / 'nope.csv'}: file not found",
        f"{empty}: empty file (no header line)",
    ]


def test_cli_prints_one_json_object_and_writes_the_plot(csv_files, tmp_path):
    plot = tmp_path / "froc.png"
    command = [sys.executable, "cli.py", "evaluate", "--n-boot", "50", "--plot", str(plot)]
    for name in ("predictions", "ground_truth", "images"):
        command += [f"--{name.replace('_', '-')}", str(csv_files[name])]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["n_images"] == 4 and report["plot"] == str(plot)
    pixels = matplotlib.image.imread(plot)
    assert pixels.shape[0] > 500 and pixels.shape[1] > 700
    assert pixels[..., :3].std() > 0.05  # something is drawn


def test_plot_of_several_models(tmp_path, csv_files):
    matched = read_evaluation_tables(**csv_files).match()
    weaker = read_evaluation_tables(**csv_files).match(min_distance=50)
    path = plot_froc(
        {"model a": matched, "model b": weaker, "bare curve": froc_curve(matched)},
        tmp_path / "sub" / "froc.png",
        n_boot=100,
    )
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="at least one curve"):
        plot_froc({}, tmp_path / "none.png")


def test_report_of_a_model_without_any_detection_is_json_clean(csv_files, tmp_path):
    tables = read_evaluation_tables(**csv_files)
    matched = tables.match().subset(np.array([False, False, True, False]))  # image "02" only
    report = evaluation_report(matched, n_boot=20)
    assert math.isnan(fauc(matched))
    assert report["fauc"] is None and report["threshold_at_target_fp"] is None
    assert operating_point(matched, math.inf).n_false_positives == 0
    json.dumps(report, allow_nan=False)


# -- refusals of what would change the number ------------------------------------------------
def refused(files: dict, capsys) -> str:
    """Run evaluate on ``files`` and return its error output (it must refuse them)."""
    assert run_main(files, "--n-boot", "0") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_a_repeated_prediction_row_is_refused(csv_files, capsys):
    with csv_files["predictions"].open("a") as handle:
        handle.write("1,100,100,150,150,0.8,0\n")
    error = refused(csv_files, capsys)
    assert (
        f"{csv_files['predictions']} row 8: repeats row 4: the same image_id, box, score "
        "and label, a detection counted twice"
    ) in error


def test_a_repeated_ground_truth_row_is_refused(csv_files, capsys):
    with csv_files["ground_truth"].open("a") as handle:
        handle.write(" 3 ,500,500,540,560,mass\n")  # the id as the manifest reader reads it
    error = refused(csv_files, capsys)
    assert (
        f"{csv_files['ground_truth']} row 5: repeats row 4: the same image_id and box, a "
        "lesion counted twice"
    ) in error


@pytest.mark.parametrize(
    "score, message",
    [
        ("1.5", "1.5 is not in [0, 1]"),
        ("-0.1", "-0.1 is not in [0, 1]"),
        ("inf", "'inf' is not a finite number"),
        ("nan", "'nan' is not a finite number"),
    ],
)
def test_a_score_outside_0_1_or_not_finite_is_refused(csv_files, capsys, score, message):
    with csv_files["predictions"].open("a") as handle:
        handle.write(f"02,10,10,20,20,{score},0\n")
    error = refused(csv_files, capsys)
    assert f"{csv_files['predictions']} row 8, column score: {message}" in error


def test_a_lesion_outside_its_image_is_refused_a_detection_just_outside_is_not(csv_files, capsys):
    with csv_files["ground_truth"].open("a") as handle:
        handle.write("02,-5,10,40,40,mass\n")
    with csv_files["predictions"].open("a") as handle:
        handle.write("02,-40,10,-2,40,0.5,0\n")  # wholly left of the image: detectors give it
        handle.write("02,-10,-10,30,30,0.4,0\n")  # partly outside
    error = refused(csv_files, capsys)
    assert (
        f"{csv_files['ground_truth']} row 5, column x1: -5 is negative (a lesion lies in "
        "its image's pixels, from 0)"
    ) in error
    assert "predictions" not in error.split("\n", 2)[2]


def test_with_image_sizes_boxes_past_the_image_are_refused(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = {
        "images": tmp_path / "I.parquet",
        "ground_truth": tmp_path / "G.parquet",
        "predictions": tmp_path / "P.parquet",
    }
    pq.write_table(
        pa.table({"image_id": ["a", "b"], "height": [400, 400], "width": [300, 300]}),
        files["images"],
    )
    pq.write_table(
        pa.table(
            {
                "image_id": ["a", "b"],
                "x1": [10.0, 250.0],
                "y1": [10.0, 10.0],
                "x2": [50.0, 320.0],
                "y2": [50.0, 60.0],
            }
        ),
        files["ground_truth"],
    )
    # rows 5 and 6: a box whose centre lies 190 px (more than half the width) left of the
    # image, and one as wide as a diverged regression gives, centred 50 px left of it
    pq.write_table(
        pa.table(
            {
                "image_id": ["a", "a", "b", "a", "a"],
                "x1": [20.0, 310.0, 280.0, -400.0, -600.0],
                "y1": [20.0, 10.0, 390.0, 10.0, 10.0],
                "x2": [40.0, 340.0, 330.0, 20.0, 500.0],
                "y2": [40.0, 50.0, 420.0, 50.0, 50.0],
                "score": [0.5, 0.4, 0.3, 0.2, 0.1],
            }
        ),
        files["predictions"],
    )
    error = refused(files, capsys)
    assert (
        f"{files['ground_truth']} row 3, column x2: 320 lies past the image's width, 300"
    ) in error
    assert (
        f"{files['predictions']} row 5: the box (-400, 10, 20, 50) has its centre (-190, 30) "
        "more than half the image outside it (300 x 400 px): x1, y1, x2, y2 are not in this "
        "image's pixels"
    ) in error
    # rows 3 (wholly right of the image, centre 25 px out), 4 (partly below) and 6: accepted
    assert [n for n in (3, 4, 6) if f"P.parquet row {n}:" in error] == []


@pytest.mark.parametrize(
    "flag, value, rule",
    [
        ("--max-fp", "0", "> 0"),
        ("--target-fp", "-1", ">= 0"),
        ("--n-boot", "-3", ">= 0"),
        ("--min-distance", "-5", ">= 0"),
    ],
)
def test_a_negative_setting_is_refused_naming_it(csv_files, capsys, flag, value, rule):
    with pytest.raises(SystemExit) as exit_:
        run_main(csv_files, flag, value)
    assert exit_.value.code == 2
    assert f"error: {flag} must be {rule}, got {value}" in capsys.readouterr().err


def test_an_empty_predictions_table_is_refused(csv_files, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_files["predictions"].write_text("image_id,x1,y1,x2,y2,score,label\n")
    error = refused(csv_files, capsys)
    assert f"{csv_files['predictions']}: no detections (a header and no rows)" in error
    empty = tmp_path / "P.parquet"
    pq.write_table(
        pa.table(
            {c: pa.array([], pa.float64()) for c in ("x1", "y1", "x2", "y2", "score")}
        ).add_column(0, "image_id", pa.array([], pa.string())),
        empty,
    )
    error = refused({**csv_files, "predictions": empty}, capsys)
    assert f"{empty}: no detections (the table has no rows)" in error


def test_ids_are_compared_as_the_manifest_reader_compares_them(csv_files, tmp_path, capsys):
    """Text, stripped: " 001 " is image "001" (not "1"); Parquet numbers are their text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = csv_files["predictions"].read_text().replace("\n001,", "\n 001 ,")
    csv_files["predictions"].write_text(text)
    assert run_main(csv_files, "--n-boot", "0") == 0
    stripped = json.loads(capsys.readouterr().out)
    assert stripped["n_detections"] == 6 and stripped["lesions_found_at_threshold"] == 3
    images = tmp_path / "I.parquet"
    pq.write_table(pa.table({"image_id": pa.array([1, 2, 3, 7], pa.int64())}), images)
    predictions = tmp_path / "P.parquet"
    pq.write_table(
        pa.table(
            {
                "image_id": pa.array([7, 8], pa.int64()),
                "x1": [1.0, 1.0],
                "y1": [1.0, 1.0],
                "x2": [5.0, 5.0],
                "y2": [5.0, 5.0],
                "score": [0.5, 0.5],
            }
        ),
        predictions,
    )
    truth = write(tmp_path / "G.csv", "image_id,x1,y1,x2,y2\n3,1,1,5,5")
    error = refused({"predictions": predictions, "ground_truth": truth, "images": images}, capsys)
    assert error.count("is not listed") == 1
    assert f"{predictions} row 3, column image_id: '8' is not listed in {images}" in error


def test_many_bad_rows_are_counted_beyond_the_listed_ones(csv_files, capsys):
    with csv_files["predictions"].open("a") as handle:
        handle.writelines(f"02,{i},10,{i + 20},30,2,0\n" for i in range(250))
    error = refused(csv_files, capsys)
    assert error.count("is not in [0, 1]") == 50
    assert (
        f"{csv_files['predictions']} column score: 200 more rows like the 50 above "
        "(score outside [0, 1])"
    ) in error


def test_pruned_evaluation_equals_the_whole_and_rereads_when_a_resample_needs_more(
    tmp_path, capsys, monkeypatch
):
    """evaluate keeps only what FAUC-1 can reach; with a margin too small for some resample it
    says so and reads every detection: the numbers are the same either way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import metrics.froc.pruning

    rng = np.random.default_rng(0)
    n_images, per_image = 300, 12
    image = np.repeat(np.arange(n_images), per_image)
    centre = rng.uniform(100, 900, (image.size, 2))
    lesion_image = np.arange(0, n_images, 10)
    lesion_centre = centre[lesion_image * per_image]  # each lesion's image: its first detection
    ids = np.array([f"img{i:03d}" for i in range(n_images)])
    files = {
        "images": tmp_path / "I.parquet",
        "ground_truth": tmp_path / "G.parquet",
        "predictions": tmp_path / "P.parquet",
    }
    pq.write_table(pa.table({"image_id": ids}), files["images"])
    pq.write_table(
        pa.table(
            {
                "image_id": ids[lesion_image],
                **dict(
                    zip(
                        ("x1", "y1", "x2", "y2"),
                        np.hstack([lesion_centre - 30, lesion_centre + 30]).T,
                    )
                ),
            }
        ),
        files["ground_truth"],
    )
    scores = np.round(rng.random(image.size) * 1000) / 1000  # some ties
    pq.write_table(
        pa.table(
            {
                "image_id": ids[image],
                **dict(zip(("x1", "y1", "x2", "y2"), np.hstack([centre - 20, centre + 20]).T)),
                "score": scores,
            }
        ),
        files["predictions"],
    )
    whole = read_evaluation_tables(**files)
    assert whole.pruned_below == -np.inf
    expected = evaluation_report(whole.match(), n_boot=300)
    assert run_main(files, "--n-boot", "300") == 0
    pruned = json.loads(capsys.readouterr().out)
    assert pruned["n_detections_read"] < pruned["n_detections"] == image.size
    assert {key: pruned[key] for key in expected} == expected
    monkeypatch.setattr(metrics.froc.pruning, "PRUNE_MARGIN_SD", -3.0)
    assert run_main(files, "--n-boot", "300") == 0
    captured = capsys.readouterr()
    assert "; reading every detection" in captured.err
    again = json.loads(captured.out)
    assert again["n_detections_read"] == image.size
    assert {key: again[key] for key in expected} == expected
