"""Every bad input is refused with the status of server/errors.py's table and a message naming the
problem, and changes nothing: the document's version and snapshot stay as they were, no change
reaches subscribers, other clients are unaffected and the server keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import bson
import grpc
import pytest
from bson.binary import Binary

from virtualdom.engine import Limits, Replica
from virtualdom.server.app import Gateway
from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

from ._support import (
    STEP,
    async_test,
    cancel,
    changes,
    channel,
    detail_of,
    diff,
    gateway,
    inc,
    next_message,
    read,
    rpc_error,
    set_,
    splice,
    stub_for,
    write,
)

NODE = b"docs/target"
BASE = {"title": "hello", "n": 5, "items": [1, 2, 3], "sub": {"a": 1}}
INVALID = grpc.StatusCode.INVALID_ARGUMENT

# The same tiny document as a Yjs v2 update (yjs 13.6): v2 is not accepted.
YJS_V2 = bytes.fromhex(
    "000003d242000100000527000400281913646f637469746c656869646f63007469746c65030502030605"
    "01000000010102010101030075027d00770000"
)


def _undefined_bson() -> bytes:
    # {"ops": [{"op": "set", "path": "x", "value": undefined}]}: 0x06 is deprecated.
    b = bson.encode({"ops": [{"op": "set", "path": "x", "value": None}]})
    return b.replace(b"\x0avalue\x00", b"\x06value\x00")


@dataclass
class Guarded:
    gw: Gateway
    stub: pbg.MemoryGatewayStub
    before: pb.ReadSnapshotResponse


@contextlib.asynccontextmanager
async def guarded(tmp_path: Any, **cfg: Any) -> AsyncIterator[Guarded]:
    """A gateway holding NODE at version 2 and a subscriber on another channel. After the body
    (which sends bad input), checks that nothing changed and that everything still works."""
    # The clocks of the cases below name the gateway's actor: pinned (else the store's own).
    async with gateway(tmp_path, **{"actor": "gateway", **cfg}) as (gw, stub):
        await write(stub, NODE, set_("title", "hello"), set_("n", 5))
        await write(stub, NODE, set_("items", [1, 2, 3]), set_("sub", {"a": 1}))
        before = await read(stub, NODE)
        assert bson.decode(before.snapshot_bson) == BASE
        async with stub_for(gw) as other:
            # from_version=2: whatever is committed after version 2 reaches it, however late the
            # stream registers, so a bad input that slipped through would show up below.
            watch = other.SubscribeChanges(
                pb.SubscribeRequest(node_id=NODE, from_version=2, heartbeat_ms=50)
            )
            # Its first heartbeat: it is registered (the gateway counts one subscriber).
            assert (await next_message(watch)).HasField("progress")
            assert gw.service.subscribers == 1
            g = Guarded(gw, stub, before)
            yield g
            # Nothing changed, for this client and for another one. (A test whose own good
            # writes move the document on re-reads g.before after them.)
            expected = g.before
            for s in (stub, other):
                after = await read(s, NODE)
                assert after.version == expected.version
                assert after.snapshot_bson == expected.snapshot_bson
                assert after.vector_clock == expected.vector_clock
            # The server still serves writes; the subscriber sees exactly the good changes.
            ok = await write(stub, NODE, inc("n", 1))
            assert ok.new_version == expected.version + 1
            seen = await changes(watch, ok.new_version - 2)
            assert [c.version for c in seen] == list(range(3, ok.new_version + 1))
            assert bson.decode(seen[-1].diff_bson) == {
                "ops": [{"op": "set", "path": ["n"], "value": 6}]
            }
            await cancel(watch)


def req(diff_bson: bytes, **fields: Any) -> pb.WriteDiffRequest:
    return pb.WriteDiffRequest(node_id=fields.pop("node_id", NODE), diff_bson=diff_bson, **fields)


# (request, status, ErrorDetail.reason, words the message must name)
WRITE_CASES: dict[str, tuple[pb.WriteDiffRequest, grpc.StatusCode, str, tuple[str, ...]]] = {
    "garbage-bson": (req(b"\x10\x00\x00\x00garbagegarbage"), INVALID, "MALFORMED_BSON", ("bson",)),
    "truncated-bson": (req(diff(set_("x", 1))[:-3]), INVALID, "MALFORMED_BSON", ("bson",)),
    "trailing-bytes": (req(diff(set_("x", 1)) + b"x"), INVALID, "MALFORMED_BSON", ("bson",)),
    "deprecated-undefined": (req(_undefined_bson()), INVALID, "MALFORMED_BSON", ("deprecated",)),
    "unknown-top-level-key": (req(bson.encode({"opz": []})), INVALID, "MALFORMED_DIFF", ("opz",)),
    "ops-and-update": (
        req(bson.encode({"ops": [], "update": Binary(b"\x00\x00")})),
        INVALID,
        "MALFORMED_DIFF",
        ("ops", "update"),
    ),
    "ops-not-array": (req(bson.encode({"ops": "x"})), INVALID, "MALFORMED_DIFF", ("array",)),
    "op-not-document": (req(bson.encode({"ops": [1]})), INVALID, "MALFORMED_DIFF", ("ops[0]",)),
    "unknown-op": (
        req(diff({"op": "frobnicate", "path": "x"})),
        INVALID,
        "MALFORMED_DIFF",
        ("frobnicate",),
    ),
    "missing-field": (req(diff({"op": "set", "value": 1})), INVALID, "MALFORMED_DIFF", ("path",)),
    "unknown-field": (
        req(diff(set_("title", "x", colour="red"))),
        INVALID,
        "MALFORMED_DIFF",
        ("colour",),
    ),
    "wrong-type": (
        req(diff({"op": "insert", "path": "items", "index": "0", "values": [1]})),
        INVALID,
        "MALFORMED_DIFF",
        ("index",),
    ),
    "negative-index": (
        req(diff({"op": "delete", "path": "items", "index": -1, "count": 1})),
        INVALID,
        "MALFORMED_DIFF",
        ("index",),
    ),
    "empty-path": (req(diff(set_("", 1))), INVALID, "MALFORMED_DIFF", ("empty path",)),
    "empty-segment": (req(diff(set_("sub..a", 1))), INVALID, "MALFORMED_DIFF", ("segment",)),
    "missing-parent": (req(diff(set_("nope.child", 1))), INVALID, "BAD_PATH", ("nope",)),
    "index-out-of-range": (
        req(diff({"op": "delete", "path": "items", "index": 2, "count": 5})),
        INVALID,
        "BAD_PATH",
        ("items",),
    ),
    "splice-a-number": (req(diff(splice("n", 0, 0, "x"))), INVALID, "TYPE_MISMATCH", ("n",)),
    "field-into-array": (req(diff(set_("items.x", 1))), INVALID, "TYPE_MISMATCH", ("items",)),
    "field-of-a-leaf": (req(diff(set_("title.x", 1))), INVALID, "TYPE_MISMATCH", ("title",)),
    "inc-a-string": (req(diff(inc("title", 1))), INVALID, "TYPE_MISMATCH", ("title",)),
    # Atomic: the valid first op is not applied either.
    "second-op-bad": (
        req(diff(set_("title", "changed"), set_("nope.child", 1))),
        INVALID,
        "BAD_PATH",
        ("nope",),
    ),
    "empty-diff-bytes": (req(b""), INVALID, "BAD_REQUEST", ("diff_bson",)),
    "empty-node-id": (req(diff(set_("x", 1)), node_id=b""), INVALID, "BAD_REQUEST", ("node_id",)),
    "too-long-node-id": (
        req(diff(set_("x", 1)), node_id=b"n" * 1025),
        INVALID,
        "BAD_REQUEST",
        ("1025", "1024"),
    ),
    "non-utf8-node-id": (
        req(diff(set_("x", 1)), node_id=b"\xff\xfe"),
        INVALID,
        "BAD_REQUEST",
        ("utf-8",),
    ),
    "too-long-request-id": (
        req(diff(inc("n", 1)), request_id="r" * 129),
        INVALID,
        "LIMIT_EXCEEDED",
        ("request_id", "max_request_id_bytes=128"),
    ),
    "clock-naming-unseen-changes": (
        req(diff(inc("n", 1)), vector_clock=pb.VectorClock(counters={"gateway": 10**6})),
        grpc.StatusCode.FAILED_PRECONDITION,
        "MISSING_DEPENDENCIES",
        ("not seen",),
    ),
    "clock-naming-unknown-actor": (
        req(diff(inc("n", 1)), vector_clock=pb.VectorClock(counters={"mallory": 1})),
        grpc.StatusCode.FAILED_PRECONDITION,
        "MISSING_DEPENDENCIES",
        ("mallory",),
    ),
    "clock-with-empty-actor": (
        req(diff(inc("n", 1)), vector_clock=pb.VectorClock(counters={"": 1})),
        INVALID,
        "BAD_CONTEXT",
        ("actor",),
    ),
    "clock-never-a-state": (
        req(diff(inc("n", 1)), vector_clock=pb.VectorClock(counters={"gateway": 1})),
        INVALID,
        "BAD_CONTEXT",
        ("not a state",),
    ),
    "update-with-context": (
        req(
            bson.encode({"update": Binary(b"\x00\x00")}),
            vector_clock=pb.VectorClock(counters={"gateway": 1}),
        ),
        INVALID,
        "MALFORMED_DIFF",
        ("context",),
    ),
    "yjs-v2-update": (
        req(bson.encode({"update": Binary(YJS_V2)})),
        INVALID,
        "MALFORMED_UPDATE",
        ("v2",),
    ),
    "garbage-update": (
        req(bson.encode({"update": Binary(b"\x01\x02\x03")})),
        INVALID,
        "MALFORMED_UPDATE",
        ("yjs v1",),
    ),
    "update-not-binary": (
        req(bson.encode({"update": "text"})),
        INVALID,
        "MALFORMED_DIFF",
        ("update",),
    ),
}


@pytest.mark.parametrize("case", list(WRITE_CASES))
@async_test()
async def test_bad_write_is_refused_and_changes_nothing(tmp_path, case):
    request, code, reason, words = WRITE_CASES[case]
    async with guarded(tmp_path) as g:
        err = await rpc_error(g.stub.WriteDiff(request), code, *words)
        assert detail_of(err).reason == reason
        # A retry gets the same answer (nothing was half-applied).
        err2 = await rpc_error(g.stub.WriteDiff(request), code)
        assert err2.details() == err.details()


@async_test()
async def test_bad_write_to_a_new_node_does_not_create_it(tmp_path):
    async with guarded(tmp_path) as g:
        for bad in (b"\x05\x00\x00\x00\x00", diff(set_("a.b", 1)), diff({"op": "zap"})):
            await rpc_error(g.stub.WriteDiff(req(bad, node_id=b"fresh")), INVALID)
        await rpc_error(
            g.stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=b"fresh")), grpc.StatusCode.NOT_FOUND
        )
        assert b"fresh" not in await g.gw.store.node_ids(b"")
        # A prefix subscription with snapshots does not list it either.
        call = g.stub.SubscribeChanges(
            pb.SubscribeRequest(prefix=b"fresh", send_snapshot=True, heartbeat_ms=50)
        )
        ev = await next_message(call)
        assert not ev.snapshots and not ev.changes and ev.HasField("progress")
        await cancel(call)


@async_test()
async def test_update_with_missing_dependencies_is_failed_precondition(tmp_path):
    async with guarded(tmp_path) as g:
        alice = Replica("alice")
        c1 = alice.apply_diff(diff(set_("alice", "one")))
        c2 = alice.apply_diff(diff(set_("alice", "two")))
        assert c1 is not None and c2 is not None
        err = await rpc_error(
            g.stub.WriteDiff(req(bson.encode({"update": Binary(c2.update)}))),
            grpc.StatusCode.FAILED_PRECONDITION,
            "not seen",
        )
        assert detail_of(err).reason == "MISSING_DEPENDENCIES"


READ_CASES: dict[str, tuple[pb.ReadSnapshotRequest, grpc.StatusCode, str, tuple[str, ...]]] = {
    "unknown-node": (
        pb.ReadSnapshotRequest(node_id=b"docs/missing"),
        grpc.StatusCode.NOT_FOUND,
        "NOT_FOUND",
        ("docs/missing",),
    ),
    "missing-path": (
        pb.ReadSnapshotRequest(node_id=NODE, path="nope"),
        INVALID,
        "BAD_PATH",
        ("nope",),
    ),
    "index-past-end": (
        pb.ReadSnapshotRequest(node_id=NODE, path="items.7"),
        INVALID,
        "BAD_PATH",
        ("items",),
    ),
    "path-into-a-leaf": (
        pb.ReadSnapshotRequest(node_id=NODE, path="title.x"),
        INVALID,
        "TYPE_MISMATCH",
        ("title",),
    ),
    "empty-segment": (
        pb.ReadSnapshotRequest(node_id=NODE, path="sub."),
        INVALID,
        "MALFORMED_DIFF",
        ("segment",),
    ),
    # A version the document has not reached: the table maps CausalityError to INVALID_ARGUMENT.
    "future-version": (
        pb.ReadSnapshotRequest(node_id=NODE, version=99),
        grpc.StatusCode.OUT_OF_RANGE,
        "FUTURE_VERSION",
        ("99", "latest is 2"),
    ),
    "empty-node-id": (pb.ReadSnapshotRequest(node_id=b""), INVALID, "BAD_REQUEST", ("node_id",)),
    "too-long-node-id": (
        pb.ReadSnapshotRequest(node_id=b"x" * 5000),
        INVALID,
        "BAD_REQUEST",
        ("5000",),
    ),
    "non-utf8-node-id": (
        pb.ReadSnapshotRequest(node_id=b"docs/\xc3\x28"),
        INVALID,
        "BAD_REQUEST",
        ("utf-8",),
    ),
}


@pytest.mark.parametrize("case", list(READ_CASES))
@async_test()
async def test_bad_read_is_refused(tmp_path, case):
    request, code, reason, words = READ_CASES[case]
    async with guarded(tmp_path) as g:
        err = await rpc_error(g.stub.ReadSnapshot(request), code, *words)
        assert detail_of(err).reason == reason


SUBSCRIBE_CASES: dict[str, tuple[pb.SubscribeRequest, grpc.StatusCode, tuple[str, ...]]] = {
    "no-target": (pb.SubscribeRequest(), INVALID, ("node_id", "prefix")),
    "empty-node-id": (pb.SubscribeRequest(node_id=b""), INVALID, ("node_id",)),
    "non-utf8-node-id": (pb.SubscribeRequest(node_id=b"\xff"), INVALID, ("utf-8",)),
    "too-long-prefix": (pb.SubscribeRequest(prefix=b"p" * 2000), INVALID, ("prefix",)),
    "heartbeat-too-small": (
        pb.SubscribeRequest(node_id=NODE, heartbeat_ms=10),
        INVALID,
        ("heartbeat_ms",),
    ),
    "short-resume-token": (
        pb.SubscribeRequest(prefix=b"docs/", resume_token=b"\x01\x02"),
        INVALID,
        ("resume token",),
    ),
    "from-version-on-prefix": (
        pb.SubscribeRequest(prefix=b"docs/", from_version=1),
        INVALID,
        ("resume_token",),
    ),
    "future-from-version": (
        pb.SubscribeRequest(node_id=NODE, from_version=50),
        grpc.StatusCode.OUT_OF_RANGE,
        ("50", "latest version 2"),
    ),
    "snapshot-of-unknown-node": (
        pb.SubscribeRequest(node_id=b"docs/none", send_snapshot=True),
        grpc.StatusCode.NOT_FOUND,
        ("docs/none",),
    ),
    "replay-of-unknown-node": (
        pb.SubscribeRequest(node_id=b"docs/none", from_version=1),
        grpc.StatusCode.NOT_FOUND,
        ("docs/none",),
    ),
}


@pytest.mark.parametrize("case", list(SUBSCRIBE_CASES))
@async_test()
async def test_bad_subscription_is_refused(tmp_path, case):
    request, code, words = SUBSCRIBE_CASES[case]
    async with guarded(tmp_path) as g:
        call = g.stub.SubscribeChanges(request)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(call.read(), STEP)
        assert info.value.code() == code, info.value.details()
        for w in words:
            assert w.lower() in (info.value.details() or "").lower()
        # Refused subscriptions are not counted (only the guard's own subscriber is).
        assert g.gw.service.subscribers == 1


@async_test()
async def test_oversize_message_is_resource_exhausted_by_grpc(tmp_path):
    async with guarded(tmp_path, max_message_bytes=64 * 1024) as g:
        big = req(diff(set_("title", "x" * 100_000)))
        err = await rpc_error(g.stub.WriteDiff(big), grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert "larger than max" in (err.details() or "")
        # Just under the cap is fine on a new document (the guard checks NODE is unchanged).
        ok = await write(g.stub, b"docs/other", set_("title", "x" * 30_000))
        assert ok.new_version == 1


@pytest.mark.parametrize(
    ("limits", "ops", "limit"),
    [
        (Limits(max_diff_bytes=1000), [set_("title", "x" * 2000)], "max_diff_bytes"),
        (Limits(max_ops=3), [inc("n", 1)] * 4, "max_ops"),
        (Limits(max_depth=3), [set_("sub", {"a": {"b": {"c": 1}}})], "max_depth"),
        (Limits(max_string_chars=10), [splice("title", 5, 0, " world!!")], "max_string_chars"),
        (Limits(max_document_bytes=150), [set_("pad", "y" * 100)], "max_document_bytes"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
@async_test()
async def test_engine_limits_are_invalid_argument_with_limit_detail(tmp_path, limits, ops, limit):
    async with guarded(tmp_path, limits=limits) as g:
        request = req(diff(*ops))
        err = await rpc_error(g.stub.WriteDiff(request), INVALID, limit)
        detail = detail_of(err)
        assert detail.reason == "LIMIT_EXCEEDED"
        assert detail.limit == limit
        assert detail.allowed == getattr(limits, limit)
        assert detail.actual > detail.allowed
        if limit == "max_diff_bytes":
            assert detail.actual == len(request.diff_bson)
        if limit == "max_ops":
            assert detail.actual == 4


# -- sessions: a bad message is a SessionError for that seq; the session goes on --------------


def _session_cases() -> dict[str, tuple[Callable[[], pb.SessionMessage], int, tuple[str, ...]]]:
    bad = INVALID.value[0]
    return {
        "diff-before-join": (
            lambda: pb.SessionMessage(
                diff=pb.SessionDiff(node_id=b"docs/other", diff_bson=diff(set_("x", 1)))
            ),
            bad,
            ("join",),
        ),
        "malformed-diff": (
            lambda: pb.SessionMessage(
                diff=pb.SessionDiff(node_id=NODE, diff_bson=diff({"op": "zap"}))
            ),
            bad,
            ("zap",),
        ),
        "empty-diff": (
            lambda: pb.SessionMessage(diff=pb.SessionDiff(node_id=NODE)),
            bad,
            ("diff_bson",),
        ),
        "v2-update": (
            lambda: pb.SessionMessage(update=pb.SessionCrdtUpdate(node_id=NODE, update=YJS_V2)),
            bad,
            ("v2",),
        ),
        "empty-update": (
            lambda: pb.SessionMessage(update=pb.SessionCrdtUpdate(node_id=NODE)),
            bad,
            ("update",),
        ),
        "unseen-context": (
            lambda: pb.SessionMessage(
                diff=pb.SessionDiff(
                    node_id=NODE,
                    diff_bson=diff(inc("n", 1)),
                    vector_clock=pb.VectorClock(counters={"ghost": 3}),
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION.value[0],
            ("ghost",),
        ),
        "presence-not-bson": (
            lambda: pb.SessionMessage(presence=pb.Presence(node_id=NODE, state_bson=b"\x01\x02")),
            bad,
            ("bson",),
        ),
        "presence-too-big": (
            lambda: pb.SessionMessage(
                presence=pb.Presence(node_id=NODE, state_bson=bson.encode({"x": "y" * 70_000}))
            ),
            bad,
            ("64 kib",),
        ),
        "join-twice": (
            lambda: pb.SessionMessage(join=pb.Join(node_id=NODE)),
            bad,
            ("already joined",),
        ),
        "join-empty-node": (
            lambda: pb.SessionMessage(join=pb.Join(node_id=b"")),
            bad,
            ("node_id",),
        ),
        "join-bad-state-vector": (
            lambda: pb.SessionMessage(
                join=pb.Join(node_id=b"docs/sv", state_vector=b"\xff\xff\xff")
            ),
            bad,
            ("state vector",),
        ),
        "leave-not-joined": (
            lambda: pb.SessionMessage(leave=pb.Leave(node_id=b"docs/other")),
            bad,
            ("not joined",),
        ),
        "no-kind": (pb.SessionMessage, bad, ("empty",)),
    }


SESSION_CASES = _session_cases()


@pytest.mark.parametrize("case", list(SESSION_CASES))
@async_test()
async def test_bad_session_message_is_a_session_error_and_the_session_continues(tmp_path, case):
    make, code, words = SESSION_CASES[case]
    async with guarded(tmp_path) as g:
        queue: asyncio.Queue[pb.SessionMessage | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[pb.SessionMessage]:
            while (m := await queue.get()) is not None:
                yield m

        call = g.stub.CollaborativeSession(requests())
        queue.put_nowait(pb.SessionMessage(seq=1, join=pb.Join(node_id=NODE, actor="bob")))
        joined = await next_message(call)
        assert joined.joined.seq == 1 and joined.joined.version == 2
        bad = make()
        bad.seq = 7
        queue.put_nowait(bad)
        got = await next_message(call)
        assert got.WhichOneof("kind") == "error", got
        assert got.error.seq == 7 and got.error.code == code
        for w in words:
            assert w.lower() in got.error.message.lower(), got.error.message
        # The session still works: a good diff is acknowledged as version 3...
        queue.put_nowait(
            pb.SessionMessage(
                seq=8, diff=pb.SessionDiff(node_id=NODE, diff_bson=diff(set_("z", 1)))
            )
        )
        ack = await next_message(call)
        assert ack.ack.seq == 8 and ack.ack.version == 3
        # (the guard then expects exactly versions 3 and 4 on its subscriber).
        queue.put_nowait(None)
        assert await asyncio.wait_for(call.read(), STEP) is grpc.aio.EOF
        assert (await call.code()) == grpc.StatusCode.OK
        g.before = await read(g.stub, NODE)


@async_test()
async def test_session_cap_is_resource_exhausted(tmp_path):
    async with guarded(tmp_path, max_sessions=1) as g:
        queue: asyncio.Queue[pb.SessionMessage | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[pb.SessionMessage]:
            while (m := await queue.get()) is not None:
                yield m

        first = g.stub.CollaborativeSession(requests())
        queue.put_nowait(pb.SessionMessage(seq=1, join=pb.Join(node_id=NODE)))
        assert (await next_message(first)).joined.seq == 1
        second = g.stub.CollaborativeSession(iter([pb.SessionMessage(join=pb.Join(node_id=NODE))]))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(second.read(), STEP)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_sessions=1" in (info.value.details() or "")
        queue.put_nowait(None)
        assert await asyncio.wait_for(first.read(), STEP) is grpc.aio.EOF


# -- request bytes that are not the protobuf message at all ------------------------------------

_GOOD_WRITE = pb.WriteDiffRequest(node_id=NODE, diff_bson=diff(inc("n", 1))).SerializeToString()
RAW_CASES: dict[str, tuple[str, bytes, tuple[str, ...]]] = {
    "write-garbage": ("WriteDiff", b"\xff\xff\xff\xff", ("WriteDiffRequest",)),
    # A string field (actor, 7) holding invalid UTF-8 after an otherwise valid write.
    "write-bad-utf8-string": ("WriteDiff", _GOOD_WRITE + b"\x3a\x02\xff\xfe", ("utf-8",)),
    "read-garbage": ("ReadSnapshot", b"\x0a\x10short", ("ReadSnapshotRequest",)),
    "subscribe-garbage": ("SubscribeChanges", b"\xff\xff", ("SubscribeRequest",)),
}


@pytest.mark.parametrize("case", list(RAW_CASES))
@async_test()
async def test_undecodable_request_is_invalid_argument(tmp_path, case):
    # grpc itself answered UNKNOWN ("Unexpected DecodeError") before app._parse.
    method, data, words = RAW_CASES[case]
    async with guarded(tmp_path) as g, channel(g.gw.port) as ch:
        path = f"/virtualdom.v1.MemoryGateway/{method}"
        ident = {"request_serializer": None, "response_deserializer": None}
        if method == "SubscribeChanges":
            call = ch.unary_stream(path, **ident)(data)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(call.read(), STEP)
            err = info.value
        else:
            err = await rpc_error(ch.unary_unary(path, **ident)(data), INVALID)
        assert err.code() == INVALID, err.details()
        assert "malformed" in (err.details() or "")
        for w in words:
            assert w.lower() in (err.details() or "").lower()
        assert detail_of(err).reason == "BAD_REQUEST"


@async_test()
async def test_undecodable_session_message_is_a_session_error(tmp_path):
    async with guarded(tmp_path) as g, channel(g.gw.port) as ch:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def requests() -> AsyncIterator[bytes]:
            while (m := await queue.get()) is not None:
                yield m

        path = "/virtualdom.v1.MemoryGateway/CollaborativeSession"
        call = ch.stream_stream(path, response_deserializer=pb.SessionUpdate.FromString)(requests())
        join = pb.SessionMessage(seq=1, join=pb.Join(node_id=NODE))
        queue.put_nowait(join.SerializeToString())
        assert (await next_message(call)).joined.seq == 1
        queue.put_nowait(b"\xff\xff\xff")
        got = await next_message(call)
        assert got.WhichOneof("kind") == "error", got
        assert got.error.code == INVALID.value[0] and "SessionMessage" in got.error.message
        queue.put_nowait(None)
        assert await asyncio.wait_for(call.read(), STEP) is grpc.aio.EOF
