"""The main job end to end on a tiny phantom, through the real CLI: fit, validate and test
both Stage I models, then `evaluate` on the written CSVs and the report."""

import json
from pathlib import Path

import pytest
import wandb
from repo_paths import CONFIGS

import cli
from analysis.report import build_report
from metrics.evaluate import main as evaluate_main


def _lightning(subcommand: str, modality: str, phantom: Path, root: Path, *extra: str):
    args = [
        subcommand,
        "--config",
        str(CONFIGS / "data" / "phantom.yaml"),
        "--config",
        str(CONFIGS / "demo" / f"stage1_{modality}.yaml"),
        "--data.init_args.manifest",
        str(phantom),
        "--data.init_args.cache_dir",
        "null",
        "--data.init_args.image_size",
        "[160, 128]",
        "--data.init_args.hit_min_distance",
        "12.5",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.enable_progress_bar",
        "false",
        "--model.init_args.evaluation.fauc_n_boot",
        "200",
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
        _lightning(
            "fit",
            modality,
            tiny_phantom,
            root,
            "--trainer.max_steps",
            "3",
            "--trainer.num_sanity_val_steps",
            "0",
        )
        checkpoint = str(root / "checkpoints" / "last.ckpt")
        _lightning("validate", modality, tiny_phantom, root, "--ckpt_path", checkpoint)
        tested = _lightning("test", modality, tiny_phantom, root, "--ckpt_path", checkpoint)
        results[modality] = (root, dict(tested.trainer.callback_metrics))
    _lightning(
        "predict",
        "sm",
        tiny_phantom,
        base / "sm",
        "--ckpt_path",
        str(base / "sm" / "checkpoints" / "last.ckpt"),
    )
    return base, results


def _table(path: Path):
    """A predictions/ground-truth table in a canonical order: by image, then by rounded score and
    position, so that detections whose scores tie to the last float bits (which batch
    composition can reorder) compare row by row."""
    import pandas as pd

    frame = pd.read_parquet(path).astype({"image_id": str})
    keys = {"_score": -frame["score"].round(4)} if "score" in frame.columns else {}
    keys.update(_x=frame["x1"].round(1), _y=frame["y1"].round(1))
    frame = frame.assign(**keys).sort_values(["image_id", *keys], kind="stable")
    return frame.drop(columns=list(keys)).reset_index(drop=True)


def _ids(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["image_id"]).column(0).to_pylist()


def _odd_test_split(phantom: Path, folder: Path) -> Path:
    """The phantom's manifest with its splits written out and one test pair left out: an odd
    test split, which DistributedSampler pads on two ranks with a repeat."""
    import pandas as pd

    from datamodules.manifest import load_tables

    manifest = pd.read_csv(phantom / "manifest.csv", dtype=str, keep_default_na=False)
    lesions = pd.read_csv(phantom / "lesions.csv", dtype=str, keep_default_na=False)
    split = load_tables(phantom / "manifest.csv", phantom / "lesions.csv")[0].set_index("pair_id")[
        "split"
    ]
    manifest["split"] = manifest["pair_id"].map(split)
    left_out = manifest.loc[manifest["split"] == "test", "pair_id"].iloc[0]
    manifest = manifest[manifest["pair_id"] != left_out]
    for column in ("sm_path", "ffdm_path"):
        manifest[column] = [str(phantom / path) for path in manifest[column]]
    folder.mkdir()
    manifest.to_csv(folder / "manifest.csv", index=False)
    lesions[lesions["pair_id"] != left_out].to_csv(folder / "lesions.csv", index=False)
    return folder


def test_two_process_ddp_test_run_writes_the_same_predictions(runs, tiny_phantom, tmp_path):
    """A real two-process (gloo) `cli.py test` on an odd test split: DistributedSampler pads
    it with a repeat; the merged tables hold every image once and equal the one-process
    run's (on the same images)."""
    import subprocess
    import sys

    base, results = runs
    single = results["sm"][0] / "predictions"
    root = tmp_path / "ddp"
    command = [
        sys.executable,
        str(CONFIGS.parent / "cli.py"),
        "test",
        "--config",
        str(CONFIGS / "data" / "phantom.yaml"),
        "--config",
        str(CONFIGS / "demo" / "stage1_sm.yaml"),
        "--data.init_args.manifest",
        str(_odd_test_split(tiny_phantom, tmp_path / "odd")),
        "--data.init_args.cache_dir",
        "null",
        "--data.init_args.image_size",
        "[160, 128]",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.devices",
        "2",
        "--trainer.strategy",
        "ddp",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--model.init_args.evaluation.fauc_n_boot",
        "0",
        "--ckpt_path",
        str(base / "sm" / "checkpoints" / "last.ckpt"),
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    merged = root / "predictions"
    images = _ids(merged / "test_images.parquet")
    assert len(images) == len(set(images)), "padding repeats were not removed"
    everything = _ids(single / "test_images.parquet")
    assert len(images) % 2 == 1 and len(images) == len(everything) - 1  # one rank padded
    assert set(images) < set(everything)
    info = json.loads((merged / "test_info.json").read_text())
    assert info["world_size"] == 2 and info["n_images"] == len(images)
    import numpy as np

    for table in ("predictions", "ground_truth"):
        ddp, one = (
            _table(merged / f"test_{table}.parquet"),
            _table(single / f"test_{table}.parquet"),
        )
        one = one[one["image_id"].isin(images)].reset_index(drop=True)
        assert len(one) and ddp["image_id"].tolist() == one["image_id"].tolist()
        # other batch compositions change the last float bits of the convolutions only
        numbers = [column for column in one.columns if column != "image_id"]
        assert np.allclose(ddp[numbers].to_numpy(), one[numbers].to_numpy(), atol=1e-3)
    assert not list(merged.glob("*.part.*"))


def test_evaluate_on_written_csvs_equals_the_logged_test_fauc(runs, capsys):
    _, results = runs
    for _modality, (root, metrics) in results.items():
        predictions = root / "predictions"
        capsys.readouterr()
        code = evaluate_main(
            [
                "--predictions",
                str(predictions / "test_predictions.parquet"),
                "--ground-truth",
                str(predictions / "test_ground_truth.parquet"),
                "--images",
                str(predictions / "test_images.parquet"),
                "--min-distance",
                "12.5",
                "--n-boot",
                "0",
            ]
        )
        assert code == 0
        evaluated = json.loads(capsys.readouterr().out)
        assert evaluated["fauc"] == pytest.approx(float(metrics["test_fauc"]), abs=1e-6)
        assert evaluated["fauc_positive"] == pytest.approx(
            float(metrics["test_fauc_pos"]), abs=1e-6
        )
        assert evaluated["n_lesions"] > 0 and evaluated["n_images"] > evaluated["n_lesions"] / 4
        assert (
            float(metrics["test_fauc_low"])
            <= float(metrics["test_fauc"])
            <= float(metrics["test_fauc_high"])
        )


def test_predictions_are_in_original_pixels(runs, tiny_phantom):
    import pandas as pd

    _, results = runs
    root, _ = results["ffdm"]
    truth = pd.read_parquet(root / "predictions" / "test_ground_truth.parquet")
    lesions = pd.read_csv(tiny_phantom / "lesions.csv", dtype={"pair_id": str})
    ffdm = lesions[lesions["modality"] == "ffdm"]
    test_ids = set(_ids(root / "predictions" / "test_images.parquet"))
    expected = ffdm[ffdm["pair_id"].isin(test_ids)]
    # the metric's ground truth is the lesion table's own boxes, in the DICOM's pixels
    assert sorted(map(tuple, truth[["x1", "y1", "x2", "y2"]].to_numpy().tolist())) == sorted(
        map(tuple, expected[["x1", "y1", "x2", "y2"]].astype(float).to_numpy().tolist())
    )


def test_predict_writes_the_test_split_detections(runs):
    _, results = runs
    predictions = results["sm"][0] / "predictions"
    predicted, tested = (
        _table(predictions / "predictions.parquet"),
        _table(predictions / "test_predictions.parquet"),
    )
    assert predicted["image_id"].tolist() == tested["image_id"].tolist()
    assert predicted["score"].tolist() == pytest.approx(tested["score"].tolist(), abs=1e-6)


def test_report_reproduces_the_evaluated_faucs(runs, tmp_path):
    base, results = runs
    numbers = build_report(
        {"Model_SM": base / "sm", "Model_FFDM": base / "ffdm"}, tmp_path, n_boot=100
    )
    for row, modality in zip(numbers["fauc"], ("sm", "ffdm")):
        assert row["FAUC-1 TEST"] == pytest.approx(
            float(results[modality][1]["test_fauc"]), abs=1e-6
        )
    for name in ("report.md", "report.json", "froc.png"):
        assert (tmp_path / name).stat().st_size > 0
    galleries = sorted(path.name for path in tmp_path.glob("gallery_*.png"))
    assert galleries == sorted(numbers["figures"][1:]) and len(galleries) == 4  # Section 3
    assert set(numbers["section3"]) == {
        "missed in FFDM",
        "missed in SM",
        "false detections in FFDM",
        "false detections in SM",
    }
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
    with pytest.raises(
        ValueError, match="trained 1 steps, test predictions from weights trained 3 steps"
    ):
        build_report({"Model_SM": copy, "Model_FFDM": base / "ffdm"}, tmp_path / "out", n_boot=10)
