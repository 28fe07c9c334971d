"""W&B sweeps run here with no W&B server: the runs are drawn by W&B's own sweep engine (the
``sweeps`` package that W&B's local controller uses), each a real ``cli.py fit`` with W&B
offline, and the results gathered into a table and a heat map.

    python cli.py sweep configs/sweeps/alpha_gamma.yaml [--data FILE] [--max-runs N] \\
        [--out DIR] [-- EXTRA FIT ARGS]

The sweep file is a W&B sweep file (``method``, ``metric``, ``parameters``, ``command``): the
same file works with ``wandb sweep`` + ``wandb agent`` where a server is reachable. Its
``command`` is expanded as W&B's agent does (``${env}``, ``${interpreter}``, ``${program}``,
``${args}``, ``${args_no_hyphens}``); ``--data FILE`` replaces its first ``--config`` (the
data config), and each run gets its own run folder under ``--out``. A run's metric is the last
value of ``metric.name`` its validation logged (W&B's summary value), read from the run's
``history.csv``. Sweep values reach every DDP rank as command-line arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

RESULTS = "sweep_results.csv"
HEATMAP = "sweep_heatmap.png"
ROOT = Path(__file__).resolve().parents[1]


def _engine():
    with warnings.catch_warnings():  # sweeps imports pydantic v1 names: one UserWarning
        warnings.simplefilter("ignore")
        import sweeps
    return sweeps


def load_sweep(path: str | os.PathLike) -> dict[str, Any]:
    """Read a sweep file and check it with the engine's own schema; a ValueError lists the
    engine's messages."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file not found: {path}")
    config = yaml.safe_load(path.read_text()) or {}
    violations = _engine().schema_violations_from_proposed_config(config)
    if violations:
        raise ValueError(f"{path} is not a valid W&B sweep: " + "; ".join(violations))
    if "command" not in config:
        raise ValueError(f"{path}: a sweep here needs a `command` (the cli.py fit to run)")
    return config


def parameter_values(run_config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"model.init_args.focal_alpha": {"value": 0.9}}`` -> ``{"...focal_alpha": 0.9}``."""
    return {name: entry["value"] for name, entry in run_config.items()}


def expand_command(
    command: list[str], values: dict[str, Any], program: str | None, data: str | None = None
) -> list[str]:
    """The run's argv, expanded as W&B's agent expands a sweep's ``command``."""
    args = [f"--{name}={_text(value)}" for name, value in values.items()]
    expanded: list[str] = []
    for token in command:
        if token == "${env}":
            continue
        if token in ("${interpreter}", "python", "python3"):
            expanded.append(sys.executable)
        elif token == "${program}":
            expanded.append(str(program or "cli.py"))
        elif token == "${args}":
            expanded.extend(args)
        elif token == "${args_no_hyphens}":
            expanded.extend(arg[2:] for arg in args)
        elif token == "${args_json}":
            raise ValueError("${args_json} is not supported: use ${args}")
        else:
            expanded.append(token)
    if data is not None:
        try:
            position = expanded.index("--config") + 1
        except ValueError as error:
            raise ValueError(
                "--data replaces the command's first --config, and it has none"
            ) from error
        expanded[position] = str(data)
    return expanded


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _metric(run_folder: Path, name: str) -> float | None:
    history = run_folder / "history.csv"
    if not history.is_file():
        return None
    frame = pd.read_csv(history)
    if name not in frame.columns or frame[name].dropna().empty:
        return None
    return float(frame[name].dropna().iloc[-1])


def run_sweep(
    sweep_file: str | os.PathLike,
    out: str | os.PathLike,
    data: str | None = None,
    max_runs: int | None = None,
    extra: list[str] | None = None,
    log=print,
) -> pd.DataFrame:
    """Draw runs from the engine until it has none left (a grid) or ``max_runs``; run each;
    write ``sweep_results.csv`` and the heat map; return the table."""
    sweeps = _engine()
    config = load_sweep(sweep_file)
    metric = config.get("metric", {}).get("name", "val_fauc")
    goal = config.get("metric", {}).get("goal", "maximize")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    finished: list = []
    rows: list[dict[str, Any]] = []
    while max_runs is None or len(rows) < max_runs:
        run = sweeps.next_run(config, finished, validate=True)
        if run is None:
            break
        values = parameter_values(run.config)
        name = f"run-{len(rows):03d}"
        folder = out / name
        argv = expand_command(config["command"], values, config.get("program"), data)
        argv += [f"--trainer.default_root_dir={folder}", *(extra or [])]
        log(
            f"[sweep] {name}: "
            + ", ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in values.items())
        )
        started = time.time()
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env={
                **os.environ,
                "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
                "HF_HUB_OFFLINE": "1",
            },
        )
        value = _metric(folder, metric) if done.returncode == 0 else None
        run.state = sweeps.RunState.finished if value is not None else sweeps.RunState.failed
        run.summary_metrics = {metric: value} if value is not None else {}
        finished.append(run)
        rows.append(
            {
                "run": name,
                **values,
                metric: value,
                "exit_code": done.returncode,
                "seconds": round(time.time() - started, 1),
            }
        )
        log(f"[sweep] {name}: {metric} = {value}")
    table = pd.DataFrame(rows)
    table.to_csv(out / RESULTS, index=False)
    parameters = list(config["parameters"])
    if len(parameters) >= 2 and table[metric].notna().any():
        plot_heatmap(table, parameters[0], parameters[1], metric, out / HEATMAP)
    scored = table.dropna(subset=[metric])
    if not scored.empty:
        best = scored.loc[
            scored[metric].idxmax() if goal == "maximize" else scored[metric].idxmin()
        ]
        point = ", ".join(f"{name} = {best[name]}" for name in parameters)
        log(f"[sweep] best {metric} {best[metric]:.4f} at {point} ({best['run']})")
    return table


def plot_heatmap(table: pd.DataFrame, x: str, y: str, metric: str, path: Path) -> Path:
    """The metric over two parameters (the mean where other parameters vary), annotated."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grid = table.pivot_table(index=y, columns=x, values=metric, aggfunc="mean")
    figure = Figure(figsize=(1.3 * len(grid.columns) + 2.5, 1.0 * len(grid.index) + 1.8), dpi=130)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    values = grid.to_numpy(dtype=float)
    image = axes.imshow(values, cmap="viridis", origin="lower", aspect="auto")
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    axes.set_xticks(range(len(grid.columns)), [f"{v:g}" for v in grid.columns])
    axes.set_yticks(range(len(grid.index)), [f"{v:g}" for v in grid.index])
    axes.set_xlabel(x.rsplit(".", 1)[-1])
    axes.set_ylabel(y.rsplit(".", 1)[-1])
    for row, y_value in enumerate(grid.index):
        for column, x_value in enumerate(grid.columns):
            value = grid.loc[y_value, x_value]
            if not math.isnan(value):
                bright = high > low and (value - low) / (high - low) > 0.6
                axes.text(
                    column,
                    row,
                    f"{value:.3f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if bright else "white",
                )
    figure.colorbar(image, ax=axes, label=metric)
    axes.set_title(f"{metric} over {x.rsplit('.', 1)[-1]} x {y.rsplit('.', 1)[-1]}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
    return path


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        position = argv.index("--")
        argv, extra = argv[:position], argv[position + 1 :]
    parser = argparse.ArgumentParser(prog="cli.py sweep", description=__doc__.split("\n")[0])
    parser.add_argument("sweep_file", help="a W&B sweep YAML (configs/sweeps/)")
    parser.add_argument("--data", help="a data config replacing the command's first --config")
    parser.add_argument("--max-runs", type=int, help="stop after this many runs")
    parser.add_argument("--out", default="runs/sweep", help="folder for the runs and results")
    args = parser.parse_args(argv)
    try:
        run_sweep(args.sweep_file, args.out, args.data, args.max_runs, extra)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
