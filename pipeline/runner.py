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
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from callbacks.requeue import EXIT_REQUEUED
from lightning_modules.artifacts import is_artifact, read_artifact
from pipeline.config import Pipeline, Stage, load_pipeline
from pipeline.hashing import stage_hash
from pipeline.state import (
    REQUEUE_CHECKPOINTS,
    STATE_FILE,
    _newest_checkpoint,
    _state,
    _write_state,
    is_current,
)

CLI = str(Path(__file__).resolve().parents[1] / "cli.py")


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
