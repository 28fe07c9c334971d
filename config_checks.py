"""What a run's config (``fit``, ``validate``, ``test``, ``predict``, ``assess``) is checked
against before any class is built: every value by its rule (`value_problems`, `check_values`),
the precision, and the model a ``--ckpt_path`` holds against the model the config builds
(`model_source`, `check_model_source`). ``cli.py``'s LightningCLI calls these; each problem is
a `ConfigValueError` naming its key, printed as one ``error: key: message`` line.
"""

from __future__ import annotations

import os
from pathlib import Path


class ConfigValueError(ValueError):
    """A config value that cannot work, named by its key; printed as one line."""


# Linked from the data config: checked there, once.
_LINKED = ("image_size", "hit_min_distance")
_FIT_LIMITS = ("max_steps", "max_epochs", "limit_train_batches", "limit_val_batches")


def _init_args(config, group: str) -> dict:
    part = config.get(group) if hasattr(config, "get") else None
    init_args = getattr(part, "init_args", None) if part is not None else None
    return dict(init_args or {})


def value_problems(config, subcommand: str | None = None) -> list[tuple[str, str]]:
    """(key, what is wrong) of every value of a parsed run config that cannot work: each model
    and data init argument by its rule in `datamodules.values.RULES` (the model's settings
    objects by their own ``problems``, `lightning_modules.settings`), then the rules that
    join two values (the model's stride and the input size, the classes, the modalities the
    model reads and the data holds, the trainer's limits of a ``fit``)."""
    from common.defaults import MODALITIES
    from datamodules.values import GROUP_RULES, RULES, divisible, model_stride
    from lightning_modules.settings import STAGE_SETTINGS

    model, data = _init_args(config, "model"), _init_args(config, "data")
    problems = []
    # A FusedDetector built from a Stage III artifact (``pretrained``) reads nothing else.
    skipped = {"sm_teacher", "partner"} if model.get("pretrained") and "partner" in model else set()
    for group, values in (("model", model), ("data", data)):
        for name, value in values.items():
            rule = RULES.get(name)
            if rule is None or name in skipped or (group == "model" and name in _LINKED):
                continue
            wrong = rule(value)
            if wrong:
                problems.append((f"{group}.init_args.{name}", wrong))
    for name, kind in STAGE_SETTINGS.items():
        # jsonargparse holds a settings object as nested keys (optimizer.learning_rate)
        fields = {
            key.split(".", 1)[1]: value
            for key, value in model.items()
            if key.startswith(f"{name}.")
        }
        problems.extend(
            (f"model.init_args.{name}.{field}", wrong)
            for field, wrong in kind.problems(fields)
            if field not in _LINKED
        )
    for group, rules in GROUP_RULES.items():
        values = config.get(group) if hasattr(config, "get") else None
        values = dict(values) if values is not None and hasattr(values, "items") else {}
        for name, rule in rules.items():
            wrong = rule(values.get(name)) if name in values else None
            if wrong:
                problems.append((f"{group}.{name}", wrong))
    bad = {key.rsplit(".", 1)[-1] for key, _ in problems}
    architecture = model.get("architecture")
    if architecture:
        try:
            stride = model_stride(architecture, model.get("architecture_overrides"))
        except ValueError as error:
            problems.append(("model.init_args.architecture", str(error)))
        else:
            size = data.get("image_size")
            wrong = (
                None
                if size is None or "image_size" in bad
                else divisible(size, stride, architecture)
            )
            if wrong:
                problems.append(
                    (
                        "data.init_args.image_size",
                        wrong.replace(f"by {stride} on each side", f"by 2**max_level = {stride}"),
                    )
                )
    classes = data.get("pathology_classes")
    num_classes = model.get("num_classes")
    if classes and "pathology_classes" not in bad and "num_classes" not in bad and num_classes:
        over = {key: index for key, index in classes.items() if int(index) >= int(num_classes)}
        if over:
            problems.append(
                (
                    "data.init_args.pathology_classes",
                    f"class indices {over} must be below the model's num_classes "
                    f"({num_classes}): the classes are 0 .. {int(num_classes) - 1}",
                )
            )
    read = (
        set(MODALITIES)
        if model.get("ffdm_teacher")
        else ({model["modality"]} if model.get("modality") else set())
    )
    held = data.get("modalities")
    if held and "modalities" not in bad and "modality" not in bad and not read <= set(held):
        problems.append(
            (
                "data.init_args.modalities",
                f"{list(held)}, but the model reads {sorted(read)}: the data must "
                f"hold every image the model reads",
            )
        )
    if subcommand == "fit":
        trainer = dict(config.get("trainer") or {})
        for name in _FIT_LIMITS:
            if trainer.get(name) == 0 and name not in bad:
                problems.append(
                    (
                        f"trainer.{name}",
                        "must not be 0 in a fit: a fit writes the stage artifact the "
                        "next stage reads, and this one would train (or select) "
                        "nothing",
                    )
                )
    return problems


def check_values(config, subcommand: str | None = None) -> None:
    """Refuse values that cannot work, naming the key, before any class is built (an error
    raised inside a class's __init__ would reach the user through jsonargparse's Union noise).
    """
    problems = value_problems(config, subcommand)
    if problems:
        raise ConfigValueError("\nerror: ".join(f"{key}: {message}" for key, message in problems))


def _resolve_precision(config) -> None:
    """``trainer.precision`` left unset runs in ``bf16-mixed`` where the run will train on a
    CUDA GPU and in Lightning's 32-true elsewhere; a precision that is set is kept, unless it is
    one the package refuses (``bf16-true``, ``16-true``)."""
    from lightning_modules.stage import check_precision, default_precision

    trainer = config.trainer
    if trainer.precision is None:
        trainer.precision = default_precision(trainer.accelerator)
    try:
        check_precision(trainer.precision)
    except ValueError as error:
        raise ConfigValueError(str(error)) from error


# -- the model a checkpoint holds against the model the config builds --------------------------
STAGES = {"TeacherDetector": 1, "DistillStudent": 2, "FusedDetector": 3}
_SPECIAL_CHECKPOINTS = ("last", "best", "hpc", "registry")


def model_source(path: str | None) -> dict | None:
    """What ``--ckpt_path`` holds: an artifact's metadata or a checkpoint's artifact spec (None
    for none, or Lightning's ``last``/``best``). Raises `ConfigValueError` for a file that is
    neither a stage artifact nor a checkpoint of one of our stage modules."""
    from lightning_modules.artifacts import (
        CHECKPOINT_SPEC_KEY,
        is_artifact,
        read_artifact,
        read_checkpoint,
    )

    if not path or str(path) in _SPECIAL_CHECKPOINTS or str(path).startswith("registry"):
        return None
    if not os.path.exists(path):
        raise ConfigValueError(f"ckpt_path: {path} does not exist")
    try:
        if is_artifact(path):
            return dict(read_artifact(path, "ckpt_path").meta)
        spec = read_checkpoint(path).get(CHECKPOINT_SPEC_KEY)
    except (OSError, ValueError) as error:
        raise ConfigValueError(f"ckpt_path: {error}") from error
    if not isinstance(spec, dict):
        raise ConfigValueError(
            f"ckpt_path: {path} is not a checkpoint of a mammofuse stage "
            "module (it has no stage spec): TeacherDetector, DistillStudent "
            "and FusedDetector checkpoints and stage artifacts are"
        )
    return dict(spec)


def _artifact_meta(path) -> dict | None:
    """An input artifact's metadata (no weight hashing), or None when it cannot be read."""
    import json

    from lightning_modules.artifacts import ARTIFACT_JSON

    try:
        return json.loads((Path(path) / ARTIFACT_JSON).read_text()) if path else None
    except (OSError, ValueError):
        return None


def expected_model(config) -> dict:
    """What the config builds, as an artifact spec records it (the fields it can say)."""
    from lightning_modules.effdet_parts.architecture import _plain

    model, data = _init_args(config, "model"), _init_args(config, "data")
    name = str(config.model.class_path).rsplit(".", 1)[-1]
    expected = {"module_class": name, "stage": STAGES.get(name)}
    size = data.get("image_size") or model.get("image_size")
    if size:
        expected["image_size"] = [int(side) for side in size]
    architecture_of = None
    if name == "TeacherDetector":
        expected["modality"] = model.get("modality")
        expected["num_classes"] = model.get("num_classes")
        architecture_of = model
    elif name == "DistillStudent":
        architecture_of = (
            model
            if model.get("architecture")
            else _artifact_meta(model.get("ffdm_teacher") or model.get("sm_teacher"))
        )
    elif name == "FusedDetector":
        partner = _artifact_meta(model.get("partner"))
        if partner and partner.get("stage") in (1, 2):
            expected["variant"] = "fused" if partner["stage"] == 2 else "upper_bound"
        architecture_of = _artifact_meta(model.get("sm_teacher"))
        if architecture_of:
            expected["num_classes"] = architecture_of.get("num_classes")
    if architecture_of and architecture_of.get("architecture"):
        expected["architecture"] = architecture_of["architecture"]
        expected["architecture_overrides"] = _plain(
            dict(architecture_of.get("architecture_overrides") or {})
        )
    return {key: value for key, value in expected.items() if value is not None}


def check_model_source(config, path: str, spec: dict) -> None:
    """Refuse a ``--ckpt_path`` whose model is not the one the config builds (class, stage,
    modality, Stage III variant, architecture, classes, input size), naming both sides."""
    from lightning_modules.artifacts import describe

    expected = expected_model(config)
    differ = [
        (key, spec[key], value)
        for key, value in expected.items()
        if key in spec and _same(spec[key]) != _same(value)
    ]
    if not differ:
        return
    theirs = describe(
        spec.get("stage"), spec.get("module_class"), spec.get("modality"), spec.get("variant")
    )
    ours = describe(
        expected.get("stage"),
        expected.get("module_class"),
        expected.get("modality"),
        expected.get("variant"),
    )
    details = "; ".join(f"{key} {a!r} there, {b!r} in the config" for key, a, b in differ)
    raise ConfigValueError(
        f"ckpt_path: {path} holds {theirs}, but the config builds {ours} "
        f"({details}): give this config's checkpoint, or the config of "
        f"that checkpoint's stage"
    )


def _same(value):
    """A spec value in one form whatever its container types (tuples, lists, None)."""
    import json

    return json.dumps(value if value is not None else {}, sort_keys=True, default=list)


def _artifact_as_pretrained(config) -> None:
    """``--ckpt_path <artifact folder>``: a stage artifact is no Lightning checkpoint; the model
    is built from it instead (its ``pretrained``), with fresh optimiser and loop state."""
    from lightning_modules.artifacts import is_artifact

    checkpoint = config.get("ckpt_path")
    if not checkpoint or not is_artifact(checkpoint):
        return
    init_args = config.model.init_args
    if "pretrained" not in init_args:
        raise ConfigValueError(
            f"ckpt_path: {checkpoint} is a stage artifact, and "
            f"{config.model.class_path} cannot be built from one (it has no "
            f"`pretrained`): give its checkpoint (checkpoints/*.ckpt)"
        )
    init_args.pretrained = str(checkpoint)
    config.ckpt_path = None


def yaml_arguments(argv: list[str], flags: tuple[str, ...]):
    """(position in ``argv``, flag, path, content) of each YAML file the command line gives
    with one of ``flags`` (``--config FILE`` or ``--config=FILE``); content None for a file
    that cannot be read or parsed."""
    import yaml

    for index, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        if name not in flags:
            continue
        value = value or (argv[index + 1] if index + 1 < len(argv) else "")
        try:
            with open(value) as stream:
                content = yaml.safe_load(stream)
        except (OSError, yaml.YAMLError):
            content = None
        yield index, name, value, content


def moved_settings(argv: list[str]) -> list[str]:
    """``old key: moved to new key`` for each optimiser or evaluation setting that a command
    line argument or a ``--config`` file gives at its place before the settings objects
    (directly under ``model.init_args``), where jsonargparse would only say it "is not
    accepted"."""
    from dataclasses import fields

    from lightning_modules.settings import STAGE_SETTINGS

    moved = {
        item.name: f"{group}.{item.name}"
        for group, kind in STAGE_SETTINGS.items()
        for item in fields(kind)
        if item.name != "hit_min_distance"  # the data's; the model's is linked from it
    }
    found = []  # (position in argv, key, where): reported in the order given
    for index, arg in enumerate(argv):
        name = arg.partition("=")[0]
        key = name.removeprefix("--model.init_args.")
        if key != name and key in moved:
            found.append((index, f"model.init_args.{key}", "the command line"))
    for index, _, value, config in yaml_arguments(argv, ("--config", "-c")):
        # a file that cannot be read: jsonargparse names it
        model = config.get("model") if isinstance(config, dict) else None
        init_args = model.get("init_args") if isinstance(model, dict) else None
        if isinstance(init_args, dict):
            found += [(index, f"model.init_args.{key}", value) for key in init_args if key in moved]
    found.sort(key=lambda item: item[0])  # stable: a file's keys keep their order
    return [
        f"{key} ({where}): moved to model.init_args.{moved[key.rsplit('.', 1)[1]]}, "
        f'one object for the optimiser and one for the evaluation (README, "Stage by stage")'
        for _, key, where in found
    ]
