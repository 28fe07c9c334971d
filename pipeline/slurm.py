"""The pipeline as a chain of SLURM jobs: one job script per stage and a ``submit.sh`` that
submits them, each after the stages it reads (``--dependency=afterok``).

    python cli.py pipeline --config configs/pipeline/phantom.yaml --run runs/demo \\
        --emit-slurm jobs/ [--nodes 2 --devices 4 --partition gpu --time 24:00:00]
    bash jobs/submit.sh

Each job runs ``cli.py pipeline --only STAGE --launcher srun``: the same skipping, hashing and
resuming as a local run, with the fit and the assessment started on every task by ``srun``.
A job that reaches its time limit, or is pre-empted, gets SLURM's signal ``grace`` seconds
before: the fit saves, the job is requeued (same id, log appended) and resumes, and the stages
after it (``afterok``) wait for it. Resources come from,
in order: the defaults here, the pipeline config's ``slurm:`` section (its ``stages:`` entry
per stage), then the command line. The job script is ``configs/cluster/stage.sbatch``, filled
per stage.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "configs" / "cluster" / "stage.sbatch"
DEFAULTS: dict[str, Any] = {
    "nodes": 1,  # nodes per stage
    "devices": 1,  # devices (tasks) per node
    "gpus": True,  # request the devices as GPUs (--gpus-per-node)
    "accelerator": "gpu",  # the Trainer's accelerator
    "cpus_per_task": 8,  # data-loading workers + 1, per task (srun is given it too)
    "mem": None,  # memory per node (--mem), e.g. "200G"
    "mem_per_gpu": None,  # or per GPU (--mem-per-gpu), e.g. "60G"
    "time": "24:00:00",
    # SLURM signals the stage's tasks this many seconds before its time limit (USR1, which
    # Lightning listens for): the fit saves, the job is requeued and resumes. 0/None: no signal.
    "grace": 300,
    "requeue": True,  # the job may be requeued (on the signal, or by pre-emption)
    "partition": None,
    "account": None,
    "sbatch": [],  # further #SBATCH options, e.g. ["--qos=high"]
}


def stage_resources(slurm: dict[str, Any], stage: str, command_line: dict[str, Any]) -> dict:
    """One stage's resources: defaults < the config's ``slurm`` < its ``stages`` entry < the
    command line."""
    unknown = sorted(set(slurm) - set(DEFAULTS) - {"stages"})
    per_stage = (slurm.get("stages") or {}).get(stage) or {}
    unknown += sorted(set(per_stage) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"slurm: unknown keys {unknown}; known: {sorted(DEFAULTS)}")
    merged = {**DEFAULTS, **{k: v for k, v in slurm.items() if k != "stages"}, **per_stage}
    merged.update({key: value for key, value in command_line.items() if value is not None})
    return merged


def emit_slurm(
    pipeline, out: str | Path, command_line: dict[str, Any] | None = None, python: str | None = None
) -> list[Path]:
    """Write ``<out>/<stage>.sbatch`` per stage, ``report.sbatch`` and ``submit.sh``; return
    the paths written."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    template = TEMPLATE.read_text()
    python = python or sys.executable
    run = pipeline.run.resolve()
    written = []
    order = pipeline.order()
    for stage in [*order, "report"]:
        resources = stage_resources(
            pipeline.slurm, stage if stage != "report" else "", command_line or {}
        )
        if stage == "report":  # a small job that finds every stage done and writes the report
            resources.update(nodes=1, devices=1, gpus=False, accelerator="cpu", mem_per_gpu=None)
        if resources["mem"] and resources["mem_per_gpu"]:
            raise ValueError(f"slurm ({stage}): give mem or mem_per_gpu, not both")
        lines = []
        if resources["gpus"]:
            lines.append(f"#SBATCH --gpus-per-node={resources['devices']}")
        for key in ("partition", "account", "mem", "mem_per_gpu"):
            if resources[key]:
                lines.append(f"#SBATCH --{key.replace('_', '-')}={resources[key]}")
        if resources["requeue"]:
            lines.append("#SBATCH --requeue")
        if resources["grace"]:
            # no "B:": the signal goes to the job's steps (the srun tasks), where Lightning is
            lines.append(f"#SBATCH --signal=USR1@{int(resources['grace'])}")
        lines += [f"#SBATCH {option}" for option in resources["sbatch"]]
        text = template.format(
            stage=stage if stage != "report" else "report",
            nodes=resources["nodes"],
            devices=resources["devices"],
            cpus_per_task=resources["cpus_per_task"],
            time=resources["time"],
            log=run / "slurm" / f"{stage}-%j.out",
            sbatch_lines="\n".join(lines),
            repo=shlex.quote(str(ROOT)),
            python=shlex.quote(python),
            pipeline=shlex.quote(str(pipeline.path.resolve())),
            run=shlex.quote(str(run)),
            accelerator=resources["accelerator"],
        )
        if stage == "report":  # every stage, skipped when done, then the report
            text = text.replace(" --only report", "")
        path = out / f"{stage}.sbatch"
        path.write_text(text)
        written.append(path)
    submit = [
        "#!/bin/bash",
        "# Submit the pipeline's stages, each after the stages whose artifacts it reads.",
        f"# Written by cli.py pipeline --emit-slurm for {pipeline.path}.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        f"mkdir -p {shlex.quote(str(run / 'slurm'))}",
        ": > jobs.txt",
    ]
    for stage in order:
        sources = sorted(set(pipeline.stages[stage].inputs.values()))
        dependency = ""
        if sources:
            dependency = "--dependency=afterok:" + ":".join(f"${_var(s)}" for s in sources) + " "
        submit.append(f"{_var(stage)}=$(sbatch --parsable {dependency}{stage}.sbatch)")
        submit.append(f'echo "{stage} ${_var(stage)}" | tee -a jobs.txt')
    everything = ":".join(f"${_var(stage)}" for stage in order)
    submit.append(f"report=$(sbatch --parsable --dependency=afterok:{everything} report.sbatch)")
    submit.append('echo "report $report" | tee -a jobs.txt')
    path = out / "submit.sh"
    path.write_text("\n".join(submit) + "\n")
    path.chmod(0o755)
    written.append(path)
    return written


def _var(stage: str) -> str:
    return "job_" + "".join(c if c.isalnum() else "_" for c in stage)
