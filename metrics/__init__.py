"""FROC matching, FAUC-x, bootstrap CIs and operating thresholds (``metrics.froc``), the
torchmetrics ``FAUC`` (``metrics.fauc``), FROC plots (``metrics.plot``) and ``cli.py evaluate``
(``metrics.evaluate``). ``FAUC`` and ``plot_froc`` load torch and matplotlib on first use only.
"""

from metrics.froc import (
    BootstrapResult,
    FrocCurve,
    MatchedDetections,
    OperatingPoint,
    PairedBootstrapResult,
    bootstrap_fauc,
    fauc,
    fauc_from_curve,
    froc_band,
    froc_curve,
    image_outcomes,
    lesions_found,
    match_detections,
    operating_point,
    paired_bootstrap_fauc,
    sensitivity_at_fp,
    threshold_at_fp,
)

__all__ = [
    "FAUC",
    "BootstrapResult",
    "FrocCurve",
    "MatchedDetections",
    "OperatingPoint",
    "PairedBootstrapResult",
    "bootstrap_fauc",
    "fauc",
    "fauc_from_curve",
    "froc_band",
    "froc_curve",
    "image_outcomes",
    "lesions_found",
    "match_detections",
    "operating_point",
    "paired_bootstrap_fauc",
    "plot_froc",
    "sensitivity_at_fp",
    "threshold_at_fp",
]


def __getattr__(name: str):
    if name == "FAUC":
        from metrics.fauc import FAUC

        return FAUC
    if name == "plot_froc":
        from metrics.plot import plot_froc

        return plot_froc
    raise AttributeError(f"module 'metrics' has no attribute {name!r}")
