"""The whole experiment as one pipeline: Stage I (SM, FFDM), Stage II, Stage III and BASE_UB,
each a real ``cli.py fit`` then ``validate``/``test`` in its own run folder, wired by artifact
path, then the report.

    python cli.py pipeline --config configs/pipeline/phantom.yaml [--data FILE] [--run DIR] \\
        [--from STAGE] [--only STAGE] [--no-report] [--seeds 0 1 2]

A pipeline config names one data config and, per stage, its stage config, the earlier stages
whose artifacts it reads (``inputs``: init argument -> stage) and any ``overrides`` (dotted
config keys); ``overrides`` at the top apply to every stage, and ``report`` maps Table 2's
row names to stages. The pipeline is a function of its inputs: a stage whose artifact exists
for the same *stage hash* (its stage and data configs, the overrides, the manifest's and
lesion table's contents, and its input artifacts' SHA-256) is skipped, so a retrained teacher
retrains its students and nothing else; a stage killed mid-fit resumes from its
``last.ckpt`` (or, stopped by SLURM's signal, from its requeue checkpoint: whichever is newer);
``--from STAGE`` reruns that stage and every later one.

A stage may train on another data config (its own ``data``); it is still assessed on the
pipeline's, so that every row of the report is scored on the same images.

Training seeds (``seeds:`` in the config, or ``--seeds 0 1 2``) run the whole pipeline once
per seed, in ``<run>/seed<k>/``, with ``seed_everything`` and the data's ``train_seed`` set to
k (the split stays the data config's), then write ``<run>/seeds_report.md``
(``analysis.seeds``): each model's FAUC over seeds and each comparison per seed and pooled.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from callbacks.requeue import EXIT_REQUEUED
from common.io import sha256_file, write_atomically
from lightning_modules.artifacts import is_artifact, read_artifact, read_checkpoint

STAGE_ORDER = ("stage1_sm", "stage1_ffdm", "stage2", "stage3", "upper_bound")
STATE_FILE = "stage.json"
REQUEUE_CHECKPOINTS = "hpc_ckpt_*.ckpt"  # Lightning's name for them, in the run folder
CLI = str(Path(__file__).resolve().parents[1] / "cli.py")


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


@dataclass(frozen=True)
class Launch:
    """How a stage's fit and assessment are started, both on the same devices and nodes:
    ``local`` (Lightning starts its own processes for ``devices > 1``) or ``srun`` inside a
    SLURM allocation (one task per device, each with ``cpus_per_task`` CPUs)."""

    launcher: str = "local"
    num_nodes: int | None = None
    devices: int | None = None
    accelerator: str | None = None
    cpus_per_task: int | None = None

    def trainer_args(self) -> list[str]:
        args = []
        if self.num_nodes is not None:
            args.append(f"--trainer.num_nodes={self.num_nodes}")
        if self.devices is not None:
            args.append(f"--trainer.devices={self.devices}")
        if (self.devices or 1) * (self.num_nodes or 1) > 1:
            args.append("--trainer.strategy=ddp")
        if self.accelerator is not None:
            args.append(f"--trainer.accelerator={self.accelerator}")
        return args

    def prefix(self) -> list[str]:
        if self.launcher != "srun":
            return []
        # srun is given the CPUs per task explicitly: whether a step inherits the job's
        # --cpus-per-task differs between Slurm versions.
        cpus = [f"--cpus-per-task={self.cpus_per_task}"] if self.cpus_per_task else []
        return ["srun", "--kill-on-bad-exit=1", *cpus]


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


# -- hashing ------------------------------------------------------------------------------------
def _data_fingerprint(data_config: Path) -> dict[str, Any]:
    """The data config and the SHA-256 of the tables it names (not of every image)."""
    config = yaml.safe_load(data_config.read_text()) or {}
    init = ((config.get("data") or {}).get("init_args")) or {}
    tables = {}
    manifest = init.get("manifest")
    if manifest:
        manifest_path = Path(manifest)
        if manifest_path.is_dir():
            manifest_path = manifest_path / "manifest.csv"
        lesions = (
            Path(init["lesions"]) if init.get("lesions") else (manifest_path.parent / "lesions.csv")
        )
        for name, table in (("manifest", manifest_path), ("lesions", lesions)):
            tables[name] = sha256_file(table) if table.is_file() else None
    return {"config": config, "tables": tables}


def stage_hash(pipeline: Pipeline, stage: Stage) -> str:
    """What the stage's weights are a function of (see the module docstring).

    Passed to the fit as ``--handoff.config_hash``, so it is what the stage's artifact records
    as ``config_hash`` (and ``stage.json`` as ``hash``); ``is_current`` compares the two. It is
    not ``callbacks.handoff.config_hash``, the default of a run started by hand, which hashes
    Lightning's resolved config instead of the pipeline's stage definition and data tables."""
    inputs = {}
    for argument, source in sorted(stage.inputs.items()):
        artifact = pipeline.run / source / "artifact"
        inputs[argument] = read_artifact(artifact, argument).meta["weights_sha256"]
    payload = {
        "stage": yaml.safe_load(stage.config.read_text()),
        "data": _data_fingerprint(pipeline.data),
        "overrides": {**pipeline.overrides, **stage.overrides},
        "inputs": inputs,
    }
    if stage.data is not None:  # trained on its own data, assessed on the pipeline's
        payload["training_data"] = _data_fingerprint(stage.data)
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# -- running ------------------------------------------------------------------------------------
def _data_class(data_config: Path) -> str:
    config = yaml.safe_load(data_config.read_text()) or {}
    return str((config.get("data") or {}).get("class_path") or "")


def _override_args(overrides: Mapping[str, Any]) -> list[str]:
    args = []
    for key, value in overrides.items():
        text = value if isinstance(value, str) else json.dumps(value)
        args.append(f"--{key}={text}")
    return args


def _lightning(
    command: str,
    pipeline: Pipeline,
    stage: Stage,
    folder: Path,
    *extra: str,
    launch: Launch = Launch(),
) -> None:
    data = stage.data if (stage.data is not None and command == "fit") else pipeline.data
    args = [
        *launch.prefix(),
        sys.executable,
        CLI,
        command,
        "--config",
        str(data),
        "--config",
        str(stage.config),
        "--trainer.default_root_dir",
        str(folder),
    ]
    for argument, source in stage.inputs.items():
        args.append(f"--model.init_args.{argument}={pipeline.run / source / 'artifact'}")
    if _data_class(data).endswith("PairedMammoDataModule"):
        # one data check for all stages (datamodules/paired.py keeps its result there)
        args.append(f"--data.init_args.check_dir={pipeline.run / 'data_checks'}")
    args += _override_args({**pipeline.overrides, **stage.overrides})
    args += launch.trainer_args()
    args += list(extra)
    finished = subprocess.run(args, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if finished.returncode == EXIT_REQUEUED:
        raise Requeued(
            f"stage {stage.name}: `cli.py {command}` stopped for SLURM's requeue; "
            "the job resumes the stage when it runs again"
        )
    if finished.returncode != 0:
        raise RuntimeError(
            f"stage {stage.name}: `cli.py {command}` failed with exit code "
            f"{finished.returncode} (command: {' '.join(args)})"
        )


class Requeued(RuntimeError):
    """A stage stopped for a SLURM requeue: the job runs again and resumes it."""


def _state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    # one process writes a stage's state: a fixed temporary name, which a killed run's
    # next write reuses rather than leaving one more behind
    write_atomically(
        folder / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n", unique=False
    )


def is_current(folder: Path, digest: str) -> bool:
    """True when the stage folder holds a finished stage for this hash."""
    state = _state(folder)
    artifact = folder / "artifact"
    if state.get("hash") != digest or state.get("status") != "done" or not is_artifact(artifact):
        return False
    try:
        meta = read_artifact(artifact).meta
    except (OSError, ValueError):
        return False
    return meta.get("config_hash") == digest and meta.get("weights_sha256") == state.get(
        "weights_sha256"
    )


def run_stage(
    pipeline: Pipeline, stage: Stage, digest: str, log=print, launch: Launch = Launch()
) -> dict[str, Any]:
    """Fit (or resume) one stage, then write its validation and test predictions. A stage cut
    off mid-fit (killed, or stopped for a SLURM requeue) resumes from the newest readable of its
    requeue checkpoints and ``last.ckpt``; one cut off while assessing is assessed again."""
    folder = pipeline.run / stage.name
    state = _state(folder)
    same = state.get("hash") == digest
    started = time.time()
    if same and state.get("status") == "assessing" and is_artifact(folder / "artifact"):
        log(f"[pipeline] {stage.name}: fitted; assessing it again (cut off while assessing)")
        fit_seconds = state.get("fit_seconds")
    else:
        extra = [f"--handoff.config_hash={digest}"]
        resume = (
            _newest_checkpoint(folder, log) if same and state.get("status") == "fitting" else None
        )
        if resume is not None:
            log(f"[pipeline] {stage.name}: resuming the interrupted fit from {resume}")
            extra.append(f"--ckpt_path={resume}")
        elif folder.exists():
            if same and state.get("status") == "fitting":
                log(
                    f"[pipeline] {stage.name}: no readable checkpoint of the interrupted fit; "
                    "starting the stage over"
                )
            shutil.rmtree(folder)  # another config's (or a finished stale) run: start clean
        _write_state(folder, {"hash": digest, "status": "fitting", "started": started})
        _lightning("fit", pipeline, stage, folder, *extra, launch=launch)
        for requeue_checkpoint in folder.glob(REQUEUE_CHECKPOINTS):
            requeue_checkpoint.unlink()  # they only serve to resume the fit
        fit_seconds = round(time.time() - started, 1)
        _write_state(
            folder,
            {"hash": digest, "status": "assessing", "started": started, "fit_seconds": fit_seconds},
        )
    fitted = time.time()
    artifact = read_artifact(folder / "artifact")
    checkpoint = artifact.meta["checkpoint"]
    _lightning("assess", pipeline, stage, folder, f"--ckpt_path={checkpoint}", launch=launch)
    finished = time.time()
    state = {
        "hash": digest,
        "status": "done",
        "weights_sha256": artifact.meta["weights_sha256"],
        "checkpoint": checkpoint,
        "fit_seconds": fit_seconds,
        "evaluate_seconds": round(finished - fitted, 1),
        "seconds": round(finished - started, 1),
    }
    _write_state(folder, state)
    return state


def _newest_checkpoint(folder: Path, log=print) -> Path | None:
    """The newest readable of a stage's requeue checkpoints (``hpc_ckpt_<n>.ckpt``, written
    on SLURM's signal) and its ``last.ckpt`` (validation ends and the wall-clock timer): the
    one of most training steps, the later written of two with as many."""
    newest, newest_key = None, None
    for path in [*folder.glob(REQUEUE_CHECKPOINTS), folder / "checkpoints" / "last.ckpt"]:
        if not path.is_file():
            continue
        try:
            steps = int(read_checkpoint(path).get("global_step", 0))
        except ValueError:
            log(
                f"[pipeline] {folder.name}: {path} is unreadable (cut off while written?); "
                "not resuming from it"
            )
            continue
        key = (steps, path.stat().st_mtime_ns)
        if newest_key is None or key > newest_key:
            newest, newest_key = path, key
    return newest


def _eta(
    remaining: list[str], history: dict[str, float], states: dict[str, dict[str, Any]]
) -> float | None:
    """Seconds the remaining stages should take: each one's duration in an earlier run of this
    folder, else the mean of the stages trained so far in this run (None before the first)."""
    trained = [state["seconds"] for state in states.values() if not state.get("skipped")]
    fallback = sum(trained) / len(trained) if trained else None
    estimates = [history.get(name, fallback) for name in remaining]
    return None if any(value is None for value in estimates) else sum(estimates)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}m{seconds:02d}s"


def run_pipeline(
    pipeline: Pipeline,
    start_from: str | None = None,
    only: str | None = None,
    report: bool = True,
    log=print,
    launch: Launch = Launch(),
) -> dict[str, Any]:
    """Run (or skip) every stage in order, then the report. Returns per-stage states (per
    seed, under ``"seeds"``, when the pipeline has training seeds)."""
    if pipeline.seeds:
        states = {}
        for seed in pipeline.seeds:
            log(f"[pipeline] training seed {seed}: {pipeline.run / f'seed{seed}'}")
            states[seed] = run_pipeline(
                pipeline.seeded(seed), start_from, only, report, log, launch
            )
        if report and pipeline.report and not only:
            from analysis.seeds import build_seed_report

            build_seed_report(pipeline)
        return {"seeds": states}
    order = pipeline.order()
    for name, flag in ((start_from, "--from"), (only, "--only")):
        if name is not None and name not in pipeline.stages:
            raise ValueError(f"{flag} {name!r}: the pipeline's stages are {order}")
    selected = [only] if only else order
    forced = set(order[order.index(start_from) :]) if start_from else set()
    history_path = pipeline.run / "durations.json"
    history = json.loads(history_path.read_text()) if history_path.is_file() else {}
    began, states = time.time(), {}
    for index, name in enumerate(selected):
        stage = pipeline.stages[name]
        folder = pipeline.run / name
        missing = [
            source
            for source in stage.inputs.values()
            if not is_artifact(pipeline.run / source / "artifact")
        ]
        if missing:
            raise RuntimeError(
                f"stage {name} needs the artifacts of {missing}: run them first (without --only)"
            )
        digest = stage_hash(pipeline, stage)
        elapsed = time.time() - began
        eta = _eta([name for name in selected[index:]], history, states)
        prefix = f"[pipeline] {index + 1}/{len(selected)} {name}"
        if name not in forced and is_current(folder, digest):
            log(f"{prefix}: up to date (hash {digest[:12]}), skipped | elapsed {_clock(elapsed)}")
            states[name] = {**_state(folder), "skipped": True}
            continue
        if name in forced and (folder / STATE_FILE).is_file():
            (folder / STATE_FILE).unlink()  # rerun from scratch
        log(f"{prefix}: training ({stage.config}) | elapsed {_clock(elapsed)} | ETA {_clock(eta)}")
        states[name] = run_stage(pipeline, stage, digest, log, launch)
        history[name] = states[name]["seconds"]
        history_path.parent.mkdir(parents=True, exist_ok=True)
        history_path.write_text(json.dumps(history, indent=2) + "\n")
        log(
            f"{prefix}: done in {_clock(states[name]['seconds'])} (fit "
            f"{_clock(states[name]['fit_seconds'])}) | elapsed {_clock(time.time() - began)}"
        )
    summary = {"stages": states, "seconds": round(time.time() - began, 1)}
    (pipeline.run / "pipeline.json").write_text(json.dumps(summary, indent=2) + "\n")
    if report and pipeline.report and not only:
        from analysis.report import build_report

        rows = {row: pipeline.run / stage for row, stage in pipeline.report.items()}
        extra = {"stage2": pipeline.run / "stage2"} if "stage2" in pipeline.stages else {}
        build_report(
            rows,
            pipeline.run / pipeline.report_dir,
            student_runs=extra,
            comparisons=pipeline.comparisons,
        )
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cli.py pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a pipeline YAML (configs/pipeline/)")
    parser.add_argument("--data", help="a data config replacing the pipeline's")
    parser.add_argument("--run", help="the run folder (default: the config's `run`)")
    parser.add_argument(
        "--from", dest="start_from", metavar="STAGE", help="rerun this stage and every later one"
    )
    parser.add_argument("--only", metavar="STAGE", help="run this stage alone")
    parser.add_argument("--no-report", action="store_true", help="skip the report")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="training seeds: the whole pipeline once per seed in "
        "<run>/seed<k>, then the seeds report (replaces the config's)",
    )
    cluster = parser.add_argument_group("devices and clusters")
    cluster.add_argument(
        "--launcher",
        choices=("local", "srun"),
        default="local",
        help="srun: inside a SLURM job, start each fit on every task",
    )
    cluster.add_argument("--num-nodes", type=int, help="nodes per stage (trainer.num_nodes)")
    cluster.add_argument("--devices", type=int, help="devices per node (trainer.devices)")
    cluster.add_argument("--accelerator", help="trainer.accelerator (gpu, cpu, auto)")
    cluster.add_argument(
        "--emit-slurm",
        metavar="DIR",
        help="write one SLURM job per stage and submit.sh, and run nothing",
    )
    cluster.add_argument(
        "--cpus-per-task",
        type=int,
        help="CPUs of each task (srun --cpus-per-task; and --emit-slurm)",
    )
    for flag in ("--partition", "--account", "--time", "--mem", "--mem-per-gpu"):
        cluster.add_argument(flag, help="for --emit-slurm")
    cluster.add_argument(
        "--grace",
        type=int,
        metavar="SECONDS",
        help="for --emit-slurm: SLURM signals a stage this long before its "
        "time limit (--signal=USR1@SECONDS); it saves and requeues "
        "(0: no signal)",
    )
    cluster.add_argument(
        "--requeue",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="for --emit-slurm: jobs may be requeued (sbatch --requeue)",
    )
    cluster.add_argument(
        "--no-gpus", action="store_true", help="for --emit-slurm: request no GPUs (CPU jobs)"
    )
    args = parser.parse_args(argv)
    try:
        pipeline = load_pipeline(args.config, args.data, args.run)
        if args.seeds:
            if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
                raise ValueError(f"--seeds: distinct non-negative integers, got {args.seeds}")
            pipeline = replace(pipeline, seeds=list(args.seeds))
        if args.emit_slurm and pipeline.seeds:
            if len(pipeline.seeds) > 1:
                raise ValueError(
                    "--emit-slurm writes one job chain: emit one per training seed "
                    "(--seeds K); once all have run, the same command with every "
                    "seed and no --emit-slurm skips every stage and writes the "
                    "seeds report"
                )
            pipeline = pipeline.seeded(pipeline.seeds[0])
        if args.emit_slurm:
            from pipeline.slurm import emit_slurm

            written = emit_slurm(
                pipeline,
                args.emit_slurm,
                {
                    "nodes": args.num_nodes,
                    "devices": args.devices,
                    "accelerator": args.accelerator,
                    "partition": args.partition,
                    "account": args.account,
                    "time": args.time,
                    "mem": args.mem,
                    "mem_per_gpu": args.mem_per_gpu,
                    "grace": args.grace,
                    "requeue": args.requeue,
                    "cpus_per_task": args.cpus_per_task,
                    "gpus": False if args.no_gpus else None,
                },
            )
            print(
                f"wrote {len(written)} files to {args.emit_slurm}; submit with: bash "
                f"{Path(args.emit_slurm) / 'submit.sh'}"
            )
            return 0
        launch = Launch(
            args.launcher, args.num_nodes, args.devices, args.accelerator, args.cpus_per_task
        )
        run_pipeline(pipeline, args.start_from, args.only, report=not args.no_report, launch=launch)
    except Requeued as stopped:
        print(f"[pipeline] {stopped}", file=sys.stderr)
        return EXIT_REQUEUED
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
