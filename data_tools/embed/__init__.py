"""Public data sets -> the paired manifest: ``python cli.py adapt <data set> ...``.

Each data set's command is a module here with a ``main(argv) -> int`` (EMBED's: ``cli.py`` and
``check.py``); this module only picks it by name, so that ``adapt`` imports nothing a data set
does not need.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, function taking the remaining argv)
ADAPTERS = {
    "embed": ("data_tools.embed.cli", "main"),
    "embed-check": ("data_tools.embed.check", "main"),
}

USAGE = """usage: python cli.py adapt <data set> [options]

data sets:
  embed        EMBED open-data tables -> manifest.csv, lesions.csv, adapter_summary.json
  embed-check  draw a sample of the written EMBED boxes beside their mirror images (PNG)

`python cli.py adapt <data set> --help` lists a data set's options."""


def main(argv: list[str]) -> int:
    """Run the adapter named by ``argv[0]`` with the rest of argv."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], list(argv[1:])
    if name not in ADAPTERS:
        print(f"unknown data set {name!r}; known: {', '.join(ADAPTERS)}", file=sys.stderr)
        return 2
    module, function = ADAPTERS[name]
    return int(getattr(importlib.import_module(module), function)(rest) or 0)
