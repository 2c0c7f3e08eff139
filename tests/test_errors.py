"""Every error class of the engine: the precise class, a message naming the problem, and a
replica left exactly as it was (snapshot, clock, version, CRDT state) and still working.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

import bson
import pytest
from bson.int64 import Int64

from virtualdom.engine import (
    CausalityError,
    EngineError,
    FutureVersion,
    HistoryCompacted,
    LimitExceeded,
    Limits,
    MalformedBSON,
    MalformedDiff,
    MalformedUpdate,
    MissingDependencies,
    PathError,
    Replica,
    TypeMismatch,
    client_id_for,
)

# A Yjs v1 update and the same document as a Yjs v2 update, both written by yjs 13.6
# (clientID 4242): doc.getMap("doc") holds title = Y.Text("hi") and "\0title" = [0, ""].
YJS_V1 = bytes.fromhex(
    "0103922100270103646f63057469746c65020400922100026869280103646f6306007469746c650175027d00770000"
)
YJS_V2 = bytes.fromhex(
    "000003d242000100000527000400281913646f637469746c656869646f63007469746c65030502030605"
    "01000000010102010101030075027d00770000"
)

BASE: dict[str, Any] = {
    "title": "héllo 😀 world",
    "n": 5,
    "big": Int64(7),
    "ratio": 1.5,
    "tags": ["a", "b", "c"],
    "sub": {"x": 1, "y": "why"},
}


# -- helpers ------------------------------------------------------------------------------------


def diff(*ops: dict[str, Any]) -> bytes:
    return bson.encode({"ops": list(ops)})


def make(limits: Limits | None = None, actor: str = "alice") -> Replica:
    r = Replica(actor, limits=limits)
    r.apply_diff(diff({"op": "replace", "value": BASE}))
    return r


def state(r: Replica) -> tuple[Any, ...]:
    return (r.snapshot(), r.clock(), r.version, r.oldest_version, r.pending, r.encode_state())


def assert_consistent(r: Replica) -> None:
    assert bson.encode(r.materialize()) == r.snapshot()


def assert_still_works(r: Replica) -> None:
    """A valid diff applies after the error, and its update reproduces the replica elsewhere."""
    before = r.to_python()
    change = r.apply_diff(diff({"op": "set", "path": "after_error", "value": "ok"}))
    assert change is not None
    assert r.to_python() == {**before, "after_error": "ok"}
    assert_consistent(r)
    other = Replica("zed-checker")
    other.merge(r.encode_state())
    assert other.snapshot() == r.snapshot()


def check_rejected(
    r: Replica,
    exc_type: type[EngineError],
    match: str,
    action: Callable[[], Any],
) -> pytest.ExceptionInfo[Any]:
    """Run ``action``; it must raise exactly ``exc_type`` with a message matching ``match`` and
    leave ``r`` unchanged and usable."""
    before = state(r)
    with pytest.raises(exc_type, match=match) as info:
        action()
    assert type(info.value) is exc_type, f"expected exactly {exc_type.__name__}"
    assert state(r) == before
    assert_consistent(r)
    assert_still_works(r)
    return info


# Raw BSON built by hand, for what pymongo will not encode (deprecated types, duplicate keys).


def cstring(s: str) -> bytes:
    return s.encode() + b"\x00"


def bstring(s: str) -> bytes:
    raw = s.encode() + b"\x00"
    return struct.pack("<i", len(raw)) + raw


def element(kind: int, name: str, payload: bytes) -> bytes:
    return bytes([kind]) + cstring(name) + payload


def document(*elements: bytes) -> bytes:
    body = b"".join(elements) + b"\x00"
    return struct.pack("<i", len(body) + 4) + body


def set_diff_with_raw_value(kind: int, payload: bytes) -> bytes:
    """{"ops": [{"op": "set", "path": "x", "value": <raw element>}]}"""
    op = document(
        element(0x02, "op", bstring("set")),
        element(0x02, "path", bstring("x")),
        element(kind, "value", payload),
    )
    return document(element(0x04, "ops", document(element(0x03, "0", op))))


# -- MalformedBSON ------------------------------------------------------------------------------


def test_raw_bson_helper_matches_pymongo() -> None:
    # The hand-built encoding is the real one, so the cases below differ only where intended.
    expected = diff({"op": "set", "path": "x", "value": "v"})
    assert set_diff_with_raw_value(0x02, bstring("v")) == expected


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"garbage bytes that are not BSON", id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x05\x00\x00", id="short-header"),
        pytest.param(diff({"op": "set", "path": "x", "value": 1})[:-3], id="truncated"),
        pytest.param(diff({"op": "set", "path": "x", "value": 1}) + b"\x00", id="trailing-byte"),
        pytest.param(b"\xff\x00\x00\x00" + diff()[4:], id="length-too-large"),
    ],
)
def test_malformed_bson_bytes(data: bytes) -> None:
    r = make()
    check_rejected(r, MalformedBSON, r"(?i)bson", lambda: r.apply_diff(data))


DEPRECATED = {
    "undefined": (0x06, b""),
    "symbol": (0x0E, bstring("sym")),
    "dbpointer": (0x0C, bstring("coll") + bytes(range(12))),
}


@pytest.mark.parametrize("name", sorted(DEPRECATED))
def test_malformed_bson_deprecated_types(name: str) -> None:
    kind, payload = DEPRECATED[name]
    data = set_diff_with_raw_value(kind, payload)
    # pymongo itself decodes these (lossily), so it is the engine that must refuse them.
    bson.decode(data)
    r = make()
    check_rejected(r, MalformedBSON, "deprecated type", lambda: r.apply_diff(data))


def test_malformed_bson_duplicate_keys() -> None:
    op = document(
        element(0x02, "op", bstring("set")),
        element(0x02, "path", bstring("x")),
        element(0x02, "path", bstring("y")),
        element(0x10, "value", struct.pack("<i", 1)),
    )
    data = document(element(0x04, "ops", document(element(0x03, "0", op))))
    assert bson.decode(data) == {"ops": [{"op": "set", "path": "y", "value": 1}]}
    r = make()
    check_rejected(r, MalformedBSON, "duplicate key", lambda: r.apply_diff(data))

    top = document(
        element(0x04, "ops", document()),
        element(0x04, "ops", document(element(0x03, "0", op))),
    )
    check_rejected(r, MalformedBSON, "duplicate key", lambda: r.apply_diff(top))


# -- MalformedUpdate ----------------------------------------------------------------------------


def test_yjs_fixtures_are_what_they_claim() -> None:
    r = Replica("alice")
    r.merge(YJS_V1)
    assert r.to_python() == {"title": "hi"}


@pytest.mark.parametrize(
    "update",
    [
        pytest.param(b"garbage, not an update", id="garbage"),
        pytest.param(b"\xff" * 16, id="overlong-varint"),
        pytest.param(YJS_V1[:-5], id="truncated-v1"),
        pytest.param(YJS_V1 + b"\x00", id="trailing-byte"),
        pytest.param(YJS_V2, id="yjs-v2"),
    ],
)
@pytest.mark.parametrize("via", ["apply_diff", "merge"])
def test_malformed_update(update: bytes, via: str) -> None:
    r = make()
    if via == "merge":
        info = check_rejected(r, MalformedUpdate, "not a Yjs v1 update", lambda: r.merge(update))
    else:
        data = bson.encode({"update": update})
        info = check_rejected(r, MalformedUpdate, "not a Yjs v1 update", lambda: r.apply_diff(data))
    if update is YJS_V2:
        assert "v2" in str(info.value)


def test_v2_update_is_refused_even_on_an_empty_replica() -> None:
    r = Replica("alice")
    check_rejected(r, MalformedUpdate, "v2", lambda: r.merge(YJS_V2))
    assert r.to_python() == {"after_error": "ok"}


# -- MalformedDiff ------------------------------------------------------------------------------

MALFORMED_DIFFS: dict[str, tuple[dict[str, Any], str]] = {
    "no-keys": ({}, "exactly one key"),
    "missing-ops": ({"operations": []}, "exactly one key"),
    "ops-and-update": ({"ops": [], "update": YJS_V1}, "exactly one key"),
    "ops-not-array": ({"ops": {"op": "set"}}, "'ops' must be an array"),
    "op-not-document": ({"ops": ["set"]}, r"ops\[0\] must be a document"),
    "unknown-op": ({"ops": [{"op": "frobnicate", "path": "x"}]}, "unknown op 'frobnicate'"),
    "op-missing-name": ({"ops": [{"path": "x"}]}, "unknown op None"),
    "set-missing-value": ({"ops": [{"op": "set", "path": "x"}]}, "missing value"),
    "splice-missing-index": ({"ops": [{"op": "splice", "path": "title"}]}, "missing index"),
    "unknown-field": (
        {"ops": [{"op": "remove", "path": "n", "value": 1}]},
        "unknown field 'value'",
    ),
    "path-wrong-type": ({"ops": [{"op": "remove", "path": 3}]}, "path must be a string"),
    "path-empty": ({"ops": [{"op": "remove", "path": ""}]}, "empty path"),
    "path-empty-array": ({"ops": [{"op": "remove", "path": []}]}, "empty path"),
    "path-empty-segment": ({"ops": [{"op": "remove", "path": "sub..x"}]}, "empty segment"),
    "path-negative-segment": (
        {"ops": [{"op": "remove", "path": ["tags", -1]}]},
        "non-negative integers",
    ),
    "path-float-segment": ({"ops": [{"op": "remove", "path": ["tags", 1.0]}]}, "path segments"),
    "index-string": (
        {"ops": [{"op": "insert", "path": "tags", "index": "1", "values": []}]},
        "index must be an integer",
    ),
    "index-double": (
        {"ops": [{"op": "delete", "path": "tags", "index": 0.0, "count": 1}]},
        "index must be an integer",
    ),
    "index-bool": (
        {"ops": [{"op": "splice", "path": "title", "index": True}]},
        "index must be an integer",
    ),
    "negative-index": (
        {"ops": [{"op": "insert", "path": "tags", "index": -1, "values": ["z"]}]},
        "index must be >= 0",
    ),
    "negative-count": (
        {"ops": [{"op": "delete", "path": "tags", "index": 0, "count": -1}]},
        "count must be >= 0",
    ),
    "negative-splice-delete": (
        {"ops": [{"op": "splice", "path": "title", "index": 0, "delete": -2}]},
        "delete must be >= 0",
    ),
    "negative-at": ({"ops": [{"op": "set", "path": "q", "value": 1, "at": -1}]}, "at must be"),
    "values-not-array": (
        {"ops": [{"op": "insert", "path": "tags", "index": 0, "values": "z"}]},
        "values must be an array",
    ),
    "splice-insert-not-string": (
        {"ops": [{"op": "splice", "path": "title", "index": 0, "insert": 5}]},
        "insert must be a string",
    ),
    "inc-by-string": ({"ops": [{"op": "inc", "path": "n", "by": "1"}]}, "by must be"),
    "inc-by-bool": ({"ops": [{"op": "inc", "path": "n", "by": False}]}, "by must be"),
    "replace-not-document": ({"ops": [{"op": "replace", "value": [1]}]}, "must be a document"),
    "replace-with-path": (
        {"ops": [{"op": "replace", "path": "x", "value": {}}]},
        "unknown field 'path'",
    ),
    "update-not-binary": ({"update": "AQID"}, "'update' must be non-empty binary"),
    "update-empty": ({"update": b""}, "'update' must be non-empty binary"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_DIFFS))
def test_malformed_diff(name: str) -> None:
    doc, match = MALFORMED_DIFFS[name]
    r = make()
    data = bson.encode(doc)
    check_rejected(r, MalformedDiff, match, lambda: r.apply_diff(data))


def test_malformed_op_after_valid_ops_names_its_index() -> None:
    r = make()
    data = diff(
        {"op": "set", "path": "x", "value": 1},
        {"op": "splice", "path": "title", "index": 0, "insert": "a"},
        {"op": "delete", "path": "tags", "index": 0},
    )
    match = r"ops\[2\] \(delete\): missing count"
    check_rejected(r, MalformedDiff, match, lambda: r.apply_diff(data))


def test_update_diff_with_context_is_malformed() -> None:
    r = make()
    data = bson.encode({"update": YJS_V1})
    check_rejected(r, MalformedDiff, "omit the context", lambda: r.apply_diff(data, r.clock()))


# -- PathError ----------------------------------------------------------------------------------

PATH_ERRORS: dict[str, tuple[dict[str, Any], str, tuple[str | int, ...]]] = {
    "missing-field": (
        {"op": "splice", "path": "nope", "index": 0, "insert": "x"},
        "nope: no such field",
        ("nope",),
    ),
    "missing-parent": ({"op": "set", "path": "nope.x", "value": 1}, "no such field", ("nope",)),
    "missing-parent-remove": ({"op": "remove", "path": ["nope", "x"]}, "no such field", ("nope",)),
    "missing-inc": ({"op": "inc", "path": "sub.z", "by": 1}, "sub.z: no such field", ("sub", "z")),
    "missing-array": (
        {"op": "insert", "path": "nope", "index": 0, "values": [1]},
        "no such field",
        ("nope",),
    ),
    "index-out-of-range-set": (
        {"op": "set", "path": ["tags", 3], "value": "d"},
        "tags.3: index out of range",
        ("tags", 3),
    ),
    "index-out-of-range-dotted": (
        {"op": "set", "path": "tags.7", "value": "d"},
        "index out of range",
        ("tags", 7),
    ),
    "index-out-of-range-in-path": (
        {"op": "set", "path": ["tags", 9, "x"], "value": 1},
        "tags.9: index out of range",
        ("tags", 9),
    ),
    "insert-beyond-length": (
        {"op": "insert", "path": "tags", "index": 4, "values": ["z"]},
        "insert index 4 > length 3",
        ("tags",),
    ),
    "delete-beyond-length": (
        {"op": "delete", "path": "tags", "index": 2, "count": 2},
        "delete 2..4 beyond length 3",
        ("tags",),
    ),
    "splice-beyond-length": (
        {"op": "splice", "path": "sub.y", "index": 1, "delete": 3},
        "splice 1..4 beyond length 3",
        ("sub", "y"),
    ),
    "splice-insert-beyond-length": (
        {"op": "splice", "path": "sub.y", "index": 4, "insert": "!"},
        "splice 4..4 beyond length 3",
        ("sub", "y"),
    ),
    # 13 code points (the emoji is one), though 14 UTF-16 units and 17 UTF-8 bytes.
    "splice-beyond-code-points": (
        {"op": "splice", "path": "title", "index": 14, "insert": "!"},
        "beyond length 13",
        ("title",),
    ),
}


@pytest.mark.parametrize("name", sorted(PATH_ERRORS))
def test_path_error(name: str) -> None:
    op, match, path = PATH_ERRORS[name]
    r = make()
    info = check_rejected(r, PathError, match, lambda: r.apply_diff(diff(op)))
    assert info.value.path == path


TYPE_MISMATCHES: dict[str, tuple[dict[str, Any], str]] = {
    "splice-on-int32": ({"op": "splice", "path": "n", "index": 0, "insert": "1"}, "n: splice"),
    "splice-on-double": ({"op": "splice", "path": "ratio", "index": 0}, "needs a string"),
    "splice-on-array": ({"op": "splice", "path": "tags", "index": 0}, "needs a string"),
    "inc-on-string": ({"op": "inc", "path": "title", "by": 1}, "title: inc needs"),
    "inc-on-array": ({"op": "inc", "path": "tags", "by": 1}, "inc needs"),
    "inc-on-document": ({"op": "inc", "path": "sub", "by": 1}, "inc needs"),
    "inc-on-array-element": ({"op": "inc", "path": ["tags", 0], "by": 1}, "document field"),
    "insert-into-document": (
        {"op": "insert", "path": "sub", "index": 0, "values": [1]},
        "sub: insert needs an array",
    ),
    "delete-in-string": ({"op": "delete", "path": "title", "index": 0, "count": 1}, "needs an"),
    "index-into-document": ({"op": "set", "path": ["sub", 0], "value": 1}, "index"),
    "index-into-document-mid-path": (
        {"op": "set", "path": ["sub", 0, "x"], "value": 1},
        "sub.0: index 0 into a document",
    ),
    "field-into-array": ({"op": "set", "path": ["tags", "x", "y"], "value": 1}, "into an array"),
    "field-of-a-string": ({"op": "set", "path": "title.x", "value": 1}, "title: not a document"),
    "remove-array-element": ({"op": "remove", "path": ["tags", 0]}, "use delete"),
}


@pytest.mark.parametrize("name", sorted(TYPE_MISMATCHES))
def test_type_mismatch(name: str) -> None:
    op, match = TYPE_MISMATCHES[name]
    r = make()
    check_rejected(r, TypeMismatch, match, lambda: r.apply_diff(diff(op)))


def test_type_mismatch_is_a_path_error() -> None:
    assert issubclass(TypeMismatch, PathError)
    assert issubclass(MissingDependencies, CausalityError)
    assert issubclass(HistoryCompacted, CausalityError)
    for cls in (MalformedBSON, MalformedUpdate, MalformedDiff, PathError, CausalityError):
        assert issubclass(cls, EngineError)
    assert issubclass(LimitExceeded, EngineError)


# -- MissingDependencies ------------------------------------------------------------------------


def test_context_naming_unseen_actor() -> None:
    r = make()
    info = check_rejected(
        r,
        MissingDependencies,
        "not seen.*bob",
        lambda: r.apply_diff(diff({"op": "set", "path": "x", "value": 1}), {"bob": 2}),
    )
    assert info.value.missing == {"bob": 2}


def test_context_ahead_of_own_clock() -> None:
    r = make()
    ahead = {"alice": r.clock()["alice"] + 1}
    info = check_rejected(
        r,
        MissingDependencies,
        "alice",
        lambda: r.apply_diff(diff({"op": "set", "path": "x", "value": 1}), ahead),
    )
    assert info.value.missing == ahead


def test_raw_update_with_missing_dependencies() -> None:
    bob = make(actor="bob")
    base = bob.encode_state()
    first = bob.apply_diff(diff({"op": "splice", "path": "title", "index": 0, "insert": "1"}))
    second = bob.apply_diff(diff({"op": "splice", "path": "title", "index": 1, "insert": "2"}))
    assert first is not None and second is not None
    r = Replica("alice")
    r.merge(base)
    r.apply_diff(diff({"op": "set", "path": "mine", "value": True}))
    data = bson.encode({"update": second.update})
    info = check_rejected(r, MissingDependencies, "not seen", lambda: r.apply_diff(data))
    # bob's client is named by its actor when known, else by its Yjs client id.
    assert set(info.value.missing) <= {"bob", f"y:{client_id_for('bob')}"}
    assert info.value.missing
    # The same bytes through merge() are buffered, not refused, until the gap is filled.
    assert r.merge(second.update) == []
    assert r.pending == 1
    assert r.merge(first.update)
    assert r.pending == 0
    assert r.to_python()["title"] == "12héllo 😀 world"


# -- HistoryCompacted ---------------------------------------------------------------------------


def _with_history() -> tuple[Replica, list[dict[str, int]], list[bytes]]:
    r = Replica("alice", retain=None)
    clocks, snaps = [r.clock()], [r.snapshot()]
    for i in range(5):
        r.apply_diff(diff({"op": "set", "path": f"f{i}", "value": i}))
        clocks.append(r.clock())
        snaps.append(r.snapshot())
    return r, clocks, snaps


def test_context_older_than_history() -> None:
    r, clocks, _ = _with_history()
    assert r.compact(keep_last=2) == 3
    assert r.oldest_version == 3
    info = check_rejected(
        r,
        HistoryCompacted,
        "older than retained history.*oldest usable version is 3",
        lambda: r.apply_diff(diff({"op": "set", "path": "x", "value": 1}), clocks[1]),
    )
    assert info.value.oldest_version == 3
    # The oldest retained version is still a usable context.
    assert r.apply_diff(diff({"op": "set", "path": "f0", "value": "late"}), clocks[3])


@pytest.mark.parametrize("version", [0, 1, 2])
def test_snapshot_of_compacted_version(version: int) -> None:
    r, _, snaps = _with_history()
    r.compact(before=3)
    before = state(r)
    with pytest.raises(HistoryCompacted, match=f"version {version} was compacted.*is 3") as info:
        r.snapshot(version=version)
    assert type(info.value) is HistoryCompacted
    assert info.value.oldest_version == 3
    with pytest.raises(HistoryCompacted):
        r.snapshot(version=version, path=("f0",))
    assert state(r) == before
    assert_consistent(r)
    assert r.snapshot(version=3) == snaps[3]
    assert_still_works(r)


def test_snapshot_of_future_version() -> None:
    r, _, _ = _with_history()
    info = check_rejected(
        r, FutureVersion, "does not exist yet; the latest is 5", lambda: r.snapshot(version=99)
    )
    assert isinstance(info.value, CausalityError)
    assert info.value.latest == 5


# -- LimitExceeded ------------------------------------------------------------------------------


def _limit_case(name: str) -> tuple[Limits, Callable[[Replica], Any], int, int]:
    """(limits, action, allowed, actual) for one limit."""
    if name == "max_document_bytes":
        size = len(make().snapshot())
        allowed = size + 40
        return (
            Limits(max_document_bytes=allowed),
            lambda r: r.apply_diff(diff({"op": "set", "path": "pad", "value": "x" * 100})),
            allowed,
            size + len(bson.encode({"pad": "x" * 100})) - 5,
        )
    if name == "max_diff_bytes":
        data = diff({"op": "set", "path": "pad", "value": "x" * 300})
        return Limits(max_diff_bytes=300), lambda r: r.apply_diff(data), 300, len(data)
    if name == "max_depth":
        value = {"a": {"b": [{"c": 1}]}}  # depth 4 below the field: 5 in all
        return (
            Limits(max_depth=4),
            lambda r: r.apply_diff(diff({"op": "set", "path": "deep", "value": value})),
            4,
            5,
        )
    if name == "max_string_chars":
        return (
            Limits(max_string_chars=20),
            lambda r: r.apply_diff(diff({"op": "set", "path": "s", "value": "😀" * 21})),
            20,
            21,
        )
    if name == "max_ops":
        ops = [{"op": "set", "path": f"k{i}", "value": i} for i in range(6)]
        return Limits(max_ops=5), lambda r: r.apply_diff(diff(*ops)), 5, 6
    raise AssertionError(name)


LIMITS = ["max_document_bytes", "max_diff_bytes", "max_depth", "max_string_chars", "max_ops"]


@pytest.mark.parametrize("name", LIMITS)
def test_limit_exceeded(name: str) -> None:
    limits, action, allowed, actual = _limit_case(name)
    r = make(limits)
    info = check_rejected(r, LimitExceeded, name, lambda: action(r))
    exc = info.value
    assert exc.limit == name
    assert exc.allowed == allowed
    if name != "max_depth":  # to_crdt does not measure how far over the limit a value is
        assert exc.actual == actual
        assert str(actual) in str(exc) and str(allowed) in str(exc)
    else:
        assert exc.actual > allowed


def test_limit_max_string_chars_counts_code_points() -> None:
    r = make(Limits(max_string_chars=20))
    # 20 emoji are 40 UTF-16 units and 80 UTF-8 bytes, but 20 code points: allowed.
    assert r.apply_diff(diff({"op": "set", "path": "s", "value": "😀" * 20}))
    check_rejected(
        r,
        LimitExceeded,
        "max_string_chars=20",
        lambda: r.apply_diff(diff({"op": "splice", "path": "s", "index": 20, "insert": "é"})),
    )
    # Deleting while inserting keeps the string within the limit.
    swap = {"op": "splice", "path": "s", "index": 19, "delete": 1, "insert": "é"}
    assert r.apply_diff(diff(swap))


def test_limit_max_string_chars_nested() -> None:
    r = make(Limits(max_string_chars=13))  # BASE's title has 13 code points
    value = {"a": ["ok", "fourteen chars"]}
    check_rejected(
        r,
        LimitExceeded,
        "string length is 14",
        lambda: r.apply_diff(diff({"op": "set", "path": "x", "value": value})),
    )


def test_limit_max_depth_via_insert_and_path() -> None:
    r = make(Limits(max_depth=3))
    assert r.apply_diff(diff({"op": "set", "path": "a", "value": {"b": [1]}}))  # depth 3
    check_rejected(
        r,
        LimitExceeded,
        "max_depth",
        lambda: r.apply_diff(diff({"op": "insert", "path": "a.b", "index": 0, "values": [[2]]})),
    )
    check_rejected(
        r,
        LimitExceeded,
        "max_depth",
        lambda: r.apply_diff(diff({"op": "set", "path": "a.c", "value": {"d": [1]}})),
    )
    assert r.apply_diff(diff({"op": "set", "path": "a.c", "value": {"d": 1}}))  # depth 3: fine


def test_limit_max_diff_bytes_on_merge() -> None:
    big = Replica("bob")
    big.apply_diff(diff({"op": "set", "path": "pad", "value": "x" * 500}))
    r = make(Limits(max_diff_bytes=400))
    update = big.encode_state()
    info = check_rejected(r, LimitExceeded, "max_diff_bytes", lambda: r.merge(update))
    assert info.value.actual == len(update)


def test_limit_max_document_bytes_allows_shrinking_edits() -> None:
    size = len(make().snapshot())
    # Room for the 20-byte field assert_still_works adds, and one byte more.
    allowed = size + 21
    r = make(Limits(max_document_bytes=allowed))
    grow = diff({"op": "splice", "path": "sub.y", "index": 0, "insert": "!" * 22})
    info = check_rejected(r, LimitExceeded, "max_document_bytes", lambda: r.apply_diff(grow))
    assert (info.value.allowed, info.value.actual) == (allowed, size + 22)
    assert len(r.snapshot()) == size + 20
    # Up to the limit exactly is fine; one byte over is not.
    assert r.apply_diff(diff({"op": "splice", "path": "sub.y", "index": 0, "insert": "!"}))
    assert len(r.snapshot()) == allowed
    before = state(r)
    with pytest.raises(LimitExceeded, match="max_document_bytes"):
        r.apply_diff(diff({"op": "set", "path": "n", "value": Int64(5)}))  # int32 -> int64: +4
    assert state(r) == before
    # A same-size edit and a shrinking one are allowed at the limit.
    same = diff({"op": "splice", "path": "sub.y", "index": 0, "delete": 1, "insert": "W"})
    assert r.apply_diff(same)
    assert r.apply_diff(diff({"op": "delete", "path": "tags", "index": 0, "count": 1}))
    assert len(r.snapshot()) < allowed
    assert_consistent(r)


# -- atomicity: a valid prefix followed by a failing op leaves nothing applied ----------------

VALID_PREFIXES: dict[str, list[dict[str, Any]]] = {
    "set": [
        {"op": "set", "path": "n", "value": 6},
        {"op": "set", "path": "new", "value": {"deep": ["x"]}},
        {"op": "set", "path": "first", "value": 0, "at": 0},
    ],
    "set-array-element": [{"op": "set", "path": ["tags", 1], "value": {"b": 2}}],
    "remove": [{"op": "remove", "path": "big"}, {"op": "remove", "path": "sub.x"}],
    "insert": [{"op": "insert", "path": "tags", "index": 1, "values": ["i", 2, [3]]}],
    "delete": [{"op": "delete", "path": "tags", "index": 0, "count": 2}],
    "splice": [
        {"op": "splice", "path": "title", "index": 7, "delete": 1, "insert": "🎉ü"},
        {"op": "splice", "path": "sub.y", "index": 0, "delete": 3},
    ],
    "inc": [
        {"op": "inc", "path": "n", "by": 2**31},
        {"op": "inc", "path": "ratio", "by": 0.25},
        {"op": "inc", "path": "sub.x", "by": Int64(3)},
    ],
    "replace": [{"op": "replace", "value": {"only": "this", "tags": ["q"]}}],
}

FAILING_OPS: dict[str, tuple[dict[str, Any], type[EngineError]]] = {
    "path-error": ({"op": "set", "path": "missing.field", "value": 1}, PathError),
    "type-mismatch": ({"op": "inc", "path": "tags", "by": 1}, TypeMismatch),
    "max-depth": (
        {"op": "set", "path": "too", "value": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}},
        LimitExceeded,
    ),
    "max-string-chars": ({"op": "set", "path": "long", "value": "s" * 101}, LimitExceeded),
    "max-document-bytes": ({"op": "set", "path": "pad", "value": ["p" * 99] * 7}, LimitExceeded),
}


@pytest.mark.parametrize("failing", sorted(FAILING_OPS))
@pytest.mark.parametrize("prefix", sorted(VALID_PREFIXES))
def test_failed_diff_applies_nothing(prefix: str, failing: str) -> None:
    limits = Limits(max_depth=6, max_string_chars=100, max_document_bytes=600)
    r = make(limits)
    peer = Replica("peer")
    peer.merge(r.encode_state())
    ops = VALID_PREFIXES[prefix]
    # The prefix on its own is valid (on a copy), so it is the failing op that sinks the diff.
    probe = make(limits, actor="probe")
    assert probe.apply_diff(diff(*ops)) is not None
    bad, exc_type = FAILING_OPS[failing]
    check_rejected(r, exc_type, ".", lambda: r.apply_diff(diff(*ops, bad)))
    # Nothing of the prefix reached the CRDT: a peer merging everything agrees with r.
    peer.merge(r.encode_state())
    assert peer.snapshot() == r.snapshot()
    assert "after_error" in peer.to_python()


@pytest.mark.parametrize("prefix", sorted(VALID_PREFIXES))
def test_failed_diff_with_context_applies_nothing(prefix: str) -> None:
    r = make(Limits(max_document_bytes=600))
    ctx = r.clock()
    r.apply_diff(diff({"op": "splice", "path": "title", "index": 0, "insert": ">"}))
    data = diff(*VALID_PREFIXES[prefix], {"op": "splice", "path": "sub.y", "index": 9})
    check_rejected(r, PathError, "sub", lambda: r.apply_diff(data, ctx))


def test_failed_diff_leaves_counters_and_field_order() -> None:
    r = make()
    r.apply_diff(diff({"op": "inc", "path": "n", "by": 1}))
    data = diff(
        {"op": "inc", "path": "n", "by": 10},
        {"op": "set", "path": "n", "value": "now a string"},
        {"op": "set", "path": "n", "value": 1, "at": 4},
        {"op": "remove", "path": "title"},
        {"op": "set", "path": "title", "value": "back", "at": 0},
        {"op": "inc", "path": "nope", "by": 1},
    )
    check_rejected(r, PathError, "nope", lambda: r.apply_diff(data))
    assert list(r.to_python()) == [*BASE, "after_error"]
    assert r.to_python()["n"] == 6
    r.apply_diff(diff({"op": "inc", "path": "n", "by": 1}))
    assert r.to_python()["n"] == 7
    assert_consistent(r)


def test_many_failures_in_a_row_then_work() -> None:
    r = make()
    failures: Iterator[tuple[bytes, type[EngineError]]] = iter(
        [
            (b"junk", MalformedBSON),
            (bson.encode({"ops": 1}), MalformedDiff),
            (diff({"op": "remove", "path": "a.b"}), PathError),
            (diff({"op": "inc", "path": "title", "by": 1}), TypeMismatch),
            (bson.encode({"update": YJS_V2}), MalformedUpdate),
        ]
    )
    before = state(r)
    for data, exc_type in failures:
        with pytest.raises(exc_type):
            r.apply_diff(data)
        assert state(r) == before
    assert_consistent(r)
    assert_still_works(r)
