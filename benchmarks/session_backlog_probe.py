"""What a session member that never reads costs the gateway (issue 9, item 3):
``python -m benchmarks.session_backlog_probe [--changes 20000] [--root DIR]``.

A gateway runs in its own process (``--root``: from another source tree, e.g. an export of
``main``, for an A/B in one run). Member ``idle`` joins a document and never reads its stream;
member ``busy`` joins the same document and makes ``--changes`` edits, each followed by a
presence update (a cursor), pipelined 64 at a time. The server's RSS is read from /proc before
the idle member joins, after the edits, and at the peak; also how ``idle``'s stream ended once
it finally reads. ``--no-idle`` is the control (the same edits without the idle member: the
document, its history and the feed window grow either way). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bson
import grpc

from benchmarks.load.common import ServerProcess, set_diff
from benchmarks.source_tree import import_root
from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

NODE = b"probe/doc"


class Stream:
    """A CollaborativeSession call fed from a queue."""

    def __init__(self, stub: pbg.MemoryGatewayStub):
        self.queue: asyncio.Queue[pb.SessionMessage | None] = asyncio.Queue()
        self.call: Any = stub.CollaborativeSession(self._requests())

    async def _requests(self) -> AsyncIterator[pb.SessionMessage]:
        while (m := await self.queue.get()) is not None:
            yield m

    def send(self, **fields: Any) -> None:
        self.queue.put_nowait(pb.SessionMessage(**fields))

    async def joined(self) -> None:
        while (await self.call.read()).WhichOneof("kind") != "joined":
            pass


async def probe(server: ServerProcess, changes: int, idle_member: bool) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(server.target) as ch:
        stub = pbg.MemoryGatewayStub(ch)
        base_rss = server.rss()[0]
        idle = Stream(stub)
        if idle_member:
            idle.send(seq=1, join=pb.Join(node_id=NODE, actor="idle"))
            await idle.joined()
        busy = Stream(stub)
        busy.send(seq=1, join=pb.Join(node_id=NODE, actor="busy"))
        await busy.joined()
        started = time.perf_counter()
        acked = 0
        seq = 1
        window = 64
        for i in range(changes):
            seq += 1
            busy.send(seq=seq, diff=pb.SessionDiff(node_id=NODE, diff_bson=set_diff("n", i)))
            seq += 1
            cursor = bson.encode({"cursor": i, "name": "busy"})
            busy.send(seq=seq, presence=pb.Presence(node_id=NODE, state_bson=cursor))
            while i + 1 - acked > window:
                u = await busy.call.read()
                if u.WhichOneof("kind") == "ack":
                    acked += 1
                elif u.WhichOneof("kind") == "error":
                    raise RuntimeError(u.error.message)
        while acked < changes:
            u = await busy.call.read()
            if u.WhichOneof("kind") == "ack":
                acked += 1
        seconds = time.perf_counter() - started
        rss, peak = server.rss()
        # Now the idle member reads what waited for it, and how its stream ended.
        received = 0
        ended = "OK" if idle_member else "no idle member"
        try:
            if not idle_member:
                raise EOFError
            while (u := await asyncio.wait_for(idle.call.read(), 30)) is not grpc.aio.EOF:
                received += 1
                if received == 1:
                    idle.queue.put_nowait(None)
        except grpc.aio.AioRpcError as err:
            ended = f"{err.code().name}: {err.details()}"
        except TimeoutError:
            ended = "still open"
        except EOFError:
            pass
        busy.queue.put_nowait(None)
        idle.queue.put_nowait(None)
        return {
            "changes": changes,
            "write_seconds": round(seconds, 2),
            "server_rss_mib_before": round(base_rss / 2**20, 1),
            "server_rss_mib_after": round(rss / 2**20, 1),
            "server_rss_mib_peak": round(peak / 2**20, 1),
            "rss_growth_mib": round((rss - base_rss) / 2**20, 1),
            "idle_member_received": received,
            "idle_member_ended": ended,
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--changes", type=int, default=20_000)
    ap.add_argument("--root", help="run the gateway from this source tree (A/B)")
    ap.add_argument("--no-idle", action="store_true", help="the control: no idle member")
    a = ap.parse_args()
    args = ["--no-access-log"]
    with tempfile.TemporaryDirectory(prefix="vdom-probe-") as scratch:
        env = None
        if a.root:
            # virtualdom from the other tree's import root, benchmarks/ from the tree itself.
            where = import_root(Path(a.root), Path(scratch))
            env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys([str(where), a.root]))}
        with ServerProcess("benchmarks.load.gateway_proc", args, env=env) as server:
            out = asyncio.run(probe(server, a.changes, not a.no_idle))
    out["root"] = a.root or "this tree"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
