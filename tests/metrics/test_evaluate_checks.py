"""``evaluate``'s checks: every problem named by file, row and column, all at once."""

from __future__ import annotations

import pytest
from evaluate_files import refused, run_main, write

from metrics.evaluate import EvaluationInputError, read_evaluation_tables


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


# -- refusals of what would change the number ------------------------------------------------


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


def test_many_bad_rows_are_counted_beyond_the_listed_ones(csv_files, capsys):
    with csv_files["predictions"].open("a") as handle:
        handle.writelines(f"02,{i},10,{i + 20},30,2,0\n" for i in range(250))
    error = refused(csv_files, capsys)
    assert error.count("is not in [0, 1]") == 50
    assert (
        f"{csv_files['predictions']} column score: 200 more rows like the 50 above "
        "(score outside [0, 1])"
    ) in error
