"""What a Trainer runs stands apart from what runs once before training (CONTRIBUTING.md,
Layout): no module of the runtime imports the one-off tools, the pipeline or the analyses; and
``common/``, which every part imports, imports no part and no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable

from repo_paths import REPO_ROOT

RUNTIME = ("datamodules", "lightning_modules", "callbacks", "metrics")
FORBIDDEN = ("data_tools", "pipeline", "analysis")
# what common/ may not import: torch and what stands on it, and every other part of the package
TORCH = ("torch", "torchvision", "torchmetrics", "lightning", "pytorch_lightning", "effdet", "timm")
PARTS = (
    "datamodules",
    "data_tools",
    "lightning_modules",
    "callbacks",
    "metrics",
    "pipeline",
    "analysis",
    "cli",
)
COMMON_FORBIDDEN = TORCH + PARTS


def forbidden_imports(
    source: str, filename: str, forbidden: Iterable[str] = FORBIDDEN
) -> list[str]:
    """``file:line: imports module`` of every absolute import of a ``forbidden`` package in
    ``source``, at any depth (an import inside a function counts too), in line order."""
    forbidden = set(forbidden)
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in forbidden]
    return [f"{filename}:{line}: imports {name}" for line, name in sorted(found)]


def _problems(folders: Iterable[str], forbidden: Iterable[str]) -> tuple[int, list[str]]:
    files = sorted(path for folder in folders for path in (REPO_ROOT / folder).rglob("*.py"))
    return len(files), [
        problem
        for path in files
        for problem in forbidden_imports(
            path.read_text(), str(path.relative_to(REPO_ROOT)), forbidden
        )
    ]


def test_the_runtime_imports_no_tool():
    count, found = _problems(RUNTIME, FORBIDDEN)
    assert count > 20  # the walk found the packages
    assert not found, "the runtime imports a tool:\n" + "\n".join(found)


def test_common_imports_neither_torch_nor_another_part():
    count, found = _problems(["common"], COMMON_FORBIDDEN)
    assert count >= 5  # __init__, defaults, io, parallel, tables
    assert not found, "common/ imports torch or a part of the package:\n" + "\n".join(found)


def test_importing_common_loads_neither_torch_nor_another_part():
    # what the source check cannot see: an import that loads one of them indirectly
    code = (
        "import sys, common, common.defaults, common.io, common.parallel, common.tables\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(ast.literal_eval(done.stdout))
    assert "common" in loaded
    assert not loaded & set(COMMON_FORBIDDEN)


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


def test_the_check_of_common_finds_torch_and_the_parts():
    source = (
        "import hashlib, torch.nn\n"
        "from datamodules.batch import MODALITIES\n"
        "import torchvision_extra, metrics_extra  # other packages of such names are fine\n"
        "from common.defaults import IMAGE_SIZE  # common's own modules are fine\n"
        "\n"
        "def write():\n"
        "    import pytorch_lightning as pl\n"
        "    from cli import main\n"
    )
    assert forbidden_imports(source, "common/example.py", COMMON_FORBIDDEN) == [
        "common/example.py:1: imports torch.nn",
        "common/example.py:2: imports datamodules.batch",
        "common/example.py:7: imports pytorch_lightning",
        "common/example.py:8: imports cli",
    ]
    # the same source passes the runtime's check, which forbids other names
    assert forbidden_imports(source, "common/example.py") == []
