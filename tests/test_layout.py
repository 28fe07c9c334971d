"""What a Trainer runs stands apart from what runs once before training (CONTRIBUTING.md,
Layout): no module of the runtime imports the one-off tools, the pipeline or the analyses."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ("datamodules", "lightning_modules", "callbacks", "metrics")
FORBIDDEN = ("data_tools", "pipeline", "analysis")


def forbidden_imports(source: str, filename: str) -> list[str]:
    """``file:line: imports module`` of every absolute import of a FORBIDDEN package in
    ``source``, at any depth (an import inside a function counts too), in line order."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in FORBIDDEN]
    return [f"{filename}:{line}: imports {name}" for line, name in sorted(found)]


def test_the_runtime_imports_no_tool():
    files = sorted(path for folder in RUNTIME for path in (ROOT / folder).rglob("*.py"))
    assert len(files) > 20  # the walk found the packages
    found = [problem for path in files
             for problem in forbidden_imports(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "the runtime imports a tool:\n" + "\n".join(found)


def test_the_check_finds_every_form_of_import():
    source = (
        "import os, pipeline\n"
        "from data_tools import check\n"
        "from metrics.analysis import x  # a runtime module of that name is no tool\n"
        "import analysis_extra\n"
        "\n"
        "def setup():\n"
        "    from data_tools.prepare import prepare_cache\n"
        "    import analysis.report as report\n"
    )
    assert forbidden_imports(source, "datamodules/example.py") == [
        "datamodules/example.py:1: imports pipeline",
        "datamodules/example.py:2: imports data_tools",
        "datamodules/example.py:7: imports data_tools.prepare",
        "datamodules/example.py:8: imports analysis.report",
    ]
