"""Training seeds in the pipeline: each seed trains in its own folder with its own stage hash,
on the same split; the seeds report gives each model over seeds and each comparison per seed
and pooled. A stage may train on another data config and is still assessed on the pipeline's."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from repo_paths import CONFIGS
from tiny_runs import TINY_PIPELINE

from analysis.seeds import build_seed_report
from lightning_modules.artifacts import read_artifact
from pipeline.config import load_pipeline
from pipeline.hashing import stage_hash
from pipeline.runner import run_pipeline

DETECTOR = {"model.init_args.evaluation.fauc_n_boot": 0}


def _data_config(folder, phantom, name="data.yaml"):
    config = yaml.safe_load((CONFIGS / "data" / "phantom.yaml").read_text())
    config["data"]["init_args"]["manifest"] = str(phantom)
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def seeded(tiny_phantom, tmp_path_factory):
    from data_tools.phantom import PhantomSettings, generate

    folder = tmp_path_factory.mktemp("seeds")
    other = folder / "other_phantom"
    generate(other, PhantomSettings(pairs=40, seed=11), workers=1, progress=False)
    stages = {
        "stage1_sm": {"config": str(CONFIGS / "demo" / "stage1_sm.yaml"), "overrides": DETECTOR},
        "sm_other_data": {
            "config": str(CONFIGS / "demo" / "stage1_sm.yaml"),
            "overrides": DETECTOR,
            "data": str(_data_config(folder, other, "other.yaml")),
        },
    }
    config = {
        "data": str(_data_config(folder, tiny_phantom)),
        "run": str(folder / "run"),
        "overrides": TINY_PIPELINE,
        "stages": stages,
        "seeds": [0, 1],
        "report": {"Model_SM": "stage1_sm", "Other data": "sm_other_data"},
        "comparisons": [["Other data", "Model_SM"]],
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    lines: list[str] = []
    summary = run_pipeline(load_pipeline(path), log=lines.append)
    return folder, path, summary, lines


def test_each_seed_trains_in_its_own_folder_with_its_own_hash_on_the_same_split(seeded):
    folder, path, summary, _ = seeded
    run = folder / "run"
    assert sorted(summary["seeds"]) == [0, 1]
    hashes, weights = {}, {}
    for seed in (0, 1):
        stage = run / f"seed{seed}" / "stage1_sm"
        hashes[seed] = json.loads((stage / "stage.json").read_text())["hash"]
        weights[seed] = read_artifact(stage / "artifact").meta["weights_sha256"]
    assert hashes[0] != hashes[1] and weights[0] != weights[1]
    images = [
        pd.read_parquet(run / f"seed{s}" / "stage1_sm" / "predictions" / "test_images.parquet")
        for s in (0, 1)
    ]
    # the split is the data config's: the same test images (the model-dependent columns,
    # such as the score a per-image cap dropped, aside)
    assert images[0]["image_id"].tolist() == images[1]["image_id"].tolist()
    assert len(images[0]) > 0
    pipeline = load_pipeline(path)
    seed1 = pipeline.seeded(1)
    assert seed1.overrides["seed_everything"] == 1
    assert seed1.overrides["data.init_args.train_seed"] == 1
    assert stage_hash(seed1, seed1.stages["stage1_sm"]) == hashes[1]


def test_a_rerun_over_seeds_trains_nothing(seeded):
    _, path, _, _ = seeded
    lines: list[str] = []
    summary = run_pipeline(load_pipeline(path), report=False, log=lines.append)
    assert all(
        state.get("skipped")
        for per_seed in summary["seeds"].values()
        for state in per_seed["stages"].values()
    )
    assert sum("up to date" in line for line in lines) == 4


def test_the_seeds_report_gives_models_over_seeds_and_pooled_differences(seeded):
    folder, path, _, _ = seeded
    numbers = json.loads((folder / "run" / "seeds_report.json").read_text())
    assert numbers["seeds"] == [0, 1]
    for model in numbers["models"]:
        assert len(model["test_by_seed"]) == 2
        assert model["test"] == pytest.approx(np.mean(model["test_by_seed"]))
        assert model["test_range"] == [min(model["test_by_seed"]), max(model["test_by_seed"])]
    (comparison,) = numbers["comparisons"]
    assert comparison["models"] == "Other data - Model_SM"
    differences = [entry["difference"] for entry in comparison["per_seed"]]
    assert comparison["pooled"]["difference"] == pytest.approx(np.mean(differences))
    low, high = comparison["pooled"]["ci95"]
    assert low <= comparison["pooled"]["difference"] <= high
    text = (folder / "run" / "seeds_report.md").read_text()
    assert "Other data - Model_SM" in text and "pooled" in text
    # the same report again, with a reference row and the gap it defines
    pipeline = load_pipeline(path)
    pipeline.references = {"Seed 1 alone": str(folder / "run" / "seed1" / "sm_other_data")}
    pipeline.gap = ("Model_SM", "Seed 1 alone")
    again = build_seed_report(pipeline, n_boot=200, out=folder)
    rows = {model["model"]: model for model in again["models"]}
    assert rows["Seed 1 alone"]["test_by_seed"] == [rows["Other data"]["test_by_seed"][1]]
    low, high = rows["Model_SM"]["test"], rows["Seed 1 alone"]["test"]
    for row in rows.values():  # (model - low) / (high - low); None when the two ends tie
        expected = None if high == low else (row["test"] - low) / (high - low)
        assert row["gap_share"] == (None if expected is None else pytest.approx(expected))
    if high != low:
        assert rows["Model_SM"]["gap_share"] == pytest.approx(0.0)
        assert rows["Seed 1 alone"]["gap_share"] == pytest.approx(1.0)


def test_a_stage_trained_on_other_data_is_assessed_on_the_pipelines(seeded, tiny_phantom):
    folder = seeded[0]
    stage = folder / "run" / "seed0" / "sm_other_data"
    checkpoint = torch.load(
        read_artifact(stage / "artifact").meta["checkpoint"], weights_only=True, map_location="cpu"
    )
    assert checkpoint["datamodule_hyper_parameters"]["manifest"] == str(folder / "other_phantom")
    tested = pd.read_parquet(stage / "predictions" / "test_images.parquet").astype(str)
    main = pd.read_parquet(
        folder / "run" / "seed0" / "stage1_sm" / "predictions" / "test_images.parquet"
    ).astype(str)
    assert tested["image_id"].tolist() == main["image_id"].tolist()
    assert all(image.startswith("PH") for image in tested["image_id"])
