"""Wall time of each stage of ``make demo``, so a change that slows the main
job shows: read from a finished demo run's ``stage.json`` files (each stage's fit and
evaluation seconds, recorded when it trained), compared with an earlier result when given.

    make demo                                   # trains (or skips) every stage
    .venv/bin/python bench/bench_demo.py --run runs/demo [--compare OLD_demo.json]

Writes ``bench/results/demo.json``. ``make bench`` records the demo run when it has one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shared import ROOT, write_result  # noqa: E402

from pipeline.config import load_pipeline  # noqa: E402
from pipeline.state import STATE_FILE  # noqa: E402


def stage_times(run: Path, config: Path) -> dict[str, dict]:
    pipeline = load_pipeline(config, run=run)
    stages = {}
    for name in pipeline.order():
        path = run / name / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: stage {name} of {run} has not finished; run `make demo` first"
            )
        state = json.loads(path.read_text())
        stages[name] = {
            key: state.get(key) for key in ("seconds", "fit_seconds", "evaluate_seconds", "hash")
        }
    return stages


def commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/demo", type=Path)
    parser.add_argument("--config", default="configs/pipeline/phantom.yaml", type=Path)
    parser.add_argument("--compare", type=Path, help="an earlier demo.json to compare with")
    args = parser.parse_args(argv)
    stages = stage_times(args.run, args.config)
    total = sum(stage["seconds"] for stage in stages.values())
    result = {
        "run": str(args.run),
        "config": str(args.config),
        "commit": commit(),
        "stages": stages,
        "stages_total_s": total,
    }
    if args.compare:
        earlier = json.loads(args.compare.read_text())["stages"]
        result["ratio_to_compared"] = {
            name: stage["seconds"] / earlier[name]["seconds"]
            for name, stage in stages.items()
            if name in earlier
        }
    path = write_result("demo", result)
    for name, stage in stages.items():
        ratio = result.get("ratio_to_compared", {}).get(name)
        print(
            f"  {name:12s} {stage['seconds']:7.1f} s (fit {stage['fit_seconds']:.1f} s)"
            + ("" if ratio is None else f"  x{ratio:.2f} of the compared run")
        )
    print(f"stages together {total / 60:.1f} min; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
