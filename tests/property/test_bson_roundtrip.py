"""Every BSON type survives the engine byte for byte, and field order is kept and converges.

Round trip (docs/diff-format.md, "Values"): a random document with every BSON type written with
``replace`` (or ``set`` as a sub-document, or ``insert`` as an array element) reads back with the
exact bytes ``bson.encode`` gives: on the writing replica, on a replica that merges the update,
on one that applies it as a raw ``{"update": ...}`` diff, and for a follower of the effective
changes.

Field order: fields stay in the order written; fields added concurrently on several replicas end
in the same order everywhere (and the same order whatever the delivery order); and the effective
changes of every merge tell a follower exactly where each field went.
"""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from typing import Any

import bson
import pytest
from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from virtualdom.engine import Change, Replica, TypeMismatch
from virtualdom.engine.follow import apply_diff as follow_diff
from virtualdom.engine.values import decode_document

# -- a strategy for every BSON type ---------------------------------------------------------------
#
# The .map(type) copies keep Hypothesis 6.170's shrinker from re-encoding a Code, Int64 or Binary
# (str, int and bytes subclasses) through a plain text/integers/binary strategy, which crashes it
# with "KeyError: <class 'bson.code.Code'>" and a FlakyStrategyDefinition report.

# Field names: any code point but NUL (and surrogates, which UTF-8 cannot hold), plus names that
# Extended JSON and DBRefs give a meaning to, which must stay plain field names in a document.
KEY = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6).map(str),
    st.sampled_from(
        [
            "$oid",
            "$date",
            "$numberInt",
            "$code",
            "$scope",
            "$ejson",
            "$binary",
            "$regularExpression",
            "$minKey",
            "$ref",
            "$id",
            "$db",
            "",
            "0",
            "a.b",
        ]
    ),
)
# Any code point but surrogates, NUL included.
STRING = st.text(st.characters(codec="utf-8"), max_size=12).map(str)
INT32 = st.integers(-(2**31), 2**31 - 1).map(int)
INT64 = st.integers(-(2**63), 2**63 - 1).map(Int64)
# Every double bit pattern: -0.0, infinities, NaNs of both signs with any payload.
DOUBLE = st.one_of(
    st.floats(),
    st.sampled_from([-0.0, 0.0, math.inf, -math.inf, math.nan, 5e-324, 1.0, 2.0**53]),
    st.integers(0, 2**64 - 1).map(lambda n: struct.unpack("<d", struct.pack("<Q", n))[0]),
)
BINARY = st.builds(
    Binary,
    st.binary(max_size=20),
    st.sampled_from([*range(9), 0x80, 0xFF]),
)
DATETIME = st.one_of(
    st.integers(-(2**63), 2**63 - 1),  # mostly far outside what datetime can hold
    st.integers(-62135596800000, 253402300799999),  # year 1 .. 9999
).map(DatetimeMS)
REGEX = st.builds(
    Regex,
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8).map(str),
    st.sets(st.sampled_from("ilmsux")).map(lambda s: "".join(sorted(s))),
)
DECIMAL = st.one_of(
    st.sampled_from(
        [
            "NaN",
            "-NaN",
            "sNaN",
            "-sNaN",
            "Infinity",
            "-Infinity",
            "-0",
            "0",
            "-0E+3",
            "1E-6176",
            "1E+6144",
        ]
    ),
    st.decimals(allow_nan=False, allow_infinity=False, places=None).map(str),
    st.builds(
        lambda sign, digits, exp: f"{sign}{digits}E{exp}",
        st.sampled_from(["", "-"]),
        st.integers(0, 10**34 - 1),
        st.integers(-6176, 6111),
    ),
).map(Decimal)


def _decimal128(d: Decimal) -> Decimal128 | None:
    try:
        return Decimal128(d)
    except Exception:  # inexact or out of range for 34 digits: not a Decimal128
        return None


DECIMAL128 = DECIMAL.map(_decimal128).filter(lambda v: v is not None)

OTHER_LEAF = st.one_of(
    STRING,
    BINARY,
    st.builds(ObjectId, st.binary(min_size=12, max_size=12)),
    st.booleans(),
    DATETIME,
    st.none(),
    REGEX,
    st.builds(Code, STRING),
    INT32,
    st.builds(Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    INT64,
    DECIMAL128,
    st.just(MinKey()),
    st.just(MaxKey()),
)
LEAF = st.one_of(DOUBLE, OTHER_LEAF)
VALUE = st.recursive(
    LEAF,
    lambda ch: st.one_of(
        st.lists(ch, max_size=4),
        st.dictionaries(KEY, ch, max_size=4),
        st.builds(Code, STRING, st.dictionaries(KEY, ch, max_size=3)),
    ),
    max_leaves=12,
)
DOCUMENT = st.dictionaries(KEY, VALUE, max_size=6)

DECIMAL_NAN = Decimal128("NaN")


def canonical(value: Any) -> Any:
    """What the engine stores: every NaN (double or Decimal128) is the canonical one, since NaN
    sign and payload bits do not survive the CRDT (docs/diff-format.md, "Values"). A scope is kept
    as BSON bytes, so its NaNs are exact."""
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if type(value) is float and math.isnan(value):
        return math.nan
    if type(value) is Decimal128 and value.to_decimal().is_nan():
        return DECIMAL_NAN
    return value


def encoded(doc: dict[str, Any]) -> bytes:
    return bson.encode(canonical(doc))


SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def diff(*ops: dict[str, Any]) -> bytes:
    return bson.encode({"ops": list(ops)})


def follow(changes: list[Change]) -> bytes:
    doc: dict[str, Any] = {}
    for ch in changes:
        doc = follow_diff(doc, ch.diff)
    return bson.encode(doc)


def assert_everywhere(writer: Replica, changes: list[Change], expected: bytes) -> None:
    """The writer, a replica merging its updates, one applying them as raw-update diffs, and a
    follower of the effective changes all read ``expected``; every mirror matches its CRDT."""
    assert writer.snapshot() == expected
    assert bson.encode(writer.materialize()) == expected
    assert follow(changes) == expected
    merged, raw = Replica("merger"), Replica("raw")
    remote: list[Change] = []
    for ch in changes:
        remote += merged.merge(ch.update)
        assert raw.apply_diff(bson.encode({"update": ch.update})) is not None
    assert merged.snapshot() == expected
    assert bson.encode(merged.materialize()) == expected
    assert follow(remote) == expected
    assert raw.snapshot() == expected
    # And from the full state, as a newcomer catches up.
    fresh = Replica("fresh")
    assert follow(fresh.merge(writer.encode_state())) == expected == fresh.snapshot()


# -- round trips ----------------------------------------------------------------------------------


@SETTINGS
@given(doc=DOCUMENT)
def test_replace_round_trips(doc: dict[str, Any]) -> None:
    r = Replica("writer")
    change = r.apply_diff(diff({"op": "replace", "value": doc}))
    assert change is not None
    assert_everywhere(r, [change], encoded(doc))


@SETTINGS
@given(doc=DOCUMENT, key=KEY, value=VALUE)
def test_set_as_sub_document_round_trips(doc: dict[str, Any], key: str, value: Any) -> None:
    r = Replica("writer")
    changes = [r.apply_diff(diff({"op": "set", "path": ["sub"], "value": doc}))]
    changes.append(r.apply_diff(diff({"op": "set", "path": ["sub", key], "value": value})))
    changes.append(r.apply_diff(diff({"op": "set", "path": ["arr"], "value": []})))
    changes.append(
        r.apply_diff(diff({"op": "insert", "path": ["arr"], "index": 0, "values": [doc, value]}))
    )
    assert None not in changes
    expected = {"sub": {**doc, key: value}, "arr": [doc, value]}
    assert_everywhere(r, [c for c in changes if c is not None], encoded(expected))


@SETTINGS
@given(doc=DOCUMENT, more=DOCUMENT)
def test_round_trip_survives_history_and_compaction(
    doc: dict[str, Any], more: dict[str, Any]
) -> None:
    """Past versions are rebuilt from stored updates: they must read back exactly too."""
    r = Replica("writer", retain=1)
    first = r.apply_diff(diff({"op": "replace", "value": doc}))
    second = r.apply_diff(diff({"op": "replace", "value": more}))
    assert first is not None and second is not None
    assert r.snapshot(version=1) == encoded(doc)
    assert r.snapshot(version=2) == encoded(more)
    r.compact(keep_last=0)
    assert r.snapshot() == encoded(more)
    assert bson.encode(r.materialize()) == encoded(more)


def test_every_type_once() -> None:
    """A fixed document with one value of each type (and the awkward ones), as a smoke test that
    does not depend on what Hypothesis happens to draw."""
    nan_payload = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_0000_0001))[0]
    doc = {
        "double": 1.0,
        "neg0": -0.0,
        "nan": math.nan,
        "nan_payload": nan_payload,
        "inf": math.inf,
        "str": "é😀\x00",
        "doc": {"$oid": "not an oid", "": None},
        "arr": [1, [2, {"x": 3}]],
        "empty_doc": {},
        "empty_arr": [],
        **{f"bin{t}": Binary(b"\x00\x01", t) for t in [*range(9), 0x80, 0xFF]},
        "oid": ObjectId("65f0c0ffee00000000000000"),
        "t": True,
        "f": False,
        "date": DatetimeMS(0),
        "date_far": DatetimeMS(2**62),
        "date_min": DatetimeMS(-(2**63)),
        "null": None,
        "re": Regex("^a.*é$", "imsux"),
        "code": Code("x = 1"),
        "scope": Code("f(a)", {"a": Int64(1), "b": [Decimal128("1.5")]}),
        "empty_scope": Code("g()", {}),
        "i32": -(2**31),
        "ts": Timestamp(2**32 - 1, 7),
        "i64": Int64(2**63 - 1),
        "dec": Decimal128("-0"),
        "dec_nan": Decimal128("NaN"),
        "dec_inf": Decimal128("-Infinity"),
        "min": MinKey(),
        "max": MaxKey(),
    }
    r = Replica("writer")
    change = r.apply_diff(diff({"op": "replace", "value": doc}))
    assert change is not None
    assert_everywhere(r, [change], encoded(doc))


NEG_NAN = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_0000_0000))[0]
PAYLOAD_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0_0000_0000_0001))[0]
AWKWARD = {
    # Each of these once made the writer and its peers read different bytes.
    "double -NaN": {"d": NEG_NAN},
    "double NaN payload": {"d": [PAYLOAD_NAN]},
    "decimal -NaN": {"d": Decimal128("-NaN")},
    "decimal sNaN": {"d": [Decimal128("sNaN")]},
    "decimal -sNaN": {"d": {"x": Decimal128("-sNaN")}},
    "scope -NaN": {"c": Code("f", {"x": NEG_NAN})},
    "scope NaN payload": {"c": Code("f", {"x": PAYLOAD_NAN})},
    "scope $oid key": {"c": Code("f", {"$oid": None})},
    "scope $numberInt document": {"c": Code("f", {"x": {"$numberInt": "5"}})},
    "scope $date key": {"c": Code("f", {"$date": 1})},
    "$ref/$id document": {"x": {"a": 1, "$ref": "c", "$id": 2}},
    "$id/$ref document": {"x": {"$id": 2, "$ref": "c"}},
}


@pytest.mark.parametrize("doc", AWKWARD.values(), ids=AWKWARD.keys())
def test_awkward_leaves_converge(doc: dict[str, Any]) -> None:
    r = Replica("writer")
    change = r.apply_diff(diff({"op": "replace", "value": doc}))
    assert change is not None
    assert_everywhere(r, [change], encoded(doc))


def test_dbref_shaped_document_built_by_sets_stays_readable() -> None:
    """pymongo reads a document with $ref and $id as a DBRef, which re-encodes $ref and $id first:
    a document built field by field must still read back as written, by to_python and followers."""
    r = Replica("writer")
    first = r.apply_diff(diff({"op": "set", "path": ["x"], "value": {"a": 1, "$ref": "c"}}))
    change = r.apply_diff(diff({"op": "set", "path": ["x", "$id"], "value": 2}))
    assert first is not None and change is not None
    assert r.snapshot() == bson.encode({"x": {"a": 1, "$ref": "c", "$id": 2}})
    assert list(r.to_python()["x"]) == ["a", "$ref", "$id"]
    assert_everywhere(r, [first, change], r.snapshot())


def test_code_is_not_collaborative_text() -> None:
    """Code is a str subclass in pymongo, but it is a leaf: splicing it is a type error (it used
    to reach the CRDT and fail there half-applied, with a TypeError)."""
    r = Replica("writer")
    assert r.apply_diff(diff({"op": "set", "path": ["c"], "value": Code("abc")})) is not None
    before = (r.snapshot(), r.clock(), r.version)
    with pytest.raises(TypeMismatch):
        r.apply_diff(diff({"op": "splice", "path": ["c"], "index": 1, "insert": "x"}))
    assert (r.snapshot(), r.clock(), r.version) == before
    assert bson.encode(r.materialize()) == r.snapshot()


# -- field order ----------------------------------------------------------------------------------


def test_field_order_is_kept_as_written() -> None:
    doc = {"z": 1, "a": 2, "m": {"y": 1, "b": 2, "é": 3, "": 4}, "0": 5, "$x": 6}
    r = Replica("writer")
    changes = [r.apply_diff(diff({"op": "replace", "value": doc}))]
    assert r.snapshot() == bson.encode(doc)
    # A new field goes last, an existing one keeps its place, "at" moves or places one.
    changes.append(
        r.apply_diff(
            diff(
                {"op": "set", "path": ["b"], "value": 7},
                {"op": "set", "path": ["z"], "value": 8},
                {"op": "set", "path": ["m", "c"], "value": 9, "at": 1},
                {"op": "set", "path": ["0"], "value": 10, "at": 0},
                {"op": "set", "path": ["$x"], "value": 11, "at": 99},
            )
        )
    )
    expected = {
        "0": 10,
        "z": 8,
        "a": 2,
        "m": {"y": 1, "c": 9, "b": 2, "é": 3, "": 4},
        "b": 7,
        "$x": 11,
    }
    assert list(decode_document(r.snapshot())) == list(expected)
    assert_everywhere(r, [c for c in changes if c is not None], bson.encode(expected))


def _tied() -> tuple[Replica, Change]:
    """p and q added concurrently share the order key 0; then c is set "at" 1, between them."""
    a, b = Replica("a"), Replica("b")
    ca = a.apply_diff(diff({"op": "set", "path": ["p"], "value": 1}))
    cb = b.apply_diff(diff({"op": "set", "path": ["q"], "value": 2}))
    assert ca is not None and cb is not None
    a.merge(cb.update)
    b.merge(ca.update)
    assert a.snapshot() == b.snapshot() == bson.encode({"p": 1, "q": 2})
    change = a.apply_diff(diff({"op": "set", "path": ["c"], "value": 3, "at": 1}))
    assert change is not None
    return a, change


def test_at_between_tied_fields_reports_where_the_field_went() -> None:
    """Whatever position the engine manages, the effective change says it exactly."""
    a, change = _tied()
    assert bson.encode(follow_diff({"p": 1, "q": 2}, change.diff)) == a.snapshot()
    assert sorted(decode_document(a.snapshot())) == ["c", "p", "q"]


@pytest.mark.xfail(
    strict=True,
    reason="engine limitation: fields added concurrently share an order key, and (order, name) "
    "sorting cannot put a field between two of them, so 'at' is not honoured there",
)
def test_at_between_tied_fields_is_honoured() -> None:
    a, _ = _tied()
    assert list(decode_document(a.snapshot())) == ["p", "c", "q"]


def _exchange(replicas: list[Replica], updates: list[list[bytes]], order: list[int]) -> None:
    for i in order:
        for j, r in enumerate(replicas):
            if j != i:
                for u in updates[i]:
                    r.merge(u)


@given(
    base=st.lists(st.sampled_from("abcdef"), unique=True, max_size=4),
    adds=st.lists(
        st.lists(st.sampled_from("ghijklmn"), unique=True, max_size=4), min_size=2, max_size=3
    ),
    order=st.permutations([0, 1, 2]),
)
@SETTINGS
def test_concurrent_field_adds_get_one_deterministic_order(
    base: list[str], adds: list[list[str]], order: list[int]
) -> None:
    """Replicas that each append new fields to a shared document end with the same field order
    whatever the delivery order, the shared fields first in their order, each replica's new fields
    in the order it added them; and the same again on a second run (deterministic)."""

    def run(delivery: list[int]) -> bytes:
        replicas = [Replica(f"r{i}") for i in range(len(adds))]
        first = replicas[0].apply_diff(diff({"op": "replace", "value": {k: k for k in base}}))
        assert first is not None
        for r in replicas[1:]:
            r.merge(first.update)
        updates: list[list[bytes]] = []
        for r, keys in zip(replicas, adds, strict=True):
            ups = []
            for k in keys:
                ch = r.apply_diff(diff({"op": "set", "path": [f"{k}{r.actor}"], "value": r.actor}))
                assert ch is not None
                ups.append(ch.update)
            updates.append(ups)
        _exchange(replicas, updates, [i for i in delivery if i < len(replicas)])
        snaps = {r.snapshot() for r in replicas}
        assert len(snaps) == 1
        fields = list(decode_document(replicas[0].snapshot()))
        assert fields[: len(base)] == base
        for r, keys in zip(replicas, adds, strict=True):
            assert [f for f in fields if f.endswith(r.actor)] == [f"{k}{r.actor}" for k in keys]
        return snaps.pop()

    assert run(order) == run(sorted(order)) == run(order)


# A targeted stateful-ish property for what a merge reports about field order: random field ops
# (new and existing fields, with and without "at", removes, replaces) on three replicas sharing a
# flat document, delivered in random groups; every change's effective diff must move a follower to
# exactly the replica's field order.

FIELD = st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])
FIELD_OP = st.one_of(
    st.builds(lambda k, v: {"op": "set", "path": [k], "value": v}, FIELD, st.integers(0, 9)),
    st.builds(
        lambda k, v, at: {"op": "set", "path": [k], "value": v, "at": at},
        FIELD,
        st.integers(0, 9),
        st.integers(0, 8),
    ),
    st.builds(lambda k: {"op": "remove", "path": [k]}, FIELD),
    st.builds(
        lambda keys: {"op": "replace", "value": {k: 0 for k in keys}},
        st.lists(FIELD, unique=True, max_size=5),
    ),
)
STEP = st.tuples(st.integers(0, 2), st.lists(FIELD_OP, min_size=1, max_size=3))


@given(
    base=st.lists(FIELD, unique=True, max_size=5),
    rounds=st.lists(
        st.tuples(st.lists(STEP, max_size=4), st.permutations([0, 1, 2]), st.booleans()),
        min_size=1,
        max_size=4,
    ),
)
@settings(SETTINGS, max_examples=300)
def test_merged_field_order_is_exact_for_followers(
    base: list[str], rounds: list[tuple[list[tuple[int, list[dict[str, Any]]]], list[int], bool]]
) -> None:
    replicas = [Replica(n) for n in ("a", "b", "c")]
    followers: list[dict[str, Any]] = [{}, {}, {}]

    def take(i: int, changes: list[Change]) -> None:
        for ch in changes:
            followers[i] = follow_diff(followers[i], ch.diff)
            assert bson.encode(followers[i]) == replicas[i].snapshot(version=ch.version), ch.ops

    start = replicas[0].apply_diff(diff({"op": "replace", "value": {k: 0 for k in base}}))
    if start is not None:
        take(0, [start])
        for i in (1, 2):
            take(i, replicas[i].merge(start.update))
    for steps, order, batched in rounds:
        sent: list[list[bytes]] = [[], [], []]
        for who, ops in steps:
            ch = replicas[who].apply_diff(diff(*ops))
            if ch is not None:
                take(who, [ch])
                sent[who].append(ch.update)
        for src in order:
            for dst in range(3):
                if dst == src:
                    continue
                if batched:  # everything dst lacks from src, as one update
                    sv = replicas[dst].state_vector()
                    take(dst, replicas[dst].merge(replicas[src].update_since(sv)))
                else:
                    for u in sent[src]:
                        take(dst, replicas[dst].merge(u))
    snaps = {r.snapshot() for r in replicas}
    assert len(snaps) == 1
    for i, r in enumerate(replicas):
        assert bson.encode(followers[i]) == r.snapshot() == bson.encode(r.materialize())
