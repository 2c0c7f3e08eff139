"""Durability: acknowledged writes survive kill -9 of the real `virtualdom serve` process, a
SIGTERM shutdown is clean, restarts keep versions and clocks continuous, and idle documents
unload and reload with the same content."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import bson
import grpc
import pytest

from virtualdom.server.app import Gateway
from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

from ._support import (
    STEP,
    async_test,
    changes,
    channel,
    config,
    doc,
    gateway,
    inc,
    read,
    set_,
    splice,
    stub_for,
    write,
)

VIRTUALDOM = str(Path(sys.executable).parent / "virtualdom")
NODES = [b"durable/a", b"durable/b", b"durable/c"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    port: int
    log: list[str] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None

    async def wait(self) -> int:
        code = await asyncio.wait_for(self.proc.wait(), 30)
        if self.drain is not None:
            await asyncio.wait_for(self.drain, STEP)
        return code


@contextlib.asynccontextmanager
async def serve(data_dir: Path, *extra: str) -> AsyncIterator[Served]:
    """Run `virtualdom serve` until the body is done (killing it if it still runs)."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        VIRTUALDOM,
        "serve",
        "--address",
        f"127.0.0.1:{port}",
        "--data-dir",
        str(data_dir),
        *extra,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    served = Served(proc, port)
    assert proc.stderr is not None
    try:
        while True:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, f"virtualdom serve exited early: {''.join(served.log)}"
            served.log.append(line)
            if "listening on" in line:
                assert f"127.0.0.1:{port}" in line
                break

        async def drain() -> None:
            assert proc.stderr is not None
            while line := await proc.stderr.readline():
                served.log.append(line.decode())

        served.drain = asyncio.create_task(drain())
        yield served
    finally:
        if proc.returncode is None:
            proc.kill()
        await served.wait()


@contextlib.asynccontextmanager
async def client(port: int) -> AsyncIterator[pbg.MemoryGatewayStub]:
    async with channel(port) as ch:
        await asyncio.wait_for(ch.channel_ready(), STEP)
        yield pbg.MemoryGatewayStub(ch)


@async_test(timeout=120)
async def test_acknowledged_writes_survive_kill_9(tmp_path):
    acked: dict[tuple[bytes, int], pb.WriteDiffResponse] = {}
    fields: dict[tuple[bytes, int], str] = {}
    async with serve(tmp_path) as served, client(served.port) as stub:
        # Sequential writes first, all acknowledged.
        for i in range(30):
            node = NODES[i % 3]
            r = await write(stub, node, set_(f"f{i}", i), request_id=f"seq-{i}")
            acked[(node, r.new_version)] = r
            fields[(node, r.new_version)] = f"f{i}"
        # Then 150 concurrent writes; the server dies (SIGKILL) right at the 60th ack, with
        # the others in flight.
        killed = asyncio.Event()

        async def one(i: int) -> None:
            node = NODES[i % 3]
            try:
                r = await write(stub, node, set_(f"g{i}", i), request_id=f"conc-{i}")
            except (TimeoutError, grpc.aio.AioRpcError):
                assert killed.is_set()
                return
            if killed.is_set():
                return  # acknowledged after the kill was sent: cannot tell, not counted
            acked[(node, r.new_version)] = r
            fields[(node, r.new_version)] = f"g{i}"
            if len(acked) == 90:
                served.proc.send_signal(signal.SIGKILL)
                killed.set()

        await asyncio.gather(*(one(i) for i in range(150)))
        assert killed.is_set()
        assert await served.wait() == -signal.SIGKILL
    assert len(acked) == 90

    async with serve(tmp_path) as served, client(served.port) as stub:
        for node in NODES:
            latest = await read(stub, node)
            mine = sorted(v for (n, v) in acked if n == node)
            # Every acknowledged version is there; unacknowledged in-flight ones may be too,
            # but versions stay gap-free.
            assert latest.version >= mine[-1]
            body = bson.decode(latest.snapshot_bson)
            assert len(body) == latest.version
            for v in mine:
                r = acked[(node, v)]
                past = await read(stub, node, version=v)
                assert past.vector_clock == r.vector_clock
                assert fields[(node, v)] in bson.decode(past.snapshot_bson)
                assert len(bson.decode(past.snapshot_bson)) == v
            # The log holds each acknowledged change exactly as acknowledged.
            call = stub.SubscribeChanges(pb.SubscribeRequest(node_id=node, from_version=0))
            logged = {c.version: c for c in await changes(call, latest.version)}
            call.cancel()
            for v in mine:
                assert logged[v].diff_bson == acked[(node, v)].effective_diff_bson
            # New writes continue after the last version.
            nxt = await write(stub, node, set_("after", True))
            assert nxt.new_version == latest.version + 1
        # Retrying an acknowledged write after the crash is still idempotent.
        (node, v), r = next(iter(acked.items()))
        again = await write(stub, node, set_("f0", 0), request_id="seq-0")
        assert again.replayed and again.new_version == v == r.new_version
    assert any("listening on" in line for line in served.log)


@async_test(timeout=120)
async def test_sigterm_shuts_down_gracefully_and_keeps_everything(tmp_path):
    async with serve(tmp_path) as served:
        async with client(served.port) as stub:
            last = None
            for i in range(20):
                last = await write(
                    stub, b"term/doc", splice("text", 0, 0, f"{i};") if i else set_("text", "0;")
                )
            sub = stub.SubscribeChanges(pb.SubscribeRequest(node_id=b"term/doc", heartbeat_ms=50))
            assert (await asyncio.wait_for(sub.read(), STEP)).HasField("progress")
            served.proc.send_signal(signal.SIGTERM)
            # The open stream ends with UNAVAILABLE (resumable), not a broken connection.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                while True:
                    ev = await asyncio.wait_for(sub.read(), STEP)
                    assert ev is not grpc.aio.EOF and not ev.changes
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await served.wait() == 0
        text = "".join(served.log)
        assert "shutting down" in text and "stopped" in text
        assert "Traceback" not in text
    # The shutdown wrote a snapshot of the document at its last version.
    with contextlib.closing(sqlite3.connect(tmp_path / "virtualdom.sqlite3")) as db:
        (version,) = db.execute(
            "SELECT version FROM snapshots WHERE node_id=?", (b"term/doc",)
        ).fetchone()
    assert last is not None and version == last.new_version == 20

    async with serve(tmp_path) as served, client(served.port) as stub:
        snap = await read(stub, b"term/doc")
        assert snap.version == 20 and snap.vector_clock == last.vector_clock
        assert bson.decode(snap.snapshot_bson)["text"] == "".join(
            f"{i};" for i in reversed(range(20))
        )
        served.proc.send_signal(signal.SIGTERM)
        assert await served.wait() == 0


@async_test()
async def test_in_process_restart_keeps_versions_and_clocks_continuous(tmp_path):
    node = b"restart/doc"
    gw = Gateway(config(tmp_path))
    await gw.start()
    async with stub_for(gw) as stub:
        acks = [await write(stub, node, set_("text", "ab"))]
        for i in range(4):
            acks.append(await write(stub, node, splice("text", 1, 0, str(i))))
    await gw.stop()
    assert acks[-1].new_version == 5

    gw = Gateway(config(tmp_path))
    await gw.start()
    try:
        async with stub_for(gw) as stub:
            snap = await read(stub, node)
            assert snap.version == 5 and snap.vector_clock == acks[-1].vector_clock
            assert bson.decode(snap.snapshot_bson) == {"text": "a3210b"}
            # Writes continue at K+1 with a clock that only moves forward.
            r6 = await write(stub, node, splice("text", 0, 0, ">"))
            assert r6.new_version == 6
            before, after = dict(acks[-1].vector_clock.counters), dict(r6.vector_clock.counters)
            assert all(after.get(a, 0) >= n for a, n in before.items()) and after != before
            # A causal context from before the restart still works (moved over version 6).
            r7 = await write(
                stub, node, splice("text", 6, 0, "!"), vector_clock=acks[-1].vector_clock
            )
            assert r7.new_version == 7
            assert await doc(stub, node) == {"text": ">a3210b!"}
            # The change log is continuous across the restart.
            call = stub.SubscribeChanges(pb.SubscribeRequest(node_id=node, from_version=0))
            log = await changes(call, 7)
            call.cancel()
            assert [c.version for c in log] == list(range(1, 8))
            assert [c.diff_bson for c in log[:5]] == [a.effective_diff_bson for a in acks]
            tokens = [c.resume_token for c in log]
            assert tokens == sorted(tokens)
    finally:
        await gw.stop()


@async_test()
async def test_idle_document_unloads_and_reloads_on_demand(tmp_path):
    node = b"idle/doc"
    async with gateway(tmp_path, idle_unload_s=0.1) as (gw, stub):
        await write(stub, node, set_("text", "hello"), set_("n", 1))
        last = await write(stub, node, splice("text", 5, 0, " world"))
        before = await read(stub, node, include_state=True)
        follower = stub.SubscribeChanges(
            pb.SubscribeRequest(node_id=node, from_version=2, heartbeat_ms=50)
        )
        # Its first heartbeat: done touching the document, now following the feed.
        assert (await asyncio.wait_for(follower.read(), STEP)).HasField("progress")

        # Make it idle without waiting: its last use is long ago. (The janitor may have
        # unloaded it already; either way it must be gone after unload_idle.)
        host = gw.documents.hosts.get(node)
        if host is not None:
            host.last_used -= 3600
        await gw.documents.unload_idle()
        assert node not in gw.documents.hosts
        snap, rest = await gw.store.load(node)
        assert snap is not None and snap.version == 2 and rest == []

        # Reloaded on demand, with the same content, version, clock and state.
        again = await read(stub, node, include_state=True)
        assert node in gw.documents.hosts
        assert again.version == 2 == last.new_version
        assert again.snapshot_bson == before.snapshot_bson
        assert again.vector_clock == before.vector_clock == last.vector_clock
        r = await write(stub, node, inc("n", 1))
        assert r.new_version == 3
        # A subscriber that followed it across the unload sees the new change.
        (c,) = await changes(follower, 1)
        assert c.version == 3
        follower.cancel()

        # A document with a session member is not idle, however old its last use.
        from .test_sessions import Member

        m = Member(stub)
        await m.join(node, actor="keeper")
        gw.documents.hosts[node].last_used -= 3600
        await gw.documents.unload_idle()
        assert node in gw.documents.hosts
        await m.close()
        host = gw.documents.hosts.get(node)
        if host is not None:
            host.last_used -= 3600
        await gw.documents.unload_idle()
        assert node not in gw.documents.hosts
        assert await doc(stub, node) == {"text": "hello world", "n": 2}


@async_test()
async def test_past_versions_and_contexts_survive_a_restart(tmp_path):
    node = b"restart/history"
    gw = Gateway(config(tmp_path))
    await gw.start()
    async with stub_for(gw) as stub:
        w1 = await write(stub, node, set_("text", "hello world"))
        await write(stub, node, splice("text", 0, 0, ">"))
    await gw.stop()
    gw = Gateway(config(tmp_path))
    await gw.start()
    try:
        async with stub_for(gw) as stub:
            # Made against version 1 (before ">" was inserted): lands before "world".
            r = await write(stub, node, splice("text", 6, 0, "big "), vector_clock=w1.vector_clock)
            assert r.new_version == 3
            assert await doc(stub, node, version=1) == {"text": "hello world"}
    finally:
        await gw.stop()
