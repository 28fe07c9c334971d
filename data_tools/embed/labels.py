"""Labelling the pairs from EMBED's clinical table: each breast's findings, the pathology carried
back from the diagnostic follow-up, and the exams with a non-breast cancer left out."""

from __future__ import annotations

import numpy as np
import pandas as pd

from data_tools.embed.options import EmbedOptions
from data_tools.embed.tables import BIRADS

MALIGNANT_SEVERITIES = (0.0, 1.0)
# README VI: path_severity 6 is a non-breast cancer. NUS_example_pipeline.ipynb: "Other
# Cancers ... should generally be excluded as they fall outside the standard screening-risk
# profile".
OTHER_CANCER_SEVERITY = 6.0
# Order of suspicion for "the most suspicious assessment": an incomplete screen (A, recall)
# ranks above negative (N) and benign (B), below probably benign (P) and up.
_SUSPICION = {"N": 0, "B": 1, "A": 2, "P": 3, "S": 4, "M": 5, "K": 6}


def _pathology_side(clinical: pd.DataFrame) -> pd.Series:
    """The breast(s) a row's pathology belongs to: ``bside`` ("laterality of any pathology
    result", README VI) where set, else the finding's ``side``."""
    has_result = clinical["path_severity"].notna() & (clinical["bside"] != "")
    return clinical["bside"].where(has_result, clinical["side"])


def finding_summary(clinical: pd.DataFrame) -> pd.DataFrame:
    """Per (exam, laterality): the joined findings' count, malignancy, biopsy, worst severity,
    non-breast cancer and most suspicious BI-RADS letter.

    A finding joins by ``side`` and a pathology result by `_pathology_side`; side B or empty
    joins both breasts (README VIII).
    """
    path_side = _pathology_side(clinical)
    suspicion = clinical["asses"].map(_SUSPICION).astype(float)
    parts = []
    for laterality in ("L", "R"):
        finding = clinical["side"].isin([laterality, "B", ""])
        result = path_side.isin([laterality, "B", ""])
        keep = (finding | result).to_numpy()
        parts.append(
            pd.DataFrame(
                {
                    "exam": clinical["exam"].to_numpy()[keep],
                    "laterality": laterality,
                    "finding": finding.to_numpy()[keep],
                    "severity": clinical["path_severity"].where(result).to_numpy()[keep],
                    "suspicion": suspicion.where(finding).to_numpy()[keep],
                }
            )
        )
    findings = pd.concat(parts, ignore_index=True)
    findings["other_cancer"] = findings["severity"] == OTHER_CANCER_SEVERITY
    summary = (
        findings.groupby(["exam", "laterality"], sort=False)
        .agg(
            n_findings=("finding", "sum"),
            path_severity=("severity", "min"),
            other_cancer=("other_cancer", "any"),
            suspicion=("suspicion", "max"),
        )
        .reset_index()
    )
    summary["malignant"] = summary["path_severity"].isin(MALIGNANT_SEVERITIES)
    summary["biopsied"] = summary["path_severity"].notna()
    letters = {rank: letter for letter, rank in _SUSPICION.items()}
    summary["asses"] = summary["suspicion"].map(letters).fillna("")
    summary["birads"] = summary["asses"].map(BIRADS).astype(float)
    return summary.drop(columns="suspicion")


def exam_laterality(desc: pd.Series) -> pd.Series:
    """B/L/R from an exam description ('bilat', 'left', 'right'), '' when it says none
    (screening_label_assignment.ipynb, 0.3); '' is taken to cover both breasts."""
    lower = desc.str.lower()
    return pd.Series(
        np.select(
            [lower.str.contains("bilat"), lower.str.contains("left"), lower.str.contains("right")],
            ["B", "L", "R"],
            "",
        ),
        index=desc.index,
    )


FOLLOW_UP_KINDS = ("diagnostic", "ultrasound")


def follow_up_labels(
    clinical: pd.DataFrame, findings: pd.DataFrame, window: tuple[int, int]
) -> pd.DataFrame:
    """Per (screening exam, laterality): the follow-up whose pathology is carried back.

    screening_label_assignment.ipynb: a screening exam (``desc`` has 'screen') of exam-level
    BI-RADS 0 (any finding A; also N/B exams with a pathology, addended to A, section 0.6)
    looks ``window[0]`` days ahead, one of BI-RADS 1/2 (N, B) ``window[1]`` days. Its follow-up
    is the first diagnostic (``desc`` has 'diag') and the first ultrasound (a word 'US') exam
    of the same patient covering the breast (exam laterality B, the same or none) from 0 days
    on (section 1.2); the diagnostic's pathology is used unless the ultrasound's is more
    severe (section 1.4). The pathology is the follow-up's worst on that breast
    (`finding_summary`: by ``bside``, else ``side``), NaN when it has none.
    """
    columns = [
        "exam",
        "laterality",
        "fu_exam",
        "fu_kind",
        "fu_days",
        "fu_severity",
        "fu_other_cancer",
    ]
    exams = clinical.groupby("exam", sort=False).agg(
        patient=("patient", "first"), date=("date", "min"), desc=("desc", "first")
    )

    def any_per_exam(mask: pd.Series) -> pd.Series:
        return mask.groupby(clinical["exam"]).any().reindex(exams.index)

    has_recall = any_per_exam(clinical["asses"] == "A")
    has_negative = any_per_exam(clinical["asses"].isin(["N", "B"]))
    has_result = any_per_exam(clinical["path_severity"].notna())
    screen = exams["desc"].str.contains("screen", case=False)
    diagnostic = ~screen & exams["desc"].str.contains("diag", case=False)
    ultrasound = ~screen & ~diagnostic & exams["desc"].str.contains(r"\bUS\b")
    recall = has_recall | (has_negative & has_result)
    days = np.where(recall, window[0], np.where(has_negative, window[1], 0))
    exams["window"] = days
    valid = exams["date"].notna() & (exams["patient"] != "")
    screening = exams[screen & valid & (exams["window"] > 0)]
    follow_ups = exams[(diagnostic | ultrasound) & valid].assign(
        fu_kind=np.where(diagnostic[(diagnostic | ultrasound) & valid], *FOLLOW_UP_KINDS),
        covers=lambda table: exam_laterality(table["desc"]),
    )
    if not len(screening) or not len(follow_ups):
        empty = pd.DataFrame({column: pd.Series([], dtype=object) for column in columns})
        return empty.astype({"fu_days": float, "fu_severity": float, "fu_other_cancer": bool})
    breasts = []
    for laterality in ("L", "R"):
        part = follow_ups[follow_ups["covers"].isin([laterality, "B", ""])]
        breasts.append(part.assign(laterality=laterality))
    follow_ups = pd.concat(breasts).rename_axis("fu_exam").reset_index()
    follow_ups = follow_ups.merge(
        findings[["exam", "laterality", "path_severity", "other_cancer"]].rename(
            columns={"exam": "fu_exam"}
        ),
        on=["fu_exam", "laterality"],
        how="left",
    )
    screening = (
        pd.concat([screening.assign(laterality=laterality) for laterality in ("L", "R")])
        .rename_axis("exam")
        .reset_index()
    )
    merged = screening[["exam", "patient", "laterality", "date", "window"]].merge(
        follow_ups[
            ["fu_exam", "patient", "laterality", "date", "fu_kind", "path_severity", "other_cancer"]
        ],
        on=["patient", "laterality"],
        suffixes=("", "_fu"),
    )
    merged["fu_days"] = (merged["date_fu"] - merged["date"]).dt.days
    merged = merged[(merged["fu_days"] >= 0) & (merged["fu_days"] <= merged["window"])]
    first = merged.sort_values(["fu_days", "fu_exam"]).drop_duplicates(
        ["exam", "laterality", "fu_kind"]
    )
    diagnostic_first = first[first["fu_kind"] == "diagnostic"].set_index(["exam", "laterality"])
    ultrasound_first = first[first["fu_kind"] == "ultrasound"].set_index(["exam", "laterality"])
    both = diagnostic_first.join(ultrasound_first, how="outer", lsuffix="_dx", rsuffix="_us")
    # missing severities rank last, so an ultrasound's result is not hidden by a diagnostic
    # exam that has none (the notebook's NaN comparison would keep the diagnostic's)
    use_us = both["fu_exam_dx"].isna() | (
        both["path_severity_us"].fillna(99) < both["path_severity_dx"].fillna(99)
    )
    result = pd.DataFrame(index=both.index)
    for name, source in (
        ("fu_exam", "fu_exam"),
        ("fu_kind", "fu_kind"),
        ("fu_days", "fu_days"),
        ("fu_severity", "path_severity"),
        ("fu_other_cancer", "other_cancer"),
    ):
        result[name] = both[f"{source}_us"].where(use_us, both[f"{source}_dx"])
    result["fu_other_cancer"] = result["fu_other_cancer"].astype("boolean").fillna(False)
    return result.reset_index()[columns]


def label_pairs(
    pairs: pd.DataFrame, clinical: pd.DataFrame, options: EmbedOptions, summary: dict
) -> pd.DataFrame:
    """The pairs with their findings, follow-up and label; exams with a non-breast cancer are
    dropped. Counts go to summary."""
    findings = finding_summary(clinical)
    pairs = pairs.merge(findings, on=["exam", "laterality"], how="left")
    if options.follow_up:
        follow_up = follow_up_labels(clinical, findings, options.label_window)
        pairs = pairs.merge(follow_up, on=["exam", "laterality"], how="left")
    else:
        for column in ("fu_exam", "fu_kind"):
            pairs[column] = ""
        pairs["fu_days"] = pairs["fu_severity"] = np.nan
        pairs["fu_other_cancer"] = False
    pairs["fu_exam"] = pairs["fu_exam"].fillna("")
    pairs["fu_kind"] = pairs["fu_kind"].fillna("")
    other_exams = set(clinical.loc[clinical["path_severity"] == OTHER_CANCER_SEVERITY, "exam"])
    on_exam = pairs["exam"].isin(other_exams).to_numpy(dtype=bool)
    on_follow_up = _flag(pairs["fu_other_cancer"]) & ~on_exam
    summary["excluded_pairs"]["path_severity_6"] = int(on_exam.sum())
    summary["excluded_pairs"]["follow_up_path_severity_6"] = int(on_follow_up.sum())
    summary["excluded_exams"] = {
        "path_severity_6": int(pairs.loc[on_exam, "exam"].nunique()),
        "path_severity_6_in_clinical": len(other_exams),
    }
    pairs = pairs[~(on_exam | on_follow_up)].copy()

    own = _flag(pairs["malignant"])
    carried = pairs["fu_severity"].isin(MALIGNANT_SEVERITIES).to_numpy(dtype=bool)
    pairs["label"] = (own | carried).astype(int)
    pairs["label_source"] = np.where(
        own, "own_exam", np.where(carried, "follow_up_" + pairs["fu_kind"].astype(str), "")
    )
    pairs["biopsied"] = _flag(pairs["biopsied"]) | pairs["fu_severity"].notna().to_numpy()
    pairs["path_severity"] = np.fmin(
        pairs["path_severity"].to_numpy(dtype=float), pairs["fu_severity"].to_numpy(dtype=float)
    )
    unproven = pairs["asses"].isin(["M", "K"]).to_numpy(dtype=bool) & ~pairs["biopsied"]
    summary["labels"] = {
        "positives_by_source": {
            source: int((pairs["label_source"] == source).sum())
            for source in ("own_exam", "follow_up_diagnostic", "follow_up_ultrasound")
        },
        "screening_pairs_with_follow_up": int((pairs["fu_exam"] != "").sum()),
        "birads_5_or_6_without_pathology": {
            "pairs": int(unproven.sum()),
            "exams": int(pairs.loc[unproven, "exam"].nunique()),
        },
    }
    return pairs


def _flag(series: pd.Series) -> np.ndarray:
    """A boolean column of a left join as numpy: missing (no joined finding) is False."""
    return series.astype("boolean").fillna(False).to_numpy(dtype=bool)
