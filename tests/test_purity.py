"""The engine is a pure library: importing it pulls in no network, RPC, database or event-loop
module. Each check runs in a fresh interpreter, since this test process has imported plenty.

Known leak (not the engine's): pycrdt 0.14's ``pycrdt/_version.py`` calls
``importlib.metadata.version("pycrdt")``; ``importlib.metadata`` imports ``email.message``, whose
``email.utils`` does ``import socket`` (CPython 3.11), and ``socket`` imports ``selectors``. So
``socket`` and ``selectors`` are in ``sys.modules`` after ``import virtualdom.engine`` although
nothing in the engine uses them. (``typing_extensions``, imported by anyio, which pycrdt imports,
also loads the C module ``_socket`` to look for a capsule type.)
"""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

import virtualdom.engine

FORBIDDEN = ("grpc", "google.protobuf", "sqlite3", "socket", "asyncio", "selectors", "ssl")
#: Forbidden modules that pycrdt's import drags in, and the import chain that does it.
KNOWN_LEAKS = {
    "socket": ["pycrdt/_version.py", "importlib/metadata", "email/utils.py"],
    "selectors": ["socket.py"],
}

# Runs in the child: imports `target`, and reports every forbidden module that got imported with
# the import statements (file paths) that led to it.
PROBE = textwrap.dedent(
    """
    import json, sys, traceback

    FORBIDDEN = {forbidden!r}
    chains = {{}}

    class Tracer:
        def find_spec(self, name, path=None, target=None):
            top = [f for f in FORBIDDEN if name == f or name.startswith(f + ".")]
            if top and top[0] not in chains:
                chains[top[0]] = [
                    f.filename for f in traceback.extract_stack()[:-1]
                    if not f.filename.startswith("<frozen")
                ]
            return None

    sys.meta_path.insert(0, Tracer())
    import {target}
    loaded = sorted(f for f in FORBIDDEN if f in sys.modules)
    print(json.dumps({{"loaded": loaded, "chains": chains}}))
    """
)


def probe(target: str) -> dict[str, object]:
    code = PROBE.format(forbidden=FORBIDDEN, target=target)
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def _norm(path: str) -> str:
    return path.replace("\\", "/")


def test_engine_code_imports_nothing_forbidden() -> None:
    result = probe("virtualdom.engine")
    loaded = result["loaded"]
    chains = result["chains"]
    assert isinstance(loaded, list) and isinstance(chains, dict)
    unexpected = sorted(set(loaded) - set(KNOWN_LEAKS))
    assert not unexpected, f"importing the engine loads {unexpected}: {chains}"
    for name in loaded:
        chain = [_norm(p) for p in chains[name]]
        # No frame of the chain is engine code importing the module for itself: the engine's
        # last frame in the chain is its own `import pycrdt`/`from pycrdt import ...`.
        assert any("/pycrdt/" in p for p in chain), f"{name} not via pycrdt: {chain}"
        for marker in KNOWN_LEAKS[name]:
            assert any(marker in p for p in chain), f"{name} leaked a new way: {chain}"


def test_dependency_leak_is_pycrdt_not_the_engine() -> None:
    # pycrdt alone loads exactly the known leaks; bson (pymongo) loads none of them.
    pycrdt = probe("pycrdt")["loaded"]
    bson_ = probe("bson")["loaded"]
    assert bson_ == []
    assert pycrdt == sorted(KNOWN_LEAKS)


@pytest.mark.xfail(
    strict=True,
    reason="pycrdt/_version.py -> importlib.metadata -> email.utils imports socket (-> selectors)",
)
def test_import_loads_no_forbidden_module_at_all() -> None:
    assert probe("virtualdom.engine")["loaded"] == []


def test_engine_source_imports_nothing_forbidden() -> None:
    # The run-time probe cannot see the engine importing a module pycrdt already loaded, so
    # also read every import statement of the engine's own source.
    found = []
    files = sorted(pathlib.Path(virtualdom.engine.__path__[0]).glob("*.py"))
    assert len(files) > 5
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                    found.append(f"{file.name}:{node.lineno}: {name}")
    assert found == []
