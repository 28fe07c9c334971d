"""``evaluate``'s reading of the tables: ids as text, files named, empty tables, pruning."""

from __future__ import annotations

import json

import numpy as np
import pytest
from evaluate_files import refused, run_main, write

from metrics.evaluate import EvaluationInputError, evaluation_report, read_evaluation_tables


def test_tables_keep_ids_as_strings_and_rows_in_order(csv_files):
    tables = read_evaluation_tables(**csv_files)
    assert tables.image_ids.tolist() == ["001", "1", "02", "3"]
    assert tables.ground_truth["kind"].tolist() == ["mass", "calc", "mass"]
    assert tables.ground_truth["image_index"].tolist() == [0, 1, 3]
    assert tables.predictions["image_index"].tolist() == [0, 0, 1, 1, 3, 3]
    matched = tables.match()
    assert matched.detection_outcome.tolist() == [1, 2, 0, 1, 0, 1]
    assert matched.lesion_score.tolist() == [0.9, 0.6, 0.3]


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
