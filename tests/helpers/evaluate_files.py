"""What tests/metrics/test_evaluate_*.py share: writing a small CSV, running ``evaluate`` on
a set of files, and a run it must refuse."""

from __future__ import annotations

from pathlib import Path

from metrics.evaluate import main


def write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


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


def refused(files: dict, capsys) -> str:
    """Run evaluate on ``files`` and return its error output (it must refuse them)."""
    assert run_main(files, "--n-boot", "0") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err
