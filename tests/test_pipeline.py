"""The main job end to end on a tiny phantom, through the real CLI: fit, validate and test
both Stage I models, then `evaluate` on the written CSVs and the report."""

import json
from pathlib import Path

import pytest
import wandb

import cli
from analysis.report import build_report
from metrics.evaluate import main as evaluate_main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _lightning(subcommand: str, modality: str, phantom: Path, root: Path, *extra: str):
    args = [
        subcommand,
        "--config", str(CONFIGS / "data" / "phantom.yaml"),
        "--config", str(CONFIGS / "demo" / f"stage1_{modality}.yaml"),
        "--data.init_args.manifest", str(phantom),
        "--data.init_args.cache_dir", "null",
        "--data.init_args.image_size", "[160, 128]",
        "--data.init_args.hit_min_distance", "12.5",
        "--trainer.default_root_dir", str(root),
        "--trainer.enable_progress_bar", "false",
        "--model.init_args.fauc_n_boot", "200",
        *extra,
    ]
    try:
        return cli.run_lightning(args)
    finally:
        wandb.finish()


@pytest.fixture(scope="module")
def runs(tiny_phantom, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    results = {}
    for modality in ("sm", "ffdm"):
        root = base / modality
        _lightning("fit", modality, tiny_phantom, root, "--trainer.max_steps", "3",
                   "--trainer.num_sanity_val_steps", "0")
        checkpoint = str(root / "checkpoints" / "last.ckpt")
        _lightning("validate", modality, tiny_phantom, root, "--ckpt_path", checkpoint)
        tested = _lightning("test", modality, tiny_phantom, root, "--ckpt_path", checkpoint)
        results[modality] = (root, dict(tested.trainer.callback_metrics))
    _lightning("predict", "sm", tiny_phantom, base / "sm", "--ckpt_path",
               str(base / "sm" / "checkpoints" / "last.ckpt"))
    return base, results


def _table(path: Path):
    """A predictions/ground-truth CSV in a canonical order: by image, then by rounded score and
    position, so that detections whose scores tie to the last float bits (which batch
    composition can reorder) compare row by row."""
    import pandas as pd

    frame = pd.read_csv(path, dtype={"image_id": str}, float_precision="round_trip")
    keys = {"_score": -frame["score"].round(4)} if "score" in frame.columns else {}
    keys.update(_x=frame["x1"].round(1), _y=frame["y1"].round(1))
    frame = frame.assign(**keys).sort_values(["image_id", *keys], kind="stable")
    return frame.drop(columns=list(keys)).reset_index(drop=True)


def test_two_process_ddp_test_run_writes_the_same_predictions(runs, tiny_phantom, tmp_path):
    """A real two-process (gloo) `cli.py test`: DistributedSampler pads the test split with
    repeats; the merged CSVs hold every image once and equal the one-process run's."""
    import subprocess
    import sys

    base, results = runs
    single = results["sm"][0] / "predictions"
    root = tmp_path / "ddp"
    command = [
        sys.executable, str(CONFIGS.parent / "cli.py"), "test",
        "--config", str(CONFIGS / "data" / "phantom.yaml"),
        "--config", str(CONFIGS / "demo" / "stage1_sm.yaml"),
        "--data.init_args.manifest", str(tiny_phantom),
        "--data.init_args.cache_dir", "null",
        "--data.init_args.image_size", "[160, 128]",
        "--trainer.default_root_dir", str(root),
        "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--model.init_args.fauc_n_boot", "0",
        "--ckpt_path", str(base / "sm" / "checkpoints" / "last.ckpt"),
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    merged = root / "predictions"
    images = (merged / "test_images.csv").read_text().split()
    assert len(images) == len(set(images)), "padding repeats were not removed"
    assert sorted(images) == sorted((single / "test_images.csv").read_text().split())
    assert len(images) % 2 == 1  # an odd split: one rank read a padding repeat
    import numpy as np

    for table in ("predictions", "ground_truth"):
        ddp, one = _table(merged / f"test_{table}.csv"), _table(single / f"test_{table}.csv")
        assert ddp["image_id"].tolist() == one["image_id"].tolist()
        # other batch compositions change the last float bits of the convolutions only
        numbers = [column for column in one.columns if column != "image_id"]
        assert np.allclose(ddp[numbers].to_numpy(), one[numbers].to_numpy(), atol=1e-3)
    assert not list(merged.glob("*.part.csv"))


def test_evaluate_on_written_csvs_equals_the_logged_test_fauc(runs, capsys):
    _, results = runs
    for _modality, (root, metrics) in results.items():
        predictions = root / "predictions"
        capsys.readouterr()
        code = evaluate_main([
            "--predictions", str(predictions / "test_predictions.csv"),
            "--ground-truth", str(predictions / "test_ground_truth.csv"),
            "--images", str(predictions / "test_images.csv"),
            "--min-distance", "12.5", "--n-boot", "0",
        ])
        assert code == 0
        evaluated = json.loads(capsys.readouterr().out)
        assert evaluated["fauc"] == pytest.approx(float(metrics["test_fauc"]), abs=1e-6)
        assert evaluated["fauc_positive"] == pytest.approx(
            float(metrics["test_fauc_pos"]), abs=1e-6)
        assert evaluated["n_lesions"] > 0 and evaluated["n_images"] > evaluated["n_lesions"] / 4
        assert float(metrics["test_fauc_low"]) <= float(metrics["test_fauc"]) <= float(
            metrics["test_fauc_high"])


def test_predictions_are_in_original_pixels(runs, tiny_phantom):
    import pandas as pd

    _, results = runs
    root, _ = results["ffdm"]
    truth = pd.read_csv(root / "predictions" / "test_ground_truth.csv", dtype={"image_id": str})
    lesions = pd.read_csv(tiny_phantom / "lesions.csv", dtype={"pair_id": str})
    ffdm = lesions[lesions["modality"] == "ffdm"]
    test_ids = set(pd.read_csv(root / "predictions" / "test_images.csv", dtype=str)["image_id"])
    expected = ffdm[ffdm["pair_id"].isin(test_ids)]
    # the metric's ground truth is the lesion table's own boxes, in the DICOM's pixels
    assert sorted(map(tuple, truth[["x1", "y1", "x2", "y2"]].to_numpy().tolist())) == sorted(
        map(tuple, expected[["x1", "y1", "x2", "y2"]].astype(float).to_numpy().tolist()))


def test_predict_writes_the_test_split_detections(runs):
    _, results = runs
    predictions = results["sm"][0] / "predictions"
    predicted, tested = _table(predictions / "predictions.csv"), _table(
        predictions / "test_predictions.csv")
    assert predicted["image_id"].tolist() == tested["image_id"].tolist()
    assert predicted["score"].tolist() == pytest.approx(tested["score"].tolist(), abs=1e-6)


def test_report_reproduces_the_evaluated_faucs(runs, tmp_path):
    base, results = runs
    numbers = build_report({"Model_SM": base / "sm", "Model_FFDM": base / "ffdm"}, tmp_path,
                           n_boot=100)
    for row, modality in zip(numbers["fauc"], ("sm", "ffdm")):
        assert row["FAUC-1 TEST"] == pytest.approx(
            float(results[modality][1]["test_fauc"]), abs=1e-6)
    for name in ("report.md", "report.json", "froc.png"):
        assert (tmp_path / name).stat().st_size > 0
    galleries = sorted(path.name for path in tmp_path.glob("gallery_*.png"))
    assert galleries == sorted(numbers["figures"][1:]) and len(galleries) == 4  # Section 3
    assert set(numbers["section3"]) == {"missed in FFDM", "missed in SM",
                                        "false detections in FFDM", "false detections in SM"}
    text = (tmp_path / "report.md").read_text()
    assert "Model_SM" in text and "Model_FFDM" in text and "masses, dense (C/D)" in text
    sensitivity = {row["model"]: row for row in numbers["sensitivity"]}
    assert set(sensitivity) == {"Model_SM", "Model_FFDM"}
    assert sensitivity["Model_SM"]["all lesions"][1] > 0


def test_report_refuses_validation_and_test_of_different_weights(runs, tmp_path):
    import shutil

    base, _ = runs
    copy = tmp_path / "sm"
    shutil.copytree(base / "sm", copy)
    info = json.loads((copy / "predictions" / "val_info.json").read_text())
    assert info["trained_steps"] == 3  # the validate run on last.ckpt after 3 steps
    info["trained_steps"] = 1
    (copy / "predictions" / "val_info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="trained 1 steps, test predictions from weights "
                                         "trained 3 steps"):
        build_report({"Model_SM": copy, "Model_FFDM": base / "ffdm"}, tmp_path / "out",
                     n_boot=10)
