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
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint)
    if hasattr(cli.model, "detections"):
        cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=checkpoint)
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
    if argv and argv[0] == "predict" and "--overlays" in argv:
        argv = [arg if arg != "--overlays" else "--predictions.overlays=true" for arg in argv]
    if argv and argv[0] == "assess":
        assess(argv[1:])
    else:
        run_lightning(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
