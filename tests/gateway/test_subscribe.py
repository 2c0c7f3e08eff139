"""SubscribeChanges: ordered, gap-free, resumable change streams from a real gateway."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import bson
import grpc
import pytest
from bson.binary import Binary

from virtualdom.engine import Replica
from virtualdom.server.app import Gateway
from virtualdom.v1 import gateway_pb2 as pb

from ._support import (
    STEP,
    async_test,
    cancel,
    changes,
    config,
    detail_of,
    gateway,
    inc,
    next_message,
    read,
    set_,
    splice,
    stub_for,
    versions,
    write,
)

NODE = b"docs/a"
ZERO = (0).to_bytes(8, "big")


async def registered(call: Any) -> None:
    """Wait for a from-now subscription's first heartbeat: it is following the feed."""
    ev = await next_message(call)
    assert ev.HasField("progress") and not ev.changes, ev


def subscribe(stub: Any, **fields: Any) -> Any:
    return stub.SubscribeChanges(pb.SubscribeRequest(**fields))


@async_test()
async def test_node_subscription_from_now_gets_only_later_changes(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        await write(stub, NODE, set_("n", 0))
        await write(stub, b"docs/other", set_("n", 0))
        call = subscribe(stub, node_id=NODE, heartbeat_ms=50)
        await registered(call)
        for _ in range(3):
            await write(stub, NODE, inc("n", 1))
            await write(stub, b"docs/other", inc("n", 1))
        got = await changes(call, 3)
        assert versions(got) == [2, 3, 4]
        assert {c.node_id for c in got} == {NODE}
        await cancel(call)


async def _writer(stub: Any, node: bytes, count: int, marks: dict[int, asyncio.Event]) -> None:
    for i in range(1, count + 1):
        r = await write(stub, node, set_("i", i) if i == 1 else inc("i", 1))
        assert r.new_version == i
        if i in marks:
            marks[i].set()


@async_test()
async def test_from_version_replays_then_goes_live_without_gap_or_duplicate(tmp_path):
    async with gateway(tmp_path, batch_events=7) as (gw, stub):
        marks = {20: asyncio.Event()}
        async with stub_for(gw) as writer_stub:
            writer = asyncio.create_task(_writer(writer_stub, NODE, 80, marks))
            await asyncio.wait_for(marks[20].wait(), STEP)
            # Subscribed while the writer keeps going: replay 11.. then live, seamlessly.
            call = subscribe(stub, node_id=NODE, from_version=10)
            got = await changes(call, 70)
            await asyncio.wait_for(writer, STEP)
        assert versions(got) == list(range(11, 81))
        for c in got:
            assert bson.decode(c.diff_bson) == {
                "ops": [{"op": "set", "path": ["i"], "value": c.version}]
            }
        await cancel(call)


@async_test()
async def test_send_snapshot_then_every_later_change(tmp_path):
    async with gateway(tmp_path) as (gw, stub):
        marks = {15: asyncio.Event()}
        async with stub_for(gw) as writer_stub:
            writer = asyncio.create_task(_writer(writer_stub, NODE, 60, marks))
            await asyncio.wait_for(marks[15].wait(), STEP)
            call = subscribe(stub, node_id=NODE, send_snapshot=True)
            first = await next_message(call)
            (snap,) = first.snapshots
            assert not first.changes
            assert snap.node_id == NODE and 15 <= snap.version <= 60
            got = await changes(call, 60 - snap.version)
            await asyncio.wait_for(writer, STEP)
        assert versions(got) == list(range(snap.version + 1, 61))
        # The snapshot is the document at its version, with that version's clock.
        past = await read(stub, NODE, version=snap.version)
        assert snap.snapshot_bson == past.snapshot_bson
        assert snap.vector_clock == past.vector_clock
        assert bson.decode(snap.snapshot_bson) == {"i": snap.version}
        assert len(snap.resume_token) == 17
        await cancel(call)


@async_test()
async def test_prefix_subscription_resumes_from_the_middle_with_exactly_the_rest(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        expected: list[tuple[bytes, int]] = []
        for i in range(12):
            node = [b"p/a", b"p/b", b"q/c"][i % 3]
            r = await write(stub, node, set_("i", i))
            if node.startswith(b"p/"):
                expected.append((node, r.new_version))
        # From the start of the log (token of position 0).
        call = subscribe(stub, prefix=b"p/", resume_token=ZERO)
        everything = await changes(call, len(expected))
        assert [(c.node_id, c.version) for c in everything] == expected
        tokens = [c.resume_token for c in everything]
        assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
        await cancel(call)

        # Resume after the 4th event: exactly the rest, then live changes.
        call = subscribe(stub, prefix=b"p/", resume_token=everything[3].resume_token)
        rest = await changes(call, len(expected) - 4)
        assert [(c.node_id, c.version, c.resume_token) for c in rest] == [
            (c.node_id, c.version, c.resume_token) for c in everything[4:]
        ]
        await write(stub, b"q/c", set_("live", True))
        live = await write(stub, b"p/new", set_("live", True))
        (c,) = await changes(call, 1)
        assert (c.node_id, c.version) == (b"p/new", live.new_version)
        await cancel(call)

        # Resuming from the last token gives nothing old: only what comes next.
        call = subscribe(stub, prefix=b"p/", resume_token=c.resume_token, heartbeat_ms=50)
        await registered(call)
        await write(stub, b"p/a", set_("again", 1))
        (d,) = await changes(call, 1)
        assert (d.node_id, d.version) == (b"p/a", 5)
        await cancel(call)

        # An empty prefix follows every document.
        call = subscribe(stub, prefix=b"", resume_token=ZERO)
        assert len(await changes(call, 15)) == 15
        await cancel(call)


@async_test()
async def test_prefix_subscription_with_snapshots_then_changes(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        for node in (b"p/a", b"p/b", b"q/c"):
            await write(stub, node, set_("v", 1))
        await write(stub, b"p/a", set_("v", 2))
        call = subscribe(stub, prefix=b"p/", send_snapshot=True)
        first = await next_message(call)
        snaps = {s.node_id: s for s in first.snapshots}
        assert set(snaps) == {b"p/a", b"p/b"}
        assert snaps[b"p/a"].version == 2 and snaps[b"p/b"].version == 1
        assert bson.decode(snaps[b"p/a"].snapshot_bson) == {"v": 2}
        await write(stub, b"p/b", set_("v", 2))
        await write(stub, b"q/c", set_("v", 2))
        await write(stub, b"p/a", set_("v", 3))
        got = await changes(call, 2)
        assert [(c.node_id, c.version) for c in got] == [(b"p/b", 2), (b"p/a", 3)]
        await cancel(call)


@async_test()
async def test_change_events_carry_every_field(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        with_update = subscribe(stub, node_id=NODE, from_version=0, include_update=True)
        without = subscribe(stub, node_id=NODE, from_version=0)
        t0 = int(time.time() * 1e6)
        w1 = await write(
            stub, NODE, set_("text", "hi"), actor="alice", metadata={"k": "v", "n": "1"}
        )
        w2 = await write(stub, NODE, splice("text", 2, 0, "!"), actor="bob")
        t1 = int(time.time() * 1e6)
        got = await changes(with_update, 2)
        plain = await changes(without, 2)
        for c, p, w, actor, meta in [
            (got[0], plain[0], w1, "alice", {"k": "v", "n": "1"}),
            (got[1], plain[1], w2, "bob", {}),
        ]:
            assert c.node_id == NODE
            assert c.version == w.new_version
            assert c.vector_clock == w.vector_clock
            assert c.diff_bson == w.effective_diff_bson
            assert c.update == w.update and c.update
            assert c.actor == actor
            assert t0 <= c.timestamp_us <= t1
            assert dict(c.metadata) == meta
            assert len(c.resume_token) == 17
            # The same change without the update.
            assert p.update == b""
            p.update = c.update
            assert p == c
        assert got[0].resume_token < got[1].resume_token
        replica = Replica("follower")
        for c in got:
            replica.merge(c.update)
        assert replica.snapshot() == (await read(stub, NODE)).snapshot_bson
        await cancel(with_update)
        await cancel(without)


@async_test()
async def test_progress_heartbeats_when_idle(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        await write(stub, NODE, set_("x", 1))
        call = subscribe(stub, node_id=NODE, heartbeat_ms=100)
        beats = [await next_message(call) for _ in range(3)]
        for b in beats:
            assert b.HasField("progress") and not b.changes and not b.snapshots
            assert len(b.progress.resume_token) == 17
        stamps = [b.progress.timestamp_us for b in beats]
        assert stamps == sorted(stamps) and abs(stamps[0] / 1e6 - time.time()) < 60
        # After a change, a heartbeat's token is that change's position or later.
        await write(stub, NODE, set_("x", 2))
        (c,) = await changes(call, 1)
        beat = await next_message(call)
        assert beat.HasField("progress") and beat.progress.resume_token >= c.resume_token
        await cancel(call)


@async_test()
async def test_changes_from_write_diff_and_sessions_both_appear(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        await write(stub, NODE, set_("log", []))
        call = subscribe(stub, node_id=NODE, from_version=1)
        requests: asyncio.Queue[pb.SessionMessage | None] = asyncio.Queue()

        async def messages() -> AsyncIterator[pb.SessionMessage]:
            while (m := await requests.get()) is not None:
                yield m

        session = stub.CollaborativeSession(messages())
        requests.put_nowait(pb.SessionMessage(seq=1, join=pb.Join(node_id=NODE, actor="carol")))
        assert (await next_message(session)).joined.version == 1
        ins = {"op": "insert", "path": "log", "index": 0, "values": ["from session"]}
        requests.put_nowait(
            pb.SessionMessage(
                seq=2, diff=pb.SessionDiff(node_id=NODE, diff_bson=bson.encode({"ops": [ins]}))
            )
        )
        assert (await next_message(session)).ack.version == 2
        await write(stub, NODE, {"op": "insert", "path": "log", "index": 1, "values": ["rpc"]})
        got = await changes(call, 2)
        assert [(c.version, c.actor) for c in got] == [(2, "carol"), (3, "anonymous")]
        # The session member got the WriteDiff change, not its own.
        forwarded = await next_message(session)
        assert forwarded.change.version == 3 and forwarded.change.actor == "anonymous"
        requests.put_nowait(None)
        assert await asyncio.wait_for(session.read(), STEP) is grpc.aio.EOF
        await cancel(call)


@async_test()
async def test_writes_while_a_subscriber_is_behind_arrive_batched(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        await write(stub, NODE, set_("n", 0))
        call = subscribe(stub, node_id=NODE, heartbeat_ms=50)
        await registered(call)
        # 200 concurrent writes, not read meanwhile.
        await asyncio.gather(*(write(stub, NODE, inc("n", 1)) for _ in range(200)))
        sizes: list[int] = []
        got: list[pb.Change] = []
        while len(got) < 200:
            ev = await next_message(call)
            if ev.changes:
                sizes.append(len(ev.changes))
                got.extend(ev.changes)
        assert versions(got) == list(range(2, 202))
        assert max(sizes) > 1, sizes
        await cancel(call)


def _blob(i: int) -> dict[str, Any]:
    # Incompressible (should the gateway offer gzip), so the stream's flow-control window fills.
    return set_("blob", Binary(os.urandom(64 * 1024) + i.to_bytes(4, "big")))


@async_test(timeout=120)
async def test_slow_subscriber_does_not_stall_a_fast_one_and_catches_up_from_the_store(tmp_path):
    n = 200
    async with gateway(tmp_path, feed_capacity=8) as (gw, stub):
        await write(stub, NODE, set_("blob", b""))
        async with stub_for(gw) as slow_stub, stub_for(gw) as fast_stub:
            slow = subscribe(slow_stub, node_id=NODE, heartbeat_ms=60_000, from_version=1)
            fast = subscribe(fast_stub, node_id=NODE, from_version=1)
            fast_got: list[pb.Change] = []

            async def read_fast() -> None:
                fast_got.extend(await changes(fast, n, timeout=30))

            reader = asyncio.create_task(read_fast())
            for i in range(n):
                await write(stub, NODE, _blob(i))
            await asyncio.wait_for(reader, 60)
            assert versions(fast_got) == list(range(2, n + 2))
            # The in-memory window holds only the last few changes: the slow subscriber, not
            # read at all so far, must now catch up from the store.
            middle = int.from_bytes(fast_got[n // 2].resume_token[-8:], "big")
            assert gw.feed.window_start() > middle
            slow_got = await changes(slow, n, timeout=30)
            assert versions(slow_got) == list(range(2, n + 2))
            assert [c.diff_bson for c in slow_got] == [c.diff_bson for c in fast_got]
            await cancel(slow)
            await cancel(fast)


@async_test()
async def test_replay_from_compacted_history_is_out_of_range_with_resume_info(tmp_path):
    async with gateway(tmp_path, retain_versions=3, snapshot_every=10) as (gw, stub):
        for i in range(25):
            await write(stub, NODE, set_("i", i))
            await write(stub, b"docs/b", set_("i", i))
        oldest = await gw.store.oldest_version(NODE)
        assert oldest == 17  # snapshot at 20 pruned versions < 18
        call = subscribe(stub, node_id=NODE, from_version=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(call.read(), STEP)
        err = info.value
        assert err.code() == grpc.StatusCode.OUT_OF_RANGE
        assert str(oldest) in (err.details() or "")
        detail = detail_of(err)
        assert detail.reason == "HISTORY_COMPACTED" and detail.version == oldest
        # From the oldest resumable version on, it works.
        call = subscribe(stub, node_id=NODE, from_version=oldest)
        assert versions(await changes(call, 25 - oldest)) == list(range(oldest + 1, 26))
        await cancel(call)

        # A prefix subscription from an old position gets the position to resume from.
        call = subscribe(stub, prefix=b"docs/", resume_token=ZERO)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(call.read(), STEP)
        assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
        detail = detail_of(info.value)
        assert detail.reason == "HISTORY_COMPACTED" and len(detail.resume_token) == 17
        # Resyncing: snapshots, then the rest of the log from that token.
        token = int.from_bytes(detail.resume_token[-8:], "big")
        retained = await gw.store.changes_after(token, b"docs/", 1000)
        assert retained
        call = subscribe(stub, prefix=b"docs/", resume_token=detail.resume_token)
        rest = await changes(call, len(retained))
        assert [(c.node_id, c.version) for c in rest] == [(r.node_id, r.version) for r in retained]
        assert rest[0].resume_token > detail.resume_token
        await cancel(call)


@async_test(timeout=120)
async def test_subscriber_falling_behind_compaction_gets_out_of_range(tmp_path):
    cfg = {"feed_capacity": 4, "snapshot_every": 5, "retain_versions": 1}
    async with gateway(tmp_path, **cfg) as (gw, stub):
        await write(stub, NODE, set_("blob", b""))
        async with stub_for(gw) as slow_stub:
            slow = subscribe(slow_stub, node_id=NODE, from_version=1, heartbeat_ms=60_000)
            for i in range(200):
                await write(stub, NODE, _blob(i))
            got: list[pb.Change] = []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                while True:
                    ev = await next_message(slow, timeout=30)
                    got.extend(ev.changes)
        err = info.value
        assert err.code() == grpc.StatusCode.OUT_OF_RANGE, err.details()
        detail = detail_of(err)
        assert detail.reason == "HISTORY_COMPACTED"
        assert len(detail.resume_token) == 17
        # What arrived before the error is a gap-free prefix.
        assert versions(got) == list(range(2, 2 + len(got)))
        assert len(got) < 200


@async_test(timeout=90)
async def test_concurrent_writers_converge_and_subscribers_see_the_same_sequence(tmp_path):
    async with gateway(tmp_path) as (gw, stub):
        w1 = await write(stub, NODE, set_("text", ""), set_("n", 0), set_("items", []))
        subs = [
            subscribe(stub, node_id=NODE, from_version=1, include_update=True) for _ in range(2)
        ]

        async def writer(k: int) -> None:
            async with stub_for(gw) as s:
                for i in range(25):
                    ops = [
                        splice("text", 0, 0, f"{k}.{i};"),
                        inc("n", 1),
                        {"op": "insert", "path": "items", "index": 0, "values": [k * 100 + i]},
                    ]
                    await write(s, NODE, *ops, actor=f"w{k}")

        await asyncio.gather(*(writer(k) for k in range(4)))
        seqs = [await changes(s, 100) for s in subs]
        assert versions(seqs[0]) == list(range(2, 102))
        assert seqs[0] == seqs[1]
        final = await read(stub, NODE, include_state=True)
        body = bson.decode(final.snapshot_bson)
        assert body["n"] == 100 and len(body["items"]) == 100
        assert sorted(body["text"].split(";")[:-1]) == sorted(
            f"{k}.{i}" for k in range(4) for i in range(25)
        )
        # A follower replaying the streamed updates reaches the same bytes, as does one
        # starting from the full state.
        follower = Replica("follower")
        follower.merge(w1.update)
        for c in seqs[0]:
            assert follower.merge(c.update)
        assert follower.snapshot() == final.snapshot_bson
        fresh = Replica("fresh")
        fresh.merge(final.state)
        assert fresh.snapshot() == final.snapshot_bson
        for s in subs:
            await cancel(s)


@async_test()
async def test_max_subscribers_is_resource_exhausted(tmp_path):
    async with gateway(tmp_path, max_subscribers=2) as (gw, stub):
        await write(stub, NODE, set_("x", 1))
        a = subscribe(stub, node_id=NODE, heartbeat_ms=50)
        b = subscribe(stub, prefix=b"", heartbeat_ms=50)
        await registered(a)
        await registered(b)
        c = subscribe(stub, node_id=NODE)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await asyncio.wait_for(c.read(), STEP)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_subscribers=2" in (info.value.details() or "")
        assert detail_of(info.value).reason == "TOO_MANY"
        assert gw.service.subscribers == 2
        # The two admitted ones are unaffected.
        await write(stub, NODE, set_("x", 2))
        assert versions(await changes(a, 1)) == [2]
        assert versions(await changes(b, 1)) == [2]
        await cancel(a)
        await cancel(b)


@async_test()
async def test_graceful_stop_ends_streams_unavailable_with_a_resume_token(tmp_path):
    gw = Gateway(config(tmp_path))
    await gw.start()
    async with stub_for(gw) as stub:
        await write(stub, b"p/x", set_("v", 1))
        prefix = subscribe(stub, prefix=b"p/", resume_token=ZERO)
        node = subscribe(stub, node_id=b"p/x", from_version=0)
        (first,) = await changes(prefix, 1)
        assert versions(await changes(node, 1)) == [1]
        stopping = asyncio.create_task(gw.stop(grace=5))
        errors = [await _error_of(call) for call in (prefix, node)]
        for err in errors:
            assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
            assert "shutting down" in (err.details() or "")
            detail = detail_of(err)
            assert detail.reason == "SHUTTING_DOWN"
            assert len(detail.resume_token) == 17
        detail = detail_of(errors[0])
        assert detail.resume_token == first.resume_token
        await asyncio.wait_for(stopping, STEP)

    # A restarted gateway resumes the stream from the token: nothing old, nothing missed.
    gw2 = Gateway(config(tmp_path))
    await gw2.start()
    try:
        async with stub_for(gw2) as stub:
            call = subscribe(stub, prefix=b"p/", resume_token=detail.resume_token)
            await write(stub, b"p/x", set_("v", 2))
            (c,) = await changes(call, 1)
            assert c.version == 2 and c.resume_token > detail.resume_token
            await cancel(call)
    finally:
        await gw2.stop(grace=1)


async def _error_of(call: Any) -> grpc.aio.AioRpcError:
    """The error a stream ends with (after any remaining heartbeats, which carry no changes)."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while True:
            ev = await next_message(call)
            assert not ev.changes and not ev.snapshots
    return info.value


@async_test(timeout=120)
async def test_slow_subscriber_catching_up_past_a_document_sharing_its_id_prefix(tmp_path):
    # The store query for a node follower matches its id as a prefix: pages full of
    # "doc/child" changes must not make it skip "doc"'s own later changes (it did: version
    # 102 below was never delivered).
    async with gateway(tmp_path, feed_capacity=4, batch_events=2) as (gw, stub):
        await write(stub, b"doc", set_("x", 0))
        async with stub_for(gw) as slow_stub:
            slow = subscribe(slow_stub, node_id=b"doc", from_version=1, heartbeat_ms=60_000)
            for i in range(100):
                await write(stub, b"doc", _blob(i))  # fills the slow stream's window
            for i in range(20):
                await write(stub, b"doc/child", set_("x", i))
            marker = await write(stub, b"doc", set_("marker", 1))
            for i in range(20):
                await write(stub, b"doc/child", set_("x", i))
            last = await write(stub, b"doc", set_("marker", 2))
            got = await changes(slow, last.new_version - 1, timeout=30)
            assert versions(got) == list(range(2, last.new_version + 1))
            assert marker.new_version in versions(got)
            await cancel(slow)


@async_test(timeout=120)
async def test_batches_of_big_changes_are_split_under_the_message_cap(tmp_path):
    # 1 MiB changes and an 8 MiB cap: a catch-up batch of 10 must not be one 10 MiB message
    # (it was: "Sent message larger than max", on every retry).
    async with gateway(tmp_path, max_message_bytes=8 * 1024 * 1024) as (_gw, stub):
        for i in range(10):
            await write(stub, NODE, set_("blob", Binary(os.urandom(1024 * 1024) + bytes([i]))))
        call = subscribe(stub, node_id=NODE, from_version=0)
        got = await changes(call, 10, timeout=30)
        assert versions(got) == list(range(1, 11))
        await cancel(call)
        # With updates, each change (diff + update, 2 MiB) still fits: all ten arrive.
        call = subscribe(stub, node_id=NODE, from_version=0, include_update=True)
        got = await changes(call, 10, timeout=30)
        assert versions(got) == list(range(1, 11)) and all(c.update for c in got)
        await cancel(call)


@async_test()
async def test_send_snapshot_with_from_version_does_not_repeat_what_the_snapshot_holds(tmp_path):
    # It replayed versions 3..5 after a snapshot at version 5 (a client applying changes to
    # the snapshot applied them twice).
    async with gateway(tmp_path) as (_gw, stub):
        for i in range(5):
            await write(stub, NODE, set_("x", i))
        call = subscribe(stub, node_id=NODE, from_version=2, send_snapshot=True, heartbeat_ms=50)
        (snap,) = (await next_message(call)).snapshots
        assert snap.version == 5
        # Nothing but heartbeats until the next change, which is version 6.
        ev = await next_message(call)
        assert ev.HasField("progress") and not ev.changes, ev
        await write(stub, NODE, set_("x", 5))
        assert versions(await changes(call, 1)) == [6]
        await cancel(call)
