"""Compare detectors from their run folders: the paper's Table 2 and where each one wins.

    python cli.py report --run Model_SM=runs/demo/sm --run Model_FFDM=runs/demo/ffdm \\
        --out runs/demo

Each run folder holds the ``config.yaml`` LightningCLI saved and the ``predictions/`` that
``cli.py validate`` and ``cli.py test`` wrote (``PredictionWriter``). For each model the
report gives FAUC-1 on validation and test, on all images and on positive ones, with 95%
bootstrap CIs (Table 2's four columns); then, at the threshold giving 1 false positive per
image on validation, the sensitivity on test per lesion kind and per breast density (the
paper's Section 3 analysis). It writes ``report.md``, ``report.json``, ``froc.png`` and
``gallery.png`` (lesions one model finds and the other misses) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from datamodules.manifest import load_tables
from metrics.evaluate import BOX_COLUMNS, EvaluationTables, read_evaluation_tables
from metrics.froc import (
    MatchedDetections,
    bootstrap_fauc,
    fauc,
    lesions_found,
    operating_point,
    paired_bootstrap_fauc,
    threshold_at_fp,
)

SPLITS = ("val", "test")
DENSE = ("C", "D")


@dataclass
class ModelRun:
    """One model's evaluation records, read from its run folder."""

    name: str
    folder: Path
    modality: str
    tables: dict[str, EvaluationTables]
    matched: dict[str, MatchedDetections]
    lesions: dict[str, pd.DataFrame]  # ground truth rows joined to the lesion table's columns


def read_run(name: str, folder: str | Path, manifest: pd.DataFrame, lesions: pd.DataFrame,
             min_distance: float) -> ModelRun:
    """Match a run's ``{val,test}`` prediction CSVs; ground-truth rows get their lesion's
    attributes (``lesion_type``, ...) and their pair's (``density``, ...)."""
    folder = Path(folder)
    modality = _run_config(folder)["model"]["init_args"].get("modality", "sm")
    _check_same_weights(name, folder)
    tables, matched, joined = {}, {}, {}
    for split in SPLITS:
        prefix = folder / "predictions" / split
        if not Path(f"{prefix}_predictions.csv").is_file():
            raise FileNotFoundError(
                f"{prefix}_predictions.csv not found: run `python cli.py "
                f"{'validate' if split == 'val' else 'test'} ...` for {name} first"
            )
        tables[split] = read_evaluation_tables(
            f"{prefix}_predictions.csv", f"{prefix}_ground_truth.csv", f"{prefix}_images.csv"
        )
        matched[split] = tables[split].match(min_distance=min_distance)
        joined[split] = _join_lesions(tables[split].ground_truth, lesions, manifest, modality)
    return ModelRun(name, folder, modality, tables, matched, joined)


def _check_same_weights(name: str, folder: Path) -> None:
    """The validation threshold is applied to test: both must come from the same weights."""
    steps = {}
    for split in SPLITS:
        path = folder / "predictions" / f"{split}_info.json"
        if path.is_file():
            steps[split] = json.loads(path.read_text()).get("trained_steps")
    if len(steps) == 2 and steps["val"] != steps["test"]:
        raise ValueError(
            f"{name}: validation predictions come from weights trained {steps['val']} steps, "
            f"test predictions from weights trained {steps['test']} steps; run `python cli.py "
            f"validate` with the checkpoint you tested (files in {folder / 'predictions'})"
        )


def _run_config(folder: Path) -> dict:
    path = folder / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {folder} a LightningCLI run folder?")
    return yaml.safe_load(path.read_text())


def _join_lesions(ground_truth: pd.DataFrame, lesions: pd.DataFrame, manifest: pd.DataFrame,
                  modality: str) -> pd.DataFrame:
    """Ground-truth rows (in order) with the lesion table's and manifest's extra columns."""
    own = lesions[lesions["modality"] == modality].rename(columns={"pair_id": "image_id"})
    keys = ["image_id", *BOX_COLUMNS]
    boxes = list(BOX_COLUMNS)
    own = own.astype(dict.fromkeys(boxes, float)).drop_duplicates(keys)
    left = ground_truth.astype(dict.fromkeys(boxes, float))
    joined = left.merge(own.drop(columns=["modality"]), on=keys, how="left", validate="m:1")
    pairs = manifest.rename(columns={"pair_id": "image_id"})
    extra = [c for c in pairs.columns if c not in joined.columns or c == "image_id"]
    return joined.merge(pairs[extra], on="image_id", how="left", validate="m:1")


def fauc_table(runs: list[ModelRun], max_fp: float, n_boot: int, seed: int) -> pd.DataFrame:
    """Table 2: FAUC-x with 95% CIs, on validation and test, all and positive images."""
    rows = []
    for run in runs:
        row = {"model": run.name}
        for split in SPLITS:
            for suffix, records in (("+", run.matched[split].positive_images()),
                                    ("", run.matched[split])):
                interval = bootstrap_fauc(records, max_fp, n_boot=n_boot, seed=seed)
                column = f"FAUC-{max_fp:g} {split.upper()}{suffix}"
                row[column] = fauc(records, max_fp)
                row[f"{column} CI"] = (interval.low, interval.high)
        rows.append(row)
    return pd.DataFrame(rows)


def sensitivity_table(runs: list[ModelRun], target_fp: float) -> pd.DataFrame:
    """Sensitivity on test at the validation threshold giving ``target_fp`` FP per image,
    overall, per lesion kind, per density, and for masses in dense breasts."""
    rows = []
    for run in runs:
        threshold = threshold_at_fp(run.matched["val"], target_fp)
        point = operating_point(run.matched["test"], threshold)
        found = lesions_found(run.matched["test"], threshold)
        lesions = run.lesions["test"].assign(found=found)
        row = {"model": run.name, "threshold (val)": threshold,
               "FP/image (test)": point.fp_rate, "all lesions": _rate(lesions)}
        for kind, group in _groups(lesions, "lesion_type"):
            row[f"{kind}"] = _rate(group)
        for density, group in _groups(lesions, "density"):
            row[f"density {density}"] = _rate(group)
        if {"lesion_type", "density"} <= set(lesions.columns):
            dense_masses = lesions[(lesions["lesion_type"] == "mass")
                                   & lesions["density"].isin(DENSE)]
            row["masses, dense (C/D)"] = _rate(dense_masses)
        rows.append(row)
    return pd.DataFrame(rows)


def _groups(lesions: pd.DataFrame, column: str):
    if column not in lesions.columns:
        return []
    return sorted(lesions.groupby(lesions[column].fillna("unknown").astype(str)))


def _rate(lesions: pd.DataFrame) -> tuple[int, int]:
    return int(lesions["found"].sum()), int(len(lesions))


def found_flags(runs: list[ModelRun], target_fp: float) -> pd.DataFrame:
    """Per test lesion: found by each model at its validation threshold. Lesions are matched
    across modalities by ``lesion_id`` where the lesion table has it, else by pair."""
    frames = []
    for run in runs:
        threshold = threshold_at_fp(run.matched["val"], target_fp)
        lesions = run.lesions["test"].assign(found=lesions_found(run.matched["test"], threshold))
        key = "lesion_id" if "lesion_id" in lesions.columns else "image_id"
        frames.append(lesions.groupby(key)["found"].any().rename(run.name))
    return pd.concat(frames, axis=1)


def _format_rate(value) -> str:
    found, total = value
    return f"{found / total:.3f} ({found}/{total})" if total else "-"


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    lines = [header, rule]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(value) for value in row) + " |")
    return "\n".join(lines)


def format_fauc_table(table: pd.DataFrame, max_fp: float) -> pd.DataFrame:
    """Table 2's layout: ``FAUC+ (CI) / FAUC (CI)`` per split."""
    formatted = {"Experiment": table["model"]}
    for split in SPLITS:
        name = f"FAUC-{max_fp:g} {split.upper()}"
        formatted[f"{name}+ / {name}"] = [
            f"{row[name + '+']:.3f} ({row[name + '+ CI'][0]:.3f}-{row[name + '+ CI'][1]:.3f})"
            f" / {row[name]:.3f} ({row[name + ' CI'][0]:.3f}-{row[name + ' CI'][1]:.3f})"
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


def build_report(runs: dict[str, str | Path], out: str | Path, max_fp: float = 1.0,
                 target_fp: float = 1.0, n_boot: int = 2000, seed: int = 0,
                 gallery_cases: int = 4) -> dict:
    """Write ``report.md``, ``report.json``, ``froc.png`` and ``gallery.png`` into ``out``
    and return the report's numbers."""
    from analysis.gallery import plot_gallery
    from metrics.plot import plot_froc

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    first = _run_config(Path(next(iter(runs.values()))))
    data = first["data"]["init_args"]
    min_distance = float(data.get("hit_min_distance", 100.0))
    manifest, lesions, _ = load_tables(data["manifest"], data.get("lesions"),
                                       seed=data.get("seed", 0),
                                       fractions=tuple(data.get("split_fractions", (.6, .1, .3))))
    models = [read_run(name, folder, manifest, lesions, min_distance)
              for name, folder in runs.items()]

    table = fauc_table(models, max_fp, n_boot, seed)
    sensitivities = sensitivity_table(models, target_fp)
    flags = found_flags(models, target_fp)
    comparisons = []
    for index, first_model in enumerate(models):
        for second in models[index + 1:]:
            paired = paired_bootstrap_fauc(first_model.matched["test"], second.matched["test"],
                                           max_fp, n_boot=n_boot, seed=seed)
            comparisons.append({"models": f"{first_model.name} - {second.name}",
                                "difference": paired.difference, "ci95": [paired.low, paired.high],
                                "p_value": paired.p_value})
    plot_froc({model.name: model.matched["test"] for model in models}, out / "froc.png",
              max_fp=max_fp, n_boot=min(n_boot, 1000), seed=seed,
              title=f"FROC on test (bands: 95% bootstrap), hit floor {min_distance:g} px")
    plot_gallery(models, flags, out / "gallery.png", target_fp=target_fp,
                 cases_per_side=gallery_cases)

    fauc_text = _markdown(format_fauc_table(table, max_fp))
    sensitivity_text = _markdown(format_sensitivity_table(sensitivities))
    names = [model.name for model in models]
    overlap = ""
    if len(names) == 2:
        a, b = names
        overlap = (f"Test lesions found by both: {int((flags[a] & flags[b]).sum())}; "
                   f"only by {a}: {int((flags[a] & ~flags[b]).sum())}; "
                   f"only by {b}: {int((~flags[a] & flags[b]).sum())}; "
                   f"by neither: {int((~flags[a] & ~flags[b]).sum())} (of {len(flags)}).")
    comparison_text = "\n".join(
        f"- FAUC-{max_fp:g} test difference {c['models']}: {c['difference']:+.3f} "
        f"(95% CI {c['ci95'][0]:+.3f} to {c['ci95'][1]:+.3f}, paired bootstrap p = "
        f"{c['p_value']:.3g})" for c in comparisons)
    text = "\n\n".join(filter(None, [
        "# Detection report",
        f"Data: `{data['manifest']}`; hit: detection centre within max(half the lesion's "
        f"diagonal, {min_distance:g} px) of the lesion's centre, in original pixels. "
        f"CIs: 95% percentile bootstrap over images, {n_boot} replicates, seed {seed}.",
        f"## FAUC-{max_fp:g} (Table 2's columns; + = images with at least one lesion)",
        fauc_text, comparison_text,
        f"## Sensitivity on test at {target_fp:g} false positive(s) per image on validation",
        "Each model's threshold is the lowest score keeping its validation FP rate at or "
        f"below {target_fp:g}/image; cells are sensitivity (found/lesions).",
        sensitivity_text, overlap,
        "![FROC](froc.png)", "![Lesions one model finds and the other misses](gallery.png)",
    ]))
    (out / "report.md").write_text(text + "\n")
    numbers = {
        "fauc": json.loads(table.to_json(orient="records", double_precision=15)),
        "sensitivity": json.loads(sensitivities.to_json(orient="records", double_precision=15)),
        "comparisons": comparisons, "hit_min_distance": min_distance, "n_boot": n_boot,
    }
    (out / "report.json").write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"\nFAUC-{max_fp:g}\n{fauc_text}\n\n{comparison_text}\n\n"
          f"Sensitivity on test at {target_fp:g} FP/image (validation threshold)\n"
          f"{sensitivity_text}\n\n{overlap}\n\nWritten: {out / 'report.md'}")
    return numbers


def _named_run(text: str) -> tuple[str, str]:
    name, separator, folder = text.partition("=")
    if not separator or not name or not folder:
        raise argparse.ArgumentTypeError(f"--run takes NAME=FOLDER, got {text!r}")
    return name, folder


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cli.py report", description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=_named_run, action="append", required=True,
                        help="NAME=RUN_FOLDER, once per model (the run's default_root_dir)")
    parser.add_argument("--out", required=True, help="folder for report.md and the figures")
    parser.add_argument("--max-fp", type=float, default=1.0)
    parser.add_argument("--target-fp", type=float, default=1.0)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build_report(dict(args.run), args.out, args.max_fp, args.target_fp, args.n_boot, args.seed)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
