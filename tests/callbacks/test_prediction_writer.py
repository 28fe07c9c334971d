"""The prediction writer's tables: per-rank Parquet parts with typed columns, rank 0's merge
(padding repeats dropped, exactly), the per-image cap and what evaluation says when it was
binding, and the CSV export. The writer inside a real Lightning run, one and two processes, is
in ``test_pipeline.py``."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from callbacks.prediction_writer import SCHEMAS, RankParts, merge_parts, part_path
from metrics.evaluate import main as evaluate_main
from metrics.evaluate import read_evaluation_tables


def image(rng, n: int, size=(1000, 800)):
    """n detections of one image (boxes inside it) and one lesion box."""
    centre = rng.uniform(100, 700, (n, 2))
    boxes = np.hstack([centre - 20, centre + 20]).astype(np.float32)
    return boxes, rng.random(n).astype(np.float32), np.zeros(n, np.int32)


def test_each_rank_writes_typed_parquet_parts(tmp_path):
    rng = np.random.default_rng(0)
    parts = RankParts(tmp_path, "val", rank=1, max_detections=5)
    boxes, scores, labels = image(rng, 3)
    parts.add("a", (1000, 800), boxes, scores, labels, np.array([[10.0, 20.0, 30.0, 40.0]]))
    parts.add("b", (1000, 800), *image(rng, 0), np.zeros((0, 4)))
    parts.close()
    for table, schema in SCHEMAS.items():
        path = part_path(tmp_path, "val", table, 1)
        assert path.name == f"val_{table}.rank1.part.parquet"
        written = pq.read_table(path)
        assert written.schema.remove(written.schema.get_field_index("_image")) == schema
    predictions = pq.read_table(part_path(tmp_path, "val", "predictions", 1))
    assert predictions.column("score").type == pa.float32()
    assert predictions.column("score").to_numpy().tolist() == scores.tolist()
    assert predictions.column("_image").to_pylist() == [0, 0, 0]
    images = pq.read_table(part_path(tmp_path, "val", "images", 1)).to_pylist()
    assert [(row["image_id"], row["detections"], row["_image"]) for row in images] == [
        ("a", 3, 0),
        ("b", 0, 1),
    ]
    assert images[0]["dropped_score"] is None  # nothing dropped: missing, not a number


def test_the_merge_drops_padding_repeats_exactly(tmp_path):
    """Two ranks as DistributedSampler gives them an odd split: rank 1 reads image "a" again
    at the end. The merged tables are rank 0's rows, then rank 1's, without the repeat's."""
    rng = np.random.default_rng(1)
    reads = {0: ["a", "c", "e"], 1: ["b", "d", "a"]}
    detections, lesions = {}, {}
    for rank, ids in reads.items():
        parts = RankParts(tmp_path, "test", rank)
        for image_id in ids:
            boxes, scores, labels = image(rng, int(rng.integers(1, 6)))  # repeat: other numbers
            lesion = rng.uniform(0, 500, (1, 4)) + [0, 0, 50, 50]
            detections.setdefault(image_id, (boxes, scores))
            lesions.setdefault(image_id, lesion)
            parts.add(image_id, (1000, 800), boxes, scores, labels, lesion)
        parts.close()
    assert merge_parts(tmp_path, "test", 2) == (5, 0)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "test_ground_truth.parquet",
        "test_images.parquet",
        "test_predictions.parquet",
    ]
    order = ["a", "c", "e", "b", "d"]
    merged = pq.read_table(tmp_path / "test_predictions.parquet")
    assert merged.schema == SCHEMAS["predictions"]
    assert merged.column("image_id").to_pylist() == [
        i for i in order for _ in range(detections[i][1].size)
    ]
    assert (
        merged.column("score").to_numpy().tolist()
        == np.concatenate([detections[i][1] for i in order]).tolist()
    )
    assert np.array_equal(
        np.column_stack([merged.column(c).to_numpy() for c in ("x1", "y1", "x2", "y2")]),
        np.concatenate([detections[i][0] for i in order]),
    )
    truth = pq.read_table(tmp_path / "test_ground_truth.parquet")
    assert truth.column("image_id").to_pylist() == order
    assert truth.column("x1").to_numpy().tolist() == [lesions[i][0, 0] for i in order]
    assert pq.read_table(tmp_path / "test_images.parquet").column("image_id").to_pylist() == order


def test_a_split_without_lesions_writes_no_ground_truth(tmp_path):
    rng = np.random.default_rng(2)
    parts = RankParts(tmp_path, "predict", 0)
    parts.add("x.dcm", (100, 80), *image(rng, 2))
    parts.close()
    assert merge_parts(tmp_path, "predict", 1) == (1, 0)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "images.parquet",
        "predictions.parquet",
    ]


def test_the_cap_keeps_the_highest_scores_in_the_models_order(tmp_path):
    rng = np.random.default_rng(3)
    boxes, scores, labels = image(rng, 40)
    parts = RankParts(tmp_path, "test", 0, max_detections=32)
    parts.add("a", (1000, 800), boxes, scores, labels, np.zeros((0, 4)))
    parts.add("b", (1000, 800), boxes[:32], scores[:32], labels[:32], np.zeros((0, 4)))
    parts.close()
    assert merge_parts(tmp_path, "test", 1) == (2, 1)
    kept = pq.read_table(tmp_path / "test_predictions.parquet").to_pandas()
    first = kept[kept["image_id"] == "a"]
    order = np.argsort(-scores, kind="stable")
    expected = np.sort(order[:32])
    assert first["score"].tolist() == scores[expected].tolist()
    assert first["x1"].tolist() == boxes[expected, 0].tolist()
    images = pq.read_table(tmp_path / "test_images.parquet").to_pylist()
    assert images[0]["detections"] == 40 and images[0]["dropped_score"] == scores[order[32]]
    assert images[1]["detections"] == 32 and images[1]["dropped_score"] is None


def capped_files(folder, binding: bool):
    """20 images, one lesion on image 0 found by its top detection, the others false
    positives; FAUC-1 reads down to the 20th false positive, at 0.6. The cap of 3 leaves out
    each image's fourth detection, at 0.02, and on image 5 (binding) one at 0.62."""
    rng = np.random.default_rng(4)
    parts = RankParts(folder, "test", 0, max_detections=3)
    for index in range(20):
        boxes, _, labels = image(rng, 4)
        scores = np.array([0.95 - 0.02 * index, 0.6, 0.5, 0.02], np.float32)
        if index == 5 and binding:
            scores[1:] = [0.7, 0.65, 0.62]
        lesion = np.zeros((0, 4))
        if index == 0:
            lesion = boxes[:1].astype(np.float64)
        parts.add(f"i{index}", (1000, 800), boxes, scores, labels, lesion)
    parts.close()
    merge_parts(folder, "test", 1)
    return [
        "--predictions",
        str(folder / "test_predictions.parquet"),
        "--ground-truth",
        str(folder / "test_ground_truth.parquet"),
        "--images",
        str(folder / "test_images.parquet"),
        "--n-boot",
        "50",
    ]


@pytest.mark.parametrize("binding", [True, False])
def test_evaluate_says_when_the_cap_was_binding_above_the_cut(tmp_path, capsys, binding):
    assert evaluate_main(capped_files(tmp_path, binding)) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    if binding:
        assert report["images_capped_above_cut"] == 1
        assert captured.err.strip().splitlines() == [
            "evaluate: on 1 image(s) the prediction writer's cap (max_detections) left out a "
            "detection scoring at or above the lowest score FAUC-1 (or FAUC-1+) reads: those "
            "numbers and their CIs may be lower than with every detection; write the "
            "predictions again with a larger --predictions.max_detections"
        ]
    else:
        assert report["images_capped_above_cut"] == 0 and captured.err == ""
    assert report["n_detections"] == 60  # 20 images x 3 kept


def test_the_csv_export_evaluates_to_the_same_numbers(tmp_path, capsys):
    arguments = capped_files(tmp_path, binding=False)
    assert evaluate_main(arguments) == 0
    from_parquet = json.loads(capsys.readouterr().out)
    assert evaluate_main(["--export-csv", str(tmp_path)]) == 0
    written = capsys.readouterr().out.split()
    assert written == [
        str(tmp_path / f"test_{t}.csv") for t in ("ground_truth", "images", "predictions")
    ]
    csv_arguments = [a.replace(".parquet", ".csv") for a in arguments]
    assert evaluate_main(csv_arguments) == 0
    assert json.loads(capsys.readouterr().out) == from_parquet
    header = (tmp_path / "test_predictions.csv").read_text().splitlines()[0]
    assert header == '"image_id","x1","y1","x2","y2","score","label"'
    tables = read_evaluation_tables(*(csv_arguments[i] for i in (1, 3, 5)))
    assert (
        tables.predictions["score"].tolist()
        == pq.read_table(tmp_path / "test_predictions.parquet")
        .column("score")
        .to_numpy()
        .astype(float)
        .tolist()
    )
