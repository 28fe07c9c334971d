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
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis.cases import (
    BUCKETS,
    bucket_breakdown,
    outcomes,
    section3_buckets,
    section6_cases,
    section6_counts,
)
from common.defaults import HIT_MIN_DISTANCE, SPLIT_FRACTIONS
from datamodules.manifest import load_tables
from metrics.evaluate import BOX_COLUMNS, EvaluationTables, cap_message, read_evaluation_tables
from metrics.froc import (
    IncompleteDetections,
    MatchedDetections,
    bootstrap_fauc,
    bootstrap_replicates,
    fauc,
    lesions_found,
    operating_point,
    paired_bootstrap_fauc,
    threshold_at_fp,
)

SPLITS = ("val", "test")
DENSE = ("C", "D")
PAPER_COMPARISONS = (
    ("Fused", "Model_SM"),
    ("Fused", "Model_FFDM"),
    ("BASE_UB", "Model_SM"),
    ("BASE_UB", "Model_FFDM"),
    ("BASE_UB", "Fused"),
)


@dataclass
class ModelRun:
    """One model's evaluation records, read from its run folder."""

    name: str
    folder: Path
    modality: str
    hit_min_distance: float
    tables: dict[str, EvaluationTables]
    matched: dict[str, MatchedDetections]
    lesions: dict[str, pd.DataFrame]  # ground truth rows joined to the lesion table's columns


def run_info(name: str, folder: Path) -> dict:
    """What the run's prediction files say of themselves (``{split}_info.json``); the
    validation threshold is applied to test, so both must come from the same weights."""
    infos = {}
    for split in SPLITS:
        path = folder / "predictions" / f"{split}_info.json"
        if not path.is_file():
            command = "validate" if split == "val" else "test"
            raise FileNotFoundError(
                f"{path} not found: run `python cli.py {command} ...` for {name} first"
            )
        infos[split] = json.loads(path.read_text())
    steps = {split: info.get("trained_steps") for split, info in infos.items()}
    if steps["val"] != steps["test"]:
        raise ValueError(
            f"{name}: validation predictions come from weights trained {steps['val']} steps, "
            f"test predictions from weights trained {steps['test']} steps; run `python cli.py "
            f"validate` with the checkpoint you tested (files in {folder / 'predictions'})"
        )
    for key in ("modality", "hit_min_distance"):
        values = {info.get(key) for info in infos.values()}
        if len(values) > 1:
            raise ValueError(
                f"{name}: the validation and test predictions differ in {key}: "
                f"{sorted(map(str, values))}"
            )
    return infos["test"]


def read_run(
    name: str,
    folder: str | Path,
    manifest: pd.DataFrame,
    lesions: pd.DataFrame,
    max_fp: float = 1.0,
    target_fp: float = 1.0,
    prune: bool = True,
) -> ModelRun:
    """Match a run's ``{val,test}`` predictions with its own hit rule; ground-truth rows get
    their lesion's attributes (``lesion_type``, ...) and their pair's (``density``, ...).

    With ``prune``, only the detections the report reads are kept: on validation those of
    FAUC-``max_fp`` and the ``target_fp`` threshold, on test those of FAUC-``max_fp``, the FROC
    figure (to 2 ``max_fp``) and everything down to the validation threshold."""
    folder = Path(folder)
    info = run_info(name, folder)
    modality = info.get("modality") or "sm"
    distance = float(info.get("hit_min_distance", HIT_MIN_DISTANCE))
    tables, matched, joined = {}, {}, {}
    floor = np.inf
    for split, reach in (("val", max(max_fp, target_fp)), ("test", max(2 * max_fp, target_fp))):
        tables[split] = read_evaluation_tables(
            *(_table(folder, split, table) for table in ("predictions", "ground_truth", "images")),
            fp_per_image=reach if prune else None,
            min_score=floor,
        ).sorted_by_image()
        matched[split] = tables[split].match(min_distance=distance)
        joined[split] = _join_lesions(tables[split].ground_truth, lesions, manifest, modality)
        if split == "val":
            floor = threshold_at_fp(matched[split], target_fp)  # applied to test
        capped = tables[split].capped_above(matched[split], max_fp)
        if capped:
            print(cap_message(capped, max_fp, f"report: {name}, {split}"))
    return ModelRun(name, folder, modality, distance, tables, matched, joined)


def _table(folder: Path, split: str, table: str) -> Path:
    """A run's ``{split}_{table}.parquet``, or the ``.csv`` older runs wrote."""
    path = folder / "predictions" / f"{split}_{table}.parquet"
    legacy = path.with_suffix(".csv")
    return legacy if not path.exists() and legacy.exists() else path


def _run_config(folder: Path) -> dict:
    path = folder / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {folder} a LightningCLI run folder?")
    return yaml.safe_load(path.read_text())


def run_tables(folder: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The data settings of a run folder's config, and its manifest (with splits) and lesion
    table."""
    data = _run_config(folder)["data"]["init_args"]
    fractions = tuple(data.get("split_fractions", SPLIT_FRACTIONS))
    manifest, lesions, _ = load_tables(
        data["manifest"], data.get("lesions"), seed=data.get("seed", 0), fractions=fractions
    )
    return data, manifest, lesions


def _join_lesions(
    ground_truth: pd.DataFrame, lesions: pd.DataFrame, manifest: pd.DataFrame, modality: str
) -> pd.DataFrame:
    """Ground-truth rows (in order) with the lesion table's and manifest's extra columns."""
    own = lesions[lesions["modality"] == modality].rename(columns={"pair_id": "image_id"})
    keys = ["image_id", *BOX_COLUMNS]
    boxes = list(BOX_COLUMNS)
    own = own.astype(dict.fromkeys(boxes, float)).drop_duplicates(keys)
    left = ground_truth.drop(columns=["image_index"], errors="ignore").astype(
        dict.fromkeys(boxes, float)
    )
    joined = left.merge(own.drop(columns=["modality"]), on=keys, how="left", validate="m:1")
    pairs = manifest.rename(columns={"pair_id": "image_id"})
    extra = [c for c in pairs.columns if c not in joined.columns or c == "image_id"]
    return joined.merge(pairs[extra], on="image_id", how="left", validate="m:1")


# -- Table 2 and the paired differences ------------------------------------------------------
def fauc_table(runs: list[ModelRun], max_fp: float, n_boot: int, seed: int) -> pd.DataFrame:
    """Table 2: FAUC-x with 95% CIs, on validation and test, all and positive images."""
    for split in SPLITS:  # every model on each set of resamples at once, each drawn once
        records = [run.matched[split] for run in runs]
        bootstrap_replicates(
            [*records, *(r.positive_images() for r in records)], max_fp, n_boot, seed
        )
    rows = []
    for run in runs:
        row = {"model": run.name}
        for split in SPLITS:
            for suffix, records in (
                ("+", run.matched[split].positive_images()),
                ("", run.matched[split]),
            ):
                interval = bootstrap_fauc(records, max_fp, n_boot=n_boot, seed=seed)
                column = f"FAUC-{max_fp:g} {split.upper()}{suffix}"
                row[column] = fauc(records, max_fp)
                row[f"{column} CI"] = (interval.low, interval.high)
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_pairs(names: list[str]) -> list[tuple[str, str]]:
    """The paper's differences among the rows present, else every pair in the given order."""
    pairs = [(a, b) for a, b in PAPER_COMPARISONS if a in names and b in names]
    if pairs:
        return pairs
    return [(a, b) for index, a in enumerate(names) for b in names[index + 1 :]]


def paired_differences(
    runs: list[ModelRun], pairs: list[tuple[str, str]], max_fp: float, n_boot: int, seed: int
) -> list[dict]:
    """FAUC on test of a minus b, on the same bootstrap resamples of the test images."""
    by_name = {run.name: run for run in runs}
    results = []
    for a, b in pairs:
        first, second = by_name[a], by_name[b]
        paired = paired_bootstrap_fauc(
            first.matched["test"],
            second.matched["test"],
            max_fp,
            n_boot=n_boot,
            seed=seed,
            same_lesions=first.modality == second.modality,
        )
        results.append(
            {
                "models": f"{a} - {b}",
                "difference": paired.difference,
                "ci95": [paired.low, paired.high],
                "p_value": paired.p_value,
                "ci_excludes_zero": bool(paired.low > 0 or paired.high < 0),
            }
        )
    return results


def sensitivity_table(runs: list[ModelRun], target_fp: float) -> pd.DataFrame:
    """Sensitivity on test at the validation threshold giving ``target_fp`` FP per image,
    overall, per lesion kind, per density, and for masses in dense breasts."""
    rows = []
    for run in runs:
        threshold = threshold_at_fp(run.matched["val"], target_fp)
        point = operating_point(run.matched["test"], threshold)
        found = lesions_found(run.matched["test"], threshold)
        lesions = run.lesions["test"].assign(found=found)
        row = {
            "model": run.name,
            "threshold (val)": threshold,
            "FP/image (test)": point.fp_rate,
            "all lesions": _rate(lesions),
        }
        for kind, group in _groups(lesions, "lesion_type"):
            row[f"{kind}"] = _rate(group)
        for density, group in _groups(lesions, "density"):
            row[f"density {density}"] = _rate(group)
        if {"lesion_type", "density"} <= set(lesions.columns):
            dense_masses = lesions[
                (lesions["lesion_type"] == "mass") & lesions["density"].isin(DENSE)
            ]
            row["masses, dense (C/D)"] = _rate(dense_masses)
        rows.append(row)
    return pd.DataFrame(rows)


def _groups(lesions: pd.DataFrame, column: str):
    if column not in lesions.columns:
        return []
    return sorted(lesions.groupby(lesions[column].fillna("unknown").astype(str)))


def _rate(lesions: pd.DataFrame) -> tuple[int, int]:
    return int(lesions["found"].sum()), int(len(lesions))


# -- formatting -------------------------------------------------------------------------------
def _format_rate(value) -> str:
    found, total = value
    return f"{found / total:.3f} ({found}/{total})" if total else "-"


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(value) for value in row) + " |")
    return "\n".join(lines)


def _interval(value: float, interval) -> str:
    return f"{value:.3f} ({interval[0]:.3f}-{interval[1]:.3f})"


def format_fauc_table(table: pd.DataFrame, max_fp: float) -> pd.DataFrame:
    """Table 2's layout: ``FAUC+ (CI) / FAUC (CI)`` per split."""
    formatted = {"Experiment": table["model"]}
    for split in SPLITS:
        name = f"FAUC-{max_fp:g} {split.upper()}"
        formatted[f"{name}+ / {name}"] = [
            f"{_interval(row[name + '+'], row[name + '+ CI'])} / "
            f"{_interval(row[name], row[name + ' CI'])}"
            for _, row in table.iterrows()
        ]
    return pd.DataFrame(formatted)


def format_sensitivity_table(table: pd.DataFrame) -> pd.DataFrame:
    formatted = table.copy()
    for column in formatted.columns:
        if column == "model":
            continue
        if column in ("threshold (val)", "FP/image (test)"):
            formatted[column] = formatted[column].map(lambda value: f"{value:.3f}")
        else:
            formatted[column] = formatted[column].map(
                lambda value: _format_rate(value) if isinstance(value, tuple) else "-"
            )
    return formatted


def _format_differences(differences: list[dict], max_fp: float) -> str:
    return "\n".join(
        f"- FAUC-{max_fp:g} test difference {d['models']}: {d['difference']:+.3f} "
        f"(95% CI {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}, paired bootstrap p = "
        f"{d['p_value']:.3g}; the CI {'excludes' if d['ci_excludes_zero'] else 'includes'} 0)"
        for d in differences
    )


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
