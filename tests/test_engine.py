"""Behaviour of the engine: every op, text in code points, counters, concurrency, causal
contexts, versions, compaction, out-of-order delivery, clocks and actor ids.

Replicas are checked after every step with :func:`consistent`: the mirror the snapshot is encoded
from equals a fresh reading of the CRDT.
"""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import bson
import pycrdt
import pytest
from bson import Binary, Code, Decimal128, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64

from virtualdom.engine import (
    CausalityError,
    Change,
    HistoryCompacted,
    MalformedUpdate,
    Replica,
    clock_from_bson,
    clock_to_bson,
)
from virtualdom.engine.values import CODEC

# -- helpers ------------------------------------------------------------------------------------


def diff(*ops: dict[str, Any]) -> bytes:
    return bson.encode({"ops": list(ops)})


def apply(r: Replica, *ops: dict[str, Any], context: dict[str, int] | None = None) -> Change:
    change = r.apply_diff(diff(*ops), context)
    assert change is not None
    consistent(r)
    return change


def consistent(*replicas: Replica) -> None:
    for r in replicas:
        assert bson.encode(r.materialize()) == r.snapshot(), r.actor


def converged(*replicas: Replica) -> None:
    consistent(*replicas)
    first = replicas[0]
    for r in replicas[1:]:
        assert r.snapshot() == first.snapshot(), (r.actor, r.to_python(), first.to_python())
        assert r.clock() == first.clock()


def exchange(*replicas: Replica) -> None:
    """Every replica merges every other's full state."""
    states = [r.encode_state() for r in replicas]
    for i, r in enumerate(replicas):
        for j, state in enumerate(states):
            if i != j:
                r.merge(state)


def fork(source: Replica, *names: str) -> list[Replica]:
    out = []
    for name in names:
        r = Replica(name)
        r.merge(source.encode_state())
        out.append(r)
    return out


def doc(r: Replica) -> dict[str, Any]:
    return r.to_python()


def follow(plain: dict[str, Any], change: Change) -> dict[str, Any]:
    """A follower without a CRDT: apply a change's effective ops to a plain document.

    Enough of docs/diff-format.md for the tests here (paths as arrays, concrete positions).
    """
    for op in bson.decode(change.diff, CODEC)["ops"]:
        kind = op["op"]
        if kind == "replace":
            plain = dict(op["value"])
            continue
        *parents, last = op["path"]
        node: Any = plain
        for seg in parents:
            node = node[seg]
        if kind == "set":
            if isinstance(node, list):
                node[last] = op["value"]
            elif "at" in op:
                items = [(k, v) for k, v in node.items() if k != last]
                items.insert(op["at"], (last, op["value"]))
                node.clear()
                node.update(items)
            else:
                node[last] = op["value"]
        elif kind == "remove":
            node.pop(last, None)
        elif kind == "insert":
            node[last][op["index"] : op["index"]] = op["values"]
        elif kind == "delete":
            del node[last][op["index"] : op["index"] + op["count"]]
        elif kind == "splice":
            s = node[last]
            i, n = op["index"], op["delete"]
            node[last] = s[:i] + op["insert"] + s[i + n :]
        else:
            raise AssertionError(f"unexpected effective op {kind}")
    return plain


# -- every op kind ------------------------------------------------------------------------------


OID = ObjectId("65f0c0ffee00000000000000")

# Each op, and the whole document after it (dict order is field order).
OP_STEPS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (
        {"op": "replace", "value": {"title": "Hi", "n": 1, "tags": ["x"], "sub": {"k": 1}}},
        {"title": "Hi", "n": 1, "tags": ["x"], "sub": {"k": 1}},
    ),
    (
        {"op": "set", "path": "id", "value": OID, "at": 0},
        {"id": OID, "title": "Hi", "n": 1, "tags": ["x"], "sub": {"k": 1}},
    ),
    (
        {"op": "set", "path": "sub.k", "value": "v"},
        {"id": OID, "title": "Hi", "n": 1, "tags": ["x"], "sub": {"k": "v"}},
    ),
    (
        {"op": "set", "path": ["tags", 0], "value": {"t": 1}},
        {"id": OID, "title": "Hi", "n": 1, "tags": [{"t": 1}], "sub": {"k": "v"}},
    ),
    (
        {"op": "insert", "path": "tags", "index": 1, "values": ["y", 2]},
        {"id": OID, "title": "Hi", "n": 1, "tags": [{"t": 1}, "y", 2], "sub": {"k": "v"}},
    ),
    (
        {"op": "delete", "path": "tags", "index": 0, "count": 2},
        {"id": OID, "title": "Hi", "n": 1, "tags": [2], "sub": {"k": "v"}},
    ),
    (
        {"op": "splice", "path": "title", "index": 2, "insert": " there"},
        {"id": OID, "title": "Hi there", "n": 1, "tags": [2], "sub": {"k": "v"}},
    ),
    (
        {"op": "splice", "path": "title", "index": 0, "delete": 3},
        {"id": OID, "title": "there", "n": 1, "tags": [2], "sub": {"k": "v"}},
    ),
    (
        {"op": "inc", "path": "n", "by": 41},
        {"id": OID, "title": "there", "n": 42, "tags": [2], "sub": {"k": "v"}},
    ),
    ({"op": "remove", "path": "sub"}, {"id": OID, "title": "there", "n": 42, "tags": [2]}),
    (
        {"op": "set", "path": "sub", "value": "last", "at": 99},
        {"id": OID, "title": "there", "n": 42, "tags": [2], "sub": "last"},
    ),
]


def test_every_op_kind_applies_and_replicates() -> None:
    a = Replica("alice")
    b = Replica("bob")
    plain: dict[str, Any] = {}
    plain_b: dict[str, Any] = {}
    for op, expected in OP_STEPS:
        version = a.version
        change = apply(a, op)
        assert change.version == version + 1 == a.version
        assert change.actor == "alice"
        assert change.clock == a.clock()
        assert a.snapshot() == bson.encode(expected), op
        # The update replicates it; the effective diffs reproduce it without a CRDT.
        merged = b.merge(change.update)
        assert len(merged) == 1
        assert merged[0].actor == "alice"
        converged(a, b)
        plain = follow(plain, change)
        assert bson.encode(plain) == a.snapshot()
        plain_b = follow(plain_b, merged[0])
        assert bson.encode(plain_b) == b.snapshot()


def test_no_op_diffs_change_nothing() -> None:
    r = Replica("alice")
    apply(
        r, {"op": "set", "path": "tags", "value": ["a"]}, {"op": "set", "path": "s", "value": "x"}
    )
    before = (r.snapshot(), r.clock(), r.version)
    for op in (
        {"op": "remove", "path": "missing"},
        {"op": "insert", "path": "tags", "index": 1, "values": []},
        {"op": "delete", "path": "tags", "index": 1, "count": 0},
        {"op": "splice", "path": "s", "index": 1},
    ):
        assert r.apply_diff(diff(op)) is None
    assert r.apply_diff(diff()) is None
    assert (r.snapshot(), r.clock(), r.version) == before


def test_ops_of_one_diff_see_each_other() -> None:
    # Later ops of a diff act on what earlier ops of the same diff wrote; the CRDT must get
    # exactly what the mirror shows (a set's value is copied when it is planned).
    r = Replica("alice")
    apply(
        r,
        {"op": "set", "path": "s", "value": "x"},
        {"op": "splice", "path": "s", "index": 0, "insert": "é"},
        {"op": "set", "path": "a", "value": [1]},
        {"op": "insert", "path": "a", "index": 1, "values": [2]},
        {"op": "set", "path": "n", "value": 5},
        {"op": "inc", "path": "n", "by": 1},
        {"op": "set", "path": "gone", "value": 1},
        {"op": "remove", "path": "gone"},
        {"op": "set", "path": "d", "value": {"k": [{"deep": "v"}]}},
        {"op": "splice", "path": "d.k.0.deep", "index": 1, "insert": "w"},
        {"op": "set", "path": "d.j", "value": 0, "at": 0},
    )
    assert doc(r) == {"s": "éx", "a": [1, 2], "n": 6, "d": {"j": 0, "k": [{"deep": "vw"}]}}
    (peer,) = fork(r, "peer")
    converged(r, peer)
    # And a replica rebuilt from history agrees too.
    assert r.snapshot(version=1) == r.snapshot()
    other = Replica("other")
    other.apply_diff(diff({"op": "set", "path": "n", "value": 7}))
    merged = other.apply_diff(bson.encode({"update": r.encode_state()}))
    assert merged is not None
    consistent(other)


BSON_VALUES: dict[str, Any] = {
    "double": 1.25,
    "double_integral": 3.0,
    "negative_zero": -0.0,
    "string": "wörld 😀",
    "document": {"b": 1, "a": {"z": None}},
    "array": [1, "2", [3.0]],
    "binary": b"\x00\x01",
    "binary_uuid": Binary(b"0123456789abcdef", 4),
    "binary_user": Binary(b"zz", 0x80),
    "object_id": ObjectId("65f0c0ffee00000000000000"),
    "true": True,
    "false": False,
    "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC),
    "datetime_out_of_range": DatetimeMS(-62135596800001),
    "null": None,
    "regex": Regex("^a.*b$", "imsx"),
    "code": Code("f()"),
    "code_with_scope": Code("g(x)", {"x": Int64(1)}),
    "int32": -5,
    "timestamp": Timestamp(123, 4),
    "int64": Int64(-7),
    "int64_max": Int64(2**63 - 1),
    "decimal128": Decimal128("1.10"),
    "min_key": MinKey(),
    "max_key": MaxKey(),
    "dbref_shaped": {"$ref": "c", "$id": ObjectId("65f0c0ffee00000000000000"), "$db": "d", "x": 1},
    "dollar_keys": {"$oid": "not an oid", "$numberInt": "5"},
}


def test_every_bson_type_round_trips_through_replicas() -> None:
    data = diff(*[{"op": "set", "path": k, "value": v} for k, v in BSON_VALUES.items()])
    want = bson.encode(
        {op["path"]: op["value"] for op in bson.decode(data, CODEC)["ops"]}, codec_options=CODEC
    )
    r = Replica("alice")
    r.apply_diff(data)
    assert r.snapshot() == want
    (peer,) = fork(r, "peer")
    converged(r, peer)
    # Editing inside the DBRef-shaped document works on both sides.
    change = apply(r, {"op": "set", "path": "dbref_shaped.x", "value": 2})
    peer.merge(change.update)
    converged(r, peer)
    assert r.to_python()["dbref_shaped"] == {
        "$ref": "c",
        "$id": ObjectId("65f0c0ffee00000000000000"),
        "$db": "d",
        "x": 2,
    }


# -- text ---------------------------------------------------------------------------------------

TEXT = "a😀b€c"  # code points: a=0 😀=1 b=2 €=3 c=4; UTF-8 bytes 1+4+1+3+1, UTF-16 units 1+2+1+1+1


@pytest.mark.parametrize(
    ("index", "delete", "insert", "expected"),
    [
        (2, 0, "X", "a😀Xb€c"),  # right after the emoji
        (1, 0, "X", "aX😀b€c"),  # right before it
        (1, 1, "", "ab€c"),  # the emoji alone
        (1, 1, "🎉🎉", "a🎉🎉b€c"),  # emoji for emoji
        (3, 1, "é", "a😀béc"),
        (4, 1, "", "a😀b€"),
        (5, 0, "!", "a😀b€c!"),
        (0, 5, "ü", "ü"),
        (2, 2, "👩‍👩‍👧", "a😀👩‍👩‍👧c"),  # a ZWJ sequence is 5 code points
    ],
)
def test_splice_at_code_points(index: int, delete: int, insert: str, expected: str) -> None:
    a = Replica("alice")
    apply(a, {"op": "set", "path": "t", "value": TEXT})
    (b,) = fork(a, "bob")
    splice = {"op": "splice", "path": "t", "index": index, "delete": delete, "insert": insert}
    change = apply(a, splice)
    assert doc(a)["t"] == expected
    assert change.ops[0].index == index and change.ops[0].count == delete
    merged = b.merge(change.update)
    # The receiver reports the change in code points too (never pycrdt's byte offsets).
    assert [(o.op, o.index, o.count, o.text) for c in merged for o in c.ops] == [
        ("splice", index, delete, insert)
    ]
    converged(a, b)
    # A further splice after the emoji lands in the right place on both sides.
    pos = len(expected)
    change = apply(b, {"op": "splice", "path": "t", "index": pos, "insert": "Ω"})
    a.merge(change.update)
    assert doc(a)["t"] == expected + "Ω"
    converged(a, b)


def test_concurrent_splices_around_emoji_from_remote_events() -> None:
    a = Replica("alice")
    apply(a, {"op": "set", "path": "t", "value": "😀😀😀"})
    (b,) = fork(a, "bob")
    ca = apply(a, {"op": "splice", "path": "t", "index": 1, "insert": "ä"})
    cb = apply(b, {"op": "splice", "path": "t", "index": 2, "delete": 1, "insert": "ß"})
    got_a = a.merge(cb.update)
    got_b = b.merge(ca.update)
    assert doc(a)["t"] == doc(b)["t"] == "😀ä😀ß"
    converged(a, b)
    # Effective ops are code points against the receiver's own text.
    assert [(o.index, o.count, o.text) for c in got_a for o in c.ops] == [(3, 1, "ß")]
    assert [(o.index, o.count, o.text) for c in got_b for o in c.ops] == [(1, 0, "ä")]


def test_splice_in_text_inside_array_and_nested_document() -> None:
    a = Replica("alice")
    apply(a, {"op": "set", "path": "arr", "value": ["héllo😀", {"x": "ÿ"}]})
    (b,) = fork(a, "bob")
    change = apply(
        a,
        {"op": "splice", "path": ["arr", 0], "index": 6, "insert": "!"},
        {"op": "splice", "path": "arr.1.x", "index": 1, "insert": "z"},
    )
    b.merge(change.update)
    assert doc(b) == {"arr": ["héllo😀!", {"x": "ÿz"}]}
    converged(a, b)


def test_long_non_ascii_text_editing_stays_in_step() -> None:
    a = Replica("alice")
    apply(a, {"op": "set", "path": "t", "value": ""})
    (b,) = fork(a, "bob")
    expected = ""
    pieces = ["é", "😀", "a", "€", "𝄞", "ü"]
    for i in range(60):
        piece = pieces[i % len(pieces)]
        index = (i * 7) % (len(expected) + 1)
        writer, reader = (a, b) if i % 2 else (b, a)
        if i % 5 == 4 and expected:
            change = apply(
                writer, {"op": "splice", "path": "t", "index": index % len(expected), "delete": 1}
            )
            expected = expected[: index % len(expected)] + expected[index % len(expected) + 1 :]
        else:
            change = apply(writer, {"op": "splice", "path": "t", "index": index, "insert": piece})
            expected = expected[:index] + piece + expected[index:]
        reader.merge(change.update)
        assert doc(a)["t"] == doc(b)["t"] == expected
    converged(a, b)


# -- counters -----------------------------------------------------------------------------------


def _counters() -> tuple[Replica, Replica]:
    a = Replica("alice")
    apply(
        a,
        {"op": "set", "path": "i32", "value": 10},
        {"op": "set", "path": "edge", "value": 2**31 - 2},
        {"op": "set", "path": "i64", "value": Int64(2**63 - 2)},
        {"op": "set", "path": "dbl", "value": 1.5},
        {"op": "set", "path": "whole", "value": 2.0},
    )
    (b,) = fork(a, "bob")
    return a, b


def test_concurrent_increments_add_up() -> None:
    a, b = _counters()
    c = Replica("carol")
    c.merge(a.encode_state())
    ups = [
        apply(a, {"op": "inc", "path": "i32", "by": 5}).update,
        apply(b, {"op": "inc", "path": "i32", "by": -2}).update,
        apply(
            c, {"op": "inc", "path": "i32", "by": 100}, {"op": "inc", "path": "i32", "by": 1}
        ).update,
    ]
    a.merge(ups[1])
    a.merge(ups[2])
    b.merge(ups[2])
    b.merge(ups[0])
    c.merge(ups[1])
    c.merge(ups[0])
    for r in (a, b, c):
        assert doc(r)["i32"] == 114
        assert type(bson.decode(r.snapshot())["i32"]) is int
    converged(a, b, c)
    # Counting goes on from the sum.
    change = apply(b, {"op": "inc", "path": "i32", "by": 1})
    a.merge(change.update)
    assert doc(a)["i32"] == 115


def test_int32_overflow_widens_to_int64() -> None:
    a, b = _counters()
    ca = apply(a, {"op": "inc", "path": "edge", "by": 1})
    assert type(doc(a)["edge"]) is int  # 2**31 - 1 still fits
    cb = apply(b, {"op": "inc", "path": "edge", "by": 1})
    a.merge(cb.update)
    b.merge(ca.update)
    for r in (a, b):
        value = bson.decode(r.snapshot(), CODEC)["edge"]
        assert value == 2**31 and type(value) is Int64
    converged(a, b)
    # The type follows the sum, not the path to it: back in range, the int32 base's type.
    apply(a, {"op": "inc", "path": "edge", "by": -10})
    assert type(bson.decode(a.snapshot(), CODEC)["edge"]) is int
    (c,) = fork(a, "carol")
    converged(a, c)


def test_int64_overflow_becomes_double() -> None:
    a, b = _counters()
    ca = apply(a, {"op": "inc", "path": "i64", "by": 1})
    assert bson.decode(a.snapshot(), CODEC)["i64"] == Int64(2**63 - 1)
    cb = apply(b, {"op": "inc", "path": "i64", "by": 1})
    a.merge(cb.update)
    b.merge(ca.update)
    assert type(doc(a)["i64"]) is float
    converged(a, b)


def test_double_stays_double() -> None:
    a, b = _counters()
    ca = apply(a, {"op": "inc", "path": "dbl", "by": 1}, {"op": "inc", "path": "whole", "by": 1})
    cb = apply(
        b, {"op": "inc", "path": "dbl", "by": Int64(2)}, {"op": "inc", "path": "whole", "by": 0.5}
    )
    a.merge(cb.update)
    b.merge(ca.update)
    for r in (a, b):
        d = bson.decode(r.snapshot(), CODEC)
        assert d["dbl"] == 4.5 and type(d["dbl"]) is float
        assert d["whole"] == 3.5 and type(d["whole"]) is float
    converged(a, b)
    # A double increment makes an integer a double.
    apply(a, {"op": "inc", "path": "i32", "by": 0.5})
    assert doc(a)["i32"] == 10.5


def test_set_concurrent_with_inc_wins() -> None:
    a, b = _counters()
    c = Replica("carol")
    c.merge(a.encode_state())
    apply(a, {"op": "inc", "path": "i32", "by": 1})  # seen by everyone before the race
    exchange(a, b, c)
    ca = apply(a, {"op": "inc", "path": "i32", "by": 5})
    cb = apply(b, {"op": "set", "path": "i32", "value": 100})
    cc = apply(c, {"op": "inc", "path": "i32", "by": 7})
    for r, ups in ((a, (cb, cc)), (b, (cc, ca)), (c, (ca, cb))):
        for u in ups:
            r.merge(u.update)
    for r in (a, b, c):
        assert doc(r)["i32"] == 100  # the increments on the old value are discarded
    converged(a, b, c)
    # Increments after the set count from it.
    change = apply(c, {"op": "inc", "path": "i32", "by": 2})
    a.merge(change.update)
    b.merge(change.update)
    assert doc(a)["i32"] == doc(b)["i32"] == 102
    converged(a, b, c)


def test_counter_survives_history_rebuild() -> None:
    a, b = _counters()
    b.merge(apply(a, {"op": "inc", "path": "i32", "by": 3}).update)
    b.merge(apply(a, {"op": "inc", "path": "i32", "by": 3}).update)
    snap = a.snapshot()
    apply(a, {"op": "set", "path": "other", "value": 1})
    assert a.snapshot(version=a.version - 1) == snap
    fresh = Replica("fresh")
    fresh.merge(b.encode_state())
    assert doc(fresh)["i32"] == 16


# -- arrays -------------------------------------------------------------------------------------


def test_concurrent_inserts_at_same_index_keep_both_in_one_order() -> None:
    a = Replica("alice")
    apply(a, {"op": "set", "path": "arr", "value": [0, 9]})
    b, c = fork(a, "bob", "carol")
    base = a.encode_state()
    ups = [
        apply(a, {"op": "insert", "path": "arr", "index": 1, "values": ["a1", "a2"]}).update,
        apply(b, {"op": "insert", "path": "arr", "index": 1, "values": ["b1"]}).update,
        apply(c, {"op": "insert", "path": "arr", "index": 1, "values": ["c1"]}).update,
    ]
    results = set()
    for order in itertools.permutations(range(3)):
        r = Replica("observer")
        r.merge(base)
        for i in order:
            r.merge(ups[i])
        consistent(r)
        results.add(tuple(doc(r)["arr"]))
    assert len(results) == 1
    (arr,) = results
    assert arr[0] == 0 and arr[-1] == 9
    assert sorted(arr[1:-1], key=str) == ["a1", "a2", "b1", "c1"]
    assert arr.index("a2") == arr.index("a1") + 1  # one insert's values stay together
    exchange(a, b, c)
    converged(a, b, c)
    assert tuple(doc(a)["arr"]) == arr


def test_delete_of_already_deleted_element_is_a_no_op() -> None:
    a = Replica("alice")
    apply(a, {"op": "set", "path": "arr", "value": [0, 1, 2, 3]})
    (b,) = fork(a, "bob")
    ca = apply(a, {"op": "delete", "path": "arr", "index": 1, "count": 2})
    cb = apply(b, {"op": "delete", "path": "arr", "index": 2, "count": 1})
    merged = a.merge(cb.update)
    assert all(not c.ops for c in merged)  # nothing left to delete
    b.merge(ca.update)
    assert doc(a)["arr"] == doc(b)["arr"] == [0, 3]
    converged(a, b)
    # The same through a stale context on one replica: a delete of what is gone is dropped.
    r = Replica("r")
    apply(
        r,
        {"op": "set", "path": "arr", "value": [1, 2, 3]},
        {"op": "set", "path": "t", "value": "abc"},
    )
    ctx = r.clock()
    apply(r, {"op": "delete", "path": "arr", "index": 1, "count": 1})
    apply(r, {"op": "splice", "path": "t", "index": 1, "delete": 1})
    version = r.version
    assert r.apply_diff(diff({"op": "delete", "path": "arr", "index": 1, "count": 1}), ctx) is None
    assert r.apply_diff(diff({"op": "splice", "path": "t", "index": 1, "delete": 1}), ctx) is None
    assert r.version == version
    assert doc(r) == {"arr": [1, 3], "t": "ac"}


def test_set_under_concurrently_removed_parent_converges() -> None:
    a = Replica("alice")
    apply(
        a,
        {"op": "set", "path": "p", "value": {"q": {"r": 1}, "keep": True}},
        {"op": "set", "path": "z", "value": 0},
    )
    b, c = fork(a, "bob", "carol")
    base = a.encode_state()
    ua = apply(a, {"op": "remove", "path": "p"}).update
    ub = apply(
        b, {"op": "set", "path": "p.q.s", "value": "x"}, {"op": "set", "path": "p.q.r", "value": 2}
    ).update
    uc = apply(
        c, {"op": "inc", "path": "p.q.r", "by": 1}, {"op": "set", "path": "y", "value": 1}
    ).update
    observers = []
    for order in itertools.permutations([ua, ub, uc]):
        r = Replica("observer")
        r.merge(base)
        for u in order:
            r.merge(u)
        observers.append(r)
    a.merge(ub)
    a.merge(uc)
    b.merge(uc)
    b.merge(ua)
    c.merge(ua)
    c.merge(ub)
    converged(a, b, c)
    for r in observers:
        assert r.snapshot() == a.snapshot()
        consistent(r)
    assert doc(a) == {"z": 0, "y": 1}


# -- causal contexts ----------------------------------------------------------------------------


def test_stale_splice_lands_next_to_same_neighbours_locally() -> None:
    r = Replica("alice")
    apply(r, {"op": "set", "path": "t", "value": "héllo 😀 wörld"})
    ctx = r.clock()
    apply(r, {"op": "splice", "path": "t", "index": 0, "insert": "¡¡"})
    apply(r, {"op": "splice", "path": "t", "index": 8, "delete": 1})  # the emoji
    apply(r, {"op": "splice", "path": "t", "index": 12, "insert": "…"})
    assert doc(r)["t"] == "¡¡héllo  wör…ld"
    # The author saw "héllo 😀 wörld" and typed X between "wö" and "rld".
    change = apply(r, {"op": "splice", "path": "t", "index": 10, "insert": "X"}, context=ctx)
    assert doc(r)["t"] == "¡¡héllo  wöXr…ld"
    assert change.ops[0].index == 11


def test_stale_splice_after_concurrent_remote_edits() -> None:
    a = Replica("alice")
    apply(
        a,
        {"op": "set", "path": "t", "value": "abc😀def"},
        {"op": "set", "path": "arr", "value": [1, 2, 3, 4]},
    )
    (b,) = fork(a, "bob")
    ctx = a.clock()
    cb = apply(
        b,
        {"op": "splice", "path": "t", "index": 0, "insert": "ZZ"},
        {"op": "splice", "path": "t", "index": 5, "insert": "🎉"},
        {"op": "insert", "path": "arr", "index": 0, "values": ["b"]},
    )
    a.merge(cb.update)
    assert doc(a) == {"t": "ZZabc🎉😀def", "arr": ["b", 1, 2, 3, 4]}
    # Against what it saw, alice's client inserts "|" between 😀 and "d", and deletes 2, 3.
    ca = apply(
        a,
        {"op": "splice", "path": "t", "index": 4, "insert": "|"},
        {"op": "delete", "path": "arr", "index": 1, "count": 2},
        context=ctx,
    )
    assert doc(a) == {"t": "ZZabc🎉😀|def", "arr": ["b", 1, 4]}
    b.merge(ca.update)
    converged(a, b)


def test_stale_ops_follow_moved_elements_and_drop_removed_ones() -> None:
    r = Replica("alice")
    apply(
        r,
        {"op": "set", "path": "arr", "value": [{"x": 1}, {"x": 2}]},
        {"op": "set", "path": "gone", "value": {"k": 1}},
    )
    ctx = r.clock()
    apply(r, {"op": "insert", "path": "arr", "index": 0, "values": [{"x": 0}]})
    change = apply(r, {"op": "set", "path": "arr.1.x", "value": "two"}, context=ctx)
    assert doc(r)["arr"] == [{"x": 0}, {"x": 1}, {"x": "two"}]
    assert change.ops[0].path == ("arr", 2, "x")
    apply(r, {"op": "remove", "path": "gone"})
    apply(r, {"op": "delete", "path": "arr", "index": 2, "count": 1})
    version = r.version
    # Both targets were removed since: remove wins, the diff changes nothing.
    stale = diff(
        {"op": "set", "path": ["arr", 1, "x"], "value": "late"},
        {"op": "set", "path": "gone.k", "value": 2},
    )
    assert r.apply_diff(stale, ctx) is None
    assert r.version == version


def test_context_of_current_state_and_none_are_the_same() -> None:
    r = Replica("alice")
    apply(r, {"op": "set", "path": "t", "value": "ab"})
    change = apply(r, {"op": "splice", "path": "t", "index": 1, "insert": "-"}, context=r.clock())
    assert doc(r)["t"] == "a-b"
    assert change.clock == r.clock()


def test_context_that_was_never_a_state_is_refused() -> None:
    a = Replica("alice")
    apply(a, {"op": "set", "path": "t", "value": "ab"})
    (b,) = fork(a, "bob")
    apply(b, {"op": "set", "path": "u", "value": 1})
    a.merge(b.encode_state())
    # Each entry has been seen, but alice never had exactly this combination.
    odd = {"alice": a.clock()["alice"], "bob": a.clock()["bob"] - 1}
    with pytest.raises(CausalityError, match="not a state"):
        a.apply_diff(diff({"op": "set", "path": "x", "value": 1}), odd)


def test_deleting_a_range_keeps_a_concurrent_insertion_inside_it() -> None:
    # Through the CRDT: two replicas.
    a = Replica("alice")
    apply(
        a,
        {"op": "set", "path": "t", "value": "0123456789"},
        {"op": "set", "path": "arr", "value": [0, 1, 2, 3, 4]},
    )
    (b,) = fork(a, "bob")
    ca = apply(
        a,
        {"op": "splice", "path": "t", "index": 2, "delete": 6},
        {"op": "delete", "path": "arr", "index": 1, "count": 3},
    )
    cb = apply(
        b,
        {"op": "splice", "path": "t", "index": 5, "insert": "INS"},
        {"op": "insert", "path": "arr", "index": 2, "values": ["x"]},
    )
    a.merge(cb.update)
    b.merge(ca.update)
    assert doc(a) == doc(b) == {"t": "01INS89", "arr": [0, "x", 4]}
    converged(a, b)
    # Through a stale context on one replica: the same result.
    r = Replica("carol")
    apply(
        r,
        {"op": "set", "path": "t", "value": "0123456789"},
        {"op": "set", "path": "arr", "value": [0, 1, 2, 3, 4]},
    )
    ctx = r.clock()
    apply(
        r,
        {"op": "splice", "path": "t", "index": 5, "insert": "INS"},
        {"op": "insert", "path": "arr", "index": 2, "values": ["x"]},
    )
    apply(
        r,
        {"op": "splice", "path": "t", "index": 2, "delete": 6},
        {"op": "delete", "path": "arr", "index": 1, "count": 3},
        context=ctx,
    )
    assert doc(r) == {"t": "01INS89", "arr": [0, "x", 4]}


def test_deleting_a_text_range_with_an_emoji_insertion_inside() -> None:
    a = Replica("alice")
    apply(a, {"op": "set", "path": "t", "value": "ä😀ö😀ü"})
    (b,) = fork(a, "bob")
    ca = apply(a, {"op": "splice", "path": "t", "index": 1, "delete": 3})
    cb = apply(b, {"op": "splice", "path": "t", "index": 2, "insert": "🎉"})
    a.merge(cb.update)
    b.merge(ca.update)
    assert doc(a)["t"] == doc(b)["t"] == "ä🎉ü"
    converged(a, b)


# -- versions, snapshots, compaction ------------------------------------------------------------


def _history(retain: int | None = None) -> tuple[Replica, dict[int, bytes]]:
    r = Replica("alice", retain=retain)
    snaps = {0: r.snapshot()}
    other = Replica("bob")
    for i in range(8):
        if i % 3 == 2:
            change = apply(other, {"op": "set", "path": f"bob{i}", "value": i})
            r.merge(change.update)
        else:
            apply(
                r,
                {"op": "set", "path": f"f{i % 2}", "value": "é" * i},
                {"op": "splice", "path": f"f{i % 2}", "index": 0, "insert": "😀"},
            )
        snaps[r.version] = r.snapshot()
    return r, snaps


def test_past_version_snapshots_equal_what_snapshot_returned_then() -> None:
    r, snaps = _history()
    assert r.version == 8 and r.oldest_version == 0
    for version, snap in snaps.items():
        assert r.snapshot(version=version) == snap, version
    assert r.snapshot(version=0) == bson.encode({})


def test_snapshot_of_a_path() -> None:
    r = Replica("alice")
    apply(
        r,
        {"op": "set", "path": "a", "value": [{"b": [1, Int64(2)]}, "s"]},
        {"op": "set", "path": "n", "value": None},
    )
    assert bson.decode(r.snapshot(path=("a",))) == {"value": [{"b": [1, 2]}, "s"]}
    assert bson.decode(r.snapshot(path=("a", 0, "b")), CODEC) == {"value": [1, Int64(2)]}
    assert bson.decode(r.snapshot(path=["a", 0, "b", 1]), CODEC) == {"value": Int64(2)}
    assert bson.decode(r.snapshot(path=("a", 1))) == {"value": "s"}
    assert bson.decode(r.snapshot(path=("n",))) == {"value": None}
    first = r.snapshot()
    apply(r, {"op": "set", "path": ["a", 1], "value": "t"})
    assert bson.decode(r.snapshot(version=1, path=("a", 1))) == {"value": "s"}
    assert bson.decode(r.snapshot(path=("a", 1))) == {"value": "t"}
    assert r.snapshot(version=1) == first


def test_compaction_keeps_state_and_refuses_old_versions() -> None:
    r, snaps = _history()
    state, clock, version = r.snapshot(), r.clock(), r.version
    assert r.compact(keep_last=3) == 5
    assert (r.snapshot(), r.clock(), r.version, r.oldest_version) == (state, clock, version, 5)
    for v in range(5, 9):
        assert r.snapshot(version=v) == snaps[v]
    for v in range(5):
        with pytest.raises(HistoryCompacted) as info:
            r.snapshot(version=v)
        assert info.value.oldest_version == 5
    assert r.compact(before=7) == 7
    assert r.compact(before=2) == 7  # never moves back
    with pytest.raises(HistoryCompacted) as info:
        r.snapshot(version=6)
    assert info.value.oldest_version == 7
    assert r.snapshot(version=7) == snaps[7]
    # The replica carries on; a newcomer catches up from its state.
    apply(r, {"op": "splice", "path": "f1", "index": 0, "insert": "z"})
    (peer,) = fork(r, "peer")
    converged(r, peer)
    with pytest.raises(ValueError, match="exactly one"):
        r.compact()


def test_retain_compacts_automatically() -> None:
    r = Replica("alice", retain=4)
    snaps = {}
    for i in range(40):
        apply(r, {"op": "set", "path": "n", "value": i})
        snaps[r.version] = r.snapshot()
    assert r.version == 40
    assert r.oldest_version >= 40 - 4 - 16
    assert r.snapshot(version=36) == snaps[36]
    with pytest.raises(HistoryCompacted):
        r.snapshot(version=r.oldest_version - 1)


# -- delivery order, duplicates -----------------------------------------------------------------


def test_out_of_order_updates_are_buffered_then_applied() -> None:
    bob = Replica("bob")
    ups = [
        apply(
            bob, {"op": "set", "path": "t", "value": "a"}, {"op": "set", "path": "arr", "value": []}
        ).update,
        apply(
            bob,
            {"op": "splice", "path": "t", "index": 1, "insert": "b"},
            {"op": "insert", "path": "arr", "index": 0, "values": [1]},
        ).update,
        apply(
            bob,
            {"op": "splice", "path": "t", "index": 2, "insert": "c"},
            {"op": "insert", "path": "arr", "index": 1, "values": [2]},
        ).update,
    ]
    r = Replica("alice")
    assert r.merge(ups[2]) == []
    assert r.pending == 1 and r.version == 0 and r.snapshot() == bson.encode({})
    assert r.merge(ups[1]) == []
    assert r.pending == 2 and r.version == 0
    assert r.merge(ups[2]) == []  # a duplicate of a buffered update is buffered once
    assert r.pending == 2
    changes = r.merge(ups[0])
    assert [c.version for c in changes] == [1, 2, 3]
    assert all(c.actor == "bob" for c in changes)
    assert r.pending == 0
    assert doc(r) == {"t": "abc", "arr": [1, 2]}
    converged(r, bob)
    # The history holds each step.
    assert bson.decode(r.snapshot(version=1)) == {"t": "a", "arr": []}
    assert bson.decode(r.snapshot(version=2)) == {"t": "ab", "arr": [1]}


def test_duplicate_merge_is_a_no_op() -> None:
    bob = Replica("bob")
    first = apply(bob, {"op": "set", "path": "t", "value": "x"})
    second = apply(bob, {"op": "splice", "path": "t", "index": 1, "insert": "y"})
    r = Replica("alice")
    assert len(r.merge(first.update)) == 1
    assert len(r.merge(second.update)) == 1
    state = (r.snapshot(), r.clock(), r.version, r.encode_state())
    for update in (first.update, second.update, bob.encode_state()):
        assert r.merge(update) == []
        assert r.apply_diff(bson.encode({"update": update})) is None
    assert (r.snapshot(), r.clock(), r.version, r.encode_state()) == state
    assert r.pending == 0


def test_merge_of_own_update_is_a_no_op() -> None:
    r = Replica("alice")
    change = apply(r, {"op": "set", "path": "t", "value": "x"})
    assert r.merge(change.update) == []
    assert r.version == 1


# -- clocks -------------------------------------------------------------------------------------


def test_clock_values() -> None:
    a = Replica("alice")
    assert a.clock() == {}
    c1 = apply(
        a,
        {"op": "set", "path": "arr", "value": [1, 2, 3]},
        {"op": "set", "path": "t", "value": "héllo"},
    )
    assert set(c1.clock) == {"alice"} and c1.clock["alice"] > 0
    assert c1.clock == a.clock()
    seen = [c1.clock["alice"]]
    # Every change advances the actor's entry, deletions included.
    for op in (
        {"op": "splice", "path": "t", "index": 0, "insert": "😀"},
        {"op": "delete", "path": "arr", "index": 0, "count": 1},
        {"op": "splice", "path": "t", "index": 0, "delete": 2},
        {"op": "remove", "path": "arr"},
    ):
        change = apply(a, op)
        assert set(change.clock) == {"alice"}
        assert change.clock["alice"] > seen[-1]
        seen.append(change.clock["alice"])
    # A change's clock is what the replica's clock() said right after it.
    b = Replica("bob")
    b.merge(a.encode_state())
    assert b.clock() == a.clock()
    cb = apply(b, {"op": "set", "path": "x", "value": 1})
    assert cb.clock == b.clock() == {"alice": seen[-1], "bob": cb.clock["bob"]}
    a.merge(cb.update)
    assert a.clock() == b.clock()
    # Clocks are returned as copies.
    clock = a.clock()
    clock["alice"] = 0
    assert a.clock()["alice"] == seen[-1]


def test_clock_names_unregistered_yjs_clients() -> None:
    r = Replica("alice")
    apply(r, {"op": "set", "path": "t", "value": "x"})
    client = pycrdt.Doc(client_id=1234)
    client.apply_update(r.encode_state())
    text = client.get("doc", type=pycrdt.Map)["t"]
    text += "yz"
    r.merge(client.get_update(r.state_vector()))
    assert doc(r)["t"] == "xyz"
    assert r.clock()["y:1234"] == 2


def test_clock_bson_round_trip() -> None:
    clock = {"bob": 3, "alice": 2**40, "y:77": 1, "zero": 0}
    data = clock_to_bson(clock)
    decoded = bson.decode(data, CODEC)
    assert list(decoded) == sorted(clock)
    assert all(type(v) is Int64 for v in decoded.values())
    assert clock_from_bson(data) == clock
    assert clock_from_bson(clock_to_bson({})) == {}
    r = Replica("alice")
    apply(r, {"op": "set", "path": "t", "value": "x"})
    assert clock_from_bson(clock_to_bson(r.clock())) == r.clock()
    # int32 counters are accepted too.
    assert clock_from_bson(bson.encode({"a": 5})) == {"a": 5}


@pytest.mark.parametrize(
    "data",
    [
        b"not bson",
        bson.encode({"a": -1}),
        bson.encode({"a": "1"}),
        bson.encode({"a": 1.0}),
        bson.encode({"a": True}),
        bson.encode({"": 1}),
    ],
)
def test_clock_from_bson_rejects_bad_clocks(data: bytes) -> None:
    with pytest.raises(CausalityError):
        clock_from_bson(data)


def test_bad_context_values_are_refused() -> None:
    r = Replica("alice")
    apply(r, {"op": "set", "path": "t", "value": "x"})
    for ctx in ({"alice": -1}, {"alice": "1"}, {"": 1}, {"alice": True}):
        with pytest.raises(CausalityError):
            r.apply_diff(diff({"op": "set", "path": "u", "value": 1}), ctx)  # type: ignore[arg-type]
    assert r.version == 1


# -- actors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", ["", "y:123", "y:", "a\x00b", "\x00", None, 5, b"alice"])
def test_replica_rejects_bad_actor_ids(actor: Any) -> None:
    with pytest.raises(ValueError, match="actor"):
        Replica(actor)


@pytest.mark.parametrize("actor", ["alice", "Y:upper", "ÿ😀", "a b.c$d", "x" * 300])
def test_replica_accepts_other_actor_ids(actor: str) -> None:
    a = Replica(actor)
    apply(a, {"op": "set", "path": "n", "value": 1})
    apply(a, {"op": "inc", "path": "n", "by": 1})
    (b,) = fork(a, "observer")
    assert a.clock() == b.clock() and set(a.clock()) == {actor}
    converged(a, b)
    assert doc(b) == {"n": 2}


# -- values written by other Yjs clients ----------------------------------------------------------
# A Yjs client may write anything into the shared maps. Whatever it writes, every replica must
# read the same BSON (the mirror equal to a fresh reading of the CRDT, peers byte-identical).


def _client_edit(r: Replica, edit: Any) -> bytes:
    """The update a Yjs client (pycrdt standing in for it) makes by ``edit(root_map)``."""
    client = pycrdt.Doc(client_id=55)
    client.apply_update(r.encode_state())
    edit(client.get("doc", type=pycrdt.Map))
    return client.get_update(r.state_vector())


CLIENT_VALUES: dict[str, tuple[Any, Any]] = {
    # name: (what the client writes, what every replica reads)
    "plain-object": ({"b": 2, "a": [1, "s"]}, {"a": [1.0, "s"], "b": 2.0}),
    "js-number": (42, 42.0),
    "nan": (float("nan"), None),  # compared by bytes below
    "subdocument": (pycrdt.Doc(), None),
    "bad-int32": ({"$numberInt": "notanumber"}, {"$numberInt": "notanumber"}),
    "int32-out-of-range": ({"$numberInt": "3000000000"}, {"$numberInt": "3000000000"}),
    "int64-out-of-range": ({"$numberLong": "1" + "0" * 25}, {"$numberLong": "1" + "0" * 25}),
    "bad-oid": ({"$oid": "zz"}, {"$oid": "zz"}),
    "bad-date": ({"$date": "not a date"}, {"$date": "not a date"}),
    "date-out-of-range": (
        {"$date": {"$numberLong": "99999999999999999999"}},
        {"$date": {"$numberLong": "99999999999999999999"}},
    ),
    "bad-decimal": ({"$numberDecimal": "abc"}, {"$numberDecimal": "abc"}),
    "good-oid": ({"$oid": "65f0c0ffee00000000000000"}, ObjectId("65f0c0ffee00000000000000")),
    "good-int64": ({"$numberLong": "-9"}, Int64(-9)),
}


@pytest.mark.parametrize("name", sorted(CLIENT_VALUES))
def test_values_written_by_yjs_clients_read_the_same_everywhere(name: str) -> None:
    written, expected = CLIENT_VALUES[name]
    r = Replica("alice")
    apply(r, {"op": "set", "path": "t", "value": "x"})
    update = _client_edit(r, lambda root: root.__setitem__("v", written))
    changes = r.merge(update)
    assert len(changes) == 1
    consistent(r)
    (peer,) = fork(r, "peer")
    converged(r, peer)
    got = bson.decode(r.snapshot(), CODEC)["v"]
    if name != "nan":
        assert bson.encode({"v": got}) == bson.encode({"v": expected})
    # The replica keeps working, and a snapshot of the version before still reads.
    apply(r, {"op": "set", "path": "after", "value": 1})
    assert bson.decode(r.snapshot(version=1)) == {"t": "x"}


def test_counter_entries_of_actors_with_nul_in_their_name() -> None:
    # A Yjs client may write a counter entry whose actor part holds NUL; the engine's own
    # reading of the CRDT and its reading of the update's events must agree on it.
    r = Replica("alice")
    apply(r, {"op": "set", "path": "n", "value": 1})
    epoch = r.materialize().meta["n"][1]  # the epoch of the set
    update = _client_edit(
        r, lambda root: root.__setitem__("\x00n\x00x\x00y", [epoch, {"$numberLong": "5"}])
    )
    r.merge(update)
    assert doc(r)["n"] == 6
    consistent(r)
    (peer,) = fork(r, "peer")
    converged(r, peer)


def test_xml_types_from_yjs_clients_are_refused_or_read() -> None:
    r = Replica("alice")
    apply(r, {"op": "set", "path": "t", "value": "x"})
    update = _client_edit(r, lambda root: root.__setitem__("x", pycrdt.XmlFragment()))
    state = r.encode_state()
    with pytest.raises(MalformedUpdate, match="XML"):
        r.merge(update)
    assert r.encode_state() == state
    consistent(r)
    apply(r, {"op": "set", "path": "after", "value": 1})


def test_deeply_nested_values_from_yjs_clients_are_refused_or_read() -> None:
    r = Replica("alice")
    apply(r, {"op": "set", "path": "t", "value": "x"})
    deep: dict[str, Any] = {}
    cur = deep
    for _ in range(400):
        cur["a"] = {}
        cur = cur["a"]
    update = _client_edit(r, lambda root: root.__setitem__("deep", deep))
    state = r.encode_state()
    with pytest.raises(MalformedUpdate, match="nested deeper"):
        r.merge(update)
    assert r.encode_state() == state
    consistent(r)


CLIENT_METAS: dict[str, Any] = {
    "none": None,  # the client wrote the field without a meta entry
    "nan": [float("nan"), ""],
    "bool": [True, ""],
    "document": [{"a": 1}, ""],
    "string": ["5", ""],
    "minus-infinity": [float("-inf"), ""],
    "integer-epoch": [0.5, 5],
    "not-a-list": "zz",
}


@pytest.mark.parametrize("name", sorted(CLIENT_METAS))
def test_field_order_entries_written_by_yjs_clients(name: str) -> None:
    meta = CLIENT_METAS[name]
    r = Replica("alice")
    apply(r, {"op": "set", "path": "t", "value": "x"}, {"op": "set", "path": "u", "value": "y"})

    def edit(root: Any) -> None:
        root["w"] = 1
        if meta is not None:
            root["\x00w"] = meta
            root["\x00t"] = meta

    r.merge(_client_edit(r, edit))
    consistent(r)
    # Local changes around the client's fields keep every replica in the same field order.
    apply(r, {"op": "set", "path": "new", "value": 1})
    apply(r, {"op": "set", "path": "first", "value": 1, "at": 0})
    apply(r, {"op": "inc", "path": "w", "by": 1})
    (peer,) = fork(r, "peer")
    converged(r, peer)
    assert doc(r)["w"] == 2.0
