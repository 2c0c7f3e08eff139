"""BSON values and their representation inside the CRDT.

Layout (normative for Yjs clients; see docs/ARCHITECTURE.md, "CRDT layout"):

* The document is the root ``Y.Map`` named ``"doc"``. An embedded document is a ``Y.Map`` holding
  each field under its own name, plus engine metadata under keys that start with NUL (BSON field
  names cannot contain NUL, so they never collide): ``"\\0" + field`` → ``[order, epoch]`` and
  ``"\\0" + field + "\\0" + actor`` → ``[epoch, delta]`` for counter increments.
* Arrays are ``Y.Array``; strings are ``Y.Text`` (collaborative); doubles are plain numbers;
  booleans and null are themselves; binary subtype 0 is a byte array.
* Every other BSON type is a plain (immutable) map in MongoDB Canonical Extended JSON v2, e.g.
  ``{"$numberInt": "5"}``, ``{"$numberLong": "5"}``, ``{"$oid": "..."}``.

Reading is lenient so that Yjs clients can write natural values: a plain string is a string, a
plain JS object is a document (keys sorted, since Yjs does not keep their order), a bigint is an
int64.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import bson
from bson import json_util
from bson.code import Code
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import _datetime_to_millis
from bson.decimal128 import Decimal128
from bson.errors import BSONError
from bson.int64 import Int64
from bson.json_util import JSONMode, JSONOptions
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from pycrdt import Array, Map

from .bson_errors import malformed, not_canonical
from .errors import LimitExceeded, MalformedBSON
from .limits import Limits
from .pycrdt_internals import prelim_text
from .quote import quote

#: How the engine decodes BSON: exact types (int64 stays Int64, any datetime survives).
CODEC = CodecOptions(document_class=dict, datetime_conversion=DatetimeConversion.DATETIME_MS)
_EJSON = JSONOptions(
    json_mode=JSONMode.CANONICAL,
    datetime_conversion=DatetimeConversion.DATETIME_MS,
    document_class=dict,
)
#: Keys that mark a plain map as a Canonical Extended JSON leaf value.
EJSON_KEYS = frozenset(
    {
        "$numberInt",
        "$numberLong",
        "$numberDouble",
        "$numberDecimal",
        "$oid",
        "$date",
        "$binary",
        "$regularExpression",
        "$code",
        "$timestamp",
        "$minKey",
        "$maxKey",
    }
)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
DEFAULT_MAX_DEPTH = Limits().max_depth
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
META = "\x00"


class _Meta(dict[str, tuple[float, str]]):
    """Per-field ``(order, epoch)``, tracking the largest finite order so that appending a
    field costs O(1) (a scan per new field made building wide documents quadratic)."""

    __slots__ = ("top",)

    def __init__(self, items: Mapping[str, tuple[float, str]] | None = None):
        super().__init__(items or {})
        finite = [m[0] for m in self.values() if math.isfinite(m[0])]
        self.top: float = max(finite, default=-1.0)

    def __setitem__(self, key: str, value: tuple[float, str]) -> None:
        super().__setitem__(key, value)
        if math.isfinite(value[0]) and value[0] > self.top:
            self.top = value[0]


class DocNode(dict[str, Any]):
    """A document in the engine's mirror: a dict in field order, plus each field's
    ``(order, epoch)`` meta and, for fields with increments, ``(base, epoch, deltas)``."""

    __slots__ = ("counters", "meta")

    def __init__(
        self,
        items: Iterable[tuple[str, Any]] = (),
        meta: dict[str, tuple[float, str]] | None = None,
    ):
        super().__init__(items)
        self.meta: dict[str, tuple[float, str]] = _Meta(meta)
        self.counters: dict[str, tuple[Any, str, dict[str, int | float]]] = {}

    def next_order(self) -> float:
        """The order key that places a new field after every present one (except fields a
        client wrote without a finite order, which sort last)."""
        top = self.meta.top if isinstance(self.meta, _Meta) else -1.0
        # `top` may be stale-high after removals or undo; any larger order is equally valid.
        return top + 1.0

    def resort(self) -> None:
        """Put fields in (order, name) order, as every replica reads them from the CRDT."""
        keys = sorted(self, key=lambda k: (self.meta.get(k, (math.inf, ""))[0], k))
        if keys != list(self):
            items = [(k, self[k]) for k in keys]
            self.clear()
            self.update(items)


def decode_document(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> dict[str, Any]:
    """Decode one BSON document exactly, refusing anything that would not round-trip.

    Re-encoding and comparing catches deprecated types that pymongo decodes lossily (undefined,
    symbol, DBPointer), duplicate keys and non-canonical encodings, all in C. Bytes pymongo
    refuses are described in the project's words (:mod:`.bson_errors`); ``max_depth`` is the
    limit named when they nest too deep to decode.
    """
    try:
        if b"$ref\x00" in data:
            # pymongo turns any sub-document with $ref and $id into a DBRef, which re-encodes
            # with those keys first: read such documents field by field instead.
            doc: dict[str, Any] = _plain_raw(bson.decode(data, _RAW))
        else:
            doc = bson.decode(data, CODEC)
        again = bson.encode(doc, codec_options=CODEC)
    except (BSONError, ValueError, OverflowError, RecursionError):
        raise malformed(bytes(data), max_depth) from None
    if again != data:
        raise not_canonical(bytes(data), again)
    return doc


_RAW = CodecOptions(
    document_class=RawBSONDocument, datetime_conversion=DatetimeConversion.DATETIME_MS
)


def _plain_raw(value: Any) -> Any:
    """Raw documents (lazily decoded, never DBRefs) to plain dicts, keeping field order."""
    if isinstance(value, RawBSONDocument):
        return {k: _plain_raw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_raw(v) for v in value]
    if isinstance(value, Code) and value.scope is not None:
        return Code(str(value), _plain_raw(value.scope))
    return value


def encode_document(doc: Mapping[str, Any]) -> bytes:
    """Encode a document the way the engine decodes it."""
    return bson.encode(doc, codec_options=CODEC)


# ---------------------------------------------------------------------------------------------
# BSON value -> CRDT representation


def to_crdt(value: Any, depth: int, max_depth: int) -> Any:
    """Return the CRDT representation of a BSON value (prelim shared types for containers)."""
    t = type(value)
    if t is str:
        return prelim_text(value)
    if t is float:
        return math.nan if math.isnan(value) else value  # one NaN everywhere (see clean)
    if t is bool or value is None:
        return value
    if t is int:
        if INT32_MIN <= value <= INT32_MAX:
            return {"$numberInt": str(value)}
        return {"$numberLong": str(value)}
    if t is Int64:
        return {"$numberLong": str(int(value))}
    if t is bytes:
        return value
    if isinstance(value, dict):
        if depth >= max_depth:
            raise too_deep(max_depth)
        return Map(doc_entries(value.items(), depth + 1, max_depth))
    if isinstance(value, list):
        if depth >= max_depth:
            raise too_deep(max_depth)
        return Array([to_crdt(v, depth + 1, max_depth) for v in value])
    return ejson_leaf(value)


def doc_entries(
    items: Iterable[tuple[str, Any]],
    depth: int,
    max_depth: int,
    start: float = 0.0,
    epoch: str = "",
) -> dict[str, Any]:
    """The map entries of an embedded document: each field plus its ``[order, epoch]`` meta."""
    entries: dict[str, Any] = {}
    order = start
    for key, v in items:
        entries[key] = to_crdt(v, depth, max_depth)
        entries[META + key] = [order, epoch]
        order += 1.0
    return entries


def ejson_leaf(value: Any) -> Any:
    """Canonical Extended JSON of a leaf that has no native CRDT form, as plain maps.

    Code with scope is the one leaf holding a document: a plain Yjs map would lose its field
    order, and Extended JSON would read its ``$``-keys as type wrappers, so its scope is kept as
    BSON bytes: ``{"$code": ..., "$scopeBson": <bytes>}``.
    """
    t = type(value)
    # The two leaves of most documents, built directly (what json_util writes for them:
    # tests/property/test_bson_roundtrip.py compares): a dumps + loads round trip per value was
    # 16 % of a 10 MB write.
    if t is datetime.datetime:
        return {"$date": {"$numberLong": str(_datetime_to_millis(value))}}
    if t is ObjectId:
        return {"$oid": str(value)}
    try:
        if isinstance(value, Code) and value.scope is not None:
            return {"$code": str(value), "$scopeBson": scope_bytes(value.scope)}
        return json.loads(json_util.dumps(value, json_options=_EJSON))
    except (TypeError, ValueError):
        # (the library's text is not passed on: the type names the problem)
        raise MalformedBSON(f"unsupported BSON value of type {type(value).__name__}") from None


def scope_bytes(scope: Mapping[str, Any]) -> bytes:
    """A code's scope as BSON, its fields in their order: pymongo moves ``_id`` first in a
    top-level document (as in a code's scope within a document, which keeps its order), so
    the scope is encoded as the value of a field and cut out (after the 4-byte length, the type
    byte and the empty field name; before the terminator)."""
    return encode_document({"": scope})[6:-1]


def scope_from_bytes(data: bytes) -> dict[str, Any]:
    """The inverse of ``scope_bytes``: decoded as a field's value, which keeps ``_id`` where
    it is (MalformedBSON if the bytes are not one exact BSON document)."""
    wrapped = (len(data) + 7).to_bytes(4, "little") + b"\x03\x00" + data + b"\x00"
    scope: dict[str, Any] = decode_document(wrapped)[""]
    return scope


def too_deep(max_depth: int) -> LimitExceeded:
    return LimitExceeded(
        f"nesting depth is over the limit max_depth={max_depth}",
        "max_depth",
        max_depth,
        max_depth + 1,
    )


# ---------------------------------------------------------------------------------------------
# CRDT (as returned by pycrdt's to_py) -> BSON value


def from_crdt(value: Any) -> Any:
    """Turn a ``to_py()`` value of the CRDT back into the BSON value it stands for, in the
    mirror's form (documents as fresh ``DocNode``s, the one NaN): ``clean`` of it is a copy."""
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is float:
        return math.nan if math.isnan(value) else value
    if t is int:
        # Only a Yjs client writing a bigint produces a bare int: it is an int64.
        return Int64(value) if INT64_MIN <= value <= INT64_MAX else float(value)
    if t is bytearray or t is bytes:
        return bytes(value)
    if t is dict:
        return dict_from_crdt(value)
    if t is list:
        return [from_crdt(v) for v in value]
    # Anything else (a client's sub-document Y.Doc, ...) has no BSON form; str() of it would
    # differ between replicas (it names a memory address), so every replica reads null.
    return None


def dict_from_crdt(d: dict[str, Any]) -> Any:
    """A map is an Extended JSON leaf, an engine document node, or a client's plain object."""
    if len(d) <= 2 and d and not any(k.startswith(META) for k in d):
        keys = set(d)
        if keys == {"$code", "$scopeBson"}:
            scope, code = d["$scopeBson"], d["$code"]
            if isinstance(scope, (bytes, bytearray)) and isinstance(code, str):
                try:
                    return Code(code, scope_from_bytes(bytes(scope)))
                except MalformedBSON:
                    pass
        if keys <= EJSON_KEYS or keys == {"$code", "$scope"}:
            try:
                value = ejson_value(d)
            except MalformedBSON:
                pass  # Not a valid leaf: a client's plain object, read as a document.
            else:
                # The one NaN, as ``clean`` makes it: what from_crdt returns is mirror-ready.
                if type(value) is Decimal128 and value.to_decimal().is_nan():
                    return DECIMAL_NAN
                return value
    return node_from_crdt(d)


def ejson_value(d: dict[str, Any]) -> Any:
    """Parse one Extended JSON leaf back into its BSON value (MalformedBSON if it is not one
    that BSON can hold: Yjs clients can write anything)."""
    try:
        if "$numberInt" in d:
            n = int(d["$numberInt"])
            if not INT32_MIN <= n <= INT32_MAX:
                raise ValueError("out of the int32 range")
            return n
        if "$numberLong" in d:
            n = int(d["$numberLong"])
            if not INT64_MIN <= n <= INT64_MAX:
                raise ValueError("out of the int64 range")
            return Int64(n)
        # _plain parses inside out, this leaf's own top level included (parsing it again
        # would hand object_hook an already-parsed value).
        value = _plain(d)
        bson.encode({"v": value}, codec_options=CODEC)  # e.g. a $date past the int64 range
        return value
    except Exception as exc:  # object_hook raises many types on bad input
        raise MalformedBSON(f"bad Extended JSON leaf {quote(d)}: {quote(str(exc))}") from None


def _plain(d: Any) -> Any:
    # Nested Extended JSON (the $scope of code, the parts of $binary) must be parsed inside out.
    if isinstance(d, dict):
        return json_util.object_hook({k: _plain(v) for k, v in d.items()}, json_options=_EJSON)
    if isinstance(d, list):
        return [_plain(v) for v in d]
    if isinstance(d, bytearray):
        return bytes(d)
    if type(d) is float and d.is_integer():
        # Yjs reads every number back as a double, but the only bare numbers of canonical
        # Extended JSON are integers ($timestamp's t and i, $minKey, $maxKey).
        return int(d)
    return d


def parse_meta(meta: Any) -> tuple[float, str]:
    """``(order, epoch)`` from a field's meta entry; fields without one sort last."""
    if (
        isinstance(meta, list)
        and meta
        and type(meta[0]) in (int, float)
        and not math.isnan(meta[0])  # NaN would make the sort depend on the input order
    ):
        epoch = meta[1] if len(meta) > 1 and isinstance(meta[1], str) else ""
        return float(meta[0]), epoch
    return math.inf, ""


def node_from_crdt(d: dict[str, Any]) -> DocNode:
    """Rebuild a document node, in field order, with counters summed."""
    # One pass over the keys: fields (with their metas) and counter entries.
    metas: dict[str, tuple[float, str]] = {}
    counter_keys: list[str] = []
    get = d.get
    for k in d:
        if k[:1] == META:
            if META in k[1:]:  # "\0field\0actor" (actor names may hold NUL: Yjs clients)
                counter_keys.append(k)
        else:
            metas[k] = parse_meta(get(META + k))
    keys = sorted(metas, key=lambda k: (metas[k][0], k))
    node = DocNode(((k, from_crdt(d[k])) for k in keys), metas)
    for k in counter_keys:
        e = d[k]
        field, actor = k[1:].split(META, 1)
        if (
            field in node
            and is_number(node[field])
            and isinstance(e, list)
            and len(e) == 2
            and e[0] == metas[field][1]
        ):
            base, epoch, deltas = node.counters.get(field, (node[field], e[0], {}))
            deltas[actor] = delta_from_crdt(e[1])
            node.counters[field] = (base, epoch, deltas)
    for field, (base, _, deltas) in node.counters.items():
        node[field] = counter_total(base, deltas)
    return node


def counter_total(base: Any, deltas: Mapping[str, int | float]) -> Any:
    """A counter's value: its base plus every actor's increments, summed in a way that does not
    depend on the order replicas learnt of them (exact for ints, ``math.fsum`` for doubles)."""
    values = list(deltas.values())
    if any(isinstance(d, float) for d in values):
        return add_number(base, math.fsum(float(d) for d in values))
    return add_number(base, sum(int(d) for d in values))


def delta_to_crdt(delta: int | float) -> Any:
    return {"$numberLong": str(delta)} if isinstance(delta, int) else float(delta)


def delta_from_crdt(v: Any) -> int | float:
    if isinstance(v, dict) and "$numberLong" in v:
        return int(v["$numberLong"])
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    return 0


def is_number(v: Any) -> bool:
    return type(v) in (int, float, Int64)


def add_number(base: Any, delta: int | float) -> Any:
    """``base + delta`` keeping the BSON type: int32 widens to int64, ints widen to double."""
    if type(base) is float or isinstance(delta, float):
        return float(base) + float(delta)
    total = int(base) + int(delta)
    if type(base) is int and INT32_MIN <= total <= INT32_MAX:
        return total
    if INT64_MIN <= total <= INT64_MAX:
        return Int64(total)
    return float(total)


def depth_of(value: Any) -> int:
    """Nesting depth of a value: 0 for a leaf, 1 for a document or array of leaves, ...

    Iterative: it runs before the depth limit is enforced, on values nested deeper than
    Python's recursion limit (a recursive walk raised RecursionError, an INTERNAL error, for
    500-1,000 levels; it is also ~1.6x faster)."""
    if not isinstance(value, (dict, list)):
        return 0
    deepest = 1
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        v, d = pop()
        for c in v.values() if isinstance(v, dict) else v:
            if isinstance(c, (dict, list)):
                if d >= deepest:
                    deepest = d + 1
                push((c, d + 1))
    return deepest


def max_string(value: Any) -> int:
    """Longest string (in code points) inside a value."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return max((max_string(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((max_string(v) for v in value), default=0)
    return 0


#: ``(0.0, ""), (1.0, ""), ...``: the metas of a freshly decoded document's first fields,
#: shared by every node (immutable tuples; one per field of every node was 18 MB of a 10 MB
#: document's mirror).
_INITIAL_METAS: list[tuple[float, str]] = [(float(i), "") for i in range(256)]


def _initial_metas(n: int) -> Iterable[tuple[float, str]]:
    if n <= len(_INITIAL_METAS):
        return _INITIAL_METAS
    return itertools.chain(_INITIAL_METAS, ((float(i), "") for i in range(len(_INITIAL_METAS), n)))


#: The one Decimal128 NaN every replica holds (sign, signalling bit and payload dropped).
DECIMAL_NAN = Decimal128("NaN")


def clean(value: Any) -> Any:
    """Deep-copy a decoded BSON value into mirror form (documents become DocNodes)."""
    if isinstance(value, dict):
        if isinstance(value, DocNode):
            node = DocNode(((k, clean(v)) for k, v in value.items()), dict(value.meta))
            node.counters = {k: (b, e, dict(d)) for k, (b, e, d) in value.counters.items()}
            return node
        return _fresh_node(value)
    if isinstance(value, list):
        return [v if type(v) in _ATOMS else clean(v) for v in value]
    if type(value) is float and math.isnan(value):
        # NaN payloads do not survive the CRDT (and Extended JSON has one NaN): every replica
        # holds the canonical quiet NaN.
        return math.nan
    if type(value) is Decimal128 and value.to_decimal().is_nan():
        return DECIMAL_NAN  # Likewise: "$numberDecimal" is "NaN" whatever the sign and payload.
    return value


#: Leaf types ``clean`` returns as they are (no NaN to make canonical, nothing to copy).
_ATOMS = frozenset({str, int, bool, type(None), bytes, Int64, datetime.datetime, ObjectId})


def _fresh_node(value: Mapping[str, Any]) -> DocNode:
    """``clean`` of a decoded document: fields in their order, order keys 0, 1, ... (a loop
    without a call per leaf, and the metas built once: this runs on every container of a
    large document)."""
    node = DocNode()
    atoms = _ATOMS
    for k, v in value.items():
        t = type(v)
        if t in atoms:
            node[k] = v
        elif t is float:
            node[k] = math.nan if math.isnan(v) else v  # the one NaN (see below)
        else:
            node[k] = clean(v)
    meta = node.meta
    dict.update(meta, zip(value, _initial_metas(len(value)), strict=False))
    if isinstance(meta, _Meta):
        meta.top = float(len(value) - 1)
    return node


def plain(value: Any) -> Any:
    """Mirror value -> plain BSON value (DocNode is a dict, so only copies are needed)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def canonical_nans(value: Any) -> Any:
    """``value`` with every NaN (double or Decimal128) made the canonical one, as ``clean``
    makes them in the mirror; the very same object when it holds no NaN to change (the usual
    case), so that checking a large value allocates nothing. ``_plain(clean(value))`` copied
    every container of it twice."""
    t = type(value)
    if t is dict or isinstance(value, dict):
        changed: dict[str, Any] | None = None
        for k, v in value.items():
            c = canonical_nans(v)
            if c is not v:
                if changed is None:
                    changed = dict(value)
                changed[k] = c
        return value if changed is None else changed
    if t is list:
        out: list[Any] | None = None
        for i, v in enumerate(value):
            c = canonical_nans(v)
            if c is not v:
                if out is None:
                    out = list(value)
                out[i] = c
        return value if out is None else out
    if t is float:
        if math.isnan(value) and _DOUBLE.pack(value) != _NAN_BITS:
            return math.nan
        return value
    if t is Decimal128 and value.bid != DECIMAL_NAN.bid and value.to_decimal().is_nan():
        return DECIMAL_NAN
    return value


_DOUBLE = struct.Struct("<d")
_NAN_BITS = _DOUBLE.pack(math.nan)
