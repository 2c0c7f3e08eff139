"""The Yjs v1 update that writes a whole BSON value in the CRDT layout, built in Python.

Writing a large value through pycrdt prelim types (``values.to_crdt``) crosses from Python
into Rust once per value and opens a transaction per field: a 10 MB records document took
~10x pycrdt's own ``apply_update`` of the same state. This module writes the structs that
the prelim path makes (same clocks, parents, keys, contents and order: depth first, a map's
entries in ``doc_entries`` order, an array's elements one after another) as one update, which
the replica applies with one ``apply_update`` inside its transaction. Yrs integrates it into
the same blocks, so the state, the transaction's update and what a Yjs client reads are those
of the prelim path (tests/property/test_bulk_update.py compares both paths).

The struct encoding follows yjs ``Item.write`` / ``ContentType``, ``ContentString`` and
``ContentAny``, and the Any values yrs's ``Any::encode`` (numbers that are integers in the
safe range as varints, then float32 when exact, else float64). Stdlib only, like yencode.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import struct
from typing import Any, Protocol

from bson.int64 import Int64
from bson.objectid import ObjectId

from .values import INT32_MAX, INT32_MIN, META, ejson_leaf, to_crdt, too_deep
from .yencode import BYTES as _VAR
from .yencode import varuint

__all__ = [
    "DirectWrite",
    "StructWriter",
    "any_bytes",
    "epoch_bytes",
    "root_keys",
    "root_parent",
    "write_fields",
]

#: The root map holding the document (replica.ROOT).
ROOT = "doc"

_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_SAFE = 2**53

# Info bytes: content ref (low five bits) | 0x80 origin | 0x20 parent sub (a map key).
_ANY_KEYED = b"\x28"
_TYPE_KEYED = b"\x27"
_STRING = b"\x04"
_ANY = b"\x08"
_TYPE = b"\x07"
_ANY_AFTER = b"\x88"
_TYPE_AFTER = b"\x87"
# Type refs (yjs ContentType): YArray 0, YMap 1, YText 2.
_ARRAY, _MAP, _TEXT = b"\x00", b"\x01", b"\x02"
#: The epoch of the fields of an embedded document written whole (only top-level fields of a
#: ``replace`` or ``set`` carry the op's epoch).
_NO_EPOCH = b"\x77\x00"


def var_string(s: str) -> bytes:
    raw = s.encode()
    return varuint(len(raw)) + raw


def _number(f: float) -> bytes:
    """yrs writes a number as float32 when that is exact (integers included), else float64."""
    try:
        packed = _F32.pack(f)
    except OverflowError:
        return b"\x7b" + _F64.pack(f)
    if _F32.unpack(packed)[0] == f:
        return b"\x7c" + packed
    return b"\x7b" + _F64.pack(f)


#: The Any encoding of the order keys 0.0, 1.0, ... (every field of a written document has one).
_N_ORDERS = 4096
_ORDERS = [_number(float(i)) for i in range(_N_ORDERS)]


def any_bytes(v: Any) -> bytes:
    """A plain value as yrs encodes it (lib0 ``writeAny``)."""
    t = type(v)
    if t is str:
        return b"\x77" + var_string(v)
    if t is float:
        return _number(v)
    if t is dict:
        parts = [b"\x76", varuint(len(v))]
        for k, x in v.items():
            parts.append(var_string(k))
            parts.append(any_bytes(x))
        return b"".join(parts)
    if t is list:
        return b"\x75" + varuint(len(v)) + b"".join(any_bytes(x) for x in v)
    if t is bool:
        return b"\x78" if v else b"\x79"
    if v is None:
        return b"\x7e"
    if t is bytes:
        return b"\x74" + varuint(len(v)) + bytes(v)
    if t is int and -_SAFE <= v <= _SAFE:
        # pycrdt makes such an int a JavaScript number (Extended JSON's $timestamp parts,
        # $minKey); ints past 2**53 appear in no Extended JSON leaf.
        return _number(float(v))
    raise TypeError(f"no Any encoding for {t.__name__}")


def _key_pair(key: str) -> tuple[bytes, bytes]:
    """A field name and its meta key (NUL + name) as varStrings."""
    raw = key.encode()
    return varuint(len(raw)) + raw, varuint(len(raw) + 1) + b"\x00" + raw


def epoch_bytes(epoch: str) -> bytes:
    """An epoch as the Any string of a meta entry."""
    return b"\x77" + var_string(epoch)


def root_parent(name: str) -> bytes:
    """The parent info of an entry of the root type ``name``."""
    return b"\x01" + var_string(name)


class StructWriter:
    """The structs of one client, from ``clock`` on, as the prelim path would create them.

    ``map_entry`` and the array writer append encoded structs to ``parts``; ``update`` wraps
    them into a v1 update of one client section and an empty delete set."""

    __slots__ = ("client", "clock", "keys", "max_depth", "parts", "start", "structs")

    def __init__(self, client: bytes, clock: int, max_depth: int) -> None:
        self.client = client  # the client id as a varint
        self.clock = clock
        self.start = clock
        self.parts: list[bytes] = []
        self.structs = 0
        self.max_depth = max_depth
        #: Field name -> (its varString, its meta key's): records repeat their field names.
        self.keys: dict[str, tuple[bytes, bytes]] = {}

    def update(self) -> bytes:
        """The update holding every struct written (empty when none was)."""
        if not self.structs:
            return b""
        head = b"\x01" + varuint(self.structs) + self.client + varuint(self.start)
        return b"".join((head, *self.parts, b"\x00"))

    def doc_entries(self, parent: bytes, items: Any, depth: int, epoch: bytes = _NO_EPOCH) -> None:
        """The entries of an embedded document under ``parent`` (its parent info): each field,
        then its ``[order, epoch]`` meta, as ``values.doc_entries`` orders them.

        The commonest fields (text and plain leaves) are written inline: this loop runs once
        per field of a large document."""
        append = self.parts.append
        keys = self.keys
        client = self.client
        join = b"".join
        for order, (key, value) in enumerate(items):
            pair = keys.get(key)
            if pair is None:
                pair = keys[key] = _key_pair(key)
            t = type(value)
            if t is str:
                clock = self.clock
                if value:
                    raw = value.encode()
                    n = len(raw)
                    units = n if n == len(value) else len(value.encode("utf-16-le")) >> 1
                    # The Text's type struct, then its one string struct (parent: the Text).
                    append(
                        join(
                            (
                                _TYPE_KEYED,
                                parent,
                                pair[0],
                                b"\x02\x04\x00",
                                client,
                                _VAR[clock] if clock < 0x80 else varuint(clock),
                                _VAR[n] if n < 0x80 else varuint(n),
                                raw,
                            )
                        )
                    )
                    self.clock = clock + 2 + units  # + the meta below
                    self.structs += 3
                else:
                    append(join((_TYPE_KEYED, parent, pair[0], _TEXT)))
                    self.clock = clock + 2
                    self.structs += 2
            elif t in _INLINE_LEAVES:
                append(join((_ANY_KEYED, parent, pair[0], b"\x01", _leaf(value))))
                self.clock += 2
                self.structs += 2
            else:
                self.map_entry(parent, pair[0], value, depth)
                self.clock += 1
                self.structs += 1
            append(
                join(
                    (
                        _ANY_KEYED,
                        parent,
                        pair[1],
                        b"\x01\x75\x02",
                        _ORDERS[order] if order < _N_ORDERS else _number(float(order)),
                        epoch,
                    )
                )
            )

    def field(
        self, parent: bytes, key: str, value: Any, depth: int, order: float, epoch: bytes
    ) -> None:
        """One field of a document under ``parent`` and its ``[order, epoch]`` meta."""
        kb, mk = _key_pair(key)
        self.map_entry(parent, kb, value, depth)
        self.parts.append(
            b"".join((_ANY_KEYED, parent, mk, b"\x01\x75\x02", _number(order), epoch))
        )
        self.clock += 1
        self.structs += 1

    def map_entry(self, parent: bytes, key: bytes, value: Any, depth: int) -> None:
        """One map entry (``key`` already a varString) holding ``value``'s CRDT form."""
        t = type(value)
        parts = self.parts
        if t is str:
            parts.append(b"".join((_TYPE_KEYED, parent, key, _TEXT)))
            self._type_made()
            self._text(value)
            return
        if t is dict or (t is not list and isinstance(value, dict)):
            if depth >= self.max_depth:
                raise too_deep(self.max_depth)
            parts.append(b"".join((_TYPE_KEYED, parent, key, _MAP)))
            me = self._type_made()
            self.doc_entries(me, value.items(), depth + 1)
            return
        if t is list:
            if depth >= self.max_depth:
                raise too_deep(self.max_depth)
            parts.append(b"".join((_TYPE_KEYED, parent, key, _ARRAY)))
            me = self._type_made()
            self._elements(me, value, depth + 1)
            return
        parts.append(b"".join((_ANY_KEYED, parent, key, b"\x01", _leaf(value))))
        self.clock += 1
        self.structs += 1

    def _type_made(self) -> bytes:
        """Count the type struct just written; return the parent info of its children."""
        me = b"\x00" + self.client + varuint(self.clock)
        self.clock += 1
        self.structs += 1
        return me

    def _text(self, value: str) -> None:
        """The one string struct of a text initialised with ``value`` (none when empty)."""
        if not value:
            return
        raw = value.encode()
        # Clocks count UTF-16 code units (a character outside the BMP counts two).
        n = len(raw) if len(raw) == len(value) else len(value.encode("utf-16-le")) >> 1
        parent = self.client + varuint(self.clock - 1)  # the Text just written
        self.parts.append(b"".join((_STRING, b"\x00", parent, varuint(len(raw)), raw)))
        self.clock += n
        self.structs += 1

    def _elements(self, parent: bytes, values: list[Any], depth: int) -> None:
        """An array's elements, inserted one after another: the first names the array as its
        parent, each later one its left neighbour as origin. Consecutive plain values form
        one struct (yrs squashes them)."""
        parts = self.parts
        run: list[bytes] = []
        client = self.client
        last = -1  # the clock of the last element written (its struct's last unit)

        for value in values:
            t = type(value)
            if t is str or t is list or t is dict or isinstance(value, dict):
                if run:
                    head = _ANY + parent if last < 0 else _ANY_AFTER + client + varuint(last)
                    parts.append(b"".join((head, varuint(len(run)), *run)))
                    self.clock += len(run)
                    self.structs += 1
                    last = self.clock - 1
                    run = []
                if t is not str and depth >= self.max_depth:
                    raise too_deep(self.max_depth)
                ref = _TEXT if t is str else _ARRAY if t is list else _MAP
                head = _TYPE + parent if last < 0 else _TYPE_AFTER + client + varuint(last)
                parts.append(head + ref)
                last = self.clock
                me = self._type_made()
                if t is str:
                    self._text(value)
                elif t is list:
                    self._elements(me, value, depth + 1)
                else:
                    self.doc_entries(me, value.items(), depth + 1)
            else:
                run.append(_leaf(value))
        if run:
            head = _ANY + parent if last < 0 else _ANY_AFTER + client + varuint(last)
            parts.append(b"".join((head, varuint(len(run)), *run)))
            self.clock += len(run)
            self.structs += 1


#: Leaf types whose CRDT form is one plain value, written inline by ``doc_entries``.
_INLINE_LEAVES = frozenset(
    {float, bool, type(None), int, Int64, bytes, datetime.datetime, ObjectId}
)


def _leaf(value: Any) -> bytes:
    """The Any encoding of a leaf's CRDT form (as ``values.to_crdt`` makes it)."""
    t = type(value)
    if t is float:
        return _number(math.nan if math.isnan(value) else value)  # one NaN (see to_crdt)
    if t is bool:
        return b"\x78" if value else b"\x79"
    if value is None:
        return b"\x7e"
    if t is int:
        tag = (
            b"\x76\x01\x0a$numberInt\x77"
            if INT32_MIN <= value <= INT32_MAX
            else (b"\x76\x01\x0b$numberLong\x77")
        )
        digits = str(value).encode()
        return tag + varuint(len(digits)) + digits
    if t is Int64:
        digits = str(int(value)).encode()
        return b"\x76\x01\x0b$numberLong\x77" + varuint(len(digits)) + digits
    if t is bytes:
        return b"\x74" + varuint(len(value)) + bytes(value)
    return any_bytes(ejson_leaf(value))


class DirectWrite(Protocol):
    """Where a ``StructWriter``'s update goes: the replica's open transaction, for its main
    client."""

    #: The main client's id as a lib0 varint.
    client: bytes

    def clock(self) -> int:
        """The main client's clock now (inside the open transaction)."""

    def state(self) -> bytes:
        """The Doc's state as one update (inside the open transaction)."""

    def apply(self, update: bytes) -> None:
        """Apply ``update`` inside the open transaction."""


#: A root map entry written without an origin: parent info 1 (a root type) and its name.
_ROOT_ENTRY = b"\x01" + var_string(ROOT)


def root_keys(state: bytes) -> set[str]:
    """Every key the root map has an entry for in ``state``, deleted ones included, and maybe
    more: each entry's first struct names the root and its key, and this looks for those bytes
    anywhere (content holding them adds a key that was never there, which only costs that key
    the prelim path)."""
    keys: set[str] = set()
    find = state.find
    at = find(_ROOT_ENTRY)
    while at >= 0:
        pos = at + len(_ROOT_ENTRY)
        n, shift = 0, 0
        while pos < len(state):  # the key's length, a varuint
            b = state[pos]
            n |= (b & 0x7F) << shift
            shift += 7
            pos += 1
            if b < 0x80:
                break
        with contextlib.suppress(UnicodeDecodeError):  # not a key: content holding the pattern
            keys.add(state[pos : pos + n].decode())
        at = find(_ROOT_ENTRY, at + 1)
    return keys


def write_fields(root: Any, direct: DirectWrite, value: Any, max_depth: int, epoch: str) -> None:
    """Empty the root map ``root`` and write ``value``'s fields and their metas into it, exactly
    as deleting every key and then ``root[k] = v`` for each of ``doc_entries(value)`` would.

    A field whose key (or meta key) had an entry, even a deleted one, gets its structs from
    pycrdt: the new entry names the old one as its origin, which only the Doc knows (without it
    the entry could sort before the old one and never be read). Every run of other fields is
    one update built here."""
    present = set(root.keys())
    for k in present:
        del root[k]
    present |= root_keys(direct.state())  # (an empty Doc's state is two bytes)
    writer: StructWriter | None = None
    epoch_enc = epoch_bytes(epoch)
    parent = root_parent(ROOT)
    for i, (k, v) in enumerate(value.items()):
        if k in present or META + k in present:
            if writer is not None:
                direct.apply(writer.update())
                writer = None
            root[k] = to_crdt(v, 1, max_depth)
            root[META + k] = [float(i), epoch]
            continue
        if writer is None:
            writer = StructWriter(direct.client, direct.clock(), max_depth)
        writer.field(parent, k, v, 1, float(i), epoch_enc)
    if writer is not None:
        direct.apply(writer.update())


def write_field(
    direct: DirectWrite, key: str, value: Any, max_depth: int, order: float, epoch: str
) -> bool:
    """Write the top-level field ``key`` (value, then its ``[order, epoch]`` meta) as one update,
    as ``root[key] = v; root[META + key] = [order, epoch]`` would; False, having written
    nothing, when the root map had an entry under either key (the new one needs it as origin:
    the caller writes through pycrdt then)."""
    present = root_keys(direct.state())
    if key in present or META + key in present:
        return False
    writer = StructWriter(direct.client, direct.clock(), max_depth)
    writer.field(root_parent(ROOT), key, value, 1, order, epoch_bytes(epoch))
    direct.apply(writer.update())
    return True
