"""What the engine retains for large writes: a large change's update is not kept in history, a
large snapshot is not cached, and the checks of a write copy none of its values."""

from __future__ import annotations

import math
import os
import struct
from typing import Any

import bson
import pytest
from bson import Decimal128

from virtualdom.engine import HistoryCompacted, Limits, Replica, follow
from virtualdom.engine import history as history_mod
from virtualdom.engine import replica as replica_mod
from virtualdom.engine.values import CODEC, DECIMAL_NAN

MiB = 1 << 20


def diff(*ops: dict[str, Any]) -> bytes:
    return bson.encode({"ops": list(ops)}, codec_options=CODEC)


def replace(doc: dict[str, Any]) -> bytes:
    return diff({"op": "replace", "value": doc})


def followed(changes: list[Any]) -> bytes:
    doc: dict[str, Any] = {}
    for c in changes:
        doc = follow.apply_diff(doc, c.diff)
    return bson.encode(doc, codec_options=CODEC)


@pytest.fixture
def small_large(monkeypatch: pytest.MonkeyPatch) -> int:
    """Make 'large' 4 KiB, so that tests need no 16 MiB documents."""
    monkeypatch.setattr(history_mod, "LARGE_UPDATE", 4096)
    monkeypatch.setattr(replica_mod, "SNAPSHOT_CACHE_MAX", 4096)
    return 4096


def test_a_large_replace_keeps_no_copy_in_history_or_snapshot_cache() -> None:
    # The real thresholds (16 MiB): the document is one binary field.
    r = Replica("alice")
    r.apply_diff(diff({"op": "set", "path": "small", "value": 1}))
    blob = os.urandom(17 * MiB)
    change = r.apply_diff(replace({"name": "blob", "data": blob}))
    assert change is not None and change.version == 2
    assert len(change.update) > 17 * MiB  # the caller (the gateway's store) still gets it
    h = r._history
    assert not h.records and not h.base_held and h._base_state is None
    assert r._last_update == b""
    assert r.oldest_version == 2
    snap = r.snapshot()
    assert bson.decode(snap)["data"] == blob
    assert r._snapshot is None  # encoded again on each read
    assert r.snapshot() == snap
    # The replica holds the bytes once in its mirror (and once in pycrdt), not per copy made.
    assert r._mirror["data"] is not None


def test_after_a_large_change_contexts_work_and_past_versions_are_refused(
    small_large: int,
) -> None:
    r = Replica("alice", retain=None)
    changes = [r.apply_diff(diff({"op": "set", "path": "a", "value": "x"}))]
    changes.append(r.apply_diff(replace({"a": "y", "big": "z" * (2 * small_large)})))
    at_large = r.clock()
    assert r.oldest_version == 2 and not r._history.base_held
    changes.append(r.apply_diff(diff({"op": "set", "path": "b", "value": 1})))
    changes.append(r.apply_diff(diff({"op": "set", "path": "c", "value": 2})))
    # Small changes after it are kept: their contexts and effective ops work.
    assert [rec.version for rec in r._history.records] == [3, 4]
    # A diff made against the large change's version is transformed over the later ones.
    late = r.apply_diff(diff({"op": "set", "path": "a", "value": "late"}), at_large)
    changes.append(late)
    assert bson.decode(r.snapshot())["a"] == "late"
    assert followed(changes) == r.snapshot()
    # Its state was not kept: no past version can be rebuilt, only the latest read.
    for v in (2, 3, 4):
        with pytest.raises(HistoryCompacted, match="cannot be rebuilt") as info:
            r.snapshot(version=v)
        assert info.value.oldest_version == r.version
    with pytest.raises(HistoryCompacted, match="was compacted"):
        r.snapshot(version=1)
    assert r.snapshot(version=r.version) == r.snapshot()
    assert r.clock_at(3) and r.clock_at(2) == at_large
    # Compaction just forgets records.
    assert r.compact(keep_last=1) == 4
    assert [rec.version for rec in r._history.records] == [5]
    with pytest.raises(HistoryCompacted):
        r.apply_diff(diff({"op": "set", "path": "x", "value": 1}), at_large)


def test_a_small_document_keeps_its_history_and_snapshot(small_large: int) -> None:
    r = Replica("alice", retain=None)
    r.apply_diff(replace({"a": "x" * 100}))
    snap1 = r.snapshot()
    assert r._snapshot is snap1
    r.apply_diff(diff({"op": "set", "path": "b", "value": 1}))
    assert r._history.base_held and len(r._history.records) == 2
    assert r.snapshot(version=1) == snap1


def test_a_replica_restored_from_a_large_state_does_not_hold_it(small_large: int) -> None:
    r = Replica("alice")
    r.apply_diff(replace({"big": "z" * (2 * small_large)}))
    state = r.encode_state()
    back = Replica.restore("bob", state, 7)
    assert not back._history.base_held and back.oldest_version == 7
    assert back.snapshot() == r.snapshot()
    back.apply_diff(diff({"op": "set", "path": "b", "value": 1}))
    with pytest.raises(HistoryCompacted):
        back.snapshot(version=7)
    # A small state is held as before.
    small = Replica("carol")
    small.apply_diff(diff({"op": "set", "path": "a", "value": 1}))
    again = Replica.restore("dave", small.encode_state(), 1)
    assert again._history.base_held
    again.apply_diff(diff({"op": "set", "path": "b", "value": 1}))
    assert again.snapshot(version=1) == small.snapshot()


def test_a_large_merged_update_is_not_kept_either(small_large: int) -> None:
    a, b = Replica("alice"), Replica("bob")
    change = a.apply_diff(replace({"big": "z" * (2 * small_large)}))
    assert change is not None
    (merged,) = b.merge(change.update)
    assert merged.version == 1 and not b._history.records and not b._history.base_held
    assert b.snapshot() == a.snapshot()


# -- the size of a replace is the encoded document's, counted once ---------------------------


def test_replace_at_the_document_size_limit() -> None:
    doc = {"a": "x" * 1000}
    size = len(bson.encode(doc))
    ok = Replica("alice", limits=Limits(max_document_bytes=size))
    assert ok.apply_diff(replace(doc)) is not None
    assert ok._size == size == len(ok.snapshot())
    over = Replica("alice", limits=Limits(max_document_bytes=size - 1))
    with pytest.raises(Exception, match="max_document_bytes"):
        over.apply_diff(replace(doc))


# -- NaN canonicalisation of effective ops ----------------------------------------------------

ODD_NAN = struct.unpack("<d", struct.pack("<Q", 0xFFF8_0000_0000_0001))[0]
ODD_DECIMAL_NAN = Decimal128("-NaN")


@pytest.mark.parametrize(
    "op",
    [
        {"op": "set", "path": "v", "value": {"x": [1.5, ODD_NAN], "d": ODD_DECIMAL_NAN}},
        {"op": "replace", "value": {"v": ODD_NAN, "w": [ODD_DECIMAL_NAN]}},
        {"op": "insert", "path": "arr", "index": 1, "values": [ODD_NAN, {"n": ODD_DECIMAL_NAN}]},
    ],
)
def test_effective_ops_hold_the_canonical_nan(op: dict[str, Any]) -> None:
    r = Replica("alice")
    changes = [r.apply_diff(diff({"op": "set", "path": "arr", "value": [0.0, 3.0]}))]
    changes.append(r.apply_diff(diff(op)))
    assert followed(changes) == r.snapshot()
    raw = changes[-1].diff
    assert struct.pack("<Q", 0xFFF8_0000_0000_0001) not in raw
    assert struct.pack("<d", math.nan) in raw
    assert DECIMAL_NAN.bid in raw and ODD_DECIMAL_NAN.bid not in raw


def test_values_without_nan_are_not_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    # Binary data holds 0x7f and 0xff bytes, so the diff takes the NaN check; nothing changes.
    parsed: list[dict[str, Any]] = []
    decode = replica_mod.decode_document

    def spy(data: bytes, *args: Any) -> dict[str, Any]:
        out = decode(data, *args)  # (the replica passes its max_depth)
        parsed.append(out)
        return out

    monkeypatch.setattr(replica_mod, "decode_document", spy)
    r = Replica("alice")
    value = {"data": b"\x7f\xff" * 10, "n": [1.5, -0.0], "s": "x"}
    inserted = {"op": "insert", "path": "v.n", "index": 0, "values": [{"a": 2.5}]}
    change = r.apply_diff(diff({"op": "set", "path": "v", "value": value}, inserted))
    assert change is not None
    ops = parsed[0]["ops"]
    assert change.ops[0].value is ops[0]["value"]
    assert change.ops[1].values[0] is ops[1]["values"][0]
    assert followed([change]) == r.snapshot()
