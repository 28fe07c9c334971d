"""FROC analysis of lesion detections: match detections to lesions once, then derive the FROC
curve, FAUC-x, operating thresholds, per-lesion outcomes and bootstrap confidence intervals from
the matched records, vectorised with numpy.

- :mod:`metrics.froc.matching`: the hit rule; detections matched to lesions, per image
  (:class:`MatchedDetections`).
- :mod:`metrics.froc.pruning`: the detections FAUC-x can reach (:func:`prune_detections`) and
  :class:`IncompleteDetections`, raised when a computation needs one that was left out.
- :mod:`metrics.froc.curve`: the FROC curve, FAUC-x, operating thresholds and points, per-lesion
  and per-image outcomes.
- :mod:`metrics.froc.bootstrap`: bootstrap CIs over images, the paired bootstrap and the FROC
  band, scored by the private resampling engine :mod:`metrics.froc._resampling`.

Every public name is importable from here.
"""

from metrics.froc._resampling import resample_counts
from metrics.froc.bootstrap import (
    BootstrapResult,
    PairedBootstrapResult,
    bootstrap_fauc,
    bootstrap_replicates,
    froc_band,
    paired_bootstrap_fauc,
)
from metrics.froc.curve import (
    FrocCurve,
    OperatingPoint,
    fauc,
    fauc_from_curve,
    froc_curve,
    image_outcomes,
    lesions_found,
    lowest_score_read,
    operating_point,
    sensitivity_at_fp,
    threshold_at_fp,
)
from metrics.froc.matching import (
    DUPLICATE,
    FALSE_POSITIVE,
    TRUE_POSITIVE,
    MatchedDetections,
    match_detections,
)
from metrics.froc.pruning import (
    PRUNE_MARGIN_SD,
    IncompleteDetections,
    prune_detections,
    require_false_positives,
)

__all__ = [
    # matching
    "DUPLICATE",
    "FALSE_POSITIVE",
    "TRUE_POSITIVE",
    "MatchedDetections",
    "match_detections",
    # pruning
    "PRUNE_MARGIN_SD",
    "IncompleteDetections",
    "prune_detections",
    "require_false_positives",
    # curve
    "FrocCurve",
    "OperatingPoint",
    "fauc",
    "fauc_from_curve",
    "froc_curve",
    "image_outcomes",
    "lesions_found",
    "lowest_score_read",
    "operating_point",
    "sensitivity_at_fp",
    "threshold_at_fp",
    # bootstrap
    "BootstrapResult",
    "PairedBootstrapResult",
    "bootstrap_fauc",
    "bootstrap_replicates",
    "froc_band",
    "paired_bootstrap_fauc",
    "resample_counts",
]
