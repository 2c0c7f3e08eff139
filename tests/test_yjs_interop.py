"""Interoperability with a real Yjs client (yjs 13.6 under Node, tests/js/yclient.mjs).

The engine's updates are read by Yjs, a Yjs client edits the documented CRDT layout the way a
browser would (UTF-16 text positions, plain JS values, a new Y.Text field with its meta entry, a
bigint), and the engine merges the result. Needs ``node`` and ``npm ci`` run in tests/js.
"""

from __future__ import annotations

import base64
import json
import pathlib
import shutil
import subprocess
from typing import Any

import bson
import pytest
from bson import ObjectId
from bson.int64 import Int64

from virtualdom.engine import Change, MalformedUpdate, Replica
from virtualdom.engine.values import CODEC

JS_DIR = pathlib.Path(__file__).parent / "js"
CLIENT = JS_DIR / "yclient.mjs"
CLIENT_ID = 4242  # the Yjs clientID yclient.mjs uses


def _skip_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed (the Yjs interop tests need Node 20 and npm)"
    if not (JS_DIR / "node_modules" / "yjs" / "package.json").is_file():
        return "tests/js/node_modules is missing: run `npm ci` in tests/js"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def yjs_client(update: bytes, mode: str = "edit") -> dict[str, Any]:
    """Run the Yjs client on ``update``; return its JSON report with the updates decoded."""
    proc = subprocess.run(
        ["node", str(CLIENT), mode],
        input=base64.b64encode(update).decode(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=JS_DIR,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    for key in ("update", "state", "update_v2"):
        out[key] = base64.b64decode(out[key])
    return out


def diff(*ops: dict[str, Any]) -> bytes:
    return bson.encode({"ops": list(ops)})


def consistent(r: Replica) -> None:
    assert bson.encode(r.materialize()) == r.snapshot()


OID = ObjectId("65f0c0ffee00000000000000")


def python_replica() -> Replica:
    r = Replica("alice")
    r.apply_diff(
        diff(
            {
                "op": "replace",
                "value": {
                    "title": "héllo 😀 world",
                    "n": 5,
                    "big": Int64(7),
                    "ratio": 1.5,
                    "tags": ["a", "b"],
                    "sub": {"x": 1, "y": "why"},
                    "bin": b"\x01\x02",
                    "flag": True,
                    "nothing": None,
                    "oid": OID,
                },
            }
        )
    )
    # Edited after creation, so the Y.Text holds more than one item.
    r.apply_diff(diff({"op": "splice", "path": "sub.y", "index": 3, "insert": " ✓"}))
    return r


def test_node_client_runs_the_pinned_yjs() -> None:
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/yjs"]["version"].startswith("13.6.")
    out = yjs_client(Replica("empty").encode_state(), "read")
    assert out["client_id"] == CLIENT_ID
    assert out["read"] == {}


def test_yjs_reads_what_the_engine_wrote() -> None:
    r = python_replica()
    out = yjs_client(r.encode_state(), "read")
    assert out["read"] == {
        "title": "héllo 😀 world",
        "n": {"$numberInt": "5"},
        "big": {"$numberLong": "7"},
        "ratio": 1.5,
        "tags": ["a", "b"],
        "sub": {"x": {"$numberInt": "1"}, "y": "why ✓"},
        "bin": {"$bytes": "0102"},
        "flag": True,
        "nothing": None,
        "oid": {"$oid": str(OID)},
    }
    # Field order is the meta entries' order; Yjs counts the emoji as two UTF-16 units.
    order = sorted(out["meta"], key=lambda f: out["meta"][f][0])
    assert order == list(r.to_python())
    assert all(isinstance(m[1], str) and m[1] for m in out["meta"].values())
    assert out["lengths"] == {"title": 14}
    # Reading changed nothing.
    assert out["after"] == out["read"]


def test_engine_merges_what_a_yjs_client_wrote() -> None:
    r = python_replica()
    before = r.to_python()
    out = yjs_client(r.encode_state(), "edit")
    assert out["after"]["title"] == "Héllo 😀! world"  # what Yjs itself shows

    changes = r.merge(out["update"])
    assert len(changes) == 1
    change = changes[0]
    assert change.actor == f"y:{CLIENT_ID}"
    assert r.clock()[f"y:{CLIENT_ID}"] > 0
    assert r.pending == 0
    consistent(r)

    got = bson.decode(r.snapshot(), CODEC)
    jsbig = got.pop("jsbig")
    assert jsbig == 2**40  # its BSON type: see test_yjs_bigint_is_read_as_int64
    expected = dict(before)
    expected["title"] = "Héllo 😀! world"
    expected["tags"] = ["a", "js", 42.0, "b"]  # a JS number is a double
    expected["note"] = "from yjs 🚀"
    assert list(got) == list(expected)
    assert bson.encode(got, codec_options=CODEC) == bson.encode(expected, codec_options=CODEC)

    # The effective change is in code points, not UTF-16 units or UTF-8 bytes.
    splices = sorted((o.index, o.count, o.text) for o in change.ops if o.op == "splice")
    assert splices == [(0, 1, "H"), (7, 0, "!")]
    inserts = [(o.index, o.values) for o in change.ops if o.op == "insert"]
    assert inserts == [(1, ["js", 42.0])]

    # Another replica that merges the client's whole state agrees byte for byte.
    other = Replica("bob")
    other.merge(out["state"])
    assert other.snapshot() == r.snapshot()
    consistent(other)


def test_engine_edits_yjs_text_and_yjs_reads_them_back() -> None:
    r = python_replica()
    out = yjs_client(r.encode_state(), "edit")
    r.merge(out["update"])
    # Python splices the Y.Text the Yjs client created, after its emoji, and the title.
    change = r.apply_diff(
        diff(
            {"op": "splice", "path": "note", "index": 10, "insert": "!"},
            {"op": "splice", "path": "title", "index": 8, "delete": 1, "insert": "🌍"},
            {"op": "insert", "path": "tags", "index": 0, "values": [Int64(3)]},
        )
    )
    assert isinstance(change, Change)
    back = yjs_client(r.encode_state(), "read")
    assert back["read"]["note"] == "from yjs 🚀!"
    assert back["read"]["title"] == "Héllo 😀!🌍world"
    assert back["read"]["tags"] == [{"$numberLong": "3"}, "a", "js", 42, "b"]
    assert back["lengths"]["title"] == len("Héllo 😀!🌍world".encode("utf-16-le")) // 2


def test_incremental_engine_update_applies_on_top_of_yjs_state() -> None:
    r = python_replica()
    out = yjs_client(r.encode_state(), "edit")
    r.merge(out["update"])
    sv = r.state_vector()
    r.apply_diff(diff({"op": "splice", "path": "note", "index": 0, "insert": "¡"}))
    # A Yjs client holding the engine's full state reads the same text as the engine.
    back = yjs_client(r.encode_state(), "read")
    assert back["read"]["note"] == r.to_python()["note"] == "¡from yjs 🚀"
    assert r.update_since(sv) != b""


def test_yjs_v2_update_is_refused() -> None:
    r = python_replica()
    out = yjs_client(r.encode_state(), "edit")
    assert out["update_v2"] != out["update"]
    state = (r.snapshot(), r.clock(), r.version, r.encode_state())
    with pytest.raises(MalformedUpdate, match="v2"):
        r.merge(out["update_v2"])
    with pytest.raises(MalformedUpdate, match="v2"):
        r.apply_diff(bson.encode({"update": out["update_v2"]}))
    assert (r.snapshot(), r.clock(), r.version, r.encode_state()) == state
    # The v1 encoding of the same edit is fine.
    assert r.merge(out["update"])


def test_yjs_bigint_is_read_as_int64() -> None:
    # pycrdt alone reads a bigint as a double (y-crdt/y-crdt#664): the engine rewrites it as
    # the layout's int64 before merging (yupdate.bigints_as_int64).
    r = python_replica()
    out = yjs_client(r.encode_state(), "edit")
    (change,) = r.merge(out["update"])
    value = bson.decode(r.snapshot(), CODEC)["jsbig"]
    assert type(value) is Int64 and value == 2**40
    assert [type(o.value) for o in change.ops if o.path == ("jsbig",)] == [Int64]
    consistent(r)
    # What the engine sends on, and its state, hold the int64 form: a replica fed from it, a
    # replica fed the client's whole state and a Yjs client synced from it all agree.
    fed = Replica("bob")
    fed.merge(r.encode_state())
    direct = Replica("carol")
    direct.merge(out["state"])
    assert fed.snapshot() == direct.snapshot() == r.snapshot()
    back = yjs_client(r.encode_state(), "read")
    assert back["read"]["jsbig"] == {"$numberLong": str(2**40)}
