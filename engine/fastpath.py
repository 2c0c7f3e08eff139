"""The typing fast path's parts: recognising a one-splice diff cheaply, and the text being typed.

Typing sends one diff per keystroke, each one ASCII splice of one text. The general path (the
planner) copies the whole string into the mirror per edit, builds undo and action closures and
re-reads the state vector; on a long text that costs more than pycrdt's own work. So the
replica recognises such a diff here, on its canonical BSON bytes when it can
(``canonical_splice``) or on its decoded form (``splice_args``), leaves the mirror's string stale
while typing goes on (``LiveText``) and reads it back from pycrdt only when the mirror is next
needed (``Replica._fast_apply``, ``_flush``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pycrdt import Text

from .diff import Path, parse_path
from .errors import EngineError
from .paths import resolve, step
from .planner import YNodes
from .pycrdt_internals import raw_text
from .values import DocNode

#: The canonical BSON of a one-splice diff {"ops": [{"op": "splice", "path": <string>,
#: "index": <int32>, "delete": <int32>, "insert": <ASCII string>}]} (delete and insert optional),
#: fields in this order, as clients typing send it: matched on the bytes, it needs no decoding.
_SPLICE_BSON = re.compile(
    rb"(....)\x04ops\x00(....)\x030\x00(....)"
    rb"\x02op\x00\x07\x00\x00\x00splice\x00"
    rb"\x02path\x00(....)([^\x00]+)\x00"
    rb"\x10index\x00(....)"
    rb"(?:\x10delete\x00(....))?"
    rb"(?:\x02insert\x00(....)([\x01-\x7f]*)\x00)?"
    rb"\x00\x00\x00",
    re.DOTALL,
)


def canonical_splice(diff: bytes) -> tuple[str, int, int, str] | None:
    """(path, index, delete, insert) of a diff that is exactly the canonical BSON of one splice
    in the usual field order (``_SPLICE_BSON``, every length prefix consistent), else None.

    Such bytes are what bson.encode writes for the document they hold, so accepting them is
    what decode_document (decode, then check that re-encoding gives the same bytes) would do,
    for a fraction of the cost.
    """
    m = _SPLICE_BSON.fullmatch(diff)
    if m is None:
        return None
    total, array, op, path_len, path_b, index_b, count_b, text_len, text_b = m.groups()
    n = len(diff)
    le = int.from_bytes
    if (
        le(total, "little") != n
        or le(array, "little") != n - 10
        or le(op, "little") != n - 18
        or le(path_len, "little") != len(path_b) + 1
        or (text_b is not None and le(text_len, "little") != len(text_b) + 1)
    ):
        return None
    index = le(index_b, "little", signed=True)
    count = le(count_b, "little", signed=True) if count_b is not None else 0
    text = text_b.decode() if text_b is not None else ""
    if index < 0 or count < 0 or not (count or text):
        return None
    try:
        path = path_b.decode()
    except UnicodeDecodeError:
        return None
    return path, index, count, text


#: The fields a splice op may have.
_SPLICE_KEYS = frozenset({"op", "path", "index", "delete", "insert"})


@dataclass(slots=True)
class LiveText:
    """An ASCII text being typed into by one-splice diffs. While ``stale``, the mirror's string
    (``parent[key]``) is behind the CRDT; ``length`` is always the current length."""

    raw_path: str
    path: Path
    parent: Any
    key: str | int
    text: Text
    #: pycrdt's Rust object of ``text``
    ytext: Any
    length: int
    stale: bool = False

    def flush(self) -> None:
        """Write the text back into the mirror (read from pycrdt: O(text), once)."""
        if self.stale:
            self.parent[self.key] = str(self.text)
            self.stale = False


def go_live(mirror: DocNode, tree: YNodes, raw_path: Any) -> LiveText | None:
    """Start typing into the ASCII text at ``raw_path`` of ``mirror`` (its pycrdt Text found
    in ``tree``), or None if there is none."""
    if type(raw_path) is not str or not raw_path:
        return None
    try:
        path = parse_path(raw_path, "path")
        parent, key, norm = resolve(mirror, path)
        s = step(parent, key, norm)
    except EngineError:
        return None
    if type(s) is not str or not s.isascii():
        return None
    ytext = tree.node(norm)
    # Only a text holding nothing but the mirror's characters (no embeds from a Yjs client)
    # can be read back as the mirror's string.
    if not isinstance(ytext, Text) or len(ytext) != len(s):
        return None
    return LiveText(raw_path, norm, parent, key, ytext, raw_text(ytext), len(s))


def splice_args(doc: dict[str, Any]) -> tuple[Any, int, int, str] | None:
    """(raw path, index, delete, insert) of a decoded diff that is one well-formed splice
    inserting ASCII (``index`` and ``delete`` non-negative ints, not both nothing), else None
    (the general path then applies it or raises the right error)."""
    ops = doc.get("ops")
    if type(ops) is not list or len(ops) != 1 or len(doc) != 1:
        return None
    o = ops[0]
    if type(o) is not dict or o.get("op") != "splice" or not _SPLICE_KEYS.issuperset(o):
        return None
    raw_path, index = o.get("path"), o.get("index")
    count, text = o.get("delete", 0), o.get("insert", "")
    if (
        type(index) is not int
        or type(count) is not int
        or type(text) is not str
        or index < 0
        or count < 0
        or not (count or text)
        or not text.isascii()
    ):
        return None
    return raw_path, index, count, text
