"""Parsing and encoding diffs (the normative format is docs/diff-format.md).

A diff is a BSON document ``{"ops": [op, ...]}`` or ``{"update": <binary Yjs v1 update>}``.
Parsing is strict: unknown keys, wrong types and out-of-range numbers are
:class:`~virtualdom.engine.errors.MalformedDiff`, raised before anything is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bson.int64 import Int64

from .errors import LimitExceeded, MalformedDiff
from .quote import quote

Path = tuple[str | int, ...]

#: Every op, the fields it requires and the fields it may carry.
OP_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "set": (frozenset({"path", "value"}), frozenset({"at"})),
    "remove": (frozenset({"path"}), frozenset()),
    "insert": (frozenset({"path", "index", "values"}), frozenset()),
    "delete": (frozenset({"path", "index", "count"}), frozenset()),
    "splice": (frozenset({"path", "index"}), frozenset({"delete", "insert"})),
    "inc": (frozenset({"path", "by"}), frozenset()),
    "replace": (frozenset({"value"}), frozenset()),
}


@dataclass(slots=True)
class Op:
    """One operation of a diff, with every field it may use."""

    op: str
    path: Path = ()
    value: Any = None
    values: list[Any] = field(default_factory=list)
    index: int = 0
    count: int = 0
    text: str = ""
    by: int | float = 0
    at: int | None = None

    def to_bson(self) -> dict[str, Any]:
        """The op as a diff-format document (paths as arrays, exactly)."""
        d: dict[str, Any] = {"op": self.op}
        if self.op != "replace":
            d["path"] = list(self.path)
        match self.op:
            case "set":
                d["value"] = self.value
                if self.at is not None:
                    d["at"] = self.at
            case "insert":
                d["index"] = self.index
                d["values"] = self.values
            case "delete":
                d["index"] = self.index
                d["count"] = self.count
            case "splice":
                d["index"] = self.index
                d["delete"] = self.count
                d["insert"] = self.text
            case "inc":
                d["by"] = self.by
            case "replace":
                d["value"] = self.value
        return d


@dataclass(slots=True)
class ParsedDiff:
    """A validated diff: either ops, or raw update bytes."""

    ops: list[Op]
    update: bytes | None = None


def parse_diff(doc: dict[str, Any], max_ops: int) -> ParsedDiff:
    """Validate a decoded diff document into ops."""
    keys = set(doc)
    if keys == {"update"}:
        upd = doc["update"]
        if not isinstance(upd, bytes) or not upd:
            raise MalformedDiff("'update' must be non-empty binary (Yjs v1 update bytes)")
        return ParsedDiff([], bytes(upd))
    if keys != {"ops"}:
        got = ", ".join(quote(k) for k in sorted(keys)[:8]) + (", …" if len(keys) > 8 else "")
        raise MalformedDiff(f"a diff has exactly one key, 'ops' or 'update'; got {got}")
    raw = doc["ops"]
    if not isinstance(raw, list):
        raise MalformedDiff("'ops' must be an array")
    if len(raw) > max_ops:
        raise LimitExceeded(
            f"the diff has {len(raw)} ops, over the limit max_ops={max_ops}",
            "max_ops",
            max_ops,
            len(raw),
        )
    return ParsedDiff([parse_op(o, i) for i, o in enumerate(raw)])


def _int(v: Any, where: str, field: str, minimum: int = 0) -> int:
    # The message names "{where}.{field}"; it is formatted only on error (parsing is per edit).
    if type(v) not in (int, Int64):
        raise MalformedDiff(f"{where}.{field} must be an integer, got {type(v).__name__}")
    n = int(v)
    if n < minimum:
        raise MalformedDiff(f"{where}.{field} must be >= {minimum}, got {n}")
    return n


def parse_path(v: Any, where: str) -> Path:
    """A path is an array of field names and indexes, or a dotted string."""
    if isinstance(v, str):
        if v == "":
            raise MalformedDiff(f"{where}: empty path")
        parts = v.split(".")
        if "" in parts:
            raise MalformedDiff(f"{where}: empty segment in path {quote(v)}")
        return tuple(parts)
    if isinstance(v, list):
        if not v:
            raise MalformedDiff(f"{where}: empty path")
        out: list[str | int] = []
        for seg in v:
            if isinstance(seg, str):
                out.append(seg)
            elif type(seg) in (int, Int64) and int(seg) >= 0:
                out.append(int(seg))
            else:
                raise MalformedDiff(
                    f"{where}: path segments are strings or non-negative integers, got {quote(seg)}"
                )
        return tuple(out)
    raise MalformedDiff(f"{where}: path must be a string or an array, got {type(v).__name__}")


def parse_op(o: Any, i: int) -> Op:
    where = f"ops[{i}]"
    if not isinstance(o, dict):
        raise MalformedDiff(f"{where} must be a document")
    name = o.get("op")
    if not isinstance(name, str) or name not in OP_FIELDS:
        raise MalformedDiff(f"{where}: unknown op {quote(name)}; known: {', '.join(OP_FIELDS)}")
    required, optional = OP_FIELDS[name]
    keys = set(o) - {"op"}
    if missing := required - keys:
        raise MalformedDiff(f"{where} ({name}): missing {', '.join(sorted(missing))}")
    if extra := keys - required - optional:
        shown = ", ".join(quote(k) for k in sorted(extra)[:8]) + (", …" if len(extra) > 8 else "")
        raise MalformedDiff(f"{where} ({name}): unknown field {shown}")
    op = Op(name)
    if "path" in o:
        op.path = parse_path(o["path"], where)
    match name:
        case "set":
            op.value = o["value"]
            if "at" in o:
                op.at = _int(o["at"], where, "at")
        case "insert":
            op.index = _int(o["index"], where, "index")
            if not isinstance(o["values"], list):
                raise MalformedDiff(f"{where}.values must be an array")
            op.values = o["values"]
        case "delete":
            op.index = _int(o["index"], where, "index")
            op.count = _int(o["count"], where, "count")
        case "splice":
            op.index = _int(o["index"], where, "index")
            op.count = _int(o.get("delete", 0), where, "delete")
            text = o.get("insert", "")
            if not isinstance(text, str):
                raise MalformedDiff(f"{where}.insert must be a string")
            op.text = text
        case "inc":
            by = o["by"]
            if type(by) not in (int, Int64, float):
                raise MalformedDiff(f"{where}.by must be an int32, int64 or double")
            op.by = by if type(by) is float else int(by)
        case "replace":
            if not isinstance(o["value"], dict):
                raise MalformedDiff(f"{where}.value must be a document")
            op.value = o["value"]
    return op


def encode_ops(ops: list[Op]) -> dict[str, Any]:
    """The diff document for a list of ops."""
    return {"ops": [op.to_bson() for op in ops]}
