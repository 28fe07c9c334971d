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
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def run_lightning(args: list[str]) -> None:
    from pytorch_lightning.cli import LightningCLI

    LightningCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        return int(importlib.import_module(TOOLS[argv[0]]).main(argv[1:]) or 0)
    if argv and argv[0] not in LIGHTNING_COMMANDS and not argv[0].startswith("-"):
        commands = ", ".join((*LIGHTNING_COMMANDS, *TOOLS))
        print(f"unknown command {argv[0]!r}; commands: {commands}", file=sys.stderr)
        return 2
    run_lightning(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
