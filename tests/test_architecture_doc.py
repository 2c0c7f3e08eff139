"""docs/ARCHITECTURE.md stays true where a machine can tell: every gateway module is in its code
map, and every file and test it names as the check of an invariant exists."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text()


def _test_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
    return names


def test_every_gateway_module_is_in_the_code_map() -> None:
    modules = sorted(p.name for p in (ROOT / "server").glob("*.py") if p.name != "__init__.py")
    missing = [m for m in modules if f"`server/{m}`" not in DOC]
    assert not missing, f"docs/ARCHITECTURE.md's code map does not name {missing}"


def test_every_file_and_test_the_document_names_exists() -> None:
    paths = set(re.findall(r"`((?:tests|server|engine|client|proto|scripts)/[\w./-]+)`", DOC))
    paths |= set(re.findall(r"`(tests/[\w/]+\.py)::\w+`", DOC))
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists())
    assert not missing, f"docs/ARCHITECTURE.md names files that do not exist: {missing}"
    named = set(re.findall(r"`(?:tests/[\w/]+\.py::)?(test_\w+)`", DOC))
    unknown = sorted(named - _test_names())
    assert named and not unknown, f"docs/ARCHITECTURE.md names tests that do not exist: {unknown}"
