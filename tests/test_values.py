"""Leaf conversion shortcuts in engine/values.py give exactly what their general path gives."""

from __future__ import annotations

import datetime
import json

import bson
from bson import json_util
from bson.code import Code
from bson.decimal128 import Decimal128
from bson.objectid import ObjectId
from hypothesis import given
from hypothesis import strategies as st

from virtualdom.engine import Replica
from virtualdom.engine.values import _EJSON, canonical_nans, clean, ejson_leaf, encode_document
from virtualdom.engine.values import plain as _plain


def general(value: object) -> object:
    return json.loads(json_util.dumps(value, json_options=_EJSON))


@given(
    st.datetimes(
        min_value=datetime.datetime(1, 1, 1),
        max_value=datetime.datetime(9999, 12, 31, 23, 59, 59),
        timezones=st.none() | st.timezones(),
    )
)
def test_datetime_leaf_is_canonical_extended_json(dt: datetime.datetime) -> None:
    assert ejson_leaf(dt) == general(dt)


@given(st.binary(min_size=12, max_size=12))
def test_objectid_leaf_is_canonical_extended_json(raw: bytes) -> None:
    oid = ObjectId(raw)
    assert ejson_leaf(oid) == general(oid)


def test_clean_shares_field_metas_and_keeps_order() -> None:
    wide = {f"f{i}": i for i in range(300)}  # past the shared metas
    node = clean({"a": {"x": 1, "y": 2}, "b": {"x": 3}, "wide": wide})
    assert node["a"].meta == {"x": (0.0, ""), "y": (1.0, "")}
    assert node["a"].meta["x"] is node["b"].meta["x"]  # one tuple, not one per field
    assert list(node["wide"].meta.values()) == [(float(i), "") for i in range(300)]
    assert node["wide"].meta.top == 299.0


def test_texts_written_from_lean_prelims_read_back_exactly() -> None:
    doc = {"s": "héllo", "empty": "", "nested": {"t": ["a", "", "b"]}, "n": 1}
    r = Replica("writer")
    r.apply_diff(encode_document({"ops": [{"op": "replace", "value": doc}]}))
    assert r.materialize() == doc
    other = Replica("reader")
    other.merge(r.encode_state())
    assert other.snapshot() == r.snapshot() == encode_document(doc)
    # The texts are live collaborative texts: a splice on each side merges.
    r.apply_diff(
        encode_document({"ops": [{"op": "splice", "path": "s", "index": 5, "insert": "!"}]})
    )
    other.merge(r.encode_state())
    assert other.to_python()["s"] == "héllo!"


@given(
    st.recursive(
        st.floats()
        | st.integers(-(2**31), 2**31 - 1)
        | st.text(max_size=3)
        | st.sampled_from(
            [Decimal128("NaN"), Decimal128("-NaN"), Decimal128("sNaN"), Decimal128("1.5")]
        ),
        lambda kids: (
            st.lists(kids, max_size=3)
            | st.dictionaries(st.text("ab$.", max_size=2), kids, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_canonical_nans_matches_clean_and_shares_what_it_can(value: object) -> None:
    out = canonical_nans(value)
    assert encode_document({"v": out}) == encode_document({"v": _plain(clean(value))})
    if encode_document({"v": value}) == encode_document({"v": out}):
        assert out is value  # nothing to change: not even copied


def test_a_code_scope_keeps_id_where_it_was() -> None:
    """pymongo writes ``_id`` first in a top-level document; a scope is not one (its bytes in the
    CRDT must read back in the written order, as the mirror holds it)."""
    value = Code("f()", {"": [], "_id": {}, "z": 1})
    r = Replica("writer")
    r.apply_diff(bson.encode({"ops": [{"op": "set", "path": "c", "value": value}]}))
    assert bson.encode(r.materialize()) == r.snapshot() == bson.encode({"c": value})
    fresh = Replica("reader")
    fresh.merge(r.encode_state())
    assert fresh.snapshot() == r.snapshot()
