"""`cli.py sweep`: W&B's own sweep engine draws the runs, each a real `cli.py fit` with W&B
offline; the YAML's grid is what the engine draws; an invalid file is refused with the engine's
message; under DDP both ranks get the sweep's values and one W&B run is logged."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from repo_paths import CONFIGS

import cli
from pipeline.sweep import _engine, expand_command, load_sweep, parameter_values

SWEEPS = CONFIGS / "sweeps"


def _tiny_sweep(tmp_path: Path, phantom: Path, grid: dict, extra: list[str] = ()) -> Path:
    data = tmp_path / "data.yaml"
    loaded = yaml.safe_load((CONFIGS / "data" / "phantom.yaml").read_text())
    loaded["data"]["init_args"].update(
        manifest=str(phantom),
        cache_dir=None,
        image_size=[128, 128],
        batch_size=4,
        samples_per_epoch=4,
        num_workers=0,
    )
    data.write_text(yaml.safe_dump(loaded))
    sweep = yaml.safe_load((SWEEPS / "alpha_gamma_demo.yaml").read_text())
    sweep["parameters"] = {name: {"values": values} for name, values in grid.items()}
    command = sweep["command"]
    command[command.index("--config") + 1] = str(data)
    command[command.index(str(data)) + 2] = str(CONFIGS / "demo" / "stage1_sm.yaml")
    sweep["command"] = [
        *command,
        "--trainer.max_epochs=1",
        "--trainer.limit_val_batches=1",
        "--trainer.check_val_every_n_epoch=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        "--model.init_args.evaluation.fauc_n_boot=0",
        *extra,
    ]
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


@pytest.mark.parametrize("name", ["alpha_gamma.yaml", "alpha_gamma_demo.yaml"])
def test_the_yaml_grid_is_what_the_engine_draws(name):
    sweeps = _engine()
    config = load_sweep(SWEEPS / name)
    assert config["method"] == "grid" and config["metric"] == {
        "name": "val_fauc",
        "goal": "maximize",
    }
    drawn, runs = [], []
    while (run := sweeps.next_run(config, runs, validate=True)) is not None:
        drawn.append(parameter_values(run.config))
        run.state = sweeps.RunState.finished
        runs.append(run)
    alphas = config["parameters"]["model.init_args.focal_alpha"]["values"]
    gammas = config["parameters"]["model.init_args.focal_gamma"]["values"]
    assert 0.9 in alphas and 2.5 in gammas  # the paper's best point is on the grid
    assert sorted(
        (d["model.init_args.focal_alpha"], d["model.init_args.focal_gamma"]) for d in drawn
    ) == sorted((a, g) for a in alphas for g in gammas)
    argv = expand_command(config["command"], drawn[0], config["program"])
    assert argv[-2:] == [
        f"--model.init_args.focal_alpha={alphas[0]}",
        f"--model.init_args.focal_gamma={gammas[0]}",
    ]
    assert argv[2:4] == ["fit", "--config"]


def test_an_invalid_sweep_file_is_refused_with_the_engines_message(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "method": "grdi",
                "metric": {"name": "val_fauc"},
                "parameters": {"model.init_args.focal_alpha": {"values": [0.5]}},
                "command": ["cli.py"],
            }
        )
    )
    assert cli.main(["sweep", str(path)]) == 1
    error = capsys.readouterr().err
    assert "is not a valid W&B sweep" in error and "'grdi' is not one of" in error


def test_a_two_by_two_grid_of_one_step_fits(tiny_phantom, tmp_path):
    grid = {"model.init_args.focal_alpha": [0.5, 0.9], "model.init_args.focal_gamma": [1.5, 2.5]}
    path = _tiny_sweep(tmp_path, tiny_phantom, grid)
    out = tmp_path / "sweep"
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 0
    table = pd.read_csv(out / "sweep_results.csv")
    assert len(table) == 4 and (table["exit_code"] == 0).all()
    assert sorted(
        zip(table["model.init_args.focal_alpha"], table["model.init_args.focal_gamma"])
    ) == [(0.5, 1.5), (0.5, 2.5), (0.9, 1.5), (0.9, 2.5)]
    assert table["val_fauc"].between(0, 1).all()
    assert (out / "sweep_heatmap.png").stat().st_size > 0
    for run, alpha, gamma in zip(
        table["run"], table["model.init_args.focal_alpha"], table["model.init_args.focal_gamma"]
    ):
        saved = yaml.safe_load((out / run / "config.yaml").read_text())["model"]["init_args"]
        assert (saved["focal_alpha"], saved["focal_gamma"]) == (alpha, gamma)
        assert len(list((out / run / "wandb").glob("offline-run-*"))) == 1


def test_max_runs_stops_a_grid_early(tiny_phantom, tmp_path):
    grid = {"model.init_args.focal_alpha": [0.5, 0.9], "model.init_args.focal_gamma": [2.5]}
    out = tmp_path / "sweep"
    assert (
        cli.main(
            [
                "sweep",
                str(_tiny_sweep(tmp_path, tiny_phantom, grid)),
                "--out",
                str(out),
                "--max-runs",
                "1",
            ]
        )
        == 0
    )
    assert len(pd.read_csv(out / "sweep_results.csv")) == 1


def test_a_ddp_sweep_run_gets_the_same_values_on_both_ranks_and_one_wandb_run(
    tiny_phantom, tmp_path
):
    grid = {"model.init_args.focal_alpha": [0.6], "model.init_args.focal_gamma": [1.7]}
    path = _tiny_sweep(
        tmp_path,
        tiny_phantom,
        grid,
        ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu"],
    )
    out = tmp_path / "sweep"
    assert cli.main(["sweep", str(path), "--out", str(out)]) == 0
    run = out / "run-000"
    events = [json.loads(line) for line in (run / "handoff.jsonl").read_text().splitlines()]
    built = {
        event["rank"]: event["hyperparameters"] for event in events if event["event"] == "inputs"
    }
    assert sorted(built) == [0, 1]
    assert {(h["focal_alpha"], h["focal_gamma"]) for h in built.values()} == {(0.6, 1.7)}
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert pd.read_csv(out / "sweep_results.csv")["val_fauc"].notna().all()
