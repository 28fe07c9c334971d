"""A pipeline config, read and checked (``load_pipeline``) into a ``Pipeline`` of ``Stage``s;
the docstring of ``pipeline/runner.py``, which runs it, says what the config holds."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

STAGE_ORDER = ("stage1_sm", "stage1_ffdm", "stage2", "stage3", "upper_bound")


@dataclass
class Stage:
    """One stage of a pipeline config."""

    name: str
    config: Path
    inputs: dict[str, str] = field(default_factory=dict)  # init argument -> earlier stage
    overrides: dict[str, Any] = field(default_factory=dict)
    data: Path | None = None  # trains on this data config instead of the pipeline's


@dataclass
class Pipeline:
    """A parsed pipeline config."""

    path: Path
    data: Path
    run: Path
    stages: dict[str, Stage]
    overrides: dict[str, Any]
    report: dict[str, str]
    comparisons: list[tuple[str, str]] | None = None
    report_dir: str = "."
    slurm: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] | None = None
    references: dict[str, str] = field(default_factory=dict)  # seeds report: row -> run folder
    gap: tuple[str, str] | None = None  # seeds report: the gap (from row, to row) closed

    def seeded(self, seed: int) -> Pipeline:
        """This pipeline for one training seed, in ``<run>/seed<seed>``."""
        overrides = {**self.overrides, "seed_everything": seed, "data.init_args.train_seed": seed}
        return replace(self, run=self.run / f"seed{seed}", overrides=overrides, seeds=None)

    def order(self) -> list[str]:
        """Stages in dependency order (inputs first), config order among equals."""
        done: list[str] = []
        pending = list(self.stages)
        while pending:
            ready = [
                name
                for name in pending
                if all(source in done for source in self.stages[name].inputs.values())
            ]
            if not ready:
                raise ValueError(f"{self.path}: the inputs of {pending} form a cycle")
            done.append(ready[0])
            pending.remove(ready[0])
        return done


def _resolve(path: str | os.PathLike, base: Path) -> Path:
    """A path as given if it exists from the working folder, else relative to ``base``."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    candidate = base / path
    return candidate if candidate.exists() else path


# The form of each key of a pipeline config, as a message says it when a value has another.
FORMS = {
    "data": "a data config's path",
    "run": "a run folder's path",
    "stages": "a mapping of stage name -> {config, inputs, overrides, data}",
    "overrides": "a mapping of dotted config key -> value (e.g. trainer.max_epochs: 3)",
    "report": "a mapping of Table 2 row name -> stage name",
    "comparisons": "a list of [row, row] pairs of `report` rows",
    "report_dir": "a folder under the run folder",
    "slurm": "a mapping of SLURM settings (nodes, devices, time, ... and stages:)",
    "config": "a stage config's path",
    "inputs": "a mapping of init argument -> earlier stage name (e.g. sm_teacher: stage1_sm)",
    "seeds": "a list of training seeds (e.g. [0, 1, 2])",
    "references": "a mapping of row name -> run folder trained once (seeds report)",
    "gap": "a [from row, to row] pair (seeds report)",
}


TOP_KEYS = (
    "data",
    "run",
    "stages",
    "overrides",
    "report",
    "comparisons",
    "report_dir",
    "slurm",
    "seeds",
    "references",
    "gap",
)


def _shape_problem(key: str, value: Any, form: str) -> str | None:
    """``key: expected FORM, got ...`` when ``value`` does not have the form of ``key``."""
    kind = FORMS[form]
    ok = {"data": str, "run": str, "report_dir": str, "config": str}.get(form)
    if ok is not None:
        good = isinstance(value, ok) and bool(value)
    elif form == "comparisons":
        good = isinstance(value, list) and all(isinstance(pair, list) for pair in value)
    elif form in ("seeds", "gap"):
        good = isinstance(value, list)
    else:
        good = isinstance(value, Mapping)
    if good:
        return None
    shown = f"a {type(value).__name__}" if value is not None else "nothing"
    return f"{key}: expected {kind}, got {shown} ({value!r:.80})"


def load_pipeline(
    path: str | os.PathLike, data: str | None = None, run: str | None = None
) -> Pipeline:
    """Parse and check a pipeline config; ``data``/``run`` replace its data config and run
    folder. Errors name the file, the key and the form it expects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"{path}: expected a mapping of keys (data, stages, overrides, report, "
            f"...), got {type(raw).__name__ if raw is not None else 'an empty file'}"
        )
    base = path.parent
    problems = []
    for key in ("data", "stages"):
        if key not in raw:
            problems.append(f"missing key {key!r}")
    unknown = sorted(str(key) for key in raw if key not in TOP_KEYS)
    if unknown:
        problems.append(f"unknown keys {unknown} (the keys are {', '.join(TOP_KEYS)})")
    for key in TOP_KEYS:
        if raw.get(key) is not None and (problem := _shape_problem(key, raw[key], key)):
            problems.append(problem)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    stages = {}
    for name, entry in (raw["stages"] or {}).items():
        if not isinstance(name, str):
            problems.append(
                f"stages: the stage name {name!r} is not text "
                f"({type(name).__name__}); stage names are text (each names a "
                f"folder of the run): write '{name}'"
            )
            continue
        if not isinstance(entry, Mapping) or "config" not in entry:
            problems.append(
                f"stages.{name}: expected a mapping with a 'config' (a stage YAML), "
                f"'inputs' and 'overrides', got {entry!r:.80}"
            )
            continue
        extra = sorted(set(entry) - {"config", "inputs", "overrides", "data"})
        if extra:
            problems.append(f"stages.{name}: unknown keys {extra}")
        shapes = [
            _shape_problem(f"stages.{name}.{key}", entry[key], form)
            for key, form in (
                ("config", "config"),
                ("inputs", "inputs"),
                ("overrides", "overrides"),
                ("data", "data"),
            )
            if entry.get(key) is not None
        ]
        if any(shapes):
            problems += [problem for problem in shapes if problem]
            continue
        config = _resolve(entry["config"], base)
        if not config.is_file():
            problems.append(f"stages.{name}.config: {config} not found")
        stage_data = _resolve(entry["data"], base) if entry.get("data") else None
        if stage_data is not None and not stage_data.is_file():
            problems.append(f"stages.{name}.data: {stage_data} not found")
        stages[str(name)] = Stage(
            str(name),
            config,
            dict(entry.get("inputs") or {}),
            dict(entry.get("overrides") or {}),
            stage_data,
        )
    for stage in stages.values():
        for argument, source in stage.inputs.items():
            if source not in stages:
                problems.append(
                    f"stages.{stage.name}.inputs.{argument}: no stage {source!r} "
                    f"(the stages are {sorted(stages)})"
                )
    report = dict(raw.get("report") or {})
    for row, source in report.items():
        if source not in stages:
            problems.append(f"report.{row}: no stage {source!r} (the stages are {sorted(stages)})")
    comparisons = [tuple(pair) for pair in raw.get("comparisons") or []] or None
    for pair in comparisons or []:
        if len(pair) != 2 or any(name not in report for name in pair):
            problems.append(f"comparisons: {list(pair)} must name two rows of `report`")
    data_path = Path(data) if data else _resolve(raw["data"], base)
    if not data_path.is_file():
        problems.append(f"data: {data_path} not found")
    seeds = raw.get("seeds")
    if seeds is not None and (
        not isinstance(seeds, list)
        or not seeds
        or len(set(seeds)) != len(seeds)
        or not all(isinstance(seed, int) and seed >= 0 for seed in seeds)
    ):
        problems.append(f"seeds: a list of distinct non-negative integers, got {seeds!r}")
    references = dict(raw.get("references") or {})
    gap = raw.get("gap")
    if gap is not None and (
        not isinstance(gap, list)
        or len(gap) != 2
        or any(row not in report and row not in references for row in gap)
    ):
        problems.append(f"gap: [from row, to row] of `report` or `references`, got {gap!r}")
    run_folder = Path(run or raw.get("run") or "runs/pipeline")
    if run_folder.exists() and not run_folder.is_dir():
        problems.append(
            f"run: {run_folder} is a file, not a folder: the run folder holds a folder per stage"
        )
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return Pipeline(
        path,
        data_path,
        run_folder,
        stages,
        dict(raw.get("overrides") or {}),
        report,
        comparisons,
        str(raw.get("report_dir") or "."),
        dict(raw.get("slurm") or {}),
        seeds,
        references,
        tuple(gap) if gap else None,
    )
