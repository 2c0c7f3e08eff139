"""Client side of the streaming rows: the load generator's gRPC and websocket clients.

Everything here runs in the harness process (pinned to the client core) on one asyncio loop, and
does as little per received message as it can: protobuf parsing (upb, in C), a few integer
updates, and waking a waiter when a target is reached. The same accounting serves the gateway,
the echo service (same proto) and the pycrdt-websocket peer (Yjs sync protocol over raw
websockets), so the client's cost per message is alike for all three.

Synchronisation is on events only: a :class:`Progress` counter resolves the futures of whoever
waits for it to reach a value; a :class:`Barrier` counts the members of a group that reached a
target (fan-out: "the last of N subscribers has version V").
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from pycrdt import Doc, Map, Text, TransactionEvent, create_update_message
from websockets.asyncio.client import ClientConnection, connect

from virtualdom.v1 import gateway_pb2 as pb

PREFIX = "/virtualdom.v1.MemoryGateway/"
#: Generous limits (the gateway's own are 128 MiB). ``use_local_subchannel_pool``: channels with
#: equal arguments otherwise share one TCP connection in grpc's global subchannel pool, and
#: "many channels" would silently be one connection.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 128 * 1024 * 1024),
    ("grpc.max_send_message_length", 128 * 1024 * 1024),
    ("grpc.use_local_subchannel_pool", 1),
]
#: Safety net for every wait: a broken run fails instead of hanging (never used to synchronise).
TIMEOUT = 120.0

now = time.perf_counter


class Failed(RuntimeError):
    """A stream the measurement depends on ended or failed."""


class TimedOut(Failed):
    """A wait outlasted the safety net."""


# -- synchronisation ------------------------------------------------------------------------------


class Progress:
    """A counter that only grows; ``await wait(n)`` returns once it is >= n."""

    __slots__ = ("_seq", "_waiters", "error", "value")

    def __init__(self) -> None:
        self.value = 0
        self._waiters: list[tuple[int, int, asyncio.Future[float]]] = []
        self._seq = itertools.count()
        self.error: BaseException | None = None

    def set(self, value: int) -> None:
        if value <= self.value:
            return
        self.value = value
        waiters = self._waiters
        if waiters and waiters[0][0] <= value:
            t = now()
            while waiters and waiters[0][0] <= value:
                fut = heapq.heappop(waiters)[2]
                if not fut.done():
                    fut.set_result(t)

    def add(self, n: int = 1) -> None:
        self.set(self.value + n)

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._waiters.clear()

    async def wait(self, n: int, timeout: float | None = None) -> float:
        """Wait until the value is >= n; returns the perf_counter time it got there (or now)."""
        if self.value >= n:
            return now()
        if self.error is not None:
            raise self.error
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (n, next(self._seq), fut))
        try:
            return await asyncio.wait_for(fut, timeout or TIMEOUT)
        except TimeoutError:
            raise TimedOut(f"timed out waiting for {n} (at {self.value})") from None


class Barrier:
    """Counts the members of a group that reached ``target`` (set it before causing the change)."""

    __slots__ = ("done", "passed", "size", "target")

    def __init__(self) -> None:
        self.target = 0
        self.size = 0
        self.passed = 0
        self.done = Progress()

    def expect(self, target: int, members: Iterable[Any], key: Callable[[Any], int]) -> None:
        """From now on, count members whose ``key`` reaches ``target``; those already there
        count at once."""
        members = list(members)
        self.target, self.size = target, len(members)
        self.passed = sum(1 for m in members if key(m) >= target)
        self.done = Progress()
        if self.passed >= self.size:
            self.done.set(1)

    def step(self, before: int, after: int) -> None:
        """A member moved from ``before`` to ``after``."""
        if before < self.target <= after:
            self.passed += 1
            if self.passed >= self.size:
                self.done.set(1)

    async def wait(self, timeout: float | None = None) -> float:
        try:
            return await self.done.wait(1, timeout)
        except TimedOut:
            raise TimedOut(f"{self.passed} of {self.size} reached {self.target}") from None


# -- gRPC -----------------------------------------------------------------------------------------


def open_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


class Api:
    """The four RPCs on one channel (a connection of its own)."""

    def __init__(self, target: str):
        self.channel = open_channel(target)
        ch = self.channel
        self.write: grpc.aio.UnaryUnaryMultiCallable[pb.WriteDiffRequest, pb.WriteDiffResponse]
        self.write = ch.unary_unary(
            PREFIX + "WriteDiff",
            request_serializer=pb.WriteDiffRequest.SerializeToString,
            response_deserializer=pb.WriteDiffResponse.FromString,
        )
        self.read: grpc.aio.UnaryUnaryMultiCallable[pb.ReadSnapshotRequest, pb.ReadSnapshotResponse]
        self.read = ch.unary_unary(
            PREFIX + "ReadSnapshot",
            request_serializer=pb.ReadSnapshotRequest.SerializeToString,
            response_deserializer=pb.ReadSnapshotResponse.FromString,
        )
        self.subscribe: grpc.aio.UnaryStreamMultiCallable[pb.SubscribeRequest, pb.ChangeEvent]
        self.subscribe = ch.unary_stream(
            PREFIX + "SubscribeChanges",
            request_serializer=pb.SubscribeRequest.SerializeToString,
            response_deserializer=pb.ChangeEvent.FromString,
        )
        self.session: grpc.aio.StreamStreamMultiCallable[pb.SessionMessage, pb.SessionUpdate]
        self.session = ch.stream_stream(
            PREFIX + "CollaborativeSession",
            request_serializer=pb.SessionMessage.SerializeToString,
            response_deserializer=pb.SessionUpdate.FromString,
        )

    async def ready(self) -> None:
        await asyncio.wait_for(self.channel.channel_ready(), TIMEOUT)

    async def close(self) -> None:
        await self.channel.close(None)

    async def put(self, node_id: bytes, diff: bytes) -> pb.WriteDiffResponse:
        return await self.write(
            pb.WriteDiffRequest(node_id=node_id, diff_bson=diff), timeout=TIMEOUT
        )


async def write_many(api: Api, node_id: bytes, diffs: Sequence[bytes], concurrency: int) -> int:
    """Write the diffs with up to ``concurrency`` calls in flight (order is not kept); returns the
    highest version acknowledged."""
    it = iter(diffs)
    top = 0

    async def worker() -> None:
        nonlocal top
        for d in it:
            r = await api.put(node_id, d)
            top = max(top, r.new_version)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return top


class Subscriber:
    """One SubscribeChanges stream and its receive loop.

    ``version`` is the highest document version received; ``events`` counts changes, and
    ``messages`` stream messages that carried changes (the gateway batches changes into one
    message for a subscriber that is behind; the echo service sends one each), ``heartbeats``
    messages with neither changes nor snapshots (the gateway's Progress). ``opened``
    completes with the perf_counter time of the first message of any kind (snapshot included).
    ``arrivals``, when given, records the arrival time of every version; ``progress`` follows
    ``version``.
    """

    __slots__ = (
        "arrivals",
        "barrier",
        "call",
        "events",
        "heartbeats",
        "messages",
        "opened",
        "progress",
        "task",
        "version",
    )

    def __init__(
        self,
        api: Api,
        request: pb.SubscribeRequest,
        barrier: Barrier | None = None,
        arrivals: dict[int, float] | None = None,
    ):
        self.call = api.subscribe(request)
        self.version = 0
        self.events = 0
        self.messages = 0
        self.heartbeats = 0
        self.barrier = barrier
        self.arrivals = arrivals
        self.progress = Progress()
        self.opened: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        opened = self.opened
        try:
            async for ev in self.call:
                if not opened.done():
                    opened.set_result(now())
                changes = ev.changes
                if not changes:
                    if ev.snapshots:
                        self.version = max(self.version, ev.snapshots[-1].version)
                        self.progress.set(self.version)
                    else:
                        self.heartbeats += 1
                    continue
                self.messages += 1
                self.events += len(changes)
                before = self.version
                after = changes[-1].version
                self.version = after
                if self.arrivals is not None:
                    t = now()
                    for c in changes:
                        self.arrivals[c.version] = t
                if self.barrier is not None:
                    self.barrier.step(before, after)
                self.progress.set(after)
            raise Failed("the change stream ended")
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            self._fail(Failed(f"change stream failed: {exc.code().name}: {exc.details()}"))
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        self.progress.fail(exc)
        if self.barrier is not None:
            self.barrier.done.fail(exc)

    def cancel(self) -> None:
        self.call.cancel()
        self.task.cancel()


async def subscribe_many(
    apis: Sequence[Api],
    request: pb.SubscribeRequest,
    n: int,
    barrier: Barrier | None = None,
    batch: int = 500,
) -> list[Subscriber]:
    """Open ``n`` subscriptions spread round-robin over the channels, ``batch`` at a time, each
    confirmed by its first message (use ``send_snapshot`` so there is one)."""
    subs: list[Subscriber] = []
    for start in range(0, n, batch):
        group = [
            Subscriber(apis[i % len(apis)], request, barrier)
            for i in range(start, min(n, start + batch))
        ]
        await asyncio.wait_for(asyncio.gather(*(s.opened for s in group)), TIMEOUT)
        subs.extend(group)
    return subs


async def cancel_all(subs: Iterable[Subscriber]) -> None:
    subs = list(subs)
    for s in subs:
        s.cancel()
    await asyncio.gather(*(s.task for s in subs), return_exceptions=True)


class Member:
    """One CollaborativeSession stream joined to one document, sending SessionDiffs.

    ``acks`` counts acknowledgements, ``seen`` other members' changes received (``seen_version``
    the highest of their versions). At most ``window`` diffs are unacknowledged at a time.
    """

    def __init__(self, api: Api, node_id: bytes, actor: str, window: int = 64):
        self.node_id = node_id
        self.actor = actor
        self.call = api.session(None)  # no request iterator: written with call.write()
        self.seq = itertools.count(1)
        self.acks = Progress()
        self.seen = Progress()
        self.seen_version = 0
        self.ack_version = 0
        self.window = asyncio.Semaphore(window)
        self.joined: asyncio.Future[pb.Joined] = asyncio.get_running_loop().create_future()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def join(self) -> pb.Joined:
        await self.call.write(
            pb.SessionMessage(
                seq=next(self.seq), join=pb.Join(node_id=self.node_id, actor=self.actor)
            )
        )
        return await asyncio.wait_for(self.joined, TIMEOUT)

    async def send(self, diffs: Iterable[bytes]) -> int:
        """Send the diffs in order, pipelined up to the window; returns how many were sent."""
        sent = 0
        node_id, call, seq, window = self.node_id, self.call, self.seq, self.window
        for d in diffs:
            await window.acquire()
            await call.write(
                pb.SessionMessage(seq=next(seq), diff=pb.SessionDiff(node_id=node_id, diff_bson=d))
            )
            sent += 1
        return sent

    async def _run(self) -> None:
        try:
            async for u in self.call:
                kind = u.WhichOneof("kind")
                if kind == "ack":
                    self.ack_version = max(self.ack_version, u.ack.version)
                    self.window.release()
                    self.acks.add()
                elif kind == "change":
                    self.seen_version = max(self.seen_version, u.change.version)
                    self.seen.add()
                elif kind == "joined":
                    self.joined.set_result(u.joined)
                elif kind == "error":
                    raise Failed(f"session error: {u.error.code} {u.error.message}")
            raise Failed("the session ended")
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self._fail(Failed(f"session failed: {exc.code().name}: {exc.details()}"))
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if not self.joined.done():
            self.joined.set_exception(exc)
        self.acks.fail(exc)
        self.seen.fail(exc)

    async def close(self) -> None:
        self.call.cancel()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


# -- the peer (Yjs sync protocol over websockets) --------------------------------------------------

SYNC, SYNC_UPDATE = 0, 2


class WsClient:
    """One websocket client of a pycrdt-websocket room.

    Counts Yjs update messages (``updates``). With a ``doc``, applies every update to it, as a
    y-websocket provider does (the room sends each update to its sender too). The room's sync
    step 1 on connect needs no answer for the server to send updates: room clients are served
    as soon as they connect, so a fan-out receiver stays minimal.
    """

    def __init__(
        self, ws: ClientConnection, doc: Doc[Any] | None = None, barrier: Barrier | None = None
    ):
        self.ws = ws
        self.doc = doc
        self.barrier = barrier
        self.updates = Progress()
        self.opened: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.task = asyncio.get_running_loop().create_task(self._run())

    @classmethod
    async def connect(
        cls, url: str, doc: Doc[Any] | None = None, barrier: Barrier | None = None
    ) -> WsClient:
        ws = await connect(url, max_size=64 * 1024 * 1024, open_timeout=TIMEOUT, ping_interval=None)
        return cls(ws, doc, barrier)

    async def _run(self) -> None:
        opened, updates, doc, barrier = self.opened, self.updates, self.doc, self.barrier
        try:
            async for msg in self.ws:
                assert isinstance(msg, bytes)
                if not opened.done():
                    opened.set_result(now())
                if msg[0] != SYNC or msg[1] != SYNC_UPDATE:
                    continue
                if doc is not None:
                    doc.apply_update(_payload(msg))
                before = updates.value
                updates.set(before + 1)
                if barrier is not None:
                    barrier.step(before, before + 1)
            raise Failed("the websocket closed")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not opened.done():
                opened.set_exception(exc)
            updates.fail(exc)
            if barrier is not None:
                barrier.done.fail(exc)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.ws.close()


def _payload(msg: bytes) -> bytes:
    """The update inside a sync message: [0, 2, varuint length, bytes]."""
    i, shift, n = 2, 0, 0
    while True:
        b = msg[i]
        n |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            break
        shift += 7
    return msg[i : i + n]


async def ws_connect_many(
    url: str, n: int, barrier: Barrier | None = None, batch: int = 200
) -> list[WsClient]:
    """``n`` receivers of one room, ``batch`` connecting at a time, each confirmed by the room's
    first message (its sync step 1: the room has registered the client).

    The first client connects alone: pycrdt-websocket 0.16.5 starts a new room once per client
    that arrives before the room has started, and the second ``YRoom.start`` waits forever on
    the lock the first holds for the room's lifetime, so a client racing the room's creation is
    never served (WebsocketServer.start_room / YRoom.start)."""
    first = await ws_open(url, None, barrier)
    out: list[WsClient] = [first]
    for start in range(1, n, batch):
        group = await asyncio.gather(
            *(WsClient.connect(url, None, barrier) for _ in range(min(batch, n - start)))
        )
        await asyncio.wait_for(asyncio.gather(*(c.opened for c in group)), TIMEOUT)
        out.extend(group)
    return out


async def ws_open(
    url: str, doc: Doc[Any] | None = None, barrier: Barrier | None = None
) -> WsClient:
    """One client, connected and served (the room's sync step 1 arrived)."""
    client = await WsClient.connect(url, doc, barrier)
    await asyncio.wait_for(client.opened, TIMEOUT)
    return client


class YEditor:
    """A pycrdt replica that turns local edits into Yjs update messages (what a Yjs client
    sends); layouts: a Text "text" (the trace) or a Map "doc" (fan-out writes)."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("text", type=Text)
        self.map = self.doc.get("doc", type=Map)
        self._local = False
        self._captured: list[bytes] = []
        self.doc.observe(self._on_transaction)

    def _on_transaction(self, event: TransactionEvent) -> None:
        if self._local:  # remote updates applied by the receive loop are not re-sent
            self._captured.append(event.update)

    def splice(self, pos: int, delete: int, insert: str) -> bytes:
        """One trace edit in one transaction, as an update message (the trace is ASCII, so its
        positions are pycrdt's UTF-8 offsets as they are)."""
        self._local = True
        try:
            with self.doc.transaction():
                if delete:
                    del self.text[pos : pos + delete]
                if insert:
                    self.text.insert(pos, insert)
        finally:
            self._local = False
        return create_update_message(self._captured.pop())

    def set(self, key: str, value: Any) -> bytes:
        self._local = True
        try:
            self.map[key] = value
        finally:
            self._local = False
        return create_update_message(self._captured.pop())
