"""The report's tables: Table 2 (FAUC with bootstrap CIs), the paired differences, the
sensitivity at a validation threshold, and their markdown."""

from __future__ import annotations

import pandas as pd

from analysis.model_runs import SPLITS, ModelRun
from metrics.froc import (
    bootstrap_fauc,
    bootstrap_replicates,
    fauc,
    lesions_found,
    operating_point,
    paired_bootstrap_fauc,
    threshold_at_fp,
)

DENSE = ("C", "D")
PAPER_COMPARISONS = (
    ("Fused", "Model_SM"),
    ("Fused", "Model_FFDM"),
    ("BASE_UB", "Model_SM"),
    ("BASE_UB", "Model_FFDM"),
    ("BASE_UB", "Fused"),
)


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
