"""WriteDiff and ReadSnapshot against a real in-process gateway over gRPC."""

from __future__ import annotations

import asyncio

import bson
import grpc
from bson.binary import Binary

from virtualdom.engine import Limits, Replica
from virtualdom.v1 import gateway_pb2 as pb

from ._support import (
    async_test,
    changes,
    detail_of,
    diff,
    doc,
    gateway,
    inc,
    read,
    rpc_error,
    set_,
    splice,
    write,
)

NODE = b"projects/42/spec"


@async_test()
async def test_write_creates_document_at_version_1_with_clock_diff_and_update(tmp_path):
    async with gateway(tmp_path) as (gw, stub):
        r1 = await write(stub, NODE, set_("title", "Draft"), set_("items", [1, 2]))
        assert r1.success and not r1.replayed
        assert r1.new_version == 1
        # The gateway's own actor, assigned by the store (never a shared default).
        assert gw.config.actor.startswith("gw-")
        assert dict(r1.vector_clock.counters)[gw.config.actor] > 0
        effective = bson.decode(r1.effective_diff_bson)
        assert effective == {
            "ops": [
                {"op": "set", "path": ["title"], "value": "Draft"},
                {"op": "set", "path": ["items"], "value": [1, 2]},
            ]
        }
        # The update rebuilds the document in a fresh replica.
        mirror = Replica("mirror")
        mirror.merge(r1.update)
        snap = await read(stub, NODE)
        assert mirror.snapshot() == snap.snapshot_bson
        assert snap.version == 1
        assert snap.vector_clock == r1.vector_clock
        assert bson.decode(snap.snapshot_bson) == {"title": "Draft", "items": [1, 2]}

        r2 = await write(stub, NODE, splice("title", 5, 0, " 2"))
        assert r2.new_version == 2
        c1, c2 = dict(r1.vector_clock.counters), dict(r2.vector_clock.counters)
        assert all(c2.get(a, 0) >= n for a, n in c1.items()) and c2 != c1
        assert bson.decode(r2.effective_diff_bson) == {
            "ops": [{"op": "splice", "path": ["title"], "index": 5, "delete": 0, "insert": " 2"}]
        }
        mirror.merge(r2.update)
        assert mirror.snapshot() == (await read(stub, NODE)).snapshot_bson


@async_test()
async def test_write_that_changes_nothing_keeps_the_version(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        r1 = await write(stub, NODE, set_("title", "same"))
        r2 = await write(stub, NODE, {"op": "remove", "path": "absent"}, splice("title", 0))
        assert r2.success and r2.new_version == 1
        assert r2.effective_diff_bson == b"" and r2.update == b""
        assert r2.vector_clock == r1.vector_clock
        assert (await read(stub, NODE)).version == 1


@async_test()
async def test_read_latest_past_version_and_sub_path(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        w1 = await write(stub, NODE, set_("title", "a"), set_("items", [1, 2]))
        w2 = await write(stub, NODE, set_("title", "b"))
        w3 = await write(stub, NODE, {"op": "insert", "path": "items", "index": 2, "values": [3]})

        latest = await read(stub, NODE)
        assert latest.version == 3 and latest.vector_clock == w3.vector_clock
        assert bson.decode(latest.snapshot_bson) == {"title": "b", "items": [1, 2, 3]}

        for v, w, expected in [
            (1, w1, {"title": "a", "items": [1, 2]}),
            (2, w2, {"title": "b", "items": [1, 2]}),
            (3, w3, {"title": "b", "items": [1, 2, 3]}),
        ]:
            past = await read(stub, NODE, version=v)
            assert past.version == v
            assert past.vector_clock == w.vector_clock
            assert bson.decode(past.snapshot_bson) == expected
        assert bson.decode((await read(stub, NODE, version=0)).snapshot_bson) == {}

        # A sub-path snapshot is {"value": ...}, whatever the value's type, at any version.
        assert await doc(stub, NODE, path="items.2") == {"value": 3}
        assert await doc(stub, NODE, path="items") == {"value": [1, 2, 3]}
        assert await doc(stub, NODE, path="title", version=1) == {"value": "a"}
        sub = await read(stub, NODE, path="items.1", version=2)
        assert sub.version == 2 and bson.decode(sub.snapshot_bson) == {"value": 2}

        # include_state: the full CRDT state at the latest version (none for a past one).
        with_state = await read(stub, NODE, include_state=True)
        client = Replica("client")
        client.merge(with_state.state)
        assert client.snapshot() == latest.snapshot_bson
        assert (await read(stub, NODE, include_state=True, version=1)).state == b""


@async_test()
async def test_unknown_node_is_not_found(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        await write(stub, b"exists", set_("x", 1))
        err = await rpc_error(
            stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=b"missing")),
            grpc.StatusCode.NOT_FOUND,
            "missing",
        )
        assert detail_of(err).reason == "NOT_FOUND"


@async_test()
async def test_request_id_field_makes_retries_idempotent(tmp_path):
    async with gateway(tmp_path) as (gw, stub):
        await write(stub, NODE, set_("n", 0))
        sub = stub.SubscribeChanges(pb.SubscribeRequest(node_id=NODE, from_version=1))
        req = pb.WriteDiffRequest(node_id=NODE, diff_bson=diff(inc("n", 1)), request_id="req-1")
        first = await stub.WriteDiff(req)
        assert first.new_version == 2 and not first.replayed
        # Retries, sequential and concurrent, return the original result and apply nothing.
        again = await stub.WriteDiff(req)
        more = await asyncio.gather(*(stub.WriteDiff(req) for _ in range(5)))
        for r in [again, *more]:
            assert r.replayed and r.success
            assert r.new_version == first.new_version
            assert r.vector_clock == first.vector_clock
            assert r.effective_diff_bson == first.effective_diff_bson
            assert r.update == first.update
        assert await doc(stub, NODE) == {"n": 1}
        assert (await read(stub, NODE)).version == 2
        # The next different write is version 3: the subscriber saw 2 once, then 3.
        await write(stub, NODE, inc("n", 1))
        assert [c.version for c in await changes(sub, 2)] == [2, 3]
        sub.cancel()

        # Identical first attempts racing each other (they may share one commit batch).
        race = pb.WriteDiffRequest(node_id=NODE, diff_bson=diff(inc("n", 1)), request_id="race")
        raced = await asyncio.gather(*(stub.WriteDiff(race) for _ in range(8)))
        assert sorted(r.replayed for r in raced) == [False] + [True] * 7
        assert {r.new_version for r in raced} == {4}
        assert await doc(stub, NODE) == {"n": 3}

        # The key is per document: the same request_id on another node is a new write.
        other = await write(stub, b"other", set_("n", 1), request_id="req-1")
        assert other.new_version == 1 and not other.replayed
        del gw


@async_test()
async def test_request_id_metadata_key_makes_retries_idempotent(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        await write(stub, NODE, set_("n", 0))
        req = pb.WriteDiffRequest(
            node_id=NODE, diff_bson=diff(inc("n", 5)), metadata={"request_id": "m-1", "who": "x"}
        )
        first = await stub.WriteDiff(req)
        second = await stub.WriteDiff(req)
        assert not first.replayed and second.replayed
        assert second.new_version == first.new_version == 2
        assert second.effective_diff_bson == first.effective_diff_bson
        # The field and the metadata key are the same key.
        third = await write(stub, NODE, inc("n", 5), request_id="m-1")
        assert third.replayed and third.new_version == 2
        assert await doc(stub, NODE) == {"n": 5}


@async_test()
async def test_request_id_survives_unloading_the_document(tmp_path):
    async with gateway(tmp_path) as (gw, stub):
        await write(stub, NODE, set_("n", 0))
        first = await write(stub, NODE, inc("n", 1), request_id="r")
        host = gw.documents.hosts.get(NODE)
        if host is not None:
            host.last_used -= 3600
        await gw.documents.unload_idle()
        assert NODE not in gw.documents.hosts
        again = await write(stub, NODE, inc("n", 1), request_id="r")
        assert again.replayed and again.new_version == first.new_version
        assert again.vector_clock == first.vector_clock
        assert await doc(stub, NODE) == {"n": 1}


@async_test()
async def test_expected_version_mismatch_carries_the_current_version(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        # expected_version 0 = "create only if absent".
        await write(stub, NODE, set_("x", 1), expected_version=0)
        await write(stub, NODE, set_("x", 2))
        err = await rpc_error(
            stub.WriteDiff(
                pb.WriteDiffRequest(node_id=NODE, diff_bson=diff(set_("x", 3)), expected_version=1)
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "expected version 1",
        )
        detail = detail_of(err)
        assert detail.reason == "VERSION_MISMATCH"
        assert detail.version == 2
        snap = await read(stub, NODE)
        assert snap.version == 2 and bson.decode(snap.snapshot_bson) == {"x": 2}
        ok = await write(stub, NODE, set_("x", 3), expected_version=2)
        assert ok.new_version == 3
        await rpc_error(
            stub.WriteDiff(
                pb.WriteDiffRequest(
                    node_id=b"new", diff_bson=diff(set_("x", 1)), expected_version=4
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        # The failed precondition did not create the document.
        await rpc_error(
            stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=b"new")), grpc.StatusCode.NOT_FOUND
        )


@async_test()
async def test_raw_crdt_update_write(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        # A client replica creates the document with a raw update...
        alice = Replica("alice")
        change = alice.apply_diff(diff(set_("title", "from alice"), set_("tags", ["a"])))
        assert change is not None
        r1 = await stub.WriteDiff(
            pb.WriteDiffRequest(
                node_id=NODE,
                diff_bson=bson.encode({"update": Binary(change.update)}),
                actor="alice",
            )
        )
        assert r1.new_version == 1
        assert dict(r1.vector_clock.counters)["alice"] == alice.clock()["alice"]
        assert bson.decode(r1.effective_diff_bson)["ops"]
        snap = await read(stub, NODE)
        assert snap.snapshot_bson == alice.snapshot()

        # ...the server edits it, the client merges that and edits again with a raw update.
        w2 = await write(stub, NODE, splice("title", 0, 0, ">> "))
        alice.merge(w2.update)
        change = alice.apply_diff(
            diff({"op": "insert", "path": "tags", "index": 1, "values": ["b"]})
        )
        assert change is not None
        r3 = await stub.WriteDiff(
            pb.WriteDiffRequest(
                node_id=NODE, diff_bson=bson.encode({"update": Binary(change.update)})
            )
        )
        assert r3.new_version == 3
        final = await read(stub, NODE)
        assert final.snapshot_bson == alice.snapshot()
        assert bson.decode(final.snapshot_bson) == {"title": ">> from alice", "tags": ["a", "b"]}
        # Merging an update the server already has changes nothing.
        dup = await stub.WriteDiff(
            pb.WriteDiffRequest(
                node_id=NODE, diff_bson=bson.encode({"update": Binary(change.update)})
            )
        )
        assert dup.new_version == 3 and dup.update == b""


@async_test()
async def test_causal_context_moves_positions_over_later_changes(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        w1 = await write(stub, NODE, set_("text", "hello world"), set_("items", ["x", "y"]))
        await write(stub, NODE, splice("text", 0, 0, "XX"))
        await write(stub, NODE, {"op": "insert", "path": "items", "index": 0, "values": ["w"]})
        # Made against version 1: "hello |world" and before "y" at index 1.
        r = await write(
            stub,
            NODE,
            splice("text", 6, 0, "big "),
            {"op": "insert", "path": "items", "index": 1, "values": ["new"]},
            vector_clock=w1.vector_clock,
        )
        assert r.new_version == 4
        assert await doc(stub, NODE) == {
            "text": "XXhello big world",
            "items": ["w", "x", "new", "y"],
        }
        # The effective diff is against version 3, positions resolved.
        eff = bson.decode(r.effective_diff_bson)["ops"]
        assert eff[0] == {
            "op": "splice",
            "path": ["text"],
            "index": 8,
            "delete": 0,
            "insert": "big ",
        }
        assert eff[1] == {"op": "insert", "path": ["items"], "index": 2, "values": ["new"]}
        # Without a context the same positions apply to the current state.
        await write(stub, NODE, splice("text", 0, 2))
        assert (await doc(stub, NODE))["text"] == "hello big world"


@async_test()
async def test_compacted_version_is_out_of_range_naming_the_oldest(tmp_path):
    async with gateway(tmp_path, retain_in_memory=2) as (gw, stub):
        first = await write(stub, NODE, set_("n", 0))
        for _ in range(40):
            await write(stub, NODE, inc("n", 1))
        oldest = gw.documents.hosts[NODE].replica.oldest_version
        assert 0 < oldest < 41
        err = await rpc_error(
            stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=NODE, version=1)),
            grpc.StatusCode.OUT_OF_RANGE,
            str(oldest),
        )
        detail = detail_of(err)
        assert detail.reason == "HISTORY_COMPACTED" and detail.version == oldest
        # The oldest one is readable.
        assert (await doc(stub, NODE, version=oldest)) == {"n": oldest - 1}
        # A causal context from compacted history is OUT_OF_RANGE too, and changes nothing.
        err = await rpc_error(
            stub.WriteDiff(
                pb.WriteDiffRequest(
                    node_id=NODE, diff_bson=diff(inc("n", 1)), vector_clock=first.vector_clock
                )
            ),
            grpc.StatusCode.OUT_OF_RANGE,
            str(oldest),
        )
        assert detail_of(err) == pb.ErrorDetail(reason="HISTORY_COMPACTED", version=oldest)
        assert await doc(stub, NODE) == {"n": 40}


@async_test()
async def test_latest_snapshot_of_unchanged_document_is_served_from_cached_bytes(tmp_path):
    async with gateway(tmp_path) as (gw, stub):
        await write(stub, NODE, set_("blob", "x" * 100_000))
        first = await read(stub, NODE)
        replica = gw.documents.hosts[NODE].replica
        cached = replica.snapshot()
        second = await read(stub, NODE)
        # Same object: the second read did not re-encode the document.
        assert replica.snapshot() is cached
        assert first.snapshot_bson == second.snapshot_bson == cached
        # Past-version and sub-path reads do not drop the cache either.
        await read(stub, NODE, path="blob")
        assert replica.snapshot() is cached
        # A write invalidates it.
        await write(stub, NODE, set_("other", 1))
        assert replica.snapshot() is not cached
        assert bson.decode((await read(stub, NODE)).snapshot_bson)["other"] == 1


@async_test()
async def test_actor_and_metadata_are_recorded(tmp_path):
    async with gateway(tmp_path) as (_gw, stub):
        sub = stub.SubscribeChanges(pb.SubscribeRequest(node_id=NODE, from_version=0))
        await write(stub, NODE, set_("x", 1), actor="alice", metadata={"reason": "init"})
        await write(stub, NODE, set_("x", 2))
        c1, c2 = await changes(sub, 2)
        assert (c1.actor, dict(c1.metadata)) == ("alice", {"reason": "init"})
        assert (c2.actor, dict(c2.metadata)) == ("anonymous", {})
        sub.cancel()


@async_test()
async def test_reads_never_see_a_write_that_is_not_durable(tmp_path):
    """A read that arrives while a write waits for its commit is answered after the commit (a
    read of an idle document is answered at once, without the actor's mailbox): when that
    commit fails, the read shows the document without the write."""
    from virtualdom.server.store import StoreError

    async with gateway(tmp_path) as (gw, stub):
        await write(stub, NODE, set_("n", 1))
        assert gw.store is not None and gw.documents is not None
        host = await gw.documents.host(NODE, create=False)
        store_append = gw.store.append
        entered, release = asyncio.Event(), asyncio.Event()

        async def failing_append(changes):  # the real store, made to fail this one commit
            entered.set()
            await release.wait()
            raise StoreError("disk full (test)")

        gw.store.append = failing_append  # type: ignore[method-assign]
        pending = asyncio.create_task(write(stub, NODE, set_("n", 2)))
        await entered.wait()
        assert host.writing  # applied in memory, not durable
        reading = asyncio.create_task(host.read(lambda r: bson.decode(r.snapshot())["n"]))
        await asyncio.sleep(0)  # one loop turn: the read has queued itself behind the write
        assert not reading.done()
        gw.store.append = store_append  # type: ignore[method-assign]
        release.set()
        assert await reading == 1
        await rpc_error(pending, grpc.StatusCode.UNAVAILABLE, "not stored")
        host = await gw.documents.host(NODE, create=False)
        assert not host.writing
        assert await host.read(lambda r: bson.decode(r.snapshot())["n"]) == 1
        assert bson.decode((await read(stub, NODE)).snapshot_bson) == {"n": 1}


@async_test()
async def test_a_write_in_progress_keeps_its_document_loaded_past_the_idle_time(tmp_path):
    async with gateway(tmp_path) as (gw, stub):
        await write(stub, NODE, set_("n", 1))
        assert gw.store is not None and gw.documents is not None
        host = gw.documents.hosts[NODE]
        store_append = gw.store.append
        entered, release = asyncio.Event(), asyncio.Event()

        async def slow_append(changes):  # the real store, its commit held until released
            entered.set()
            await release.wait()
            await store_append(changes)

        gw.store.append = slow_append  # type: ignore[method-assign]
        pending = asyncio.create_task(write(stub, NODE, set_("n", 2)))
        await entered.wait()
        host.last_used -= 3600  # submitted an hour ago, still committing
        assert await gw.documents.unload_idle() == 0
        release.set()
        assert (await pending).new_version == 2
        assert await gw.documents.unload_idle() == 0  # idle time restarts when the write ends
        assert gw.documents.hosts[NODE] is host


@async_test()
async def test_a_document_whose_stored_update_is_over_the_diff_limit_loads_again(tmp_path):
    # One `replace` of many small fields: the CRDT update (each field has its order entry)
    # is larger than the diff, so the diff fits the limit and the stored update does not.
    value = {f"field{i}": i for i in range(200)}
    d = diff({"op": "replace", "value": value})
    limits = Limits(max_diff_bytes=len(d))
    async with gateway(tmp_path, limits=limits) as (gw, stub):
        r = await stub.WriteDiff(pb.WriteDiffRequest(node_id=NODE, diff_bson=d))
        assert r.new_version == 1 and len(r.update) > len(d)
        gw.documents.hosts[NODE].last_used -= 3600
        assert await gw.documents.unload_idle() == 1
        assert await doc(stub, NODE) == value  # reloaded from the stored log
        # The limit still applies to what clients send.
        big = diff(set_("x", "y" * len(d)))
        await rpc_error(
            stub.WriteDiff(pb.WriteDiffRequest(node_id=NODE, diff_bson=big)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "max_diff_bytes",
        )


@async_test()
async def test_writes_whose_callers_went_away_do_not_break_the_document(tmp_path):
    """Callers that give up (a deadline, a cancelled session) cancel their futures; the actor
    still runs their writes, and the rest of the batch is stored and answered."""
    from virtualdom.server.documents import Write

    async with gateway(tmp_path) as (gw, stub):
        await write(stub, NODE, set_("n", 1))
        assert gw.store is not None and gw.documents is not None
        host = gw.documents.hosts[NODE]
        store_append = gw.store.append
        entered, release = asyncio.Event(), asyncio.Event()

        async def held_append(changes):  # the real store, its first commit held
            entered.set()
            await release.wait()
            await store_append(changes)

        gw.store.append = held_append  # type: ignore[method-assign]
        first = host.enqueue(Write(diff=diff(set_("n", 2))))
        await entered.wait()  # the batch after it queues up behind its commit
        noop = host.enqueue(Write(diff=diff(set_("n", 3)), expected_version=99))  # refused
        same = host.enqueue(Write(diff=diff(set_("n", 3)), request_id="r"))
        retry = host.enqueue(Write(diff=diff(set_("n", 3)), request_id="r"))
        last = host.enqueue(Write(diff=diff(set_("m", 1))))
        for gone in (noop, same):
            gone.cancel()
        gw.store.append = store_append  # type: ignore[method-assign]
        release.set()
        assert (await first).version == 2
        again = await retry
        assert again.replayed and again.version == 3  # the cancelled first copy was stored
        assert (await last).version == 4
        assert await doc(stub, NODE) == {"n": 3, "m": 1}
        assert (await write(stub, NODE, set_("k", 1))).new_version == 5  # the actor lives on
