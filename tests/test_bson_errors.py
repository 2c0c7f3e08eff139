"""BSON that pymongo refuses is described in the project's words (engine/bson_errors.py): the
walk that finds the problem reads every valid document without complaint (so it never blames
sound bytes), names the byte and the field, and every corruption of a valid document is refused
cleanly, as MalformedBSON or LimitExceeded, with a bounded message free of pymongo's text."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

import bson
import pytest
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.dbref import DBRef

from virtualdom.engine import EngineError, LimitExceeded, MalformedBSON, bson_errors
from virtualdom.engine.bson_errors import _walk, malformed
from virtualdom.engine.values import decode_document

EVERY_TYPE: dict[str, Any] = {
    "double": 1.5,
    "int32": 7,
    "int64": Int64(1 << 40),
    "string": "héllo wörld 😀",
    "document": {"nested": {"deeper": None, "n": -1}},
    "array": [1, "two", [3.0], {"four": 4}],
    "binary": b"\x00\x01\xff",
    "binary_uuid": Binary(uuid.UUID(int=42).bytes, 4),
    "binary_old": Binary(b"old", 2),
    "object_id": ObjectId("65f0c0ffee00000000000000"),
    "bool": True,
    "datetime": datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=UTC),
    "null": None,
    "regex": Regex("^a.*b$", "im"),
    "code": Code("function () { return 1; }"),
    "code_with_scope": Code("x + y", {"x": 1, "y": {"z": [Int64(2)]}}),
    "timestamp": Timestamp(1_700_000_000, 3),
    "decimal": Decimal128("1.10"),
    "min": MinKey(),
    "max": MaxKey(),
    "ref": DBRef("coll", 1),
}


def test_the_walk_reads_every_valid_type_without_complaint() -> None:
    data = bson.encode(EVERY_TYPE)
    assert _walk(data, 100, []) is None
    assert _walk(bson.encode({}), 100, []) is None
    # Depth: the top document is 1; code with scope's scope counts as a level.
    assert _walk(data, 3, []) is not None
    assert _walk(bson.encode({"a": {"b": 1}}), 2, []) is None


def _nested(levels: int) -> bytes:
    inner = bson.encode({"a": 1})
    for _ in range(levels - 1):
        inner = (len(inner) + 8).to_bytes(4, "little") + b"\x03a\x00" + inner + b"\x00"
    return inner


@pytest.mark.parametrize("levels", [1_000, 20_000])
def test_nesting_too_deep_to_decode_is_the_depth_limit(levels: int) -> None:
    with pytest.raises(LimitExceeded) as info:
        decode_document(_nested(levels), max_depth=100)
    e = info.value
    assert (e.limit, e.allowed, e.actual) == ("max_depth", 100, levels)
    assert "recursion" not in str(e) and len(str(e)) < 400


def test_problems_are_named_with_their_byte_and_field() -> None:
    good = bson.encode({"a": {"name": "x"}})
    cases = {
        "unknown type": (bytearray(good), 11, 0x77, "at byte 11 (field a.name): unknown BSON type"),
        "bad bool": (
            bytearray(bson.encode({"b": True})),
            7,
            2,
            "at byte 7 (field b): a boolean must be 0 or 1",
        ),
    }
    for name, (raw, at, value, expected) in cases.items():
        raw[at] = value
        err = malformed(bytes(raw), 100)
        assert isinstance(err, MalformedBSON) and expected in str(err), (name, str(err))
    assert "length prefix says 5 bytes, 6 were sent" in str(
        malformed(b"\x05\x00\x00\x00\x00\x00", 9)
    )


def test_every_corruption_is_refused_cleanly_in_our_words() -> None:
    """Flip, drop and insert bytes of a document of every type: whatever pymongo makes of the
    result, decode_document accepts it or raises an EngineError in the project's words."""
    data = bson.encode(EVERY_TYPE)
    rng = random.Random(9)
    refused = 0
    for _ in range(3000):
        raw = bytearray(data)
        kind = rng.randrange(3)
        at = rng.randrange(len(raw))
        if kind == 0:
            raw[at] = rng.randrange(256)
        elif kind == 1:
            del raw[at]
        else:
            raw.insert(at, rng.randrange(256))
        try:
            decode_document(bytes(raw))
        except EngineError as exc:
            refused += 1
            text = str(exc)
            assert isinstance(exc, (MalformedBSON, LimitExceeded)), text
            assert len(text) < 600, text
            for words in ("Detected", "driver", "codec", "position", "Traceback"):
                assert words not in text, text
    assert refused > 2000


def _el(t: int, name: str, payload: bytes) -> bytes:
    return bytes([t]) + name.encode() + b"\x00" + payload


def _doc(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return (len(body) + 5).to_bytes(4, "little") + body + b"\x00"


def _i32(n: int) -> bytes:
    return n.to_bytes(4, "little", signed=True)


def _str(s: str) -> bytes:
    return _i32(len(s.encode()) + 1) + s.encode() + b"\x00"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            _doc(_el(0x10, "ok", _i32(1)), _el(0x03, "sub", _doc(_el(0x06, "u", b"")))),
            "at byte 21 (field sub.u): the deprecated type undefined (0x06)",
        ),
        (
            _doc(_el(0x0E, "sym", _str("abc"))),
            "at byte 4 (field sym): the deprecated type symbol (0x0e)",
        ),
        (
            _doc(_el(0x0C, "p", _str("coll") + b"\x01" * 12)),
            "at byte 4 (field p): the deprecated type DBPointer (0x0c)",
        ),
        (
            _doc(_el(0x10, "a", _i32(1)), _el(0x10, "b", _i32(2)), _el(0x10, "a", _i32(3))),
            "at byte 18 (field a): duplicate key: the field name 'a' appears twice",
        ),
        (
            _doc(_el(0x10, "x", _i32(1)), _el(0x0B, "r", b"a\x00mi\x00")),  # flags unsorted
            "at byte 11 (field r): the value is not in its canonical encoding",
        ),
    ],
    ids=["undefined", "symbol", "dbpointer", "duplicate-key", "regex-flags"],
)
def test_bson_that_does_not_round_trip_says_where(data: bytes, expected: str) -> None:
    with pytest.raises(MalformedBSON) as info:
        decode_document(data)
    assert str(info.value) == f"BSON does not round-trip {expected}"


def test_a_problem_past_the_walk_budget_is_refused_unlocated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The walk is Python: past its budget (250,000 elements) a huge refused write is not
    # searched further, so refusing it costs little more than pymongo's own refusal.
    monkeypatch.setattr(bson_errors, "WALK_BUDGET", 100)
    raw = bytearray(bson.encode({"many": list(range(200)), "last": 1}))
    raw[raw.index(b"\x10last")] = 0x77
    with pytest.raises(MalformedBSON, match="past its first 100 elements") as info:
        decode_document(bytes(raw))
    assert "at byte" not in str(info.value)
    raw = bytearray(bson.encode({"first": 1, "many": list(range(200))}))
    raw[raw.index(b"\x10first")] = 0x77  # within the budget: located
    with pytest.raises(MalformedBSON, match="at byte 4 \\(field first\\): unknown BSON type"):
        decode_document(bytes(raw))
