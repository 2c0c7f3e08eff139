"""virtualdom.client.GatewayClient against a real in-process gateway (no mocks, no sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import bson
import grpc
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

from virtualdom.client import (
    DEFAULT_CODEC_OPTIONS,
    Change,
    GatewayClient,
    GatewayError,
    InvalidArgument,
    MemberEvent,
    NotFound,
    PresenceUpdate,
    Progress,
    RetryPolicy,
    SessionClosed,
    ShuttingDown,
    SnapshotEvent,
    Unavailable,
    VersionMismatch,
)
from virtualdom.client.errors import error_from_status
from virtualdom.engine import Replica
from virtualdom.server.app import Gateway
from virtualdom.server.config import GatewayConfig
from virtualdom.v1 import gateway_pb2 as pb

from ._support import STEP, async_test

MiB = 1024 * 1024
NODE = "projects/42/spec"
#: Retries fast enough for a test, patient enough for a gateway restart.
FAST = RetryPolicy(max_attempts=40, initial_backoff=0.02, max_backoff=0.25)


def cfg(tmp_path: Any, port: int = 0, **overrides: Any) -> GatewayConfig:
    overrides.setdefault("http_address", "")  # not the shared default port 8080
    return GatewayConfig(address=f"127.0.0.1:{port}", data_dir=str(tmp_path), **overrides)


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Any, *, client_kw: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[tuple[Gateway, GatewayClient]]:
    """A gateway on 127.0.0.1 port 0 and a GatewayClient of it; both closed after."""
    gw = Gateway(cfg(tmp_path, **overrides))
    port = await gw.start()
    try:
        async with GatewayClient(f"127.0.0.1:{port}", **(client_kw or {"retry": FAST})) as client:
            yield gw, client
    finally:
        await gw.stop(grace=1.0)


async def restart(gw: Gateway) -> Gateway:
    """Stop a gateway and start a new one on the same port and data dir."""
    port = gw.port
    await gw.stop(grace=1.0)
    again = Gateway(cfg(gw.config.data_dir, port))
    assert await again.start() == port
    return again


async def nxt(events: Any, timeout: float = STEP) -> Any:
    """The next event of a subscription or session (a hang fails the test)."""
    return await asyncio.wait_for(events.__anext__(), timeout)


async def changes_until(events: Any, node: str, version: int) -> list[Change]:
    """Changes (other events skipped) until ``node`` reaches ``version``."""
    out: list[Change] = []
    while True:
        ev = await nxt(events)
        if isinstance(ev, Change):
            out.append(ev)
            if ev.node_id == node and ev.version >= version:
                return out


def set_(path: Any, value: Any) -> dict[str, Any]:
    return {"op": "set", "path": path, "value": value}


# -- write / read --------------------------------------------------------------------------------

EVERY_TYPE: dict[str, Any] = {
    "double": 1.5,
    "double_whole": 1.0,
    "int32": 7,
    "int64": Int64(1 << 40),
    "int64_small": Int64(5),
    "string": "héllo wörld 😀",
    "document": {"nested": {"deeper": None, "n": -1}},
    "array": [1, "two", [3.0], {"four": 4}],
    "binary": b"\x00\x01\xff",
    "binary_uuid": Binary(uuid.UUID(int=42).bytes, 4),
    "binary_user": Binary(b"custom", 0x80),
    "object_id": ObjectId("65f0c0ffee00000000000000"),
    "bool": True,
    "datetime": datetime(2024, 2, 29, 12, 34, 56, 789000, tzinfo=UTC),
    "datetime_far": DatetimeMS(-(2**62)),
    "null": None,
    "regex": Regex("^a.*b$", "im"),
    "code": Code("function () { return 1; }"),
    "code_with_scope": Code("x + y", {"x": 1, "y": Int64(2)}),
    "timestamp": Timestamp(1_700_000_000, 3),
    "decimal": Decimal128("1.10"),
    "min": MinKey(),
    "max": MaxKey(),
}


@async_test()
async def test_write_read_round_trip_of_every_bson_type(tmp_path):
    async with serving(tmp_path) as (_gw, client):
        w = await client.write(NODE, [{"op": "replace", "value": EVERY_TYPE}], actor="alice")
        assert w.version == 1 and not w.replayed
        assert w.clock and all(isinstance(n, int) for n in w.clock.values())
        assert w.diff == {"ops": [{"op": "replace", "value": EVERY_TYPE}]}
        assert w.update and w.request_id  # retries are on: a request id was generated

        snap = await client.read(NODE)
        assert snap.version == 1 and snap.clock == w.clock
        assert snap.document == EVERY_TYPE
        assert list(snap.document) == list(EVERY_TYPE)  # field order kept
        for key in ("int32", "double_whole", "int64", "int64_small"):
            assert type(snap.document[key]) is type(EVERY_TYPE[key]), key
        # The bytes written are the bytes read, and read_raw returns them undecoded.
        raw = await client.read_raw(NODE)
        assert raw == bson.encode(EVERY_TYPE, codec_options=DEFAULT_CODEC_OPTIONS) == snap.raw

        # A diff given as a whole document or as BSON bytes; sub-path and past-version reads.
        w2 = await client.write(NODE, {"ops": [set_("document.nested.n", Int64(9))]})
        w3 = await client.write(NODE, bson.encode({"ops": [set_(["array", 1], "deux")]}))
        assert (w2.version, w3.version) == (2, 3)
        assert w2.diff == {"ops": [set_(["document", "nested", "n"], Int64(9))]}
        at_path = await client.read(NODE, path="document.nested")
        assert at_path.value == {"deeper": None, "n": 9} and at_path.version == 3
        assert (await client.read(NODE, path=["array", 1])).value == "deux"
        past = await client.read(NODE, version=1)
        assert past.document == EVERY_TYPE and past.clock == w.clock and past.version == 1

        # A write that changes nothing keeps the version and reports the no-op diff.
        same = await client.write(NODE, [{"op": "remove", "path": "absent"}])
        assert same.version == 3 and same.diff == {} and same.update == b""

        # Raw CRDT updates: a client replica built from the state, edited, sent back.
        state = await client.read(NODE, include_state=True)
        mine = Replica("client-replica")
        mine.merge(state.state)
        # Compared decoded: the engine does not keep the key order of a code-with-scope's scope
        # through encode_state/merge (reported), so the bytes may differ there.
        assert bson.decode(mine.snapshot(), codec_options=DEFAULT_CODEC_OPTIONS) == bson.decode(
            state.raw, codec_options=DEFAULT_CODEC_OPTIONS
        )
        edit = mine.apply_diff(bson.encode({"ops": [set_("string", "from a replica")]}))
        w4 = await client.write_update(NODE, edit.update)
        assert w4.version == 4
        assert (await client.read(NODE, path="string")).value == "from a replica"


@async_test()
async def test_same_request_id_is_replayed_not_applied_twice(tmp_path):
    async with serving(tmp_path) as (_gw, client):
        await client.write(NODE, [set_("n", 0)])
        inc = [{"op": "inc", "path": "n", "by": 1}]
        first = await client.write(NODE, inc, request_id="req-1", metadata={"k": "v"})
        again = await client.write(NODE, inc, request_id="req-1", metadata={"k": "v"})
        assert (first.version, first.replayed) == (2, False)
        assert (again.version, again.replayed) == (2, True)
        assert again.clock == first.clock and again.diff == first.diff
        # Concurrent retries of one request (as after a deadline): one applies, the rest replay.
        results = await asyncio.gather(
            *(client.write(NODE, inc, request_id="req-2") for _ in range(8))
        )
        assert sorted(r.replayed for r in results) == [False] + [True] * 7
        assert {r.version for r in results} == {3}
        snap = await client.read(NODE)
        assert snap.document == {"n": 2} and snap.version == 3

    # Without retries no request id is generated; every write applies.
    async with serving(tmp_path / "b", client_kw={"retry": RetryPolicy.disabled()}) as (_, c2):
        r = await c2.write(NODE, [set_("x", 1)])
        assert r.request_id == "" and not r.replayed


@async_test()
async def test_version_mismatch_carries_the_current_version(tmp_path):
    async with serving(tmp_path) as (_gw, client):
        await client.write(NODE, [set_("n", 1)])
        await client.write(NODE, [set_("n", 2)])
        with pytest.raises(VersionMismatch) as info:
            await client.write(NODE, [set_("n", 3)], expected_version=1)
        err = info.value
        assert err.current_version == 2
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        assert err.reason == "VERSION_MISMATCH" and "expected version 1" in err.message
        ok = await client.write(NODE, [set_("n", 3)], expected_version=err.current_version)
        assert ok.version == 3


@async_test()
async def test_not_found_and_invalid_argument_are_typed_and_never_retried(tmp_path):
    # A backoff of a minute: had a non-retryable error been retried, the call would hang.
    slow = RetryPolicy(max_attempts=5, initial_backoff=60.0, max_backoff=60.0)
    async with serving(tmp_path, client_kw={"retry": slow}) as (_gw, client):
        with pytest.raises(NotFound) as nf:
            await asyncio.wait_for(client.read("missing/doc"), STEP)
        assert nf.value.code == grpc.StatusCode.NOT_FOUND and nf.value.reason == "NOT_FOUND"
        with pytest.raises(InvalidArgument) as bad:
            await asyncio.wait_for(client.write(NODE, [{"op": "bogus", "path": "x"}]), STEP)
        assert bad.value.reason == "MALFORMED_DIFF"
        assert isinstance(bad.value, GatewayError)
        # Nothing was created by the refused write.
        with pytest.raises(NotFound):
            await asyncio.wait_for(client.read(NODE), STEP)


def test_error_mapping_from_status_code_and_detail():
    lim = error_from_status(
        3, "too big", pb.ErrorDetail(reason="LIMIT_EXCEEDED", limit="max_ops", allowed=2, actual=3)
    )
    assert isinstance(lim, InvalidArgument)
    assert (lim.limit, lim.allowed, lim.actual) == ("max_ops", 2, 3)  # type: ignore[attr-defined]
    gone = error_from_status(
        grpc.StatusCode.UNAVAILABLE,
        "bye",
        pb.ErrorDetail(reason="SHUTTING_DOWN", resume_token=b"t"),
    )
    assert isinstance(gone, ShuttingDown) and gone.resume_token == b"t"
    # A reason that does not fit the code does not change the class.
    odd = error_from_status(grpc.StatusCode.NOT_FOUND, "?", pb.ErrorDetail(reason="SHUTTING_DOWN"))
    assert type(odd) is NotFound
    assert type(error_from_status(grpc.StatusCode.UNAVAILABLE, "down")) is Unavailable


@async_test()
async def test_unreachable_gateway_is_unavailable_and_writes_retry_across_a_restart(tmp_path):
    gw = Gateway(cfg(tmp_path))
    port = await gw.start()
    await gw.stop(grace=1.0)  # nothing listens on the port now
    target = f"127.0.0.1:{port}"
    async with GatewayClient(target, retry=RetryPolicy.disabled()) as client:
        with pytest.raises(Unavailable):
            await asyncio.wait_for(client.read(NODE), STEP)
    async with GatewayClient(target, retry=FAST) as client:
        # The write starts while the gateway is down and is retried until it is back.
        pending = asyncio.ensure_future(client.write(NODE, [set_("n", 1)]))
        gw = Gateway(cfg(tmp_path, port))
        await gw.start()
        try:
            w = await asyncio.wait_for(pending, STEP)
            assert w.version == 1
            assert (await client.read(NODE)).document == {"n": 1}
        finally:
            await gw.stop(grace=1.0)


# -- subscriptions -------------------------------------------------------------------------------


@async_test(timeout=90)
async def test_subscription_resumes_across_a_gateway_restart_without_gaps_or_duplicates(tmp_path):
    gw = Gateway(cfg(tmp_path))
    port = await gw.start()
    try:
        async with GatewayClient(f"127.0.0.1:{port}", retry=FAST) as client:

            async def write(n: int) -> None:
                w = await client.write(NODE, [set_("n", n)], metadata={"n": str(n)})
                assert w.version == n

            for n in range(1, 4):  # before subscribing
                await write(n)
            async with (
                client.subscribe(NODE, from_version=0) as sub,
                client.subscribe(NODE, progress=True, heartbeat_ms=50) as live,
            ):
                got = await changes_until(sub, NODE, 3)
                # `live` follows "from now": its first heartbeat shows the stream is established.
                assert isinstance(await nxt(live), Progress)
                for n in range(4, 7):  # while connected; only one is consumed before the stop
                    await write(n)
                got += await changes_until(sub, NODE, 4)

                gw = await restart(gw)
                for n in range(7, 10):  # after the restart, before the streams reconnect
                    await write(n)
                got += await changes_until(sub, NODE, 9)
                for n in range(10, 13):  # after they reconnected
                    await write(n)
                got += await changes_until(sub, NODE, 12)
                assert [c.version for c in got] == list(range(1, 13))
                assert [c.diff for c in got] == [{"ops": [set_(["n"], n)]} for n in range(1, 13)]
                assert [c.metadata for c in got] == [{"n": str(n)} for n in range(1, 13)]
                assert sub.reconnects >= 1 and sub.last_version == 12

                seen = await changes_until(live, NODE, 12)
                assert [c.version for c in seen] == list(range(4, 13))
                assert live.reconnects >= 1
    finally:
        await gw.stop(grace=1.0)


@async_test(timeout=90)
async def test_prefix_subscription_resumes_by_token_and_across_a_restart(tmp_path):
    gw = Gateway(cfg(tmp_path))
    port = await gw.start()
    try:
        async with GatewayClient(f"127.0.0.1:{port}", retry=FAST) as client:
            for node in ("p/a", "p/b", "q/x"):
                await client.write(node, [set_("v", 1)])

            async with client.subscribe(prefix="p/", send_snapshot=True) as sub:
                snaps = [await nxt(sub), await nxt(sub)]
                assert all(isinstance(s, SnapshotEvent) for s in snaps)
                assert sorted((s.node_id, s.version, s.document["v"]) for s in snaps) == [
                    ("p/a", 1, 1),
                    ("p/b", 1, 1),
                ]
                for node in ("p/a", "q/x", "p/b"):
                    await client.write(node, [set_("v", 2)])
                first = await changes_until(sub, "p/b", 2)
                assert [(c.node_id, c.version) for c in first] == [("p/a", 2), ("p/b", 2)]
                token = first[-1].resume_token
                assert sub.resume_token == token

            # Missed while not subscribed; resuming from the token delivers exactly those.
            for node in ("p/a", "q/x", "p/b"):
                await client.write(node, [set_("v", 3)])
            async with client.subscribe(prefix="p/", resume_token=token) as sub:
                got = await changes_until(sub, "p/b", 3)
                gw = await restart(gw)
                for node in ("p/a", "q/x", "p/b"):
                    await client.write(node, [set_("v", 4)])
                got += await changes_until(sub, "p/b", 4)
                await client.write("p/z", [set_("v", 1)])  # sentinel: nothing in between
                got += await changes_until(sub, "p/z", 1)
                assert [(c.node_id, c.version, c.diff) for c in got] == [
                    ("p/a", 3, {"ops": [set_(["v"], 3)]}),
                    ("p/b", 3, {"ops": [set_(["v"], 3)]}),
                    ("p/a", 4, {"ops": [set_(["v"], 4)]}),
                    ("p/b", 4, {"ops": [set_(["v"], 4)]}),
                    ("p/z", 1, {"ops": [set_(["v"], 1)]}),
                ]
                assert sub.reconnects >= 1
    finally:
        await gw.stop(grace=1.0)


@async_test()
async def test_shutdown_status_is_typed_with_a_resume_token_when_not_reconnecting(tmp_path):
    gw = Gateway(cfg(tmp_path))
    port = await gw.start()
    try:
        async with GatewayClient(f"127.0.0.1:{port}", retry=RetryPolicy.disabled()) as client:
            await client.write(NODE, [set_("n", 1)])
            async with client.subscribe(NODE, from_version=0, include_update=True) as sub:
                ch = await nxt(sub)
                assert isinstance(ch, Change) and ch.version == 1 and ch.update
                assert ch.actor == "anonymous" and ch.timestamp.tzinfo is not None
                await gw.stop(grace=1.0)
                with pytest.raises(ShuttingDown) as info:
                    await nxt(sub)
                assert info.value.resume_token == ch.resume_token
                assert info.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        await gw.stop(grace=1.0)


@async_test()
async def test_closing_a_subscription_waiting_in_another_task_ends_it(tmp_path):
    async with serving(tmp_path) as (gw, client):
        await client.write(NODE, [set_("n", 1)])
        sub = client.subscribe(NODE, from_version=0)
        assert (await nxt(sub)).version == 1  # the stream is established
        waiting = asyncio.ensure_future(sub.__anext__())
        await asyncio.sleep(0)  # let the task start waiting on the stream
        await sub.aclose()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, STEP)
        with pytest.raises(StopAsyncIteration):
            await nxt(sub)
        assert gw.service is not None
        await client.write(NODE, [set_("n", 2)])  # the gateway is fine without the stream


# -- sessions ------------------------------------------------------------------------------------


@async_test()
async def test_session_join_ack_and_other_members_changes_and_presence(tmp_path):
    async with serving(tmp_path) as (_gw, client):
        async with client.session() as alice, client.session() as bob:
            ja = await alice.join(NODE, actor="alice", presence={"name": "Alice"})
            assert ja.version == 0 and ja.document == {} and ja.members == []
            assert ja.member_id.startswith("alice#") and alice.member_ids[NODE] == ja.member_id
            ack = await alice.send_diff(NODE, [set_("title", "Hi")])
            assert ack.version == 1 and ack.seq > 0 and ack.update
            assert ack.diff == {"ops": [set_(["title"], "Hi")]}

            jb = await bob.join(NODE, actor="bob", presence={"name": "Bob"})
            assert jb.version == 1 and jb.document == {"title": "Hi"}
            assert [(m.actor, m.state) for m in jb.members] == [("alice", {"name": "Alice"})]
            joined = await nxt(alice)
            assert isinstance(joined, MemberEvent) and joined.joined and joined.actor == "bob"
            hello = await nxt(alice)
            assert isinstance(hello, PresenceUpdate) and hello.state == {"name": "Bob"}

            # bob edits with a replica of his own (raw CRDT update), alice gets the change.
            replica = Replica("bob-replica")
            replica.merge(jb.update)
            edit = replica.apply_diff(
                bson.encode({"ops": [{"op": "splice", "path": "title", "index": 2, "insert": "!"}]})
            )
            ack_b = await bob.send_update(NODE, edit.update)
            assert ack_b.version == 2
            change = await nxt(alice)
            assert isinstance(change, Change)
            assert (change.version, change.actor) == (2, "bob") and change.update
            assert change.diff["ops"][0]["insert"] == "!"

            # Pipelined diffs: acks in order; a plain write reaches both members.
            futures = [await alice.post_diff(NODE, [set_("n", i)]) for i in range(3)]
            acks = [await asyncio.wait_for(f, STEP) for f in futures]
            assert [a.version for a in acks] == [3, 4, 5]
            w = await client.write(NODE, [set_("by", "writer")], actor="writer")
            seen_by_alice = await nxt(alice)
            assert isinstance(seen_by_alice, Change) and seen_by_alice.version == w.version
            seen_by_bob = await changes_until(bob, NODE, w.version)
            # bob never receives his own change (2); he gets alice's and the writer's.
            assert [c.version for c in seen_by_bob] == [3, 4, 5, 6]

            # A failed message raises its typed error; the session continues.
            with pytest.raises(InvalidArgument):
                await alice.send_diff("not/joined", [set_("x", 1)])
            with pytest.raises(InvalidArgument):
                await alice.send_diff(NODE, [{"op": "bogus"}])

            await alice.set_presence(NODE, {"cursor": 3})
            cursor = await nxt(bob)
            assert isinstance(cursor, PresenceUpdate) and cursor.state == {"cursor": 3}
            assert cursor.member_id == ja.member_id

            await bob.leave(NODE)
            gone = await nxt(alice)
            assert isinstance(gone, PresenceUpdate) and gone.removed and gone.actor == "bob"
            left = await nxt(alice)
            assert isinstance(left, MemberEvent) and not left.joined and left.actor == "bob"

        snap = await client.read(NODE)
        assert snap.document == {"title": "Hi!", "n": 2, "by": "writer"} and snap.version == 6


# -- large documents -----------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [None, "gzip"])
@async_test(timeout=180)
async def test_20_mb_document_write_and_read(tmp_path, compression):
    big = {
        "blob": os.urandom(12 * MiB),  # incompressible
        "text": "lorem ipsum " * (8 * MiB // 12),  # very compressible
        "n": 1,
    }
    assert len(bson.encode(big)) > 20 * MiB
    server = "gzip" if compression else "none"
    client_kw = {"retry": FAST, "compression": compression}
    async with serving(tmp_path, client_kw=client_kw, compression=server) as (_gw, client):
        w = await client.write("big", [{"op": "replace", "value": big}])
        assert w.version == 1
        raw = await client.read_raw("big")
        assert raw == bson.encode(big)
        snap = await client.read("big")
        assert snap.document == big and snap.version == 1
        w2 = await client.write("big", [set_("n", 2)])
        assert w2.version == 2 and len(w2.update) < MiB
        assert (await client.read("big", path="n")).value == 2


@async_test()
async def test_session_ends_with_shutting_down_and_client_close_ends_open_streams(tmp_path):
    gw = Gateway(cfg(tmp_path))
    port = await gw.start()
    try:
        async with GatewayClient(f"127.0.0.1:{port}", retry=FAST) as client:
            async with client.session() as s:
                await s.join(NODE, actor="alice")
                await s.send_diff(NODE, [set_("n", 1)])
                await gw.stop(grace=1.0)
                with pytest.raises(ShuttingDown):
                    await nxt(s)
                with pytest.raises(SessionClosed):
                    await s.send_diff(NODE, [set_("n", 2)])

            gw = Gateway(cfg(tmp_path, port))
            await gw.start()
            sub = client.subscribe(NODE, from_version=0)
            assert (await nxt(sub)).version == 1
            session = client.session()
            await session.open()
            assert (await session.join(NODE)).version == 1
        # Closing the client closed both streams.
        with pytest.raises(StopAsyncIteration):
            await nxt(sub)
        with pytest.raises(StopAsyncIteration):
            await nxt(session)
    finally:
        await gw.stop(grace=1.0)
