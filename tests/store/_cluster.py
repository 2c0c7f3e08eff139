"""Several gateways on one PostgreSQL, and the checks every multi-gateway test ends with.

In-process gateways (:func:`gateways`) share the test's event loop, each with its own store
(pool, writer and LISTEN connections): to PostgreSQL they are separate gateways. The fault
tests run real processes instead (:class:`GatewayProcess`), to kill -9 and SIGSTOP them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
import grpc
import psycopg

from tests.gateway._support import STEP, channel, config, diff, inc, set_
from tests.postgres_server import free_port
from virtualdom.server.app import Gateway
from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg


@contextlib.asynccontextmanager
async def gateways(
    tmp_path: Path, url: str, n: int, **overrides: Any
) -> AsyncIterator[list[tuple[Gateway, pbg.MemoryGatewayStub]]]:
    """``n`` started gateways on the database ``url``, each with a stub on its own channel."""
    out: list[tuple[Gateway, pbg.MemoryGatewayStub]] = []
    chans: list[grpc.aio.Channel] = []
    try:
        for i in range(n):
            gw = Gateway(config(tmp_path / f"gw{i}", store=url, **overrides))
            port = await gw.start()
            ch = channel(port)
            chans.append(ch)
            out.append((gw, pbg.MemoryGatewayStub(ch)))
        yield out
    finally:
        for ch in chans:
            await ch.close()
        for gw, _ in out:
            await gw.stop(grace=1.0)


def write_request(node: bytes, key: str, request_id: str) -> pb.WriteDiffRequest:
    """A write every schedule uses: a counter everyone increments (the document starts with
    ``n = 0``) and a key of the writer's own."""
    ops = [inc("n", 1), set_(key, request_id)]
    return pb.WriteDiffRequest(node_id=node, diff_bson=diff(*ops), request_id=request_id)


async def read_log(url: str, node: bytes) -> list[tuple[int, str, int]]:
    """(version, request_id, seq) of a document's stored changes, in version order."""
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(
            "SELECT version, coalesce(request_id, ''), seq FROM vd_changes WHERE node_id = %s"
            " ORDER BY version",
            (node,),
        )
        return [(int(v), str(r), int(s)) for v, r, s in await cur.fetchall()]


async def check_log(url: str, node: bytes, acknowledged: set[str]) -> list[tuple[int, str, int]]:
    """Every acknowledged request stored exactly once; versions dense 1..N; seqs in version
    order (the commit order)."""
    log = await read_log(url, node)
    assert [v for v, _, _ in log] == list(range(1, len(log) + 1)), "versions not dense"
    ids = [r for _, r, _ in log if r]
    assert len(ids) == len(set(ids)), "a request id stored twice"
    assert acknowledged <= set(ids), f"acknowledged but lost: {sorted(acknowledged - set(ids))}"
    seqs = [s for _, _, s in log]
    assert seqs == sorted(seqs), "seq order differs from version order"
    return log


@dataclass
class Subscriber:
    """A change stream of one document, recording the versions it got."""

    stub: pbg.MemoryGatewayStub
    node: bytes
    versions: list[int] = field(default_factory=list)
    tokens: list[bytes] = field(default_factory=list)
    call: Any = None

    async def start(self, **start: Any) -> None:
        self.call = self.stub.SubscribeChanges(
            pb.SubscribeRequest(node_id=self.node, heartbeat_ms=200, **start)
        )
        # The stream is registered once its first message (a heartbeat or a change) came.
        first = await asyncio.wait_for(self.call.read(), STEP)
        self._take(first)

    def _take(self, ev: Any) -> None:
        for c in ev.changes:
            self.versions.append(c.version)
            self.tokens.append(bytes(c.resume_token))

    async def until(self, version: int, timeout: float = 30.0) -> None:
        async def run() -> None:
            while not self.versions or self.versions[-1] < version:
                ev = await self.call.read()
                assert ev is not grpc.aio.EOF, "the stream ended"
                self._take(ev)

        await asyncio.wait_for(run(), timeout)

    def contiguous(self, first: int, last: int) -> None:
        assert self.versions == list(range(first, last + 1)), self.versions

    def cancel(self) -> None:
        if self.call is not None:
            self.call.cancel()


async def snapshot_of(stub: pbg.MemoryGatewayStub, node: bytes) -> tuple[int, bytes]:
    r = await asyncio.wait_for(stub.ReadSnapshot(pb.ReadSnapshotRequest(node_id=node)), STEP)
    return r.version, bytes(r.snapshot_bson)


def counter(snapshot_bson: bytes) -> int:
    return int(bson.decode(snapshot_bson)["n"])


class GatewayProcess:
    """``virtualdom serve --store URL`` in its own process, on a fixed loopback port."""

    def __init__(self, url: str, data_dir: Path, *extra: str):
        self.url, self.data_dir, self.extra = url, data_dir, extra
        self.port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "gateway.log"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUALDOM_")}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "virtualdom.server.cli",
                    "serve",
                    "--store",
                    self.url,
                    "--data-dir",
                    str(self.data_dir),
                    "--address",
                    self.address,
                    # Several gateways on one host: each HTTP/WebSocket listener on its own port.
                    "--http-address",
                    f"127.0.0.1:{self.http_port}",
                    *self.extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        async with channel(self.port) as ch:
            try:
                await asyncio.wait_for(ch.channel_ready(), 60)
            except TimeoutError:
                raise AssertionError(f"gateway did not start: {self.log.read_text()}") from None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
