"""Stage artifacts: reading, writing and checking what one stage hands the next, and turning a
Lightning checkpoint into one.

A *stage artifact* is a folder (``<run>/artifact/``) holding ``weights.safetensors`` and
``artifact.json``: what the weights are (stage, module class, modality, architecture and its
overrides, image size, BiFPN channels and levels, classes), where they came from (checkpoint,
its SHA-256, monitored metric and value, ``trained_steps``, config hash) and the SHA-256 of the
weight file. A later stage names an artifact by path and builds its parts from what the
artifact says, so its config never repeats an earlier stage's architecture. Nothing here
unpickles: artifacts are JSON and safetensors, torch files are read with ``weights_only=True``.
Other weight files (COCO effdet, timm backbones) load through ``pretrained.py``.

``python cli.py export --ckpt CKPT --out DIR`` turns a checkpoint of one of our stage modules
into its artifact by hand (the ``StageHandoff`` callback does it at the end of every ``fit``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.io import sha256_file

ARTIFACT_JSON = "artifact.json"
ARTIFACT_WEIGHTS = "weights.safetensors"
# The key under which a stage module stores its artifact spec in its Lightning checkpoints.
CHECKPOINT_SPEC_KEY = "mammofuse_artifact"
FORMAT_VERSION = 1


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names, dtypes, shapes and bytes (order-independent)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# -- artifacts ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """A stage artifact read from disk: its folder, its metadata and (lazily) its weights."""

    path: Path
    meta: dict[str, Any]

    @property
    def weights_path(self) -> Path:
        return self.path / self.meta.get("weights_file", ARTIFACT_WEIGHTS)

    def describe(self) -> str:
        """'a stage-1 TeacherDetector on ffdm', 'a stage-2 DistillStudent', ..."""
        return describe(
            self.meta.get("stage"),
            self.meta.get("module_class"),
            self.meta.get("modality"),
            self.meta.get("variant"),
        )

    def state(self, prefix: str | None = None) -> dict[str, torch.Tensor]:
        """The weights (``prefix`` stripped from the keys that have it, others left out)."""
        from safetensors.torch import load_file

        try:
            state = load_file(str(self.weights_path))
        except Exception as error:  # noqa: BLE001 - safetensors' errors have no common type
            raise ValueError(
                f"{self.weights_path} cannot be read as safetensors ({error})"
            ) from None
        if prefix is None:
            return state
        return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}

    def load_into(self, module: nn.Module, prefix: str, role: str) -> None:
        """Load every tensor of ``module`` from the artifact's ``prefix*`` keys, strictly."""
        load_strict(module, self.state(prefix), f"{role} {self.path}", prefix.rstrip("."))

    @property
    def reference(self) -> dict[str, str]:
        """What a later stage records of its input: the folder and the weights' SHA-256."""
        return {"path": str(self.path), "sha256": str(self.meta["weights_sha256"])}


def describe(stage, module_class, modality=None, variant=None) -> str:
    text = f"a stage-{stage} {module_class}"
    if variant:
        text += f" ({variant})"
    if modality and module_class == "TeacherDetector":
        text += f" on {modality}"
    return text


def is_artifact(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / ARTIFACT_JSON).is_file() or (path.name == ARTIFACT_JSON and path.is_file())


def read_artifact(path: str | os.PathLike, role: str = "artifact") -> Artifact:
    """Read an artifact folder (or its ``artifact.json``) and check its weight file's SHA-256.

    Raises FileNotFoundError or ValueError naming ``role`` and the path.
    """
    path = Path(path)
    if path.name == ARTIFACT_JSON:
        path = path.parent
    meta_path = path / ARTIFACT_JSON
    if not meta_path.is_file():
        hint = ""
        if path.suffix == ".ckpt":
            hint = f"; export it first: python cli.py export --ckpt {path} --out DIR"
        raise FileNotFoundError(f"{role}: {path} is not a stage artifact (no {meta_path}){hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{role}: cannot read {meta_path}: {error}") from error
    missing = [
        key
        for key in ("stage", "module_class", "architecture", "image_size", "weights_sha256")
        if key not in meta
    ]
    if missing:
        raise ValueError(f"{role}: {meta_path} lacks {missing}; is it a stage artifact?")
    artifact = Artifact(path, meta)
    weights = artifact.weights_path
    if not weights.is_file():
        raise FileNotFoundError(f"{role}: {path} has no weight file {weights.name}")
    actual = sha256_file(weights)
    if actual != meta["weights_sha256"]:
        raise ValueError(
            f"{role}: {weights} is corrupt or was changed: its SHA-256 is {actual}, "
            f"{meta_path.name} says {meta['weights_sha256']}"
        )
    return artifact


def check_artifact(
    artifact: Artifact,
    role: str,
    accepted: Sequence[tuple[int, str, str | None]],
    image_size: Sequence[int] | None = None,
) -> None:
    """Refuse an artifact that is not what ``role`` needs, naming both sides.

    ``accepted``: the (stage, module class, modality or None for any) it may be.
    """
    meta = artifact.meta
    if not any(
        meta["stage"] == stage
        and meta["module_class"] == module_class
        and (modality is None or meta.get("modality") == modality)
        for stage, module_class, modality in accepted
    ):
        expected = " or ".join(describe(*kind) for kind in accepted)
        raise ValueError(f"{role} {artifact.path} is {artifact.describe()}; expected {expected}")
    if image_size is not None and list(meta["image_size"]) != [int(s) for s in image_size]:
        raise ValueError(
            f"{role} {artifact.path} was trained at image_size {list(meta['image_size'])}; "
            f"this model is built for image_size {[int(s) for s in image_size]} (the data "
            f"config's image_size): train the earlier stage at this size, or set the data's "
            f"image_size to {list(meta['image_size'])}"
        )


def check_same_features(
    role: str, path, theirs: Mapping[str, Any], ours: Mapping[str, Any], ours_name: str
) -> None:
    """Refuse features that cannot be compared or concatenated level by level."""
    for key in ("fpn_channels", "min_level", "max_level"):
        if int(theirs[key]) != int(ours[key]):
            raise ValueError(
                f"{role} {path} makes features with {key} {theirs[key]} "
                f"({theirs['architecture']}); {ours_name} makes {key} {ours[key]} "
                f"({ours['architecture']}): their BiFPN levels must match"
            )


def write_artifact(
    out: str | os.PathLike, state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> Path:
    """Write ``state`` and ``meta`` as an artifact folder at ``out``, atomically.

    Everything goes into a temporary folder beside ``out`` (files fsynced), which then
    replaces ``out`` by rename: a reader sees the old artifact or the new one, never half.
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir()
    weights = temporary / ARTIFACT_WEIGHTS
    tensors = {key: value.detach().cpu().contiguous() for key, value in state.items()}
    save_file(tensors, str(weights), metadata={"format": "mammofuse-artifact"})
    meta = {**meta, "weights_file": ARTIFACT_WEIGHTS, "weights_sha256": sha256_file(weights)}
    (temporary / ARTIFACT_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    for file in (weights, temporary / ARTIFACT_JSON):
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())
    previous = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, previous)
    os.replace(temporary, out)
    _fsync_dir(out.parent)
    if previous.exists():
        shutil.rmtree(previous)
    return out


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load_torch_file(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)``; a file it cannot read is a ValueError naming
    ``what`` and the path, saying why in one clause (not torch's page of advice to unpickle
    with ``weights_only=False``, which would run whatever code the file holds)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"{what} {path} is a folder, neither a weight file nor a stage "
            f"artifact (no {ARTIFACT_JSON} in it)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the path named
        with open(path, "rb") as stream:
            head = stream.read(512)
        if zipfile.is_zipfile(path) or head[:1] == b"\x80":  # torch's zip format or a pickle
            detail = str(error).split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
            reason = (
                "a torch file that does not load as weights alone (it pickles other "
                f"objects: {detail[0] if detail else type(error).__name__}); save its "
                "state_dict, or export it to a stage artifact"
            )
        elif head and all(byte in b"\t\n\r" or 32 <= byte < 127 or byte >= 128 for byte in head):
            reason = "a text file (a table or a config?), not weights"
        else:
            reason = "not a torch file (truncated, or another kind of file)"
        raise ValueError(f"cannot read {what} {path}: {reason}") from None


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A Lightning checkpoint, read with ``weights_only=True``; errors name the path."""
    checkpoint = load_torch_file(path, "checkpoint")
    if not isinstance(checkpoint, Mapping):
        raise ValueError(
            f"cannot read checkpoint {path}: it holds a {type(checkpoint).__name__}, "
            "not a checkpoint"
        )
    return checkpoint


def _monitor_state(checkpoint: Mapping[str, Any]) -> tuple[str | None, float | None]:
    for name, state in (checkpoint.get("callbacks") or {}).items():
        if str(name).startswith("ModelCheckpoint") and isinstance(state, Mapping):
            monitor = state.get("monitor")
            score = state.get("best_model_score") if monitor else None
            return monitor, None if score is None else float(score)
    return None, None


def export_checkpoint(
    ckpt_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    config_hash: str | None = None,
    monitor: str | None = None,
    monitor_value: float | None = None,
) -> tuple[Path, bool]:
    """Turn a checkpoint of a stage module into its artifact at ``out``.

    Returns ``(out, written)``; ``written`` is False when ``out`` already holds the artifact
    of this very checkpoint (same SHA-256 and config hash): writing it again is a no-op.

    ``config_hash`` is recorded as given, computed by the caller: the pipeline's stage hash for
    a pipeline stage, ``callbacks.handoff.config_hash`` of the resolved config for a run
    started by hand, ``--config-hash`` (or None) for ``cli.py export``.
    """
    ckpt_path = Path(ckpt_path)
    checkpoint = read_checkpoint(ckpt_path)
    spec = checkpoint.get(CHECKPOINT_SPEC_KEY)
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"{ckpt_path} is not a checkpoint of a mammofuse stage module (no "
            f"{CHECKPOINT_SPEC_KEY!r} entry): TeacherDetector, DistillStudent and "
            f"FusedDetector write one"
        )
    checkpoint_sha = sha256_file(ckpt_path)
    out = Path(out)
    if is_artifact(out):
        try:
            existing = read_artifact(out)
        except (OSError, ValueError):
            existing = None
        if (
            existing is not None
            and existing.meta.get("checkpoint_sha256") == checkpoint_sha
            and existing.meta.get("config_hash") == config_hash
        ):
            return out, False
    state_dict = checkpoint["state_dict"]
    prefixes = tuple(spec["weights"])
    state = {key: value for key, value in state_dict.items() if key.startswith(prefixes)}
    saved_monitor, saved_value = _monitor_state(checkpoint)
    monitor = monitor if monitor is not None else saved_monitor
    monitor_value = monitor_value if monitor_value is not None else saved_value
    steps = state_dict.get("trained_steps")
    meta = {
        **spec,
        "format_version": FORMAT_VERSION,
        "monitor": monitor,
        "monitor_value": monitor_value,
        "trained_steps": None if steps is None else int(steps),
        "global_step": int(checkpoint.get("global_step", 0)),
        "epoch": int(checkpoint.get("epoch", 0)),
        "checkpoint": str(ckpt_path.resolve()),
        "checkpoint_sha256": checkpoint_sha,
        "config_hash": config_hash,  # the caller's skip key (see the docstring)
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return write_artifact(out, state, meta), True


def load_strict(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source,
    name: str,
    ignore_extra: bool = False,
) -> None:
    """Load every tensor ``module`` has from ``state``; missing or misshapen tensors (and,
    unless ``ignore_extra``, tensors the module lacks) are an error naming them."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = [] if ignore_extra else sorted(set(state) - set(own))
    mismatched = sorted(
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
        for key in own
        if key in state and state[key].shape != own[key].shape
    )
    if missing or mismatched or extra:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (first: {missing[:3]})")
        if mismatched:
            details.append(f"{len(mismatched)} of another shape (first: {mismatched[:3]})")
        if extra:
            details.append(f"{len(extra)} the model lacks (first: {extra[:3]})")
        raise ValueError(
            f"{source} does not fit this model's {name}: "
            + "; ".join(details)
            + ". Check that the architecture (and its overrides) match the file."
        )
    module.load_state_dict({key: state[key] for key in own})


# -- cli.py export ----------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="cli.py export",
        description="Turn a Lightning checkpoint of a stage module into its stage artifact.",
    )
    parser.add_argument(
        "--ckpt", required=True, help="a .ckpt of TeacherDetector, DistillStudent or FusedDetector"
    )
    parser.add_argument("--out", required=True, help="the artifact folder to write")
    parser.add_argument(
        "--config-hash", default=None, help="recorded in the artifact (the pipeline's skip key)"
    )
    args = parser.parse_args(argv)
    try:
        out, written = export_checkpoint(args.ckpt, args.out, config_hash=args.config_hash)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    artifact = read_artifact(out)
    state = "written" if written else "unchanged (already the artifact of this checkpoint)"
    print(
        f"{out}: {artifact.describe()}, {state}; weights sha256 {artifact.meta['weights_sha256']}"
    )
    return 0
