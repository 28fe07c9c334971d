"""One entry point for everything: ``python cli.py <command> ...``.

``fit``, ``validate``, ``test`` and ``predict`` go to Lightning's ``LightningCLI`` (models and
data modules chosen by class path in a YAML config); the other commands are plain tools, each
a ``main(argv)`` in the module that owns the work.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from config_checks import (
    ConfigValueError,
    _artifact_as_pretrained,
    _init_args,
    _resolve_precision,
    check_model_source,
    check_values,
    model_source,
    moved_settings,
    yaml_arguments,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# command -> module whose ``main(argv: list[str]) -> int`` runs it
TOOLS = {
    "phantom": "data_tools.phantom",
    "prepare": "data_tools.prepare",
    "check-data": "data_tools.check",
    "adapt": "data_tools.embed",
    "evaluate": "metrics.evaluate",
    "report": "analysis.report",
    "export": "lightning_modules.artifacts",
    "pipeline": "pipeline.runner",
    "sweep": "pipeline.sweep",
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict", "assess")
DEFAULT_LOGGER = {
    "class_path": "pytorch_lightning.loggers.WandbLogger",
    "init_args": {"project": "mammofuse", "offline": True},
}


def lightning_cli_class(checkpoint: str | None = None):
    """The project's LightningCLI: a run folder (``trainer.default_root_dir``) holds the
    checkpoints (``<run>/checkpoints``, ``last.ckpt`` kept), the stage artifact written at the
    end of ``fit`` (``<run>/artifact``), the predictions CSVs (``<run>/predictions``) and the
    offline W&B logs, unless the config says otherwise. Every value is checked before any
    class is built, and ``--ckpt_path`` (``checkpoint`` for ``assess``, which runs without a
    subcommand) against the model the config builds."""
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

    from callbacks import MetricsHistory, PredictionWriter, Requeue, StageHandoff

    class RunFolderConfig(SaveConfigCallback):
        """``config.yaml`` in the run folder whatever the logger (Lightning's default puts it
        in the logger's version folder), so every tool finds a run's config in one place."""

        def save_config(self, trainer, pl_module, stage) -> None:  # called on rank 0 only
            os.makedirs(trainer.default_root_dir, exist_ok=True)
            self.parser.save(
                self.config,
                os.path.join(trainer.default_root_dir, self.config_filename),
                skip_none=False,
                overwrite=True,
                multifile=self.multifile,
            )

    class MammoCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            # Requeue's timer writes last.ckpt too: one file, not last-v1.ckpt beside it.
            parser.set_defaults(
                {"checkpoint.save_last": True, "checkpoint.enable_version_counter": False}
            )
            # last.ckpt on a wall-clock timer; under SLURM, save and requeue on its signal.
            parser.add_lightning_class_args(Requeue, "requeue")
            parser.add_lightning_class_args(PredictionWriter, "predictions")
            # At the end of fit the best checkpoint becomes <run>/artifact for the next stage.
            parser.add_lightning_class_args(StageHandoff, "handoff")
            parser.add_lightning_class_args(MetricsHistory, "history")
            parser.set_defaults({"trainer.logger": DEFAULT_LOGGER})
            # The model is built for the images the data module makes.
            parser.link_arguments("data.init_args.image_size", "model.init_args.image_size")
            parser.link_arguments(
                "data.init_args.hit_min_distance", "model.init_args.evaluation.hit_min_distance"
            )

        def _parse_ckpt_path(self) -> None:
            # Lightning replaces the config's model by the one the checkpoint's hyperparameters
            # name: a Stage I checkpoint given to a Stage III config would be validated as
            # Stage I. The checkpoint must hold the model the config builds, first.
            subcommand = self.config.get("subcommand")
            config = self.config[subcommand] if subcommand else self.config
            source = config.get("ckpt_path") if subcommand else checkpoint
            spec = model_source(source)
            if spec is not None:
                check_model_source(config, source, spec)
            super()._parse_ckpt_path()

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            _artifact_as_pretrained(config)
            check_values(config, self.subcommand)
            _resolve_precision(config)
            root = config.trainer.default_root_dir or os.getcwd()
            if config.checkpoint.dirpath is None:
                config.checkpoint.dirpath = os.path.join(root, "checkpoints")
            data_args = config.data.init_args if config.get("data") else None
            if data_args is not None and "check_dir" in data_args and not data_args.check_dir:
                data_args.check_dir = os.path.join(root, "data_checks")  # the data check's result
            logger = config.trainer.logger
            init_args = getattr(logger, "init_args", None)
            # A logger left at its default save_dir (".") writes into the run folder.
            if init_args is not None and init_args.get("save_dir") in (None, "", "."):
                init_args.save_dir = root
                os.makedirs(root, exist_ok=True)

        def before_fit(self) -> None:
            # A fit writes the artifact the next stage reads, selected on validation: refuse
            # a split with no pair before the first step rather than after the last.
            self._refuse_empty_splits(
                ("train", "val"), "a fit trains on train and selects the stage's artifact on val"
            )

        def before_validate(self) -> None:
            self._refuse_empty_splits(("val",), "validate assesses the model on val")

        def before_test(self) -> None:
            self._refuse_empty_splits(("test",), "test assesses the model on test")

        def _refuse_empty_splits(self, splits: tuple[str, ...], why: str) -> None:
            tables = getattr(self.datamodule, "tables", None)
            for split in splits if tables is not None else ():
                if len(tables(split)) == 0:
                    summary = getattr(self.datamodule, "summary", None)
                    raise ConfigValueError(
                        f"data: the {split} split of {self.datamodule.manifest} has no pairs "
                        f"({summary}): {why}; give it patients (the manifest's split column, "
                        "or data.init_args.split_fractions)"
                    )

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except (ValueError, TypeError, OSError) as error:
                message = own_error_message(
                    error, self.config[self.subcommand] if self.subcommand else self.config
                )
                if message is None:
                    raise
                raise ConfigValueError(message) from error

    MammoCLI.save_config_class = RunFolderConfig
    return MammoCLI


# -- errors of our own code, as one line --------------------------------------------------------
_ROOT = Path(__file__).resolve().parent
_GROUPS = {
    "lightning_modules": "model",
    "datamodules": "data",
    "callbacks": "callbacks",
    "metrics": "model",
    "pipeline": "pipeline",
}


def own_error_message(error: BaseException, config=None) -> str | None:
    """``key: message`` of the first ValueError, TypeError or OSError that this package's own
    code raised in the chain of ``error`` (what jsonargparse wraps into "Does not
    validate against any of the Union subtypes ... Given value: Namespace(...)"), or None
    when none was (a bug elsewhere keeps its traceback). The key is the part that raised it
    (``model``, ``data``), or its init argument when the message starts with one."""
    import traceback

    found, seen, current = None, set(), error
    while current is not None and id(current) not in seen and found is None:
        seen.add(id(current))
        frames = [frame for frame, _ in traceback.walk_tb(current.__traceback__)]
        own = [frame for frame in frames if _own_file(frame.f_code.co_filename)]
        if own and own[-1] is frames[-1] and isinstance(current, (ValueError, TypeError, OSError)):
            found = (current, own)  # the outermost: our code's own words for what went wrong
        current = current.__cause__ or current.__context__
    if found is None:
        return None
    exception, own = found
    message = str(exception).strip() or type(exception).__name__
    if isinstance(exception, ConfigValueError):
        return message
    # the part of the package the error came from: the first frame below the CLI's own
    # (this module and its config checks)
    parts = [Path(frame.f_code.co_filename).resolve().relative_to(_ROOT).parts[0] for frame in own]
    cli_files = (Path(__file__).name, "config_checks.py")
    part = next((name for name in parts if name not in cli_files), parts[-1])
    key = _GROUPS.get(part, part.removesuffix(".py"))
    if config is not None and key in ("model", "data"):
        values = _init_args(config, key)
        role = message.split(" ", 1)[0].rstrip(":")
        named = [
            name
            for name, value in values.items()
            if isinstance(value, str) and len(value) > 1 and value in message
        ]
        if role in values:
            key = f"{key}.init_args.{role}"
            message = message.removeprefix(f"{role}: ").removeprefix(f"{role} ")
        elif len(named) == 1:  # the message names the file given as this argument
            key = f"{key}.init_args.{named[0]}"
    return f"{key}: {message}"


def _own_file(filename: str) -> bool:
    path = Path(filename).resolve()
    return path.is_relative_to(_ROOT) and "site-packages" not in path.parts


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
            del args[index : index + 2]
            break
    cli_class = lightning_cli_class(checkpoint)
    cli = cli_class(
        save_config_callback=cli_class.save_config_class, **CLI_KWARGS, args=args, run=False
    )
    cli.trainer.validate(
        cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint, weights_only=True
    )
    if hasattr(cli.model, "detections"):
        cli.trainer.test(
            cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint, weights_only=True
        )
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


def _names_a_data_module(argv: list[str]) -> bool:
    """Whether a run's command line gives a data module: a ``--config`` or ``--data`` file whose
    ``data`` (or top level) names a ``class_path``, or ``--data.class_path``. Without one,
    jsonargparse would say that the stage config's ``modalities`` "is not accepted"."""
    given = ("--data.class_path", "--data={", "--data.init_args.class_path")
    if any(arg.startswith(given) for arg in argv):
        return True
    for _, name, _, config in yaml_arguments(argv, ("--config", "-c", "--data")):
        if config is None:
            return True  # jsonargparse names the file it cannot read
        part = config.get("data", config) if isinstance(config, dict) else None
        if name == "--data" and isinstance(config, dict) and config.get("class_path"):
            return True
        if isinstance(part, dict) and part.get("class_path"):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    import warnings

    # we hand LightningCLI the command line on purpose (reordered, --weights_only added)
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        return int(importlib.import_module(TOOLS[argv[0]]).main(argv[1:]) or 0)
    if argv and argv[0] not in LIGHTNING_COMMANDS and not argv[0].startswith("-"):
        commands = ", ".join((*LIGHTNING_COMMANDS, *TOOLS))
        print(f"unknown command {argv[0]!r}; commands: {commands}", file=sys.stderr)
        return 2
    argv = _data_file_first(argv)
    helping = any(arg in ("-h", "--help") or arg.startswith("--print_config") for arg in argv)
    if argv and argv[0] in LIGHTNING_COMMANDS and not helping and not _names_a_data_module(argv):
        print(
            "error: data: no data module: give a data config first (--config "
            "configs/data/....yaml) or --data FILE",
            file=sys.stderr,
        )
        return 2
    moved = moved_settings(argv) if argv and argv[0] in LIGHTNING_COMMANDS else []
    if moved:
        print("\n".join(f"error: {line}" for line in moved), file=sys.stderr)
        return 2
    if (
        argv
        and argv[0] in ("fit", "validate", "test", "predict")
        and not any(arg.startswith("--weights_only") for arg in argv)
    ):
        argv.append("--weights_only=true")  # checkpoints load without unpickling code
    if argv and argv[0] == "predict":  # predict's own flags, as the config keys they set
        flags = {
            "--overlays": "--predictions.overlays=true",
            "--allow-modality-mismatch": "--data.init_args.allow_modality_mismatch=true",
        }
        argv = [flags.get(arg, arg) for arg in argv]
    try:
        if argv and argv[0] == "assess":
            assess(argv[1:])
        else:
            run_lightning(argv)
    except ConfigValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError) as error:
        # bad input found while running (the data check of `setup`, an unreadable image):
        # its message names the file, row or key; a traceback would only bury it
        message = own_error_message(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
