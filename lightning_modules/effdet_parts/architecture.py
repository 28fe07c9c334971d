"""An effdet model config built and checked for an architecture, and the architecture spec a
stage artifact records of a part (``architecture_spec``, ``config_from_spec``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from effdet import get_efficientdet_config
from effdet.config import set_config_readonly, set_config_writeable


def build_config(
    architecture: str = "tf_efficientdet_d0",
    image_size: Sequence[int] = (512, 512),
    num_classes: int = 1,
    overrides: Mapping[str, Any] | None = None,
    focal_alpha: float | None = None,
    focal_gamma: float | None = None,
):
    """An effdet model config for ``architecture`` with the given input size and classes.

    ``overrides`` sets any effdet config key (``backbone_name``, ``fpn_channels``,
    ``fpn_cell_repeats``, ``box_class_repeats``, ``min_level``, ``max_level``,
    ``anchor_scale``, ``aspect_ratios``, ``backbone_args``, ...), so a small CPU detector is a
    config entry, not code. The returned config is read-only, as effdet leaves it.
    """
    check_architecture(architecture)
    config = get_efficientdet_config(architecture)
    set_config_writeable(config)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(config.keys()))
    if unknown:
        raise ValueError(
            f"unknown effdet config keys in architecture overrides: {unknown}; "
            f"valid keys: {sorted(config.keys())}"
        )
    for key, value in overrides.items():
        config[key] = value
    if "num_levels" not in overrides:
        config.num_levels = config.max_level - config.min_level + 1
    # Backbone weights come from local files only (load_pretrained), never from a hub.
    config.backbone_args = dict(config.backbone_args or {})
    config.image_size = tuple(int(side) for side in image_size)
    config.num_classes = int(num_classes)
    check_focal(
        config.alpha if focal_alpha is None else focal_alpha,
        config.gamma if focal_gamma is None else focal_gamma,
    )
    if focal_alpha is not None:
        config.alpha = float(focal_alpha)
    if focal_gamma is not None:
        config.gamma = float(focal_gamma)

    stride = 2**config.max_level
    if len(config.image_size) != 2 or any(side % stride for side in config.image_size):
        raise ValueError(
            f"image_size {list(config.image_size)} must be two sides (H, W) divisible by "
            f"2**max_level = {stride} for {architecture!r}"
        )
    anchors_per_location = config.num_scales * len(config.aspect_ratios)
    locations = sum(
        (config.image_size[0] // 2**level) * (config.image_size[1] // 2**level)
        for level in range(config.min_level, config.max_level + 1)
    )
    # effdet's top-k fails when it asks for more points than anchors x classes exist.
    config.max_detection_points = min(
        config.max_detection_points, locations * anchors_per_location * config.num_classes
    )
    set_config_readonly(config)
    return config


def architectures() -> list[str]:
    """The effdet architecture names ``build_config`` accepts."""
    from effdet.config.model_config import efficientdet_model_param_dict

    return sorted(efficientdet_model_param_dict)


def check_architecture(architecture: str) -> None:
    """A ValueError naming the closest known architectures (effdet itself raises a bare
    KeyError)."""
    import difflib

    known = architectures()
    if architecture not in known:
        close = difflib.get_close_matches(str(architecture), known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(known)}"
        raise ValueError(f"unknown effdet architecture {architecture!r}{hint}")


def check_focal(alpha: float, gamma: float) -> None:
    """Eq. 1's alpha weighs positives against negatives (in [0, 1]); gamma >= 0 focuses."""
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"focal_alpha must lie in [0, 1], got {alpha}")
    if float(gamma) < 0:
        raise ValueError(f"focal_gamma must be >= 0, got {gamma}")


def input_channels(config) -> int:
    return int((config.backbone_args or {}).get("in_chans", 3))


# The keys of ``architecture_spec``, in its order: what a later stage copies out of an earlier
# stage's artifact to rebuild that stage's part.
ARCHITECTURE_SPEC_KEYS = (
    "architecture",
    "architecture_overrides",
    "image_size",
    "num_classes",
    "backbone_name",
    "fpn_channels",
    "min_level",
    "max_level",
    "num_levels",
)


def architecture_spec(architecture: str, overrides: Mapping[str, Any] | None, config) -> dict:
    """What a stage artifact records of a part's architecture (the ``ARCHITECTURE_SPEC_KEYS``):
    enough to rebuild it with ``build_config`` and to check that two parts' features line up
    level by level."""
    return {
        "architecture": architecture,
        "architecture_overrides": _plain(dict(overrides or {})),
        "image_size": [int(side) for side in config.image_size],
        "num_classes": int(config.num_classes),
        "backbone_name": str(config.backbone_name),
        "fpn_channels": int(config.fpn_channels),
        "min_level": int(config.min_level),
        "max_level": int(config.max_level),
        "num_levels": int(config.num_levels),
    }


def config_from_spec(
    spec: Mapping[str, Any],
    image_size: Sequence[int] | None = None,
    focal_alpha: float | None = None,
    focal_gamma: float | None = None,
):
    """The effdet config of a part recorded with ``architecture_spec``."""
    return build_config(
        spec["architecture"],
        image_size or spec["image_size"],
        spec["num_classes"],
        spec.get("architecture_overrides"),
        focal_alpha=focal_alpha,
        focal_gamma=focal_gamma,
    )


def _plain(value):
    """Config values as JSON types (tuples to lists), so a spec survives a JSON round trip."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
