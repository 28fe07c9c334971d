"""Local pretrained weights for a detector's parts: COCO effdet files, timm backbones, and our
own Lightning checkpoints and stage artifacts.

Reads ``.safetensors``, torch files (``weights_only=True``) and stage artifacts, maps our
modules' key layout to effdet's, and loads the tensors into a ``FeatureExtractor`` (and
``DetectionHead``), part by part. Nothing here downloads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from common.io import sha256_file
from lightning_modules.artifacts import (
    CHECKPOINT_SPEC_KEY,
    is_artifact,
    load_strict,
    load_torch_file,
    read_artifact,
)

# Our modules' key layout -> effdet's: ``extractor.backbone.*`` -> ``backbone.*`` ...
OWN_PREFIXES = {"extractor.": "", "head.": ""}
EFFDET_PREFIXES = ("backbone.", "fpn.", "class_net.", "box_net.")


# -- plain weight files (COCO effdet, timm backbones, our checkpoints and artifacts) ----------
def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a local weight file in effdet's key layout (``backbone.*``, ``fpn.*``,
    ``class_net.*``, ``box_net.*``) or a timm backbone's.

    Reads ``.safetensors``, torch files (``weights_only=True``), stage artifacts and
    Lightning checkpoints of our own modules (their ``extractor.*``/``head.*`` keys map to
    effdet's); unwraps ``state_dict``/``model`` containers and ``model.``/``module.`` prefixes
    that training wrappers add. Never downloads.
    """
    path = Path(path)
    if is_artifact(path):
        return _from_own_layout(read_artifact(path, "pretrained").state())
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as error:  # noqa: BLE001 - safetensors' errors have no common type
            raise ValueError(
                f"cannot read weight file {path}: not a readable safetensors file ({error})"
            ) from None
    else:
        state = load_torch_file(path, "weight file")
    own_checkpoint = isinstance(state, Mapping) and CHECKPOINT_SPEC_KEY in state
    for container in ("state_dict", "model", "state_dict_ema"):
        if (
            isinstance(state, Mapping)
            and container in state
            and isinstance(state[container], Mapping)
        ):
            state = state[container]
            break
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{path} holds no state dict of tensors")
    cleaned = {}
    for key, value in state.items():
        for prefix in ("module.", "model."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        cleaned[key] = value
    if own_checkpoint or any(
        key.startswith(("extractor.backbone.", "head.class_net.")) for key in cleaned
    ):
        return _from_own_layout(cleaned)
    return cleaned


def weights_reference(path: str | os.PathLike) -> dict[str, str]:
    """``{"path", "sha256"}`` of a weight file or artifact (the artifact's weights' hash)."""
    if is_artifact(path):
        return read_artifact(path).reference
    return {"path": str(path), "sha256": sha256_file(path)}


def _from_own_layout(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our modules' ``extractor.*`` and ``head.*`` keys as effdet's; other parts dropped."""
    mapped = {}
    for key, value in state.items():
        for prefix, replacement in OWN_PREFIXES.items():
            if key.startswith(prefix) and key[len(prefix) :].startswith(EFFDET_PREFIXES):
                mapped[replacement + key[len(prefix) :]] = value
    if not mapped:
        raise ValueError("the file holds no extractor or head weights of a mammofuse module")
    return mapped


def load_pretrained(
    path: str | os.PathLike, extractor: nn.Module, head: nn.Module | None = None
) -> dict[str, list[str]]:
    """Load local pretrained weights into a ``FeatureExtractor`` (and ``DetectionHead``).

    An effdet checkpoint (keys ``backbone.*``, ``fpn.*``, ``class_net.*``, ``box_net.*``),
    one of our artifacts or checkpoints, fills backbone, BiFPN and box net; its class net is
    used only when it predicts the same classes, else the class net keeps a fresh effdet
    initialisation (effdet's ``reset_head``). A timm backbone file (keys without those
    prefixes) fills the backbone alone; its classifier keys are ignored. Returns what was
    loaded and what was reset, per part.
    """
    state = read_state_dict(path)
    report: dict[str, list[str]] = {"loaded": [], "reset": []}
    if not any(key.startswith(("backbone.", "fpn.")) for key in state):
        load_strict(extractor.backbone, state, path, "backbone", ignore_extra=True)
        report["loaded"].append("backbone")
        return report
    for name in ("backbone", "fpn"):
        load_strict(
            getattr(extractor, name), _strip(state, f"{name}."), path, name, ignore_extra=True
        )
        report["loaded"].append(name)
    if head is None:
        return report
    if not any(key.startswith("box_net.") for key in state):
        report["reset"].extend(["class_net", "box_net"])
        return report
    if head.in_multiplier != 1:
        raise ValueError(
            f"{path}: a single detector's head takes {extractor.out_channels} channels; "
            f"this head takes {head.in_channels} (in_multiplier={head.in_multiplier})"
        )
    artifact = read_artifact(path) if is_artifact(path) else None
    if artifact is not None and artifact.meta.get("stage") == 3:
        raise ValueError(
            f"{path} is {artifact.describe()}, whose head reads two feature sets side by side: "
            "it cannot start a single detector's head. Give its SM teacher's (Stage I) "
            "artifact, or an effdet checkpoint"
        )
    load_strict(head.box_net, _strip(state, "box_net."), path, "box_net", ignore_extra=True)
    report["loaded"].append("box_net")
    class_state = _strip(state, "class_net.")
    own_shapes = {key: value.shape for key, value in head.class_net.state_dict().items()}
    if class_state and {key: value.shape for key, value in class_state.items()} == own_shapes:
        head.class_net.load_state_dict(class_state)
        report["loaded"].append("class_net")
    else:
        head.reset_parameters(class_net_only=True)
        report["reset"].append("class_net")
    return report


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
