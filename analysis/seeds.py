"""The experiment over training seeds: does a result hold when the models are trained again
with another seed, not only over the test images' bootstrap?

``cli.py pipeline --seeds 0 1 2`` trains the whole pipeline once per seed (``<run>/seed<k>``)
and calls ``build_seed_report``, which writes ``<run>/seeds_report.md`` and ``.json``:

* per model (a ``report`` row), FAUC-1 on validation and test for each seed, their mean and
  range, and calcification sensitivity at the validation threshold's 1 FP/image;
* per comparison, the paired difference on test for each seed with its 95% CI, and a pooled
  estimate: the mean of the seeds' differences, with a 95% CI from the same bootstrap
  resamples of the test images applied to every seed (each replicate averages the seeds'
  differences on one resample). That CI covers the test images' sampling; the seeds' own
  spread is shown beside it (their range), and a claim should hold in each seed;
* per Stage II run, Eq. 2's similarity on validation, overall and at lesion and background
  positions (the last validation, mean over seeds);
* with ``references`` (run folders trained once, e.g. Model_SM on more pairs) and ``gap``
  (two rows), each model's share of the gap between them that it closes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.model_runs import ModelRun, read_run, run_tables
from analysis.tables import _markdown, sensitivity_table
from metrics.froc import IncompleteDetections, fauc, paired_bootstrap_fauc

LESION_KIND = "calcification"


def _interval(low: float, high: float) -> str:
    return f"{low:+.3f} to {high:+.3f}"


def _stage2_summary(folder: Path) -> dict[str, float] | None:
    """Eq. 2's similarity at the last validation of a Stage II run (None for other stages)."""
    path = folder / "history.csv"
    if not path.is_file():
        return None
    history = pd.read_csv(path)
    if "val_cosine" not in history.columns:
        return None
    last = history.dropna(subset=["val_cosine"]).iloc[-1]
    return {
        key: float(last[key])
        for key in ("val_cosine", "val_cosine_lesion", "val_cosine_background")
        if key in last
    }


def build_seed_report(
    pipeline, max_fp: float = 1.0, n_boot: int = 2000, seed: int = 0, out: str | Path | None = None
) -> dict[str, Any]:
    """Summarise ``pipeline`` (``runner.Pipeline`` with ``seeds``) over its seeds; write
    ``seeds_report.md`` and ``seeds_report.json`` into ``out`` (default: the pipeline's
    ``report_dir`` in its run folder)."""
    seeds = list(pipeline.seeds)
    out = Path(out or pipeline.run / pipeline.report_dir)
    first = pipeline.run / f"seed{seeds[0]}" / next(iter(pipeline.report.values()))
    _, manifest, lesions = run_tables(first)

    def read(row: str, folder: Path) -> ModelRun:
        try:  # only the detections FAUC-max_fp and its threshold reach, as the report reads
            return read_run(row, folder, manifest, lesions, max_fp, max_fp, prune=True)
        except IncompleteDetections as error:
            print(f"seeds report: {error}; reading every detection")
            return read_run(row, folder, manifest, lesions, max_fp, max_fp, prune=False)

    runs = {
        s: {
            row: read(row, pipeline.run / f"seed{s}" / stage)
            for row, stage in pipeline.report.items()
        }
        for s in seeds
    }
    references = {row: read(row, Path(folder)) for row, folder in pipeline.references.items()}

    # -- each model over seeds ----------------------------------------------------------------
    models = []
    for row in [*pipeline.report, *references]:
        by_seed = [runs[s][row] for s in seeds] if row in pipeline.report else [references[row]]
        record = {"model": row, "seeds": len(by_seed)}
        for split in ("val", "test"):
            values = [fauc(run.matched[split], max_fp) for run in by_seed]
            record[f"{split}_by_seed"] = values
            record[split] = float(np.mean(values))
            record[f"{split}_range"] = [float(min(values)), float(max(values))]
        sensitivities = sensitivity_table(by_seed, max_fp)
        if LESION_KIND in sensitivities.columns:
            rates = [found / total for found, total in sensitivities[LESION_KIND]]
            record[f"{LESION_KIND}_sensitivity"] = float(np.mean(rates))
        models.append(record)
    by_model = {record["model"]: record for record in models}
    if pipeline.gap:
        low, high = (by_model[row]["test"] for row in pipeline.gap)
        for record in models:
            record["gap_share"] = (record["test"] - low) / (high - low) if high != low else None

    # -- comparisons: per seed and pooled -------------------------------------------------------
    comparisons = []
    for a, b in pipeline.comparisons or []:
        per_seed, replicates = [], []
        for s in seeds:
            first_run, second_run = runs[s][a], runs[s][b]
            paired = paired_bootstrap_fauc(
                first_run.matched["test"],
                second_run.matched["test"],
                max_fp,
                n_boot=n_boot,
                seed=seed,
                same_lesions=first_run.modality == second_run.modality,
            )
            per_seed.append(
                {
                    "seed": s,
                    "difference": paired.difference,
                    "ci95": [paired.low, paired.high],
                    "p_value": paired.p_value,
                    "ci_excludes_zero": bool(paired.low > 0 or paired.high < 0),
                }
            )
            replicates.append(paired.replicates)
        # Every seed was scored on the same test images, resampled with the same draws: a
        # replicate's pooled difference is the mean of the seeds' differences on that draw.
        pooled = np.nanmean(np.stack(replicates), axis=0)
        low, high = np.nanpercentile(pooled, [2.5, 97.5])
        differences = [entry["difference"] for entry in per_seed]
        comparisons.append(
            {
                "models": f"{a} - {b}",
                "per_seed": per_seed,
                "pooled": {
                    "difference": float(np.mean(differences)),
                    "ci95": [float(low), float(high)],
                    "range": [float(min(differences)), float(max(differences))],
                    "ci_excludes_zero": bool(low > 0 or high < 0),
                },
                "seeds_ci_excludes_zero": sum(entry["ci_excludes_zero"] for entry in per_seed),
            }
        )

    # -- Stage II: what B learned ------------------------------------------------------------------
    students = {}
    for stage in pipeline.stages:
        summaries = [_stage2_summary(pipeline.run / f"seed{s}" / stage) for s in seeds]
        if all(summaries):
            students[stage] = {
                key: float(np.mean([summary[key] for summary in summaries])) for key in summaries[0]
            }

    numbers = {
        "seeds": seeds,
        "max_fp": max_fp,
        "n_boot": n_boot,
        "bootstrap_seed": seed,
        "models": models,
        "comparisons": comparisons,
        "stage2": students,
        "gap": list(pipeline.gap) if pipeline.gap else None,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds_report.json").write_text(json.dumps(numbers, indent=2) + "\n")
    text = format_seed_report(numbers)
    (out / "seeds_report.md").write_text(text + "\n")
    print(f"\n{text}\n\nWritten: {out / 'seeds_report.md'}")
    return numbers


def format_seed_report(numbers: dict[str, Any]) -> str:
    """The seeds report as Markdown."""
    seeds, cut = numbers["seeds"], f"FAUC-{numbers['max_fp']:g}"
    model_rows = []
    for record in numbers["models"]:
        row = {"model": record["model"]}
        if record["seeds"] == len(seeds):
            row.update(
                {f"test, seed {s}": f"{v:.3f}" for s, v in zip(seeds, record["test_by_seed"])}
            )
        else:
            row.update({f"test, seed {s}": "-" for s in seeds})
            row["model"] += " (trained once)"
        row[f"{cut} test mean (range)"] = (
            f"{record['test']:.3f} ({record['test_range'][0]:.3f}-{record['test_range'][1]:.3f})"
        )
        row[f"{cut} val mean"] = f"{record['val']:.3f}"
        if f"{LESION_KIND}_sensitivity" in record:
            row[f"{LESION_KIND} sensitivity"] = f"{record[f'{LESION_KIND}_sensitivity']:.3f}"
        if "gap_share" in record:
            share = record["gap_share"]
            row["share of the gap"] = "-" if share is None else f"{share:+.2f}"
        model_rows.append(row)
    comparison_rows = []
    for entry in numbers["comparisons"]:
        row = {"comparison (test)": entry["models"]}
        for result in entry["per_seed"]:
            row[f"seed {result['seed']}"] = (
                f"{result['difference']:+.3f} ({_interval(*result['ci95'])})"
            )
        pooled = entry["pooled"]
        row["pooled"] = f"{pooled['difference']:+.3f} ({_interval(*pooled['ci95'])})"
        row["seeds with CI > 0 or < 0"] = f"{entry['seeds_ci_excludes_zero']}/{len(seeds)}"
        comparison_rows.append(row)
    parts = [
        f"# Over training seeds {', '.join(map(str, seeds))}",
        f"## {cut} of each model (test; validation mean; calcification sensitivity on test at "
        "the validation threshold of 1 FP/image, mean over seeds)",
        _markdown(pd.DataFrame(model_rows)),
    ]
    if numbers.get("gap"):
        parts.append(
            f"Share of the gap: (model - {numbers['gap'][0]}) / ({numbers['gap'][1]} - "
            f"{numbers['gap'][0]}), on mean test {cut}."
        )
    if comparison_rows:
        parts += [
            f"## Paired differences of {cut} on test, per seed and pooled",
            "Per seed: 95% percentile bootstrap CI over test images "
            f"({numbers['n_boot']} resamples). Pooled: the mean of the seeds' differences; its "
            "CI applies the same resamples of the test images to every seed and averages the "
            "seeds' differences on each (it covers the test images' sampling, not the seeds').",
            _markdown(pd.DataFrame(comparison_rows)),
        ]
    if numbers["stage2"]:
        rows = [
            {
                "Stage II run": stage,
                **{key.replace("val_", ""): f"{value:.4f}" for key, value in values.items()},
            }
            for stage, values in numbers["stage2"].items()
        ]
        parts += [
            "## Stage II: Eq. 2's similarity of z'_SM and the teacher's features on "
            "validation (last validation, mean over seeds)",
            _markdown(pd.DataFrame(rows).fillna("-")),
        ]
    return "\n\n".join(parts)
