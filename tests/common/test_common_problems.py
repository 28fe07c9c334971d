"""`common.problems` names every problem kind once, and the package's code writes none out:
a kind argument is a constant of `common.problems` (or made from one of its templates), never a
string literal, and a kind's words appear nowhere else in the package's source."""

from __future__ import annotations

import ast
from dataclasses import fields

from repo_paths import REPO_ROOT

import common.problems as problems_module
from common.problems import (
    BAD_VALUE,
    EMPTY_VALUE,
    FILE_NOT_FOUND,
    INVERTED_BOX,
    KIND_TEMPLATES,
    KINDS,
    Problem,
    format_problems,
)
from common.tables import BOX_AXES, inverted_kind

PACKAGE = (
    "cli.py",
    "common",
    "datamodules",
    "data_tools",
    "lightning_modules",
    "callbacks",
    "metrics",
    "pipeline",
    "analysis",
)
# callables whose ``kind`` parameter is not a problem's kind
OTHER_KINDS = {
    "FeatureProjection",  # the projection's kind ("conv3x3", "shared")
    "_image_frame",  # an image's modality ("ffdm", "sm")
}
# reasons worded as a kind is ("empty value" is both; evaluate's "file not found" too)
WORDED_AS_KINDS = {EMPTY_VALUE, FILE_NOT_FOUND}
# The value of every kind: saved reports, JSON files and tests hold these words, so a kind's
# value never changes (a new kind is added here and in `common.problems` alike).
SAVED_VALUES = {
    "SM and FFDM of different patients",
    "SM and FFDM of different studies",
    "SM and FFDM swapped",
    "annotated not boolean",
    "box lost in preprocessing",
    "box outside its image",
    "breast crop enlarged too much",
    "breast crop keeps little of the image",
    "cache entry differs from its DICOM",
    "cache made with other settings",
    "colour image",
    "constant pixels",
    "coordinate not a number",
    "corrupt DICOM",
    "detection outside its image",
    "duplicate exam view",
    "duplicate ffdm_path",
    "duplicate image",
    "duplicate image_id",
    "duplicate pair_id",
    "duplicate row",
    "duplicate sm_path",
    "empty file",
    "empty value",
    "exam of two patients",
    "file not found",
    "image far smaller than the input",
    "image of the other modality",
    "image_id not listed",
    "label 1 without a malignant lesion",
    "label 1 without a target box",
    "label not 0/1",
    "laterality disagrees with the manifest",
    "lesion of unknown pair",
    "lesion outside its image",
    "malignant lesion with label 0",
    "missing column",
    "missing file",
    "modality not MG",
    "multi-frame image",
    "no detections",
    "no image file found",
    "no images",
    "no lesion table",
    "no pixel data",
    "no rows",
    "non-finite pixels",
    "not a DICOM file",
    "not a number",
    "not an SM",
    "pathology class without lesions",
    "patient in two splits",
    "pixel data cannot be decoded",
    "problem",
    "score outside [0, 1]",
    "sm_path = ffdm_path",
    "truncated DICOM",
    "unknown laterality",
    "unknown modality",
    "unknown pathology",
    "unknown split",
    "unknown view",
    "unreadable cache entry",
    "unreadable file",
    "unreadable image",
    "view disagrees with the manifest",
}


def _docstrings(tree: ast.Module) -> set[int]:
    nodes = [tree] + [
        node
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    ]
    return {
        id(node.body[0].value)
        for node in nodes
        if node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def kind_parameters(trees: dict[str, ast.Module]) -> dict[str, dict[str, int]]:
    """Where each callable of ``trees`` that takes a ``kind`` takes it: by the name it is called
    by (a function's, a class's, a method's), the positional index of ``kind`` (without
    ``self``) by owner (the function or class, or the class of the method); `Problem`'s field."""
    found = {"Problem": {"Problem": [field.name for field in fields(Problem)].index("kind")}}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        called = node.name if item.name == "__init__" else item.name
                        _add_kind(found, called, node.name, item)
            elif isinstance(node, ast.FunctionDef) and not _is_method(tree, node):
                _add_kind(found, node.name, node.name, node)
    return found


def _is_method(tree: ast.Module, function: ast.FunctionDef) -> bool:
    return any(function in node.body for node in ast.walk(tree) if isinstance(node, ast.ClassDef))


def _add_kind(found: dict, called: str, owner: str, function: ast.FunctionDef) -> None:
    names = [argument.arg for argument in function.args.args]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    if "kind" in names and owner not in OTHER_KINDS and called not in OTHER_KINDS:
        found.setdefault(called, {})[owner] = names.index("kind")


def _visible(tree: ast.Module) -> set[str]:
    """The names a module defines or imports (any depth: an import inside a function too)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
    return names


def literal_kinds(trees: dict[str, ast.Module]) -> tuple[int, list[str]]:
    """(kind arguments checked, ``file:line: ...`` of each kind written out): a kind argument
    (see `kind_parameters`; a call is matched to the functions and classes its module defines
    or imports) holding a string literal or f-string, and a string equal to a kind anywhere
    but in ``common/problems.py`` and docstrings."""
    parameters = kind_parameters(trees)
    checked, found = 0, []
    for filename, tree in trees.items():
        if filename == "common/problems.py":
            continue
        docstrings, visible = _docstrings(tree), _visible(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in KINDS
                and node.value not in WORDED_AS_KINDS
                and id(node) not in docstrings
            ):
                found.append(f"{filename}:{node.lineno}: the kind {node.value!r} written out")
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            owners = {
                index for owner, index in parameters.get(name, {}).items() if owner in visible
            }
            arguments = [node.args[i] for i in sorted(owners) if i < len(node.args)]
            if owners:
                arguments += [keyword.value for keyword in node.keywords if keyword.arg == "kind"]
            for argument in arguments:
                checked += 1
                literals = [
                    part.value
                    for part in ast.walk(argument)
                    if isinstance(part, ast.Constant) and isinstance(part.value, str)
                ]
                if literals:
                    found.append(f"{filename}:{argument.lineno}: {name}(kind {literals[0]!r})")
    unique = dict.fromkeys(found)
    return checked, sorted(unique, key=lambda line: (line.split(":")[0], int(line.split(":")[1])))


def _package_trees() -> dict[str, ast.Module]:
    paths = [REPO_ROOT / "cli.py"] + [
        path for part in PACKAGE[1:] for path in sorted((REPO_ROOT / part).rglob("*.py"))
    ]
    return {
        str(path.relative_to(REPO_ROOT)): ast.parse(path.read_text(), str(path)) for path in paths
    }


def test_every_kind_is_named_once_with_its_saved_value():
    assert len(KINDS) == len(set(KINDS)) == 66
    assert set(KINDS) == SAVED_VALUES
    constants = {
        name: value
        for name, value in vars(problems_module).items()
        if name.isupper() and isinstance(value, str)
    }
    named = [name for name, value in constants.items() if value in KINDS]
    assert len(named) == len(KINDS)  # one name per kind, and every kind constant in KINDS
    assert set(constants) - set(named) == {"ROW_CONVENTION", "BAD_VALUE", "INVERTED_BOX"}
    assert Problem("a.csv", 2, "x", "why").kind == problems_module.DEFAULT_KIND == "problem"
    assert problems_module.MISSING_COLUMN == "missing column"
    assert problems_module.NO_TARGET == "label 1 without a target box"


def test_the_kinds_made_from_a_column_name():
    assert KIND_TEMPLATES == (BAD_VALUE, INVERTED_BOX)
    assert BAD_VALUE.format(column="SeriesTime") == "bad SeriesTime"
    assert [inverted_kind(low, high) for low, high in BOX_AXES] == ["x2 <= x1", "y2 <= y1"]
    assert not {BAD_VALUE.format(column="x1"), inverted_kind("x1", "x2")} & set(KINDS)


def test_format_problems_counts_the_kinds():
    listed = [
        Problem("m.csv", 3, "view", "'XX' is not one of CC, MLO", problems_module.UNKNOWN_VIEW),
        Problem("m.csv", 4, "view", "'YY' is not one of CC, MLO", problems_module.UNKNOWN_VIEW),
        Problem("m.csv", None, "label", "missing required column", "missing column"),
    ]
    assert format_problems(listed, "the manifest", rows_note=False).splitlines() == [
        "3 problem(s) in the manifest:",
        "  m.csv row 3, column view: 'XX' is not one of CC, MLO",
        "  m.csv row 4, column view: 'YY' is not one of CC, MLO",
        "  m.csv column label: missing required column",
        "by kind: missing column: 1, unknown view: 2",
    ]


def test_the_check_finds_a_kind_written_out():
    source = (
        "import numpy as np\n"
        "from common.problems import MISSING_COLUMN, Problem\n"
        "class _Problems:\n"
        "    def whole(self, file, reason, kind, column=None): ...\n"
        "class FeatureProjection:\n"
        "    def __init__(self, channels, num_levels, kind='conv3x3'): ...\n"
        "def check(problems, column, order):\n"
        "    Problem('a.csv', 2, 'x', 'why', kind='new')\n"
        "    Problem('a.csv', 2, 'x', 'why', 'new too')\n"
        "    Problem('a.csv', 2, 'x', 'missing required column', MISSING_COLUMN)\n"
        "    problems.whole('a.csv', 'why', f'bad {column}')\n"
        "    problems.whole('a.csv', 'why', MISSING_COLUMN)\n"
        "    if problems[0].kind == 'missing column': ...\n"
        "    np.argsort(order, kind='stable')\n"
        "    FeatureProjection(8, 3, kind='shared')\n"
    )
    checked, found = literal_kinds({"datamodules/example.py": ast.parse(source)})
    assert checked == 5
    assert found == [
        "datamodules/example.py:8: Problem(kind 'new')",
        "datamodules/example.py:9: Problem(kind 'new too')",
        "datamodules/example.py:11: whole(kind 'bad ')",
        "datamodules/example.py:13: the kind 'missing column' written out",
    ]


def test_the_package_writes_no_kind_out():
    trees = _package_trees()
    checked, found = literal_kinds(trees)
    assert len(trees) > 80  # the walk found the package
    assert "datamodules/manifest/validation.py" in trees
    assert checked >= 60  # the kind arguments of the validators were found and checked
    assert not found, "a problem kind written out, not a common.problems constant:\n" + "\n".join(
        found
    )
