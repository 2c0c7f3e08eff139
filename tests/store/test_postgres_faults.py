"""Faults with several gateway processes on one PostgreSQL: kill -9, SIGSTOP, a database crash,
a cut network. Writers retry every unacknowledged write, with the same request id, on whichever
gateway is up; a follower resumes its stream on another gateway with its last token.

Every test ends with: every acknowledged write present exactly once, versions dense, the
follower's versions contiguous (none missing, none twice), every gateway's replica identical.
Fault points come from seeded random schedules (counts of acknowledged writes), so a failure
replays the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.gateway._support import async_test, set_, write
from tests.postgres_server import PostgresServer, free_port
from tests.store._cluster import (
    GatewayProcess,
    check_log,
    counter,
    snapshot_of,
    write_request,
)
from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

NODE = b"faults/doc"
#: Codes after which a write's outcome is unknown or the gateway is down: retried.
RETRY = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
}


def _channel(port: int) -> grpc.aio.Channel:
    # Reconnect fast to a restarted gateway on the same port.
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{port}",
        options=[
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 300),
        ],
    )


class Cluster:
    def __init__(self, url: str, root: Path, n: int, *extra: str):
        self.procs = [GatewayProcess(url, root / f"gw{i}", *extra) for i in range(n)]
        self.chans = [_channel(p.port) for p in self.procs]
        self.stubs = [pbg.MemoryGatewayStub(c) for c in self.chans]
        self.stopped: set[int] = set()

    async def start(self) -> None:
        await asyncio.gather(*(p.start() for p in self.procs))

    def up(self) -> list[int]:
        return [
            i
            for i, p in enumerate(self.procs)
            if p.proc is not None and p.proc.poll() is None and i not in self.stopped
        ]

    async def close(self) -> None:
        for c in self.chans:
            await c.close()
        # In a thread: the test's event loop runs the proxy a gateway may be stopping through.
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in self.procs))


@contextlib.asynccontextmanager
async def cluster(url: str, root: Path, n: int, *extra: str) -> AsyncIterator[Cluster]:
    c = Cluster(url, root, n, *extra)
    try:
        await c.start()
        yield c
    finally:
        await c.close()


class Load:
    """``writers`` clients each making ``per_writer`` writes, every one retried (same request
    id) until acknowledged, each attempt on a gateway drawn from the seeded generator."""

    def __init__(self, c: Cluster, rng: random.Random, writers: int, per_writer: int):
        self.c, self.rng = c, rng
        self.writers, self.per_writer = writers, per_writer
        self.acked: set[str] = set()
        self.retries = 0
        self._grew = asyncio.Event()

    @property
    def total(self) -> int:
        return self.writers * self.per_writer

    async def _writer(self, k: int) -> None:
        for i in range(self.per_writer):
            rid = f"w{k}-{i}"
            req = write_request(NODE, f"w{k}", rid)
            while True:
                up = self.c.up()
                if not up:
                    await asyncio.sleep(0.05)
                    continue
                stub = self.c.stubs[self.rng.choice(up)]
                try:
                    resp = await stub.WriteDiff(req, timeout=8)
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in RETRY:
                        raise
                    self.retries += 1
                    await asyncio.sleep(0.03)
            assert resp.success
            self.acked.add(rid)
            self._grew.set()
            # A seeded pace: the load lasts long enough for the faults to land in it.
            await asyncio.sleep(self.rng.choice([0.0, 0.005, 0.01, 0.02]))

    async def run(self) -> None:
        await asyncio.gather(*(self._writer(k) for k in range(self.writers)))

    async def reached(self, n: int) -> None:
        """Until ``n`` writes are acknowledged (or all are)."""
        while len(self.acked) < min(n, self.total):
            self._grew.clear()
            await self._grew.wait()


class Follower:
    """One subscriber of NODE that moves to another gateway (with its last resume token)
    whenever its stream breaks."""

    def __init__(self, c: Cluster, start_on: int):
        self.c, self.on = c, start_on
        self.versions: list[int] = []
        self.token = b""
        self.moves = 0
        self._grew = asyncio.Event()

    async def run(self) -> None:
        while True:
            up = self.c.up()
            if not up:
                await asyncio.sleep(0.05)
                continue
            if self.on not in up:
                self.on = up[0]
            start: dict[str, Any] = (
                {"resume_token": self.token} if self.token else {"from_version": 0}
            )
            call = self.c.stubs[self.on].SubscribeChanges(
                pb.SubscribeRequest(node_id=NODE, heartbeat_ms=200, **start)
            )
            try:
                async for ev in call:
                    for ch in ev.changes:
                        self.versions.append(ch.version)
                        self.token = bytes(ch.resume_token)
                    self._grew.set()
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRY:
                    raise
            self.moves += 1
            self.on = (self.on + 1) % len(self.c.procs)
            await asyncio.sleep(0.02)

    async def until(self, version: int, timeout: float = 60) -> None:
        async def wait() -> None:
            while not self.versions or self.versions[-1] < version:
                self._grew.clear()
                await self._grew.wait()

        await asyncio.wait_for(wait(), timeout)


async def converged(c: Cluster, url: str, load: Load, follower: Follower) -> None:
    """The checks every fault test ends with."""
    log = await check_log(url, NODE, load.acked)
    total = len(log)
    assert total == 1 + load.total, f"{total} versions for {1 + load.total} writes"
    await follower.until(total)
    assert follower.versions == list(range(1, total + 1)), "follower saw a gap or a duplicate"
    snaps = []
    for i in c.up():
        # Each gateway's replica, once it has the last version (its stream delivered it).
        call = c.stubs[i].SubscribeChanges(
            pb.SubscribeRequest(node_id=NODE, from_version=total - 1, heartbeat_ms=200)
        )
        async for ev in call:
            if any(ch.version == total for ch in ev.changes):
                break
        call.cancel()
        snaps.append(await snapshot_of(c.stubs[i], NODE))
    assert len(snaps) >= 1 and all(s == snaps[0] for s in snaps), "replicas differ"
    assert counter(snaps[0][1]) == load.total


async def begin(c: Cluster) -> Follower:
    assert (await write(c.stubs[0], NODE, set_("n", 0))).new_version == 1
    follower = Follower(c, start_on=len(c.procs) - 1)
    return follower


@pytest.mark.parametrize("seed", [7])
@async_test(timeout=240)
async def test_kill_9_gateways_under_load_then_cold_restart_of_all(
    tmp_path: Path, pg_url: str, seed: int
) -> None:
    """kill -9 lands before a commit, between a commit and its acknowledgement, or in the
    middle of a stream (the follower's): the retried request id finds a committed write, an
    uncommitted one is written again, the follower resumes elsewhere. Then every gateway is
    killed and started again (a cold restart) and the log goes on."""
    rng = random.Random(seed)
    async with cluster(pg_url, tmp_path, 2) as c:
        follower = await begin(c)
        ftask = asyncio.create_task(follower.run())
        load = Load(c, rng, writers=4, per_writer=50)
        ltask = asyncio.create_task(load.run())
        for victim, at in zip((0, 1, 0), sorted(rng.sample(range(10, 150), 3)), strict=True):
            await load.reached(at)
            c.procs[victim].kill()
            await load.reached(len(load.acked) + 5)  # the other one goes on meanwhile
            await c.procs[victim].start()
        await asyncio.wait_for(ltask, 120)
        await converged(c, pg_url, load, follower)
        assert load.retries > 0 and follower.moves > 0  # the faults hit calls in flight
        # Cold restart: every gateway killed, all started again.
        for p in c.procs:
            p.kill()
        for p in c.procs:
            await p.start()
        more = await c.stubs[1].WriteDiff(write_request(NODE, "after", "after-restart"))
        assert more.new_version == 2 + load.total
        load.acked.add("after-restart")
        await check_log(pg_url, NODE, load.acked)
        ftask.cancel()


@async_test(timeout=240)
async def test_postgresql_crash_under_load_and_restart(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    """``pg_ctl -m immediate`` (no checkpoint: recovery from the WAL) while gateways write;
    writes fail UNAVAILABLE meanwhile and go through once it is back."""
    url = pg_server.new_database()
    rng = random.Random(11)
    async with cluster(url, tmp_path, 2) as c:
        follower = await begin(c)
        ftask = asyncio.create_task(follower.run())
        load = Load(c, rng, writers=4, per_writer=25)
        ltask = asyncio.create_task(load.run())
        await load.reached(rng.randint(10, 30))
        await asyncio.to_thread(pg_server.stop, "immediate")
        failed_before = load.retries
        while load.retries < failed_before + 4:  # writers now see it down
            await asyncio.sleep(0.05)
        await asyncio.to_thread(pg_server.start)
        await asyncio.wait_for(ltask, 150)
        await converged(c, url, load, follower)
        ftask.cancel()


@async_test(timeout=240)
async def test_a_gateway_stopped_past_its_timeouts_then_continued(tmp_path, pg_url):
    """SIGSTOP one gateway under load (it may hold the log's lock in an open transaction: the
    database ends that session after idle_in_transaction_session_timeout), the other writes on;
    SIGCONT: the stopped one's unfinished writes fail or are found by their retries."""
    rng = random.Random(5)
    async with cluster(pg_url, tmp_path, 2) as c:
        follower = await begin(c)
        ftask = asyncio.create_task(follower.run())
        load = Load(c, rng, writers=4, per_writer=25)
        ltask = asyncio.create_task(load.run())
        await load.reached(rng.randint(10, 25))
        c.procs[0].signal(signal.SIGSTOP)
        c.stopped.add(0)
        # The other gateway writes on (past the stopped one's lock, if it held it).
        await asyncio.wait_for(load.reached(len(load.acked) + 15), 60)
        c.procs[0].signal(signal.SIGCONT)
        c.stopped.discard(0)
        await asyncio.wait_for(ltask, 150)
        await converged(c, pg_url, load, follower)
        ftask.cancel()


class Proxy:
    """A TCP proxy between one gateway and PostgreSQL that the test can cut: every proxied
    connection is closed at once (mid-transaction under load), new ones refused until healed."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.up = True
        self._pipes: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if not self.up:
            w.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.transport.abort()
            return
        self._pipes.update((w, uw))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(r, uw), pump(ur, w))
        self._pipes.difference_update((w, uw))

    def cut(self) -> None:
        self.up = False
        for p in list(self._pipes):
            p.transport.abort()

    def heal(self) -> None:
        self.up = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@async_test(timeout=240)
async def test_one_gateway_cut_from_the_database_mid_transaction(tmp_path, pg_server):
    url = pg_server.new_database()
    proxy = Proxy(pg_server.port)
    await proxy.start()
    cut_url = url.replace(f":{pg_server.port}/", f":{proxy.port}/")
    rng = random.Random(3)
    try:
        async with (
            cluster(url, tmp_path, 1) as direct,
            cluster(cut_url, tmp_path / "cut", 1) as cut,
        ):
            both = Cluster.__new__(Cluster)
            both.procs = direct.procs + cut.procs
            both.stubs = direct.stubs + cut.stubs
            both.chans = []
            both.stopped = set()
            follower = await begin(both)
            follower.on = 1  # on the gateway that gets cut
            ftask = asyncio.create_task(follower.run())
            load = Load(both, rng, writers=4, per_writer=25)
            ltask = asyncio.create_task(load.run())
            await load.reached(rng.randint(10, 25))
            t0 = asyncio.get_running_loop().time()
            proxy.cut()
            await load.reached(len(load.acked) + 10)
            t1 = asyncio.get_running_loop().time()
            proxy.heal()
            await asyncio.wait_for(ltask, 150)
            t2 = asyncio.get_running_loop().time()
            print(f"cut for {t1 - t0:.1f}s, load done {t2 - t1:.1f}s later, retries {load.retries}")
            await converged(both, url, load, follower)
            ftask.cancel()
    finally:
        await proxy.close()
