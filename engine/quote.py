"""Quoting input inside error messages: always as text, always bounded.

An error message travels back in the reply's trailing metadata (``grpc-message`` and again in
``grpc-status-details-bin``); clients refuse metadata over 16 KiB, so echoing a 1 MB field name
turned a precise INVALID_ARGUMENT into a transport RESOURCE_EXHAUSTED without its ErrorDetail.
Every message that quotes something a caller sent quotes it with :func:`quote` (or
:func:`show_path` for paths), which cuts it to :data:`QUOTE_CHARS` characters and says how long
it really was.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["QUOTE_CHARS", "bounded", "quote", "show_path"]

#: Characters of a quoted value kept in a message (the rest is elided, its length stated).
QUOTE_CHARS = 64
#: Characters of a dotted path kept in a message.
PATH_CHARS = 200


def quote(value: object, limit: int = QUOTE_CHARS) -> str:
    """``value`` as a quoted string of at most ``limit`` characters of its text.

    Strings and bytes are quoted; bytes (node ids, prefixes) are shown as the text they hold,
    not as a Python bytes repr (bytes that are not UTF-8 show as U+FFFD). Control characters
    are escaped, so a message stays one line. Other values show as their (bounded) repr.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value).decode("utf-8", errors="replace")
    elif isinstance(value, str):
        text = value
    else:  # numbers, None, containers: their repr, bounded
        shown = repr(value)
        return shown if len(shown) <= limit else f"{shown[:limit]}… ({len(shown)} characters)"
    if len(text) <= limit:
        return repr(text)
    return f"{repr(text[:limit])[:-1]}…' ({len(text)} characters)"


def show_path(path: Iterable[str | int], limit: int = PATH_CHARS) -> str:
    """A path as a dotted string (``a.b.0``), each segment and the whole bounded."""
    parts: list[str] = []
    size = 0
    count = 0
    for seg in path:
        count += 1
        if size > limit:
            continue  # count the rest only
        s = str(seg)
        if len(s) > QUOTE_CHARS:
            s = f"{s[:QUOTE_CHARS]}…({len(s)} characters)"
        parts.append(s)
        size += len(s) + 1
    if not parts:
        return "<document>"
    out = ".".join(parts)
    if size > limit:
        out = f"{out[:limit]}… ({count} segments)"
    return out


def bounded(message: str, limit: int) -> str:
    """A whole message cut to ``limit`` UTF-8 bytes (a last guard at the reply boundary)."""
    data = message.encode("utf-8")
    if len(data) <= limit:
        return message
    return data[: limit - 3].decode("utf-8", errors="ignore") + "…"
