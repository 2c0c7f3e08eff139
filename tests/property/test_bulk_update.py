"""A value written as one Yjs update built in Python (engine/ybulk.py) is exactly what pycrdt's
prelim types make of it.

Each example writes the same diffs into two replicas of the same actor: one as the engine does
(``replace`` through ``ybulk``), one through pycrdt prelim types only (the planner without its
direct writer). Both must agree on everything: the change's update bytes, the encoded state,
the state vector and clock, the snapshot, the mirror read back from the CRDT, the effective ops,
and the update of a later edit (which shows the blocks are the same). The one difference
allowed is the order of the keys inside a plain map of two or more keys (an Extended JSON leaf
such as ``$binary``): yrs holds it in a Rust HashMap, whose order changes from map to map, so
the prelim path itself writes such maps in no fixed order; then the two states must read the
same to a Yjs client (pycrdt) and have the same state vector and size.
"""

from __future__ import annotations

import math
from typing import Any

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map

from benchmarks.workloads import make_document
from tests.property.test_bson_roundtrip import DOCUMENT, KEY, VALUE
from virtualdom.engine import Change, Replica, planner
from virtualdom.engine.planner import Plan
from virtualdom.engine.values import ejson_leaf

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


class PrelimReplica(Replica):
    """A replica that writes every value through pycrdt prelim types."""

    def _plan(self) -> Plan:
        plan = super()._plan()
        plan.direct = None
        return plan


def diff(*ops: dict[str, Any]) -> bytes:
    return bson.encode({"ops": list(ops)})


def has_multikey_map(value: Any) -> bool:
    """Whether the CRDT form of ``value`` holds a plain map of two or more keys."""
    if isinstance(value, dict):
        return any(has_multikey_map(v) for v in value.values())
    if isinstance(value, list):
        return any(has_multikey_map(v) for v in value)
    if type(value) in (str, float, bool, int, bytes) or value is None:  # not Code, Binary
        return False
    return _multikey(ejson_leaf(value))


def _multikey(v: Any) -> bool:
    if isinstance(v, dict):
        return len(v) > 1 or any(_multikey(x) for x in v.values())
    return isinstance(v, list) and any(_multikey(x) for x in v)


def read(state: bytes) -> Any:
    """What a Yjs client reads of a state (NaN made comparable)."""
    doc: Doc[Any] = Doc()
    doc.apply_update(state)
    return comparable([doc.get("doc", type=Map).to_py(), doc.get("actors", type=Map).to_py()])


def comparable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: comparable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [comparable(x) for x in v]
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    return v


def assert_same_bytes(a: bytes, b: bytes, value: Any) -> None:
    if a != b:
        assert has_multikey_map(value), "the direct update differs from the prelim one"
        assert len(a) == len(b)
        assert read(a) == read(b)


def assert_same(
    direct: Replica, prelim: Replica, cd: Change | None, cp: Change | None, value: Any
) -> None:
    assert (cd is None) == (cp is None)
    if cd is not None and cp is not None:
        assert (cd.version, cd.actor, cd.clock) == (cp.version, cp.actor, cp.clock)
        assert_same_bytes(cd.update, cp.update, value)
        assert cd.diff == cp.diff  # the effective ops (as bytes: NaN == NaN there)
    assert direct.state_vector() == prelim.state_vector()
    assert direct.clock() == prelim.clock()
    assert_same_bytes(direct.encode_state(), prelim.encode_state(), value)
    assert direct.snapshot() == prelim.snapshot()
    assert bson.encode(direct.materialize()) == direct.snapshot()
    assert bson.encode(prelim.materialize()) == prelim.snapshot()


@pytest.fixture(autouse=True)
def direct_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small documents take the direct path too (it is used from 64 KiB on otherwise)."""
    monkeypatch.setattr(planner, "DIRECT_MIN_BYTES", 0)


def both(*diffs: bytes, value: Any) -> tuple[Replica, Replica]:
    direct, prelim = Replica("writer"), PrelimReplica("writer")
    for d in diffs:
        assert_same(direct, prelim, direct.apply_diff(d), prelim.apply_diff(d), value)
    return direct, prelim


@SETTINGS
@given(DOCUMENT)
def test_replace_into_a_new_document_is_the_prelim_update(doc: dict[str, Any]) -> None:
    direct, prelim = both(diff({"op": "replace", "value": doc}), value=doc)
    # A later edit integrates against the same blocks, so its update is the same too.
    after = diff({"op": "set", "path": "zz", "value": [1.5, "x", {"k": "v"}]})
    assert_same(direct, prelim, direct.apply_diff(after), prelim.apply_diff(after), doc)


@SETTINGS
@given(DOCUMENT, DOCUMENT, st.lists(KEY, max_size=3))
def test_replace_of_an_existing_document_is_the_prelim_update(
    first: dict[str, Any], second: dict[str, Any], shared: list[str]
) -> None:
    # Fields under keys the first document had name the old entries as origins: those come from
    # pycrdt, the rest from ybulk, interleaved in field order.
    for k in shared:
        first.setdefault(k, 1.5)
        second.setdefault(k, "again")
    value = {"a": first, "b": second}
    both(
        diff({"op": "replace", "value": first}),
        diff({"op": "replace", "value": second}),
        diff({"op": "replace", "value": {}}),
        diff({"op": "replace", "value": first}),
        value=value,
    )


@SETTINGS
@given(DOCUMENT, st.lists(VALUE, max_size=4))
def test_edits_after_a_direct_write_match(doc: dict[str, Any], values: list[Any]) -> None:
    doc["arr"] = [1.0, "t", [2.0], {"x": 1}]
    doc["txt"] = "héllo 😀"
    direct, prelim = both(diff({"op": "replace", "value": doc}), value=doc)
    edits = [
        diff({"op": "insert", "path": "arr", "index": 1, "values": values}),
        diff({"op": "splice", "path": "txt", "index": 2, "delete": 3, "insert": "ö"}),
        diff({"op": "delete", "path": "arr", "index": 0, "count": 1}),
        diff({"op": "set", "path": "arr.0", "value": {"deep": values}}),
    ]
    for e in edits:
        assert_same(direct, prelim, direct.apply_diff(e), prelim.apply_diff(e), [doc, values])
    # A replica merging the direct writer's state reads what the writer has.
    fresh = Replica("reader")
    fresh.merge(direct.encode_state())
    assert fresh.snapshot() == direct.snapshot()


def test_a_generated_records_document_is_byte_identical() -> None:
    doc = make_document(300_000)
    d = diff({"op": "replace", "value": doc})
    direct, prelim = both(d, value=doc)
    assert direct.encode_state() == prelim.encode_state()


@SETTINGS
@given(DOCUMENT, VALUE, VALUE, KEY)
def test_set_of_a_top_level_field_is_the_prelim_update(
    doc: dict[str, Any], one: Any, two: Any, key: str
) -> None:
    # A new key (direct), the same key again (its entry is the origin: pycrdt), a removed and
    # set again key (a deleted entry is an origin too), a key set at a position.
    both(
        diff({"op": "replace", "value": doc}),
        diff({"op": "set", "path": [key + "+"], "value": one}),
        diff({"op": "set", "path": [key + "+"], "value": two}),
        diff({"op": "remove", "path": [key + "+"]}),
        diff({"op": "set", "path": [key + "+"], "value": one}),
        diff({"op": "set", "path": [key + "-"], "value": two, "at": 0}),
        value=[doc, one, two],
    )
