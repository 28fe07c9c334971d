"""The range rule of every setting, each written once: `config_checks.check_values` applies
them to a run's model, data and trainer values before any class is built, and the tools
(``prepare``, ``check-data``) to their command lines, so one value is refused with the same
words wherever it is given.

A rule takes a value and returns what is wrong with it (a sentence), or None. `RULES` maps an
init argument's name to its rule: one name, one meaning, in every stage and data module (a
new setting gets its rule here, or in its settings object: `lightning_modules.settings` holds
the optimiser's and the evaluation's, made with these rule makers); `GROUP_RULES` does the
same for the other parts of a run config (the trainer, the callbacks), by key.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from common.defaults import MODALITIES

Rule = Callable[[Any], "str | None"]

PATHOLOGIES = ("malignant", "benign", "unknown")
WINDOWS = ("dicom", "minmax")
LR_SCHEDULES = ("cosine", "constant")
# EfficientDet's finest BiFPN level is P3: no model here works on a side that 2**3 does not
# divide, whatever its max_level (the model's own rule is 2**max_level).
SMALLEST_STRIDE = 2**3


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    integer: bool = False,
    above: bool = False,
    below: bool = False,
    optional: bool = False,
) -> Rule:
    """A finite number (an integer with ``integer``) in [low, high]; ``above``/``below`` make
    the bounds open; ``optional`` accepts None."""

    def rule(value):
        if value is None:
            return None if optional else "must be set"
        kind = "an integer" if integer else "a number"
        if not _is_number(value) or (integer and float(value) != int(value)):
            return f"must be {kind}, got {value!r}"
        if not math.isfinite(float(value)):
            return f"must be a finite number, got {value!r}"
        low_ok = low is None or (value > low if above else value >= low)
        high_ok = high is None or (value < high if below else value <= high)
        if low_ok and high_ok:
            return None
        if low is not None and high is not None:
            return (
                f"must lie in {'(' if above else '['}{low:g}, {high:g}{')' if below else ']'}"
                f", got {value!r}"
            )
        if low is not None:
            return f"must be {'>' if above else '>='} {low:g}, got {value!r}"
        return f"must be {'<' if below else '<='} {high:g}, got {value!r}"

    return rule


def one_of(choices: Sequence[str], optional: bool = False) -> Rule:
    def rule(value):
        if value is None and optional:
            return None
        if value not in choices:
            return f"must be one of {', '.join(map(str, choices))}; got {value!r}"
        return None

    return rule


def boolean(value) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


def image_size(value) -> str | None:
    """(H, W): two whole numbers of pixels, each >= SMALLEST_STRIDE."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        return f"must be two sides [H, W] in pixels, got {value!r}"
    if not all(_is_number(side) and float(side) == int(side) for side in value):
        return f"must be two whole numbers of pixels [H, W], got {list(value)}"
    if min(int(side) for side in value) < SMALLEST_STRIDE:
        return f"must be at least {SMALLEST_STRIDE} pixels a side, got {list(value)}"
    return None


def divisible(size: Sequence[int], stride: int, model: str) -> str | None:
    """The model's stride rule: every side divisible by 2**max_level."""
    if any(int(side) % stride for side in size):
        nearest = [max(stride, round(int(side) / stride) * stride) for side in size]
        return (
            f"{list(size)} must be divisible by {stride} on each side for {model} (e.g. {nearest})"
        )
    return None


def model_stride(architecture: str, overrides: Mapping[str, Any] | None = None) -> int:
    """2**max_level of an effdet architecture and its overrides (ValueError for an unknown
    architecture)."""
    from lightning_modules.effdet_parts.architecture import (
        check_architecture,
        get_efficientdet_config,
    )

    check_architecture(architecture)
    max_level = (overrides or {}).get("max_level", get_efficientdet_config(architecture).max_level)
    return 2 ** int(max_level)


def modalities(value) -> str | None:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        return f"must be a non-empty list of {', '.join(MODALITIES)}, got {value!r}"
    unknown = [item for item in value if item not in MODALITIES]
    if unknown:
        return (
            f"{unknown} {'is' if len(unknown) == 1 else 'are'} not one of "
            f"{', '.join(MODALITIES)} (the images a pair holds)"
        )
    if len(set(value)) != len(value):
        return f"lists a modality twice: {list(value)}"
    return None


def fractions(value) -> str | None:
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or len(value) != 3
        or not all(_is_number(item) for item in value)
    ):
        return f"must be three numbers (train, val, test), got {value!r}"
    if min(value) < 0 or abs(sum(value) - 1) > 1e-6:
        return f"must be three non-negative numbers summing to 1, got {list(value)}"
    return None


def pathology_classes(value) -> str | None:
    """None, or pathology -> class index (>= 0)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        return (
            f"must map pathologies ({', '.join(PATHOLOGIES)}) to class indices, e.g. "
            f"{{malignant: 0}}; got {value!r}"
        )
    unknown = [key for key in value if key not in PATHOLOGIES]
    if unknown:
        return f"{unknown}: not a pathology of the lesion table ({', '.join(PATHOLOGIES)})"
    bad = {
        key: index
        for key, index in value.items()
        if not _is_number(index) or float(index) != int(index) or int(index) < 0
    }
    if bad:
        return f"class indices must be whole numbers >= 0, got {bad}"
    return None


def positive_weights(value) -> str | None:
    if value is None:
        return None
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not value
        or not all(_is_number(item) and math.isfinite(item) for item in value)
    ):
        return f"must be a list of numbers, got {value!r}"
    if min(value) < 0 or sum(value) <= 0:
        return f"must be non-negative and not all zero, got {list(value)}"
    return None


def levels(value) -> str | None:
    if value is None:
        return None
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or not value
        or not all(_is_number(item) and float(item) == int(item) for item in value)
    ):
        return f"must be a non-empty list of BiFPN level numbers (3 = P3, ...), got {value!r}"
    return None


def existing_path(value) -> str | None:
    if value in (None, ""):
        return None
    return None if os.path.exists(value) else f"{value} does not exist"


def manifest(value) -> str | None:
    if not value:
        return "must name the manifest (a CSV or Parquet file, or its folder)"
    if os.path.isdir(value) and not os.path.isfile(os.path.join(value, "manifest.csv")):
        return f"{value} is a folder without a manifest.csv"
    return existing_path(value)


def cache_dir(value) -> str | None:
    if value in (None, ""):
        return None
    if not os.path.isdir(value):
        return (
            f"{value} is not a folder; make the cache with `python cli.py prepare` or set "
            "cache_dir: null"
        )
    if not os.path.isfile(os.path.join(value, "cache.json")):
        return f"{value} is not an image cache (no cache.json); make it with `cli.py prepare`"
    return None


def folder(value) -> str | None:
    return None if value and os.path.isdir(value) else f"{value} is not a folder"


RULES: dict[str, Rule] = {
    # the model
    "modality": one_of(MODALITIES),
    "num_classes": number(1, integer=True),
    "focal_alpha": number(0, 1),
    "focal_gamma": number(0),
    "channels_last": boolean,
    # (the optimiser and evaluation settings: `lightning_modules.settings`)
    "hit_min_distance": number(0, above=True),  # the data's, linked into the model's evaluation
    "freeze_extractor": boolean,
    "projection": one_of(("conv3x3", "shared")),
    "levels": levels,
    "level_weights": positive_weights,
    "eps": number(0, above=True),
    "partner_features": one_of(("extractor", "projected")),
    "head_init": one_of(("sm_teacher", "random")),
    "pretrained": existing_path,
    "init_from": existing_path,
    "ffdm_teacher": existing_path,
    "sm_teacher": existing_path,
    "partner": existing_path,
    # the data
    "manifest": manifest,
    "lesions": existing_path,
    "cache_dir": cache_dir,
    "sm_dir": folder,
    "image_size": image_size,
    "modalities": modalities,
    "batch_size": number(1, integer=True),
    "num_workers": number(0, integer=True, optional=True),  # None: the task's CPUs less one
    "seed": number(0, integer=True),
    "augment": boolean,
    "pathology_classes": pathology_classes,
    "window": one_of(WINDOWS),
    "samples_per_epoch": number(1, integer=True, optional=True),
    "split_fractions": fractions,
    "margin": number(0, 0.5, below=True),
    "predict_split": one_of(("train", "val", "test", "all")),
    "on_bad_sample": one_of(("error", "skip")),
    "allow_modality_mismatch": boolean,
}


def limit(value) -> str | None:
    """A Lightning ``limit_*_batches``: a share (a float in [0, 1]) or a count (an int >= 0)."""
    if value is None:
        return None
    if isinstance(value, float) and not float(value).is_integer():
        return number(0, 1)(value)
    return number(0)(value)


def epochs(value) -> str | None:
    """None or -1 (no limit), or a count >= 0."""
    wrong = None if value in (None, -1) else number(0, integer=True)(value)
    return wrong and f"{wrong} (-1: no limit)"


GROUP_RULES: dict[str, dict[str, Rule]] = {
    "trainer": {
        "num_nodes": number(1, integer=True),
        "max_epochs": epochs,
        "max_steps": epochs,
        "min_epochs": number(0, integer=True, optional=True),
        "min_steps": number(0, integer=True, optional=True),
        "limit_train_batches": limit,
        "limit_val_batches": limit,
        "limit_test_batches": limit,
        "limit_predict_batches": limit,
        "check_val_every_n_epoch": number(1, integer=True, optional=True),
        "num_sanity_val_steps": number(-1, integer=True, optional=True),
        "log_every_n_steps": number(1, integer=True, optional=True),
        "accumulate_grad_batches": number(1, integer=True),
        "gradient_clip_val": number(0, optional=True),
    },
    "predictions": {
        "overlay_min_score": number(0, 1),
    },
}
