"""One entry point for everything: ``python cli.py <command> ...``.

``fit``, ``validate``, ``test`` and ``predict`` go to Lightning's ``LightningCLI`` (models and
data modules chosen by class path in a YAML config); the other commands are plain tools, each
a ``main(argv)`` in the module that owns the work.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# command -> module whose ``main(argv: list[str]) -> int`` runs it
TOOLS = {
    "phantom": "datamodules.phantom",
    "prepare": "datamodules.prepare",
    "check-data": "datamodules.check",
    "adapt": "datamodules.adapters",
    "evaluate": "metrics.evaluate",
    "report": "analysis.report",
    "export": "lightning_modules.weights",
    "pipeline": "pipeline.runner",
    "sweep": "pipeline.sweep",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict", "assess")
DEFAULT_LOGGER = {
    "class_path": "pytorch_lightning.loggers.WandbLogger",
    "init_args": {"project": "mammofuse", "offline": True},
}


def lightning_cli_class():
    """The project's LightningCLI: a run folder (``trainer.default_root_dir``) holds the
    checkpoints (``<run>/checkpoints``, ``last.ckpt`` kept), the stage artifact written at the
    end of ``fit`` (``<run>/artifact``), the predictions CSVs (``<run>/predictions``) and the
    offline W&B logs, unless the config says otherwise."""
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

    from callbacks import MetricsHistory, PredictionWriter, StageHandoff

    class RunFolderConfig(SaveConfigCallback):
        """``config.yaml`` in the run folder whatever the logger (Lightning's default puts it
        in the logger's version folder), so every tool finds a run's config in one place."""

        def save_config(self, trainer, pl_module, stage) -> None:  # called on rank 0 only
            os.makedirs(trainer.default_root_dir, exist_ok=True)
            self.parser.save(self.config, os.path.join(trainer.default_root_dir,
                                                       self.config_filename),
                             skip_none=False, overwrite=True, multifile=self.multifile)

    class MammoCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({"checkpoint.save_last": True})
            parser.add_lightning_class_args(PredictionWriter, "predictions")
            # At the end of fit the best checkpoint becomes <run>/artifact for the next stage.
            parser.add_lightning_class_args(StageHandoff, "handoff")
            parser.add_lightning_class_args(MetricsHistory, "history")
            parser.set_defaults({"trainer.logger": DEFAULT_LOGGER})
            # The model is built for the images the data module makes.
            parser.link_arguments("data.init_args.image_size", "model.init_args.image_size")
            parser.link_arguments("data.init_args.hit_min_distance",
                                  "model.init_args.hit_min_distance")

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            _artifact_as_pretrained(config)
            check_values(config)
            root = config.trainer.default_root_dir or os.getcwd()
            if config.checkpoint.dirpath is None:
                config.checkpoint.dirpath = os.path.join(root, "checkpoints")
            logger = config.trainer.logger
            init_args = getattr(logger, "init_args", None)
            # A logger left at its default save_dir (".") writes into the run folder.
            if init_args is not None and init_args.get("save_dir") in (None, "", "."):
                init_args.save_dir = root
                os.makedirs(root, exist_ok=True)

    MammoCLI.save_config_class = RunFolderConfig
    return MammoCLI


class ConfigValueError(ValueError):
    """A config value that cannot work, named by its key; printed as one line."""


INPUT_PATHS = ("pretrained", "init_from", "ffdm_teacher", "sm_teacher", "partner")


def check_values(config) -> None:
    """Refuse values that cannot train, naming the key, before any class is built (an error
    raised inside a class's __init__ would reach the user through jsonargparse's Union noise).
    """
    from lightning_modules.effdet_parts import check_architecture, get_efficientdet_config

    model = dict(config.model.init_args or {}) if config.get("model") else {}
    data = dict(config.data.init_args or {}) if config.get("data") else {}
    problems = []

    def bad(key: str, message: str) -> None:
        problems.append(f"{key}: {message}")

    alpha, gamma = model.get("focal_alpha"), model.get("focal_gamma")
    if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
        bad("model.init_args.focal_alpha", f"must lie in [0, 1] (Eq. 1's weight of the "
            f"positives), got {alpha}")
    if gamma is not None and float(gamma) < 0:
        bad("model.init_args.focal_gamma", f"must be >= 0, got {gamma}")
    rate = model.get("learning_rate")
    if rate is not None and not float(rate) > 0:
        bad("model.init_args.learning_rate", f"must be > 0, got {rate}")
    batch = data.get("batch_size")
    if batch is not None and int(batch) < 1:
        bad("data.init_args.batch_size", f"must be >= 1, got {batch}")
    size = data.get("image_size")
    architecture = model.get("architecture")
    if architecture:
        try:
            check_architecture(architecture)
        except ValueError as error:
            bad("model.init_args.architecture", str(error))
        else:
            overrides = dict(model.get("architecture_overrides") or {})
            max_level = int(overrides.get("max_level",
                                          get_efficientdet_config(architecture).max_level))
            stride = 2**max_level
            if size is not None and any(int(side) % stride for side in size):
                bad("data.init_args.image_size", f"{list(size)} must be divisible by "
                    f"2**max_level = {stride} for {architecture} (e.g. "
                    f"{[max(stride, int(side) // stride * stride) for side in size]})")
    # A FusedDetector built from a Stage III artifact (``pretrained``) reads nothing else.
    skipped = ("sm_teacher", "partner") if model.get("pretrained") and "partner" in model else ()
    for key in INPUT_PATHS:
        value = None if key in skipped else model.get(key)
        if value and not os.path.exists(value):
            bad(f"model.init_args.{key}", f"{value} does not exist")
    checkpoint = config.get("ckpt_path")
    if checkpoint and checkpoint != "last" and not os.path.exists(checkpoint):
        bad("ckpt_path", f"{checkpoint} does not exist")
    if problems:
        raise ConfigValueError("; ".join(problems))


def _check_checkpoint_argument(argv: list[str]) -> None:
    """Read ``--ckpt_path FILE`` once up front (``weights_only``): LightningCLI opens it before
    any hook of ours, and a truncated file would fail there without its name."""
    from lightning_modules.weights import read_checkpoint

    for index, arg in enumerate(argv):
        value = None
        if arg == "--ckpt_path" and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith("--ckpt_path="):
            value = arg.split("=", 1)[1]
        if value and os.path.isfile(value):
            try:
                read_checkpoint(value)
            except ValueError as error:
                raise ConfigValueError(f"ckpt_path: {error}") from error


def _artifact_as_pretrained(config) -> None:
    """``--ckpt_path <artifact folder>``: a stage artifact is no Lightning checkpoint; the model
    is built from it instead (its ``pretrained``), with fresh optimiser and loop state."""
    from lightning_modules.weights import is_artifact

    checkpoint = config.get("ckpt_path")
    if not checkpoint or not is_artifact(checkpoint):
        return
    init_args = config.model.init_args
    if "pretrained" not in init_args:
        raise ValueError(f"--ckpt_path {checkpoint} is a stage artifact, and "
                         f"{config.model.class_path} cannot be built from one (no `pretrained`)")
    init_args.pretrained = str(checkpoint)
    config.ckpt_path = None


CLI_KWARGS = {
    "subclass_mode_model": True,
    "subclass_mode_data": True,
    "save_config_kwargs": {"overwrite": True, "save_to_log_dir": False},
}


def run_lightning(args: list[str]):
    """Run a LightningCLI subcommand; returns the CLI object (its trainer, model, data)."""
    cli_class = lightning_cli_class()
    return cli_class(save_config_callback=cli_class.save_config_class, **CLI_KWARGS, args=args)


def assess(args: list[str]):
    """``cli.py assess ... --ckpt_path CKPT``: ``validate`` then ``test`` of one checkpoint in
    one process (one start-up instead of two), writing both splits' predictions. A Stage II
    student, which detects nothing, is validated only."""
    args = list(args)
    checkpoint = None
    for index, arg in enumerate(args):
        if arg.startswith("--ckpt_path="):
            checkpoint = args.pop(index).split("=", 1)[1]
            break
        if arg == "--ckpt_path" and index + 1 < len(args):
            checkpoint = args[index + 1]
            del args[index:index + 2]
            break
    cli_class = lightning_cli_class()
    cli = cli_class(save_config_callback=cli_class.save_config_class, **CLI_KWARGS, args=args,
                    run=False)
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint,
                         weights_only=True)
    if hasattr(cli.model, "detections"):
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint,
                         weights_only=True)
    return cli


def _data_file_first(argv: list[str]) -> list[str]:
    """Move ``--data FILE`` (a data module's own YAML, e.g. configs/data/sm_folder.yaml) before
    the ``--config`` files: a stage config's ``data.init_args`` (its modalities) then apply to
    the data class that file names, as they do after a ``--config`` data config."""
    for index, arg in enumerate(argv[1:], start=1):
        value = None
        if arg == "--data" and index + 1 < len(argv):
            value, end = argv[index + 1], index + 2
        elif arg.startswith("--data="):
            value, end = arg.split("=", 1)[1], index + 1
        if value is not None and value.endswith((".yaml", ".yml")) and os.path.isfile(value):
            return [argv[0], *argv[index:end], *argv[1:index], *argv[end:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        return int(importlib.import_module(TOOLS[argv[0]]).main(argv[1:]) or 0)
    if argv and argv[0] not in LIGHTNING_COMMANDS and not argv[0].startswith("-"):
        commands = ", ".join((*LIGHTNING_COMMANDS, *TOOLS))
        print(f"unknown command {argv[0]!r}; commands: {commands}", file=sys.stderr)
        return 2
    argv = _data_file_first(argv)
    if argv and argv[0] in ("fit", "validate", "test", "predict") and not any(
            arg.startswith("--weights_only") for arg in argv):
        argv.append("--weights_only=true")  # checkpoints load without unpickling code
    if argv and argv[0] == "predict" and "--overlays" in argv:
        argv = [arg if arg != "--overlays" else "--predictions.overlays=true" for arg in argv]
    try:
        _check_checkpoint_argument(argv)
        if argv and argv[0] == "assess":
            assess(argv[1:])
        else:
            run_lightning(argv)
    except ConfigValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
