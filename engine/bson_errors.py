"""What is wrong with bytes that pymongo refused to decode, in the project's own words.

pymongo's messages are written for driver users ("Detected unknown BSON type b'w' for fieldname
'value'. Are you using the latest driver version?", Python's "'utf-8' codec can't decode byte
0xe9 in position 0") and never say where in the bytes the problem is. A server reply should:
:func:`malformed` walks the bytes once more (only after pymongo failed, so valid documents cost
nothing) and names the first problem, its byte offset and the field path it is under.

The walk is iterative: nesting far past what pymongo's recursive C decoder supports (it gives up
near 1,000 levels with "maximum recursion depth exceeded") is reported as the ``max_depth``
limit it breaks.
"""

from __future__ import annotations

from .errors import EngineError, LimitExceeded, MalformedBSON
from .quote import quote, show_path

__all__ = ["malformed", "not_canonical"]

#: Value sizes of the fixed-size BSON types.
_FIXED = {
    0x01: 8,
    0x06: 0,
    0x07: 12,
    0x08: 1,
    0x09: 8,
    0x0A: 0,
    0x10: 4,
    0x11: 8,
    0x12: 8,
    0x13: 16,
    0x7F: 0,
    0xFF: 0,
}
_STRINGS = frozenset({0x02, 0x0D, 0x0E})
#: Types pymongo decodes lossily (they do not re-encode as they came).
_DEPRECATED = {0x06: "undefined", 0x0C: "DBPointer", 0x0E: "symbol"}
_NOT_CANONICAL = "the value is not in its canonical encoding"
#: Elements walked before giving up locating the problem: the walk is Python (~2 µs an
#: element), pymongo's refusal C; past this a huge refused write would cost the event loop
#: seconds more than the refusal itself.
WALK_BUDGET = 250_000
_INT32 = 4


class _GaveUp(Exception):
    """The walk's budget ran out before it found the problem."""


class _Problem(Exception):
    def __init__(self, offset: int, what: str) -> None:
        super().__init__(what)
        self.offset = offset
        self.what = what


def malformed(data: bytes, max_depth: int) -> EngineError:
    """The error for ``data``, which pymongo refused: :class:`LimitExceeded` (``max_depth``)
    for nesting deeper than ``max_depth``, else :class:`MalformedBSON` naming the problem."""
    path: list[str] = []
    try:
        deep = _walk(data, max_depth, path)
    except _GaveUp:
        return MalformedBSON(_unlocated())
    except _Problem as p:
        where = f" (field {show_path(path)})" if path else ""
        return MalformedBSON(f"malformed BSON at byte {p.offset}{where}: {p.what}")
    if deep is not None:
        # Sound bytes, nested deeper than the limit (and than pymongo's decoder goes).
        offset, depth, under = deep
        return LimitExceeded(
            f"the BSON nests {depth} levels deep, over the limit max_depth={max_depth}"
            f" (from byte {offset}, under {show_path(under, 80)})",
            "max_depth",
            max_depth,
            depth,
        )
    # The structure is sound, yet the decoder refused it (a value it cannot represent).
    return MalformedBSON("malformed BSON: the bytes do not decode as one BSON document")


def _unlocated() -> str:
    return (
        "malformed BSON: the bytes do not decode as one BSON document (the problem is past"
        f" its first {WALK_BUDGET} elements, where it is not looked for)"
    )


def not_canonical(data: bytes, again: bytes) -> MalformedBSON:
    """The error for ``data``, which decoded but re-encoded as ``again``: where it first
    differs, and why when that is known (a deprecated type, a duplicate field name)."""
    first = _first_difference(data, again)
    path: list[str] = []
    try:
        _walk(data, 2**31, path, target=first)
    except _GaveUp:
        pass
    except _Problem as p:
        where = f" (field {show_path(path)})" if path else ""
        return MalformedBSON(f"BSON does not round-trip at byte {p.offset}{where}: {p.what}")
    return MalformedBSON(
        "BSON does not round-trip: it holds a deprecated type (undefined, symbol, DBPointer),"
        " a duplicate key or a non-canonical encoding"
    )


def _first_difference(a: bytes, b: bytes) -> int:
    """The first offset where ``a`` and ``b`` differ (slices compare in C: a 100 MB document
    is not walked byte by byte in Python)."""
    n = min(len(a), len(b))
    step = 1 << 16
    at = 0
    while at < n and a[at : at + step] == b[at : at + step]:
        at += step
    end = min(at + step, n)
    return next((i for i in range(at, end) if a[i] != b[i]), end)


def _int32(data: bytes, at: int, end: int, what: str) -> int:
    if at + _INT32 > end:
        raise _Problem(at, f"{what} runs past the end of its document")
    return int.from_bytes(data[at : at + _INT32], "little", signed=True)


def _cstring(data: bytes, at: int, end: int, what: str) -> tuple[str, int]:
    """A NUL-terminated UTF-8 string at ``at``: its text and the offset after the NUL."""
    nul = data.find(b"\x00", at, end)
    if nul < 0:
        raise _Problem(at, f"{what} is not terminated by a NUL byte")
    try:
        return data[at:nul].decode("utf-8"), nul + 1
    except UnicodeDecodeError as exc:
        raise _Problem(at + exc.start, f"{what} is not valid UTF-8") from None


def _string(data: bytes, at: int, end: int, what: str) -> int:
    """A length-prefixed UTF-8 string at ``at``; the offset after it."""
    n = _int32(data, at, end, f"the length of {what}")
    if n < 1 or at + _INT32 + n > end:
        raise _Problem(at, f"the length of {what} ({n}) does not fit in its document")
    body = at + _INT32
    if data[body + n - 1] != 0:
        raise _Problem(body + n - 1, f"{what} is not terminated by a NUL byte")
    try:
        data[body : body + n - 1].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Problem(body + exc.start, f"{what} is not valid UTF-8") from None
    return body + n


def _walk(
    data: bytes, max_depth: int, path: list[str], target: int | None = None
) -> tuple[int, int, list[str]] | None:
    """Raise the first structural problem of ``data``, leaving ``path`` at the field it is in.
    Without one: where nesting first went past ``max_depth`` (offset, deepest depth, path),
    or None.

    With a ``target`` offset (bytes that decode but do not re-encode the same, see
    :func:`not_canonical`): also raise at a deprecated type, at a duplicate field name, and at
    the element holding byte ``target``, the first that differs from the canonical encoding."""
    size = len(data)
    if size < 5:
        raise _Problem(0, f"a BSON document is at least 5 bytes, got {size}")
    declared = _int32(data, 0, size, "the document length")
    if declared != size:
        raise _Problem(0, f"the document's length prefix says {declared} bytes, {size} were sent")
    budget = WALK_BUDGET
    # Open documents: where each ends. path[i] names the field holding stack[i + 1].
    stack = [size]
    names: list[set[str]] = [set()]  # per open document (with a target only)
    pos = 4
    deepest = 1
    first_deep: tuple[int, list[str]] | None = None
    while stack:
        end = stack[-1]
        if pos >= end:
            raise _Problem(pos, "a document ends without its terminating NUL byte")
        t = data[pos]
        if t == 0:
            if pos != end - 1:
                raise _Problem(pos, "a NUL byte ends the document before its declared length")
            if pos == target:
                raise _Problem(pos, _NOT_CANONICAL)
            stack.pop()
            names.pop()
            if path:
                path.pop()
            pos += 1
            continue
        start = pos
        budget -= 1
        if budget < 0:
            raise _GaveUp
        name, pos = _cstring(data, pos + 1, end, "a field name")
        path.append(name)
        if target is not None:
            if name in names[-1]:
                raise _Problem(start, f"duplicate key: the field name {quote(name)} appears twice")
            names[-1].add(name)
            if t in _DEPRECATED:
                raise _Problem(start, f"the deprecated type {_DEPRECATED[t]} (0x{t:02x})")
            if t in (0x03, 0x04, 0x0F) and start <= target < pos + _INT32:
                raise _Problem(start, _NOT_CANONICAL)
        if t in _FIXED:
            n = _FIXED[t]
            if pos + n > end:
                raise _Problem(pos, "the value runs past the end of its document")
            if t == 0x08 and data[pos] > 1:
                raise _Problem(pos, f"a boolean must be 0 or 1, got {data[pos]}")
            pos += n
        elif t in _STRINGS:
            pos = _string(data, pos, end, "the string")
        elif t in (0x03, 0x04):
            n = _int32(data, pos, end, "the length of the embedded document")
            if n < 5 or pos + n > end:
                raise _Problem(pos, f"the embedded document's length ({n}) does not fit")
            stack.append(pos + n)
            names.append(set())
            if len(stack) > deepest:
                deepest = len(stack)
                if deepest > max_depth and first_deep is None:
                    first_deep = (start, list(path))
            pos += _INT32
            continue  # the field's name stays on the path until the document ends
        elif t == 0x05:
            n = _int32(data, pos, end, "the length of the binary value")
            if n < 0 or pos + _INT32 + 1 + n > end:
                raise _Problem(pos, f"the binary value's length ({n}) does not fit")
            if data[pos + _INT32] == 0x02:  # the old binary subtype repeats the length inside
                inner = _int32(data, pos + _INT32 + 1, pos + _INT32 + 1 + n, "the old binary")
                if inner != n - _INT32:
                    raise _Problem(pos, "the old binary subtype's inner length does not match")
            pos += _INT32 + 1 + n
        elif t == 0x0B:
            _, pos = _cstring(data, pos, end, "the regular expression")
            _, pos = _cstring(data, pos, end, "the regular expression's flags")
        elif t == 0x0C:
            pos = _string(data, pos, end, "the DBPointer's collection")
            if pos + 12 > end:
                raise _Problem(pos, "the value runs past the end of its document")
            pos += 12
        elif t == 0x0F:
            n = _int32(data, pos, end, "the length of the code with scope")
            if n < 14 or pos + n > end:
                raise _Problem(pos, f"the code with scope's length ({n}) does not fit")
            after = _string(data, pos + _INT32, pos + n, "the code")
            scope = _int32(data, after, pos + n, "the length of the scope")
            if scope < 5 or after + scope != pos + n:
                raise _Problem(after, "the scope's length does not match the code with scope's")
            stack.append(pos + n)
            names.append(set())
            if len(stack) > deepest:
                deepest = len(stack)
                if deepest > max_depth and first_deep is None:
                    first_deep = (start, list(path))
            pos = after + _INT32
            continue
        else:
            raise _Problem(start, f"unknown BSON type 0x{t:02x}")
        if target is not None and start <= target < pos:
            raise _Problem(start, _NOT_CANONICAL)
        path.pop()
    if first_deep is None:
        return None
    return first_deep[0], deepest, first_deep[1]
