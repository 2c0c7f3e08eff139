"""The one-splice fast path of ``Replica.apply_diff`` (typing into an ASCII text) must be
indistinguishable from the general path: same documents, clocks, versions, effective diffs,
errors and updates. Each test drives it next to everything that leaves it (other ops, merges,
non-ASCII text, contexts, errors, limits, snapshots) and checks the replica after every step.
"""

from __future__ import annotations

import random
from typing import Any

import bson
import pytest
from bson.int64 import Int64

from virtualdom.engine import (
    EngineError,
    LimitExceeded,
    Limits,
    MalformedDiff,
    PathError,
    Replica,
    TypeMismatch,
    yupdate,
)
from virtualdom.engine import replica as replica_module
from virtualdom.engine.fastpath import canonical_splice as _canonical_splice
from virtualdom.engine.values import decode_document


def splice(path: Any, index: Any, delete: Any = 0, insert: Any = "") -> bytes:
    op = {"op": "splice", "path": path, "index": index, "delete": delete, "insert": insert}
    return bson.encode({"ops": [op]})


def check(r: Replica) -> None:
    """The mirror equals a fresh reading of the CRDT, and the clock its state vector (an
    actor's main and tick clients summed)."""
    assert bson.encode(r.materialize()) == r.snapshot(), r.actor
    clock: dict[str, int] = {}
    for client, n in yupdate.decode_state_vector(r.state_vector()).items():
        if n:
            clock[r._name(client)] = clock.get(r._name(client), 0) + n
    assert r.clock() == clock


def text_of(r: Replica, field: str = "t") -> Any:
    return bson.decode(r.snapshot())[field]


@pytest.fixture(params=["default", "rebuild-often"])
def rebuilds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test as is, and with the Doc rebuilt every few changes (Replica._rebuild)."""
    if request.param == "rebuild-often":
        monkeypatch.setattr(replica_module, "_REBUILD_MIN_CHANGES", 7)
        monkeypatch.setattr(replica_module, "_REBUILD_BYTES_PER_CHANGE", 1 << 40)
    return str(request.param)


def test_typing_session_matches_a_model(rebuilds: str) -> None:
    rng = random.Random(5)
    a, b = Replica("alice"), Replica("bob")
    a.apply_diff(bson.encode({"ops": [{"op": "set", "path": "t", "value": "hello"}]}))
    b.merge(a.encode_state())
    model = "hello"
    seen_versions = []
    for step in range(1500):
        roll = rng.random()
        if roll < 0.55:
            i = rng.randrange(len(model) + 1)
            s = rng.choice(["x", "yz", " ", "abc"])
            change = a.apply_diff(splice("t", i, 0, s))
            model = model[:i] + s + model[i:]
        elif roll < 0.8 and model:
            i = rng.randrange(len(model))
            n = rng.randrange(1, min(3, len(model) - i) + 1)
            s = rng.choice(["", "", "q"])
            change = a.apply_diff(splice("t", i, n, s))
            model = model[:i] + s + model[i + n :]
        elif roll < 0.85:
            change = a.apply_diff(splice("t", 0, 0, "é"))  # non-ASCII: the general path
            model = "é" + model
        elif roll < 0.88 and "é" in model:
            i = model.index("é")
            change = a.apply_diff(splice("t", i, 1))  # back to ASCII
            model = model[:i] + model[i + 1 :]
        elif roll < 0.91:
            change = a.apply_diff(splice("t", len(model), 0, "!"), a.clock())  # current context
            model += "!"
        elif roll < 0.93:
            change = a.apply_diff(bson.encode({"ops": [{"op": "set", "path": "n", "value": step}]}))
        elif roll < 0.96:
            # A concurrent edit by bob, merged.
            cb = b.apply_diff(splice("t", 0, 0, "B"))
            assert cb is not None
            assert a.merge(cb.update)
            a_before = text_of(a)
            model = a_before
            b.merge(a.encode_state())
            continue
        else:
            check(a)
            continue
        assert change is not None
        assert text_of(a) == model
        assert change.version == a.version and change.clock == a.clock()
        seen_versions.append((change.version, a.snapshot()))
        if step % 97 == 0:
            check(a)
    check(a)
    # Past versions replay from history exactly.
    for version, snap in seen_versions[-40:]:
        assert a.snapshot(version=version) == snap
    # bob converges from the updates alone.
    b.merge(a.encode_state())
    assert b.snapshot() == a.snapshot() and b.clock() == a.clock()


def test_fast_and_general_paths_agree(rebuilds: str) -> None:
    """The same edits, once as one-splice diffs (fast) and once each with a no-op second op
    (general): identical snapshots, clocks, effective diffs and updates."""
    rng = random.Random(11)
    fast, slow = Replica("alice"), Replica("alice")
    for r in (fast, slow):
        r.apply_diff(bson.encode({"ops": [{"op": "set", "path": "t", "value": "abc"}]}))
    n = 3
    for _ in range(400):
        if rng.random() < 0.6 or n == 0:
            op = {
                "op": "splice",
                "path": "t",
                "index": rng.randrange(n + 1),
                "insert": "ab"[rng.randrange(2)],
            }
            n += 1
        else:
            i = rng.randrange(n)
            op = {"op": "splice", "path": "t", "index": i, "delete": 1}
            n -= 1
        cf = fast.apply_diff(bson.encode({"ops": [op]}))
        noop = {"op": "splice", "path": "t", "index": 0}
        cs = slow.apply_diff(bson.encode({"ops": [op, noop]}))
        assert cf is not None and cs is not None
        assert (cf.version, cf.clock, cf.diff, cf.update) == (
            cs.version,
            cs.clock,
            cs.diff,
            cs.update,
        )
    assert fast.snapshot() == slow.snapshot()
    assert fast.encode_state() == slow.encode_state()
    assert fast._live is not None  # the fast path was taken
    check(fast)


@pytest.mark.parametrize(
    ("diff", "error"),
    [
        (splice("t", 99, 0, "x"), PathError),
        (splice("t", 2, 5), PathError),
        (splice("missing", 0, 0, "x"), PathError),
        (splice("n", 0, 0, "x"), TypeMismatch),
        (splice("t", -1, 0, "x"), MalformedDiff),
        (splice("t", 0, -1, "x"), MalformedDiff),
        (splice("t", 0, 0, 5), MalformedDiff),
        (splice("t", 1.0, 0, "x"), MalformedDiff),
        (splice("t.", 0, 0, "x"), MalformedDiff),
        (splice("", 0, 0, "x"), MalformedDiff),
        (
            bson.encode({"ops": [{"op": "splice", "path": "t", "index": 0, "bogus": 1}]}),
            MalformedDiff,
        ),
        (bson.encode({"ops": [{"op": "splice", "path": "t", "insert": "x"}]}), MalformedDiff),
    ],
)
def test_bad_splices_change_nothing(diff: bytes, error: type[EngineError]) -> None:
    r = Replica("alice")
    r.apply_diff(bson.encode({"ops": [{"op": "set", "path": "t", "value": "abc"}]}))
    r.apply_diff(bson.encode({"ops": [{"op": "set", "path": "n", "value": 1}]}))
    r.apply_diff(splice("t", 3, 0, "d"))  # the text is live
    before = (r.snapshot(), r.clock(), r.version, r.encode_state())
    r.apply_diff(splice("t", 4, 0, "e"))  # ... and stale in the mirror
    before = (r.snapshot(), r.clock(), r.version, r.encode_state())
    with pytest.raises(error):
        r.apply_diff(diff)
    assert (r.snapshot(), r.clock(), r.version, r.encode_state()) == before
    check(r)


def test_int64_positions_and_array_paths() -> None:
    r = Replica("alice")
    r.apply_diff(bson.encode({"ops": [{"op": "set", "path": "a", "value": ["xy", {"t": "q"}]}]}))
    r.apply_diff(splice("a.0", Int64(1), Int64(1), "Z"))
    r.apply_diff(splice(["a", 1, "t"], 1, 0, "r"))
    r.apply_diff(splice("a.1.t", 0, 0, "p"))
    assert bson.decode(r.snapshot())["a"] == ["xZ", {"t": "pqr"}]
    check(r)


def test_no_op_splice_is_no_change() -> None:
    r = Replica("alice")
    r.apply_diff(bson.encode({"ops": [{"op": "set", "path": "t", "value": "abc"}]}))
    assert r.apply_diff(splice("t", 1)) is None
    assert r.version == 1


def test_limits_hold_on_the_fast_path() -> None:
    r = Replica("alice", limits=Limits(max_string_chars=5))
    r.apply_diff(bson.encode({"ops": [{"op": "set", "path": "t", "value": "abc"}]}))
    r.apply_diff(splice("t", 3, 0, "de"))
    with pytest.raises(LimitExceeded):
        r.apply_diff(splice("t", 0, 0, "x"))
    assert text_of(r) == "abcde"
    small = Replica("bob", limits=Limits(max_document_bytes=40))
    small.apply_diff(bson.encode({"ops": [{"op": "set", "path": "t", "value": "abc"}]}))
    while True:
        try:
            small.apply_diff(splice("t", 0, 0, "x"))
        except LimitExceeded:
            break
    assert len(small.snapshot()) <= 40
    check(small)
    none = Replica("carol", limits=Limits(max_ops=0))
    with pytest.raises(LimitExceeded):
        none.apply_diff(splice("t", 0, 0, "x"))


def test_text_with_a_yjs_embed_stays_on_the_general_path() -> None:
    import pycrdt

    r = Replica("alice")
    r.apply_diff(bson.encode({"ops": [{"op": "set", "path": "t", "value": "abc"}]}))
    client = pycrdt.Doc(client_id=77)
    client.apply_update(r.encode_state())
    text = client.get("doc", type=pycrdt.Map)["t"]
    text.insert_embed(1, {"k": 1})
    r.merge(client.get_update(r.state_vector()))
    r.apply_diff(splice("t", 0, 0, "x"))
    assert r._live is None
    assert text_of(r) == "xabc"
    check(r)


def test_rebuilt_doc_is_the_same_crdt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replica_module, "_REBUILD_MIN_CHANGES", 5)
    monkeypatch.setattr(replica_module, "_REBUILD_BYTES_PER_CHANGE", 1 << 40)
    a, b = Replica("alice"), Replica("bob", retain=None)
    a.apply_diff(bson.encode({"ops": [{"op": "set", "path": "t", "value": "abc"}]}))
    b.merge(a.encode_state())
    docs = {id(a._doc)}
    snaps = {}
    for i in range(40):
        change = a.apply_diff(splice("t", i % 3, 0, "x") if i % 4 else splice("t", 0, 1))
        assert change is not None
        docs.add(id(a._doc))
        snaps[change.version] = a.snapshot()
        b.merge(change.update)
    assert len(docs) > 5  # rebuilt several times
    assert b.encode_state() == a.encode_state()
    assert b.snapshot() == a.snapshot() and b.clock() == a.clock()
    check(a)
    check(b)
    # Past versions of a replica that rebuilt its Doc still replay.
    for version, snap in snaps.items():
        assert a.snapshot(version=version) == snap


def test_no_rebuild_with_pending_deletes(monkeypatch: pytest.MonkeyPatch) -> None:
    """An update deleting items this replica lacks leaves the delete pending inside pycrdt's
    Doc; rebuilding from the encoded state would lose it, so such a replica never rebuilds."""
    monkeypatch.setattr(replica_module, "_REBUILD_MIN_CHANGES", 2)
    monkeypatch.setattr(replica_module, "_REBUILD_BYTES_PER_CHANGE", 1 << 40)
    a, b, c = Replica("alice"), Replica("bob"), Replica("carol")
    base = a.apply_diff(bson.encode({"ops": [{"op": "set", "path": "t", "value": "abc"}]}))
    assert base is not None
    b.merge(base.update)
    c.merge(base.update)
    typed = a.apply_diff(splice("t", 3, 0, "def"))
    assert typed is not None
    b.merge(typed.update)
    gone = b.apply_diff(splice("t", 2, 3))  # deletes "c" (known to c) and "de" (not yet)
    assert gone is not None
    c.merge(gone.update)
    assert c._no_rebuild
    doc_before = c._doc
    for _ in range(6):
        c.apply_diff(splice("t", 0, 0, "z"))
    assert c._doc is doc_before
    c.merge(typed.update)  # the pending delete lands
    a.merge(gone.update)
    for r in (a, b):
        c.merge(r.encode_state())
    a.merge(c.encode_state())
    assert bson.decode(c.snapshot())["t"] == bson.decode(a.snapshot())["t"]
    check(c)


# -- the tick client ------------------------------------------------------------------------------


def typing_changes(r: Replica) -> list[Any]:
    """Typing with backspaces: inserts, delete-only changes (ticks) in runs, inserts again."""
    changes = [r.apply_diff(bson.encode({"ops": [{"op": "set", "path": "t", "value": "ab"}]}))]
    for diff in (
        splice("t", 2, 0, "c"),
        splice("t", 3, 0, "d"),
        splice("t", 3, 1),  # tick
        splice("t", 2, 1),  # tick
        splice("t", 2, 0, "x"),  # first insert after ticks: carries the tick marker
        splice("t", 3, 0, "y"),
        splice("t", 0, 1),  # tick
        bson.encode({"ops": [{"op": "set", "path": "n", "value": 1}]}),
        bson.encode({"ops": [{"op": "remove", "path": "n"}]}),  # general path tick
        splice("t", 0, 0, "z"),
    ):
        changes.append(r.apply_diff(diff))
    assert all(c is not None for c in changes)
    return changes


def test_delete_only_changes_tick_a_second_client() -> None:
    r = Replica("alice")
    changes = typing_changes(r)
    clocks = [c.clock["alice"] for c in changes]
    assert clocks == sorted(set(clocks))  # every version has its own clock
    for change in changes:
        info = yupdate.decode_update(change.update)
        deletes_only = all(
            op.op in ("remove", "delete") or (op.op == "splice" and not op.text)
            for op in change.ops
        )
        if deletes_only and change.version > 1:
            # Only the tick client's GC unit, needing our main clock (the first of a run) or the
            # run's previous tick; nothing on the main client.
            assert set(info.ranges) == {r.tick_id}
            assert r.client_id in info.dependencies or r.tick_id in info.dependencies
        else:
            assert r.tick_id not in info.ranges
    # The main client's units are the text's characters, the document's items and the one
    # registration of the actor name: no struct of ours sits between two text inserts.
    state = yupdate.decode_state_vector(r.state_vector())
    assert state[r.tick_id] == 4
    assert state[r.client_id] + state[r.tick_id] == r.clock()["alice"]
    check(r)


@pytest.mark.parametrize("seed", range(12))
def test_out_of_order_delivery_only_reaches_states_the_author_had(seed: int) -> None:
    a = Replica("alice")
    changes = typing_changes(a)
    states = {tuple(sorted(c.clock.items())): a.snapshot(version=c.version) for c in changes}
    b = Replica("bob")
    order = list(changes)
    random.Random(seed).shuffle(order)
    for change in order:
        for merged in b.merge(change.update):
            key = tuple(sorted(merged.clock.items()))
            assert key in states, (merged.clock, seed)
            assert b.snapshot(version=merged.version) == states[key]
    assert b.pending == 0
    assert b.snapshot() == a.snapshot() and b.clock() == a.clock()
    check(b)


def test_restored_replica_keeps_ticking_in_order() -> None:
    a = Replica("alice")
    typing_changes(a)
    restored = Replica.restore("alice", a.encode_state(), a.version)
    assert restored.clock() == a.clock()
    c1 = restored.apply_diff(splice("t", 0, 1))  # a tick after the restore
    c2 = restored.apply_diff(splice("t", 0, 0, "q"))
    assert c1 is not None and c2 is not None
    assert c1.clock["alice"] == a.clock()["alice"] + 1 == c2.clock["alice"] - 1
    b = Replica("bob")
    b.merge(a.encode_state())
    assert b.merge(c2.update) == []  # waits for the tick
    assert [c.version for c in b.merge(c1.update)] == [2, 3]
    assert b.snapshot() == restored.snapshot() and b.clock() == restored.clock()


YJS_APPLY = """
import * as Y from 'yjs'
const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const out = {}
for (const [name, updates] of Object.entries(JSON.parse(Buffer.concat(chunks).toString()))) {
  const doc = new Y.Doc()
  for (const u of updates) Y.applyUpdate(doc, new Uint8Array(Buffer.from(u, 'base64')))
  const sv = {}
  for (const [client, clock] of Y.decodeStateVector(Y.encodeStateVector(doc))) sv[client] = clock
  out[name] = { text: doc.getMap('doc').get('t').toString(), sv }
}
process.stdout.write(JSON.stringify(out))
"""


def test_yjs_applies_ticks_and_markers() -> None:
    """Yjs reads the tick client's GC units and ignores the ordering markers, whatever the
    order it receives the updates in."""
    import base64
    import json
    import subprocess

    from tests.test_yjs_interop import JS_DIR, _skip_reason

    if _skip_reason() is not None:
        pytest.skip(_skip_reason() or "")
    r = Replica("alice")
    updates = [base64.b64encode(c.update).decode() for c in typing_changes(r)]
    shuffled = list(updates)
    random.Random(3).shuffle(shuffled)
    proc = subprocess.run(
        ["node", "--input-type=module", "-e", YJS_APPLY],
        input=json.dumps({"in order": updates, "shuffled": shuffled}),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=JS_DIR,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    state = {str(c): n for c, n in yupdate.decode_state_vector(r.state_vector()).items()}
    for result in json.loads(proc.stdout).values():
        assert result == {"text": text_of(r), "sv": state}


# -- the canonical one-splice matcher -------------------------------------------------------------


def as_decoded(data: bytes) -> tuple[str, int, int, str] | None:
    """What the general path reads from ``data`` when it is a well-formed one-splice diff."""
    try:
        doc = decode_document(data)
    except EngineError:
        return None
    (op,) = doc["ops"]
    return op["path"], op["index"], op.get("delete", 0), op.get("insert", "")


def test_canonical_splice_bytes_are_what_decoding_reads() -> None:
    """Whenever the byte matcher accepts a diff, decode_document accepts it too (so it is the
    canonical encoding) and reads the same splice; random mutations included."""
    rng = random.Random(7)
    accepted = 0
    for _ in range(20000):
        op: dict[str, Any] = {"op": "splice", "path": rng.choice(["t", "a.b", "tëxt", "x" * 9])}
        op["index"] = rng.choice([0, 1, 300, 2**31 - 1, -1])
        if rng.random() < 0.7:
            op["delete"] = rng.choice([0, 2, -3])
        if rng.random() < 0.8:
            op["insert"] = rng.choice(["", "a", "hello", "é", "a\x00b"])
        data = bytearray(bson.encode({"ops": [op]}))
        for _ in range(rng.choice([0, 0, 1, 2])):
            data[rng.randrange(len(data))] = rng.randrange(256)
        got = _canonical_splice(bytes(data))
        if got is not None:
            accepted += 1
            assert as_decoded(bytes(data)) == got, (bytes(data), got)
    assert accepted > 2000


@pytest.mark.parametrize(
    "data",
    [
        # A symbol (0x0E) where a string belongs: it decodes to str but does not round-trip.
        splice("t", 1, 0, "x").replace(b"\x02insert", b"\x0einsert"),
        # An array key other than "0".
        splice("t", 1, 0, "x").replace(b"\x030\x00", b"\x031\x00"),
        # Fields in another order.
        bson.encode({"ops": [{"op": "splice", "index": 1, "path": "t", "insert": "x"}]}),
        # int64 positions, non-ASCII text.
        splice("t", Int64(1), 0, "x"),
        splice("t", 1, 0, "é"),
    ],
)
def test_canonical_splice_refuses_other_encodings(data: bytes) -> None:
    assert _canonical_splice(data) is None
