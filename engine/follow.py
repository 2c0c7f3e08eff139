"""A follower: applies diffs to a plain Python document, without a CRDT.

This is what a subscriber that only receives effective changes (``Change.diff``, or what the
gateway streams) does to keep its own copy of a document. Applying every effective change of a
replica in version order, starting from ``{}``, reproduces the replica's snapshot byte for byte
(docs/diff-format.md, "Effective changes")::

    doc: dict[str, Any] = {}
    for change in changes:
        doc = apply_diff(doc, change.diff)
    assert bson.encode(doc) == replica.snapshot()

Ops are applied in order, with the meaning docs/diff-format.md gives them against the current
state (a follower has no history, so there is no causal context). ``set`` with ``at`` moves or
inserts the field at that position among its document's fields. ``inc`` adds with the type rules
of the format; effective changes never carry it (the engine reports the resulting value as a
``set``, because concurrent increments are summed in a way only the CRDT can reproduce).

Pure: the input document is not modified. Raw ``{"update": ...}`` diffs need a CRDT and are
refused (:class:`~virtualdom.engine.errors.MalformedDiff`); an op that does not fit the document
raises :class:`~virtualdom.engine.errors.PathError` (or its subclass ``TypeMismatch``), which for
effective changes means the follower missed or reordered a change.
"""

from __future__ import annotations

from typing import Any

from .diff import Op, Path, parse_diff
from .errors import MalformedDiff, PathError, TypeMismatch
from .paths import fmt, get, step
from .values import add_number, decode_document, is_number

__all__ = ["apply_diff", "apply_ops"]


def apply_diff(doc: dict[str, Any], diff: bytes) -> dict[str, Any]:
    """The document after applying one BSON diff (``{"ops": [...]}``) to ``doc``."""
    parsed = parse_diff(decode_document(diff), max_ops=2**63 - 1)
    if parsed.update is not None:
        raise MalformedDiff("a raw CRDT update cannot be followed without a CRDT")
    return apply_ops(doc, parsed.ops)


def apply_ops(doc: dict[str, Any], ops: list[Op]) -> dict[str, Any]:
    """The document after applying parsed ops in order to ``doc`` (which is not modified)."""
    out: dict[str, Any] = _copy(doc)
    for op in ops:
        if op.op == "replace":
            out = _copy(op.value)
        else:
            _apply(out, op)
    return out


def _copy(value: Any) -> Any:
    # Containers are copied; every other BSON value is immutable.
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _key(container: Any, seg: str | int, where: Path) -> str | int:
    """The last segment of a path as a key of its parent (an index into an array)."""
    if isinstance(container, list):
        if isinstance(seg, str):
            if not seg.isdigit():
                raise TypeMismatch(f"{fmt(where)}: field name into an array", where)
            return int(seg)
        return seg
    if isinstance(container, dict):
        if not isinstance(seg, str):
            raise TypeMismatch(f"{fmt(where)}: index {seg} into a document", where)
        return seg
    raise TypeMismatch(f"{fmt(where)}: {type(container).__name__} has no fields", where)


def _parent(doc: dict[str, Any], path: Path) -> tuple[Any, str | int]:
    node = get(doc, path[:-1])
    return node, _key(node, path[-1], path)


def _apply(doc: dict[str, Any], op: Op) -> None:
    path = op.path
    parent, key = _parent(doc, path)
    if op.op == "set":
        value = _copy(op.value)
        if isinstance(parent, list):
            assert isinstance(key, int)
            if not 0 <= key < len(parent):
                raise PathError(f"{fmt(path)}: index out of range (length {len(parent)})", path)
            parent[key] = value
        elif op.at is None or (key in parent and list(parent).index(key) == op.at):
            parent[key] = value
        else:
            items = [(k, v) for k, v in parent.items() if k != key]
            at = min(op.at, len(items))
            items.insert(at, (str(key), value))
            parent.clear()
            parent.update(items)
        return
    if op.op == "remove":
        if not isinstance(parent, dict):
            raise TypeMismatch(f"{fmt(path)}: remove takes a document field; use delete", path)
        parent.pop(key, None)
        return
    target = step(parent, key, path)
    if op.op in ("insert", "delete"):
        if not isinstance(target, list):
            raise TypeMismatch(f"{fmt(path)}: {op.op} needs an array", path)
        if op.op == "insert":
            if op.index > len(target):
                raise PathError(f"{fmt(path)}: insert index {op.index} > {len(target)}", path)
            target[op.index : op.index] = [_copy(v) for v in op.values]
        else:
            if op.index + op.count > len(target):
                raise PathError(f"{fmt(path)}: delete beyond length {len(target)}", path)
            del target[op.index : op.index + op.count]
    elif op.op == "splice":
        if type(target) is not str:  # not Code, a str subclass
            raise TypeMismatch(f"{fmt(path)}: splice needs a string", path)
        if op.index + op.count > len(target):
            raise PathError(f"{fmt(path)}: splice beyond length {len(target)}", path)
        parent[key] = target[: op.index] + op.text + target[op.index + op.count :]
    elif op.op == "inc":
        if not isinstance(parent, dict) or not is_number(target):
            raise TypeMismatch(f"{fmt(path)}: inc needs an int32, int64 or double field", path)
        parent[key] = add_number(target, op.by)
