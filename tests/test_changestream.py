"""The change-stream core without any transport: the rules of :class:`StreamState` and
:func:`plan` (sans-I/O), and the driver's events over a real store and feed (no gRPC)."""

from __future__ import annotations

import ast
import asyncio
import pathlib

import bson
import pytest

from virtualdom.server.auth import Caller, Grants
from virtualdom.server.changestream import (
    Changes,
    ChangeStreams,
    Progress,
    Snapshot,
    Snapshots,
    StreamRequest,
    StreamState,
    plan,
)
from virtualdom.server.config import GatewayConfig
from virtualdom.server.documents import Documents, Write
from virtualdom.server.errors import (
    BadRequest,
    Compacted,
    ForeignToken,
    PermissionDenied,
    ShuttingDown,
    TokenBeyondHead,
    Unauthenticated,
)
from virtualdom.server.feed import ChangeFeed, Entry, resume_token
from virtualdom.server.store import SqliteStore, StoredChange

ROOT = pathlib.Path(__file__).resolve().parents[1]
ANYONE = Caller(key="peer:test", peer="test")


def entry(node: bytes, version: int, seq: int) -> Entry:
    clock = bson.encode({"a": version})
    return Entry(StoredChange(node, version, "a", 0, clock, b"", b"", seq=seq))


def setting(value: int) -> Write:
    return Write(diff=bson.encode({"ops": [{"op": "set", "path": "n", "value": value}]}), actor="w")


def versions(entries: list[Entry]) -> list[int]:
    return [e.change.version for e in entries]


# -- StreamState: the rules -------------------------------------------------------------------


def test_take_skips_what_a_snapshot_covers_and_what_the_caller_may_not_read_but_moves_past_it():
    state = StreamState(pos=10, visible=lambda n: n.startswith(b"p/ok"))
    state.covered(
        [Snapshot(b"p/ok/1", 3, {}, b"", seq=12), Snapshot(b"p/ok/2", 0, {}, b"", seq=0)],
        rewind=False,
    )
    batch = [
        entry(b"p/ok/1", 3, 11),
        entry(b"p/ok/1", 4, 13),
        entry(b"p/no", 1, 14),
        entry(b"p/ok/2", 1, 15),
    ]
    fresh = state.take(batch)
    assert [(e.change.node_id, e.change.version) for e in fresh] == [(b"p/ok/1", 4), (b"p/ok/2", 1)]
    assert state.pos == 15  # past the filtered-out entries too
    assert state.take([entry(b"p/no", 2, 16)]) == [] and state.pos == 16


def test_a_one_document_snapshot_without_start_rewinds_to_its_own_position():
    state = StreamState(pos=50)
    state.covered([Snapshot(b"d", 7, {}, b"", seq=40)], rewind=True)
    assert state.pos == 40 and state.skip == {b"d": 7}
    # A change committed between the snapshot and the stream's start is not lost, and the
    # snapshot's own versions are not sent again.
    assert versions(state.take([entry(b"d", 7, 40), entry(b"d", 8, 45)])) == [8]
    state = StreamState(pos=50)
    state.covered([Snapshot(b"d", 7, {}, b"", seq=40)], rewind=False)
    assert state.pos == 50


def test_replayed_batches_advance_and_skip_covered_versions():
    state = StreamState(pos=100)
    assert [e.seq for e in state.replayed([entry(b"d", 1, 3), entry(b"d", 2, 9)])] == [3, 9]
    assert state.pos == 9
    state.skip[b"d"] = 3
    assert versions(state.replayed([entry(b"d", 3, 12), entry(b"d", 4, 13)])) == [4]


def test_resume_checks_the_token_and_the_retained_log():
    state = StreamState(pos=100)
    with pytest.raises(BadRequest, match="17 bytes"):
        state.resume(b"short", oldest=0, head=100)
    with pytest.raises(Compacted) as info:
        state.resume(resume_token(5), oldest=20, head=100)
    assert info.value.resume_token == resume_token(20) and "resync" in str(info.value)
    with pytest.raises(TokenBeyondHead) as beyond:
        state.resume(resume_token(101), oldest=20, head=100)
    assert beyond.value.head_token == resume_token(100)
    state.resume(resume_token(20), oldest=20, head=100)
    assert state.pos == 20
    # With a store id, every token carries it, and a token of another store is refused.
    mine = StreamState(pos=0, store_id=b"S" * 8)
    assert mine.progress(1).resume_token == resume_token(0, b"S" * 8)
    with pytest.raises(ForeignToken):
        mine.resume(resume_token(3, b"T" * 8), oldest=0, head=10)
    mine.resume(resume_token(3, b"S" * 8), oldest=0, head=10)
    mine.resume(resume_token(4), oldest=0, head=10)  # an old 8-byte token names no store
    assert mine.pos == 4


def test_progress_and_shutdown_carry_the_position_to_resume_from():
    state = StreamState(pos=42)
    assert state.progress(7) == Progress(42, 7, resume_token(42))
    err = state.shutting_down()
    assert isinstance(err, ShuttingDown) and err.resume_token == resume_token(42)


# -- plan: the request checks -----------------------------------------------------------------

CFG = GatewayConfig(address="127.0.0.1:0", data_dir="unused")


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (StreamRequest(), "set node_id or prefix"),
        (StreamRequest(node_id=b"a", prefix=b"a"), "set node_id or prefix"),
        (StreamRequest(node_id=b"a", from_version=1, resume_token=b"x" * 8), "at most one"),
        (StreamRequest(node_id=b""), "node_id is empty"),
        (StreamRequest(node_id=b"\xff"), "UTF-8"),
        (StreamRequest(node_id=b"a" * 2000), "over the limit"),
        (StreamRequest(prefix=b"a" * 2000), "prefix is longer"),
        (StreamRequest(node_id=b"a", heartbeat_ms=10), "heartbeat_ms must be >= 50"),
        (StreamRequest(prefix=b"a", from_version=0), "from_version is for node_id"),
    ],
)
def test_plan_refuses_bad_requests_before_anything_is_sent(request_, words):
    with pytest.raises(BadRequest, match=words):
        plan(request_, CFG, ANYONE)


def test_plan_applies_the_callers_read_grants():
    reader = Caller(key="sub:r", peer="t", subject="r", grants=Grants(read=(b"p/mine",)))
    with pytest.raises(PermissionDenied):
        plan(StreamRequest(node_id=b"p/other"), CFG, reader)
    wide = plan(StreamRequest(prefix=b"p/"), CFG, reader)
    assert wide.visible is not None and wide.visible(b"p/mine/1") and not wide.visible(b"p/x")
    assert plan(StreamRequest(node_id=b"p/mine/1", heartbeat_ms=0), CFG, reader).heartbeat_s == (
        CFG.heartbeat_ms / 1000
    )


# -- the driver, over a real store and feed, without a transport ------------------------------


def test_the_driver_yields_snapshot_catch_up_live_changes_heartbeats_then_ends_resumable(tmp_path):
    async def body() -> None:
        # The actor a Gateway derives from its store at start (this test runs the core alone).
        cfg = GatewayConfig(
            address="127.0.0.1:0", data_dir=str(tmp_path), heartbeat_ms=50, actor="gateway"
        )
        feed = ChangeFeed(cfg.feed_capacity)
        store = SqliteStore(cfg.data_dir, on_commit=feed.publish)
        documents = Documents(store, cfg)
        documents.start()
        streams = ChangeStreams(cfg, store, documents, feed)
        try:
            host = await documents.host(b"d", create=True)
            for i in range(3):
                await host.submit(setting(i))
            events = streams.open(StreamRequest(node_id=b"d", from_version=1), ANYONE)
            first = await anext(events)
            assert isinstance(first, Changes) and versions(first.entries) == [2, 3]
            assert streams.subscribers == 1
            await host.submit(setting(9))
            live = await anext(events)
            assert isinstance(live, Changes) and versions(live.entries) == [4]
            beat = await anext(events)  # nothing new within heartbeat_ms
            assert isinstance(beat, Progress) and beat.seq == live.entries[-1].seq
            streams.close()
            with pytest.raises(ShuttingDown) as info:
                await anext(events)
            assert info.value.resume_token == beat.resume_token == feed.token(beat.seq)
            assert streams.subscribers == 0

            snapped = streams.open(StreamRequest(node_id=b"d", send_snapshot=True), ANYONE)
            snap = await anext(snapped)
            assert isinstance(snap, Snapshots) and snap.items[0].version == 4
            await snapped.aclose()
            assert streams.subscribers == 0

            expired = Caller(key="k", peer="t", expires_at=0.0)
            with pytest.raises(Unauthenticated):
                await anext(
                    ChangeStreams(cfg, store, documents, feed).open(
                        StreamRequest(node_id=b"d"), expired
                    )
                )
        finally:
            await documents.close()
            await store.close()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_the_core_imports_no_grpc():
    tree = ast.parse((ROOT / "server" / "changestream.py").read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] in ("grpc", "grpc_status")], names
