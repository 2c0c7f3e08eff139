"""The engine's layout stays what docs/ARCHITECTURE.md says: every module in the code map, pycrdt's
private API only behind engine/pycrdt_internals.py, every op kind planned."""

from __future__ import annotations

import pathlib
import re

from virtualdom.engine import planner
from virtualdom.engine.diff import OP_FIELDS

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENGINE = ROOT / "engine"

#: What reaches below pycrdt's public API: the Rust Doc and transactions, integrated Rust
#: objects, the attributes a prelim is built from.
PRIVATE = re.compile(
    r"\._doc\._doc\b|\._txn\b|\.integrated\b|\._prelim\b|\._integrated\b|"
    r"create_transaction|\._type_name\b"
)


def modules() -> list[str]:
    return sorted(p.name for p in ENGINE.glob("*.py") if p.name != "__init__.py")


def test_every_engine_module_is_in_the_code_maps() -> None:
    architecture = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    start, end = architecture.index("## Code map"), architecture.index("## CRDT layout")
    code_map = architecture[start:end]
    readme = (ROOT / "README.md").read_text()
    for name in modules():
        assert f"`engine/{name}`" in code_map, f"docs/ARCHITECTURE.md's code map lacks {name}"
        assert f"`engine/{name}`" in readme, f"README's concept map lacks {name}"


def test_pycrdt_private_api_only_in_its_adapter() -> None:
    found = [
        f"{name}:{i}: {line.strip()}"
        for name in modules()
        if name != "pycrdt_internals.py"
        for i, line in enumerate((ENGINE / name).read_text().splitlines(), 1)
        if PRIVATE.search(line) and not line.lstrip().startswith("#")
    ]
    assert not found, "pycrdt internals outside engine/pycrdt_internals.py:\n" + "\n".join(found)
    # The pattern does find what it looks for.
    assert PRIVATE.search((ENGINE / "pycrdt_internals.py").read_text())


def test_every_op_kind_has_a_planner() -> None:
    assert set(planner._OPS) == set(OP_FIELDS)
