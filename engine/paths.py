"""Walking a diff path through a document of Python values (the replica's mirror, a follower's
plain dict): one walker, so both read a path the same way and fail with the same words."""

from __future__ import annotations

from typing import Any

from .diff import Path
from .errors import PathError, TypeMismatch
from .quote import show_path


def fmt(path: Path) -> str:
    """A path as it appears in error messages (bounded: a path can be a megabyte of names)."""
    return show_path(path)


def step(node: Any, seg: str | int, where: Path) -> Any:
    """The child ``seg`` of ``node``; ``where`` is the path up to and including ``seg``.

    Dotted-string paths give array indexes as strings: a string of digits indexes an array."""
    if isinstance(node, dict):
        if not isinstance(seg, str):
            raise TypeMismatch(f"{fmt(where)}: index {seg} into a document", where)
        if seg not in node:
            raise PathError(f"{fmt(where)}: no such field", where)
        return node[seg]
    if isinstance(node, list):
        if isinstance(seg, str):
            if not seg.isdigit():
                raise TypeMismatch(f"{fmt(where)}: field name into an array", where)
            seg = int(seg)
        if not 0 <= seg < len(node):
            raise PathError(f"{fmt(where)}: index out of range (length {len(node)})", where)
        return node[seg]
    raise TypeMismatch(f"{fmt(where)}: {type(node).__name__} has no fields", where)


def get(doc: Any, path: Path) -> Any:
    """The value at ``path`` (raises PathError or TypeMismatch naming where it failed)."""
    node = doc
    for i, seg in enumerate(path):
        node = step(node, seg, path[: i + 1])
    return node


def norm(container: Any, seg: str | int) -> str | int:
    """Dotted-string paths give indexes as strings: make them ints under arrays."""
    if isinstance(container, list) and isinstance(seg, str) and seg.isdigit():
        return int(seg)
    return seg


def resolve(doc: Any, path: Path) -> tuple[Any, str | int, Path]:
    """(parent container, key, normalised path) of a non-empty path's last segment; the parent
    must exist, the key need not."""
    parent: Any = doc
    normed: list[str | int] = []
    for i, raw in enumerate(path[:-1]):
        seg = norm(parent, raw)
        parent = step(parent, seg, path[: i + 1])
        normed.append(seg)
    key = norm(parent, path[-1])
    normed.append(key)
    return parent, key, tuple(normed)
