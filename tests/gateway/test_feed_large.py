"""The change feed does not keep large changes whole in its window: their payload is dropped
once every follower of their document has taken them, and later readers get them from the
store, whole (real gateway, real store)."""

from __future__ import annotations

import gc
import os
import tracemalloc

from bson.binary import Binary

from virtualdom.server.feed import LARGE_CHANGE_BYTES
from virtualdom.v1 import gateway_pb2 as pb

from ._support import async_test, changes, gateway, next_message, replace, set_, write

NODE = b"feed/large"
BIG = 2 * LARGE_CHANGE_BYTES


def entry_of(gw: object, version: int) -> object:
    entries = [e for e in gw.feed._entries if e.change.node_id == NODE]  # type: ignore[attr-defined]
    return next(e for e in entries if e.change.version == version)


@async_test()
async def test_large_change_nobody_follows_is_hollow_and_read_back_from_store(tmp_path):
    blob = os.urandom(BIG)
    async with gateway(tmp_path) as (gw, stub):
        await write(stub, NODE, set_("small", 1))
        resp = await write(stub, NODE, replace({"data": Binary(blob)}))
        await write(stub, NODE, set_("after", 1))
        small, big, after = entry_of(gw, 1), entry_of(gw, 2), entry_of(gw, 3)
        assert big.hollow and big.change.diff_bson == b"" and big.change.update == b""
        assert not small.hollow and not after.hollow  # small changes stay whole
        # A stream resuming from before it gets every change, the large one whole, in order.
        for start in ({"resume_token": small.change.seq.to_bytes(8, "big")}, {"from_version": 1}):
            call = stub.SubscribeChanges(
                pb.SubscribeRequest(node_id=NODE, include_update=True, **start)
            )
            got = await changes(call, 2)
            call.cancel()
            assert [c.version for c in got] == [2, 3]
            assert blob in got[0].diff_bson  # the replace's value
            assert got[0].diff_bson == resp.effective_diff_bson
            assert got[0].update == resp.update and resp.update


@async_test()
async def test_large_change_stays_whole_until_its_live_follower_took_it(tmp_path):
    blob = os.urandom(BIG)
    async with gateway(tmp_path) as (gw, stub):
        await write(stub, NODE, set_("small", 1))
        call = stub.SubscribeChanges(
            pb.SubscribeRequest(node_id=NODE, include_update=True, heartbeat_ms=50)
        )
        ev = await next_message(call)  # a heartbeat: the stream follows the feed
        assert ev.HasField("progress")
        await write(stub, NODE, replace({"data": Binary(blob)}))
        [got] = await changes(call, 1)
        assert got.version == 2 and blob in got.diff_bson and got.update
        # The stream's next read (it asks for what follows) releases the payload.
        await write(stub, NODE, set_("after", 1))
        [nxt] = await changes(call, 1)
        assert nxt.version == 3
        assert entry_of(gw, 2).hollow
        call.cancel()
        assert not gw.feed._large


@async_test()
async def test_gateway_keeps_no_copy_of_a_large_write_once_acknowledged(tmp_path):
    """After a large write, the gateway's Python heap holds the document (the mirror's value)
    and the change's update (history): not the request, the stored diff or the feed's copy
    (the store's writer thread and the document's actor used to keep their last batch)."""
    blob = os.urandom(8 * LARGE_CHANGE_BYTES)
    async with gateway(tmp_path) as (_gw, stub):
        await write(stub, b"feed/warm", set_("x", 1))
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            resp = await write(stub, NODE, replace({"data": Binary(blob)}))
            assert resp.effective_diff_bson
            del resp
            # Another commit: the writer thread has finished with the first one's batch.
            await write(stub, b"feed/warm", set_("x", 2))
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        # Mirror + update is 2x (plus a few KB); the request, the stored diff and the feed
        # entry made it 4x.
        assert held < 2.5 * len(blob), f"{held / len(blob):.2f}x the document held"


def test_a_batch_a_follower_holds_keeps_its_large_change_whole() -> None:
    """Dropping a delivered large change's payload replaces the window's entry: the batch a
    follower took (and may still be encoding and sending) is left as it was."""
    from virtualdom.engine import clock_to_bson
    from virtualdom.server.feed import ChangeFeed
    from virtualdom.server.store import StoredChange

    feed = ChangeFeed()
    follower = feed.follow(NODE, None)
    payload = os.urandom(BIG)
    feed.publish([StoredChange(NODE, 1, "a", 0, clock_to_bson({"a": 1}), payload, b"", seq=1)])
    batch = feed.read(0, follower, 10)
    assert batch is not None and batch[0].change.diff_bson == payload
    assert feed.read(1, follower, 10) == []  # taken: the window drops its payload now
    assert feed._entries[0].hollow and feed._entries[0].change.diff_bson == b""
    assert not batch[0].hollow and batch[0].change.diff_bson == payload
    assert batch[0].encoded_field(False)  # still encodable for the follower that holds it
