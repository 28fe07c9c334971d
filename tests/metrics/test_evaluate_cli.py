"""``cli.py evaluate``: one JSON object and the FROC plot, settings refused, plots of models."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib.image
import pytest
from evaluate_files import run_main
from repo_paths import REPO_ROOT

from metrics.evaluate import read_evaluation_tables
from metrics.froc import froc_curve
from metrics.plot import plot_froc


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
