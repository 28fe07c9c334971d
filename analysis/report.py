"""Compare detectors from their run folders: the paper's Table 2, the paired differences, and
the per-case analyses of Sections 3 and 6, with FROC curves and Figure S4-style galleries.

    python cli.py report --run Model_SM=runs/demo/stage1_sm \\
        --run Model_FFDM=runs/demo/stage1_ffdm \\
        --run BASE_UB=runs/demo/upper_bound --run Fused=runs/demo/stage3 --out runs/demo

Each run folder holds the ``predictions/`` that ``cli.py validate`` and ``cli.py test`` wrote
(``PredictionWriter``) with their ``{split}_info.json`` (whose boxes they are, the hit rule),
and the ``config.yaml`` of the data. Rows named ``Model_SM``, ``Model_FFDM``, ``BASE_UB`` and
``Fused`` take the paper's roles (paired differences Fused - Model_SM and Fused - Model_FFDM;
Section 6 needs the first two and Fused, Section 3 the first two); other names are compared
pairwise. Writes ``report.md``, ``report.json``, ``froc.png`` and ``gallery_*.png`` into
``--out`` and prints the tables.

The run folders are read in `analysis.model_runs`, the tables made in `analysis.tables`.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

from analysis.cases import (
    BUCKETS,
    bucket_breakdown,
    outcomes,
    section3_buckets,
    section6_cases,
    section6_counts,
)

# the names imported `as` themselves stay importable from here, where they were first
from analysis.model_runs import SPLITS as SPLITS
from analysis.model_runs import ModelRun as ModelRun
from analysis.model_runs import _table as _table
from analysis.model_runs import read_run, run_tables
from analysis.model_runs import run_info as run_info
from analysis.tables import DENSE as DENSE
from analysis.tables import PAPER_COMPARISONS as PAPER_COMPARISONS
from analysis.tables import (
    _format_differences,
    _markdown,
    comparison_pairs,
    fauc_table,
    format_fauc_table,
    format_sensitivity_table,
    paired_differences,
    sensitivity_table,
)
from metrics.froc import IncompleteDetections


# -- students ----------------------------------------------------------------------------------
def student_summary(folder: Path) -> dict | None:
    """A Stage II run's ``val_cosine`` (and per level) at its first and last validation."""
    path = Path(folder) / "history.csv"
    if not path.is_file():
        return None
    history = pd.read_csv(path).dropna(subset=["val_cosine"])
    if history.empty:
        return None
    columns = [
        "val_cosine",
        *sorted(c for c in history.columns if re.fullmatch(r"val_cosine_p\d+", c)),
    ]
    first, last = history.iloc[0], history.iloc[-1]
    return {
        "first": {"step": int(first["step"]), **{c: float(first[c]) for c in columns}},
        "last": {"step": int(last["step"]), **{c: float(last[c]) for c in columns}},
        "validations": int(len(history)),
    }


def _format_student(name: str, summary: dict) -> str:
    columns = [c for c in summary["first"] if c != "step"]
    rows = pd.DataFrame(
        [
            {
                "validation": f"first (step {summary['first']['step']})",
                **{c: f"{summary['first'][c]:.4f}" for c in columns},
            },
            {
                "validation": f"last (step {summary['last']['step']})",
                **{c: f"{summary['last'][c]:.4f}" for c in columns},
            },
        ]
    )
    return (
        f"### {name}: mean cosine similarity of z'_SM and h_FFDM (Eq. 2) on validation\n\n"
        + _markdown(rows)
    )


# -- the report --------------------------------------------------------------------------------
def build_report(
    runs: dict[str, str | Path],
    out: str | Path,
    max_fp: float = 1.0,
    target_fp: float = 1.0,
    n_boot: int = 2000,
    seed: int = 0,
    gallery_cases: int = 4,
    student_runs: dict[str, str | Path] | None = None,
    comparisons: list[tuple[str, str]] | None = None,
) -> dict:
    """Write ``report.md``, ``report.json``, ``froc.png`` and the galleries into ``out`` and
    return the report's numbers. Reads only the detections its numbers can reach, and every
    detection when some bootstrap resample needs more."""
    arguments = (
        runs,
        out,
        max_fp,
        target_fp,
        n_boot,
        seed,
        gallery_cases,
        student_runs,
        comparisons,
    )
    try:
        return _build_report(*arguments, prune=True)
    except IncompleteDetections as error:
        print(f"report: {error}; reading every detection")
        return _build_report(*arguments, prune=False)


def _build_report(
    runs,
    out,
    max_fp,
    target_fp,
    n_boot,
    seed,
    gallery_cases,
    student_runs,
    comparisons,
    prune: bool,
) -> dict:
    from analysis.gallery import plot_cases
    from metrics.plot import plot_froc

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data, manifest, lesions = run_tables(Path(next(iter(runs.values()))))
    models = [
        read_run(name, folder, manifest, lesions, max_fp, target_fp, prune)
        for name, folder in runs.items()
    ]
    distances = {model.hit_min_distance for model in models}
    if len(distances) > 1:
        raise ValueError(
            "the runs were scored with different hit rules (hit_min_distance "
            + ", ".join(f"{m.name} {m.hit_min_distance:g}" for m in models)
            + ")"
        )
    min_distance = distances.pop()
    by_name = {model.name: model for model in models}

    table = fauc_table(models, max_fp, n_boot, seed)
    pairs = comparisons or comparison_pairs(list(by_name))
    differences = paired_differences(models, pairs, max_fp, n_boot, seed)
    sensitivities = sensitivity_table(models, target_fp)
    outcome = {
        model.name: outcomes(
            model.matched["val"], model.matched["test"], model.lesions["test"], target_fp
        )
        for model in models
    }
    intervals = {row["model"]: row[f"FAUC-{max_fp:g} TEST CI"] for _, row in table.iterrows()}
    plot_froc(
        {model.name: model.matched["test"] for model in models},
        out / "froc.png",
        max_fp=max_fp,
        n_boot=min(n_boot, 1000),
        seed=seed,
        intervals=intervals,
        title=f"FROC on test (bands: 95% bootstrap), hit floor {min_distance:g} px",
    )

    sections: list[str] = []
    numbers: dict = {}
    galleries: list[str] = []
    test_manifest = manifest[manifest["split"] == "test"]

    def gallery(title: str, images: list[str], names: list[str]) -> None:
        slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")[:60]
        path = out / f"gallery_{slug}.png"
        panels = [(by_name[name], outcome[name].threshold) for name in names]
        plot_cases(title, images, panels, test_manifest, path, max_cases=gallery_cases, seed=seed)
        galleries.append(path.name)

    if {"Model_SM", "Model_FFDM"} <= set(by_name):
        sm, ffdm = outcome["Model_SM"], outcome["Model_FFDM"]
        buckets = section3_buckets(sm, ffdm)
        rows = []
        numbers["section3"] = {}
        for bucket in BUCKETS:
            breakdown = bucket_breakdown(bucket, buckets[bucket], sm, ffdm, test_manifest)
            numbers["section3"][bucket] = {"images": len(buckets[bucket]), **breakdown}
            rows.append(
                {
                    "bucket": bucket,
                    "test images": len(buckets[bucket]),
                    **{
                        f"{kind}": ", ".join(f"{k} {v}" for k, v in counts.items())
                        for kind, counts in breakdown.items()
                    },
                }
            )
            gallery(f"Section 3: {bucket}", buckets[bucket], ["Model_SM", "Model_FFDM"])
        sections += [
            f"## Section 3: where Model_SM and Model_FFDM differ (test, {target_fp:g} FP/image "
            "validation thresholds)",
            "Missed in FFDM (SM): a lesion Model_SM (Model_FFDM) finds and the other misses; "
            "false detections in FFDM (SM): images where that model alone has false positives "
            "above its threshold. Lesion kinds count the lesions missed; densities the images.",
            _markdown(pd.DataFrame(rows).fillna("-")),
        ]
    if {"Model_SM", "Model_FFDM", "Fused"} <= set(by_name):
        counts = section6_counts(outcome["Model_SM"], outcome["Model_FFDM"], outcome["Fused"])
        numbers["section6"] = counts
        cases = section6_cases(outcome["Model_SM"], outcome["Model_FFDM"], outcome["Fused"])
        for title, images in cases.items():
            gallery(f"Section 6: {title}", images, ["Model_SM", "Model_FFDM", "Fused"])
        sections += [
            "## Section 6: does the fused model miss fewer lesions? (test images with lesions)",
            _markdown(pd.DataFrame({"images": list(counts), "count": list(counts.values())})),
        ]
    students = {name: student_summary(folder) for name, folder in (student_runs or {}).items()}
    students = {name: summary for name, summary in students.items() if summary}
    if students:
        numbers["students"] = students
        sections += ["## Stage II"] + [_format_student(n, s) for n, s in students.items()]

    fauc_text = _markdown(format_fauc_table(table, max_fp))
    difference_text = _format_differences(differences, max_fp)
    sensitivity_text = _markdown(format_sensitivity_table(sensitivities))
    text = "\n\n".join(
        filter(
            None,
            [
                "# Detection report",
                f"Data: `{data['manifest']}`; hit: detection centre within max(half the lesion's "
                f"diagonal, {min_distance:g} px) of the lesion's centre, in original pixels. "
                f"CIs: 95% percentile bootstrap over images, {n_boot} replicates, seed {seed}; "
                "paired "
                "differences on the same resamples.",
                f"## FAUC-{max_fp:g} (Table 2's layout; + = images with at least one lesion)",
                fauc_text,
                difference_text,
                f"## Sensitivity on test at {target_fp:g} false positive(s) per image on "
                "validation",
                "Each model's threshold is the lowest score keeping its validation FP rate at or "
                f"below {target_fp:g}/image; cells are sensitivity (found/lesions).",
                sensitivity_text,
                *sections,
                "## Figures",
                "![FROC](froc.png)",
                *(f"![{name}]({name})" for name in galleries),
            ],
        )
    )
    (out / "report.md").write_text(text + "\n")
    numbers.update(
        {
            "fauc": json.loads(table.to_json(orient="records", double_precision=15)),
            "differences": differences,
            "sensitivity": json.loads(sensitivities.to_json(orient="records", double_precision=15)),
            "thresholds": {name: o.threshold for name, o in outcome.items()},
            "hit_min_distance": min_distance,
            "n_boot": n_boot,
            "seed": seed,
            "figures": ["froc.png", *galleries],
        }
    )
    (out / "report.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(
        f"\nFAUC-{max_fp:g} (Table 2)\n{fauc_text}\n\n{difference_text}\n\n"
        f"Sensitivity on test at {target_fp:g} FP/image (validation threshold)\n"
        f"{sensitivity_text}\n\nWritten: {out / 'report.md'}"
    )
    return numbers


def _named_run(text: str) -> tuple[str, str]:
    name, separator, folder = text.partition("=")
    if not separator or not name or not folder:
        raise argparse.ArgumentTypeError(f"--run takes NAME=FOLDER, got {text!r}")
    return name, folder


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cli.py report", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--run",
        type=_named_run,
        action="append",
        required=True,
        help="NAME=RUN_FOLDER, once per model (the run's default_root_dir)",
    )
    parser.add_argument(
        "--student",
        type=_named_run,
        action="append",
        default=[],
        help="NAME=RUN_FOLDER of a Stage II run (its val_cosine history)",
    )
    parser.add_argument("--out", required=True, help="folder for report.md and the figures")
    parser.add_argument("--max-fp", type=float, default=1.0)
    parser.add_argument("--target-fp", type=float, default=1.0)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build_report(
        dict(args.run),
        args.out,
        args.max_fp,
        args.target_fp,
        args.n_boot,
        args.seed,
        student_runs=dict(args.student),
    )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
