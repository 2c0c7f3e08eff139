"""The framework limit: a bare grpcio asyncio service with the gateway's exact message shapes.

``python -m benchmarks.load.echo_server`` prints ``PORT <n>`` once serving. It keeps each
document as a Python list of the diffs written to it, in memory, with no CRDT, no validation, no
store and no batching: WriteDiff appends and answers a WriteDiffResponse echoing the diff;
ReadSnapshot returns the last diff written as the snapshot; SubscribeChanges sends an optional
snapshot, the stored diffs after ``from_version`` and then every new one, ONE change per stream
message; CollaborativeSession acknowledges each diff to its sender and sends it as a Change to
the document's other members. Whatever the gateway does on top costs time this service does not
spend, so its figures are what grpcio itself allows on this machine with these messages.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import grpc

from virtualdom.v1 import gateway_pb2 as pb
from virtualdom.v1 import gateway_pb2_grpc as pbg

EMPTY_BSON = b"\x05\x00\x00\x00\x00"


class Echo(pbg.MemoryGatewayServicer):
    def __init__(self) -> None:
        self.docs: dict[bytes, list[bytes]] = defaultdict(list)
        self.subscribers: dict[bytes, set[asyncio.Queue[pb.Change]]] = defaultdict(set)

    def _append(self, node_id: bytes, diff: bytes, actor: str) -> pb.Change:
        log = self.docs[node_id]
        log.append(diff)
        version = len(log)
        change = pb.Change(
            node_id=node_id,
            version=version,
            diff_bson=diff,
            actor=actor,
            vector_clock=pb.VectorClock(counters={"echo": version}),
            timestamp_us=time.time_ns() // 1000,
            resume_token=version.to_bytes(8, "big"),
        )
        for q in self.subscribers.get(node_id, ()):
            q.put_nowait(change)
        return change

    async def WriteDiff(self, request: pb.WriteDiffRequest, context: Any) -> pb.WriteDiffResponse:
        change = self._append(request.node_id, request.diff_bson, request.actor)
        return pb.WriteDiffResponse(
            success=True,
            new_version=change.version,
            vector_clock=change.vector_clock,
            effective_diff_bson=request.diff_bson,
        )

    async def ReadSnapshot(
        self, request: pb.ReadSnapshotRequest, context: Any
    ) -> pb.ReadSnapshotResponse:
        log = self.docs.get(request.node_id, [])
        clock = pb.VectorClock(counters={"echo": len(log)})
        return pb.ReadSnapshotResponse(
            snapshot_bson=log[-1] if log else EMPTY_BSON, version=len(log), vector_clock=clock
        )

    async def SubscribeChanges(
        self, request: pb.SubscribeRequest, context: Any
    ) -> AsyncIterator[pb.ChangeEvent]:
        node_id = request.node_id
        queue: asyncio.Queue[pb.Change] = asyncio.Queue()
        self.subscribers[node_id].add(queue)
        try:
            log = self.docs.get(node_id, [])
            if request.send_snapshot:
                yield pb.ChangeEvent(
                    snapshots=[
                        pb.SnapshotEvent(
                            node_id=node_id,
                            version=len(log),
                            snapshot_bson=log[-1] if log else EMPTY_BSON,
                        )
                    ]
                )
            else:
                for version in range(request.from_version, len(log)):
                    yield pb.ChangeEvent(
                        changes=[
                            pb.Change(
                                node_id=node_id,
                                version=version + 1,
                                diff_bson=log[version],
                                vector_clock=pb.VectorClock(counters={"echo": version + 1}),
                            )
                        ]
                    )
            while True:
                yield pb.ChangeEvent(changes=[await queue.get()])
        finally:
            self.subscribers[node_id].discard(queue)

    async def CollaborativeSession(
        self, request_iterator: AsyncIterator[pb.SessionMessage], context: Any
    ) -> AsyncIterator[pb.SessionUpdate]:
        outbox: asyncio.Queue[pb.SessionUpdate | None] = asyncio.Queue()
        joined: set[bytes] = set()
        # Changes by other members arrive here (the same queues as subscriptions use).
        me: asyncio.Queue[pb.Change] = asyncio.Queue()

        async def relay() -> None:
            while True:
                outbox.put_nowait(pb.SessionUpdate(change=await me.get()))

        async def read() -> None:
            async for msg in request_iterator:
                kind = msg.WhichOneof("kind")
                if kind == "join":
                    node_id = msg.join.node_id
                    joined.add(node_id)
                    self.subscribers[node_id].add(me)
                    log = self.docs.get(node_id, [])
                    outbox.put_nowait(
                        pb.SessionUpdate(
                            joined=pb.Joined(seq=msg.seq, node_id=node_id, version=len(log))
                        )
                    )
                elif kind == "diff":
                    # Not to the sender itself: leave the own queue out while appending.
                    node_id = msg.diff.node_id
                    self.subscribers[node_id].discard(me)
                    change = self._append(node_id, msg.diff.diff_bson, "")
                    self.subscribers[node_id].add(me)
                    outbox.put_nowait(
                        pb.SessionUpdate(
                            ack=pb.Ack(
                                seq=msg.seq,
                                node_id=node_id,
                                version=change.version,
                                vector_clock=change.vector_clock,
                            )
                        )
                    )
            for node_id in joined:
                self.subscribers[node_id].discard(me)
            outbox.put_nowait(None)

        relayer = asyncio.create_task(relay())
        reader = asyncio.create_task(read())
        try:
            while (update := await outbox.get()) is not None:
                yield update
        finally:
            reader.cancel()
            relayer.cancel()


async def main(args: argparse.Namespace) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 128 * 1024 * 1024),
            ("grpc.max_send_message_length", 128 * 1024 * 1024),
            ("grpc.so_reuseport", 1 if args.reuseport else 0),
        ]
    )
    pbg.add_MemoryGatewayServicer_to_server(Echo(), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--reuseport", action="store_true", help="several processes on one port")
    ap.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    a = ap.parse_args()
    if a.loop == "uvloop":
        import uvloop

        uvloop.run(main(a))
    else:
        asyncio.run(main(a))
