"""Collaborative sessions: the bidirectional stream of editors working on documents together.

A session joins documents. For each, it gets what it lacks (Yjs sync step 2 against the state
vector it sent) and the server's state vector (step 1, so it can send what the server lacks),
then: its diffs and updates go through the document's actor and are acknowledged with their
version once durable; other members' changes (and WriteDiff's) arrive from the change feed in
commit order, never its own; presence is broadcast to the other members and removed when the
member leaves, disconnects or stays silent past the TTL.

This module is the gRPC transport of the session core: changes reach members through the
document's room (server/core/room.py), which follows the feed once per document and encodes a
change once as a ``SessionUpdate`` for all of a document's gRPC members; a member whose queue is
full falls behind and is caught up from the feed (and the store) by a task of its own until it
rejoins the room. Presence is shared with the WebSocket members of the room (their awareness
states arrive as PresenceUpdates; a gRPC member's presence reaches them as awareness).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import bson
import grpc

from virtualdom.engine import Replica, quote
from virtualdom.engine.bson_errors import malformed
from virtualdom.engine.values import DEFAULT_MAX_DEPTH
from virtualdom.v1 import gateway_pb2 as pb

from .auth import caller
from .changestream import next_entries
from .config import GatewayConfig
from .core.room import Member, Room, Rooms
from .core.ywire import AwarenessEntry
from .documents import Call, Documents, Write, WriteResult
from .errors import (
    BadRequest,
    Exhausted,
    ShuttingDown,
    TooMany,
    Unauthenticated,
    Unavailable,
    status_for,
)
from .feed import ChangeFeed, Follower
from .rooms import awareness_client, bson_of_state, state_of_bson
from .service import MemoryGateway, _echo_budget, abort_for, clock_of, refuse_stream

log = logging.getLogger("virtualdom.sessions")


def _error_update(seq: int, node_id: bytes, exc: Exception) -> pb.SessionUpdate:
    """A member's failed message as a SessionError, through the one status table (a bug is
    INTERNAL naming the request id, its text only in the log)."""
    code, message, detail = status_for(exc)
    return pb.SessionUpdate(
        error=pb.SessionError(
            seq=seq,
            code=code.value[0],
            message=message,
            node_id=node_id,
            retry_after_ms=detail.retry_after_ms,
        )
    )


@dataclass(eq=False)
class Membership:
    """One session's presence in one document."""

    session: Session
    node_id: bytes
    member_id: str
    actor: str
    presence: bytes = b""
    last_seen: float = field(default_factory=time.monotonic)
    #: Catching up from the feed after falling behind the room (None: in the room's fan-out).
    follower_task: asyncio.Task[None] | None = None
    #: Its membership of the document's room (the core's view of it).
    core: Member | None = None
    room: Room | None = None

    def presence_update(self, removed: bool = False) -> pb.PresenceUpdate:
        return pb.PresenceUpdate(
            node_id=self.node_id,
            member_id=self.member_id,
            actor=self.actor,
            state_bson=b"" if removed else self.presence,
            removed=removed,
        )


#: Writes of one session queued to their documents and not yet acknowledged: the reader goes on
#: reading while they wait for their commit, so a member that pipelines its edits gets them
#: committed together (group commit) instead of one commit per edit. Beyond this many, the
#: reader waits for the oldest acknowledgement (and the client's sends back up).
SESSION_WRITE_WINDOW = 256

#: Messages waiting to be sent to one session's client: joins, acks and forwarded changes wait
#: for room beyond this many (a slow client makes its change followers wait; they only keep a
#: position in the feed).
SESSION_QUEUE = 1024

#: Control messages (other members' presence and member events) are never waited for: their
#: sender is another member. A client that lets this many of them pile up beyond a full
#: queue is not reading; its session ends RESOURCE_EXHAUSTED (it rejoins and resyncs) rather
#: than costing memory without bound.
SESSION_CONTROL_BACKLOG = 4096

#: A queued write: the message's seq, its membership and the actor's future.
PendingWrite = tuple[int, "Membership", "asyncio.Future[WriteResult]"]


class Outbox:
    """The messages to send to one session's client, in order, and how the session ends.

    One event wakes the sending loop (no task and no future per message); ``fail`` ends the
    session with an error's status, whoever finds it (a forwarder, the shutdown, a backlog).
    """

    def __init__(self, capacity: int, backlog: int):
        #: Messages, or SessionUpdates encoded once for several members (bytes).
        self.items: deque[pb.SessionUpdate | bytes] = deque()
        self.capacity = capacity
        self.backlog = backlog
        self.ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        #: The session ends with this error's status (the first one set wins).
        self.error: BaseException | None = None
        #: Nothing more will be queued: the session ends OK once the queue is sent.
        self.finished = False
        #: The call is over already: nothing more is sent.
        self.abandoned = False

    async def put(self, update: pb.SessionUpdate) -> None:
        """Queue a message, waiting while the queue is full (unless the session is ending)."""
        while len(self.items) >= self.capacity and self.error is None:
            self._room.clear()
            await self._room.wait()
        self.items.append(update)
        self.ready.set()

    def offer(self, update: pb.SessionUpdate | bytes) -> bool:
        """Queue a forwarded change if there is room (False: full, the member falls behind)."""
        if len(self.items) >= self.capacity or self.error is not None:
            return self.error is not None  # an ending session drops it
        self.items.append(update)
        self.ready.set()
        return True

    def put_nowait(self, update: pb.SessionUpdate | bytes) -> None:
        """Queue a control message without waiting; a client that lets them pile up past the
        backlog ends its session (see SESSION_CONTROL_BACKLOG)."""
        if len(self.items) >= self.capacity + self.backlog:
            self.fail(
                Exhausted(
                    f"the session is not reading its messages ({len(self.items)} waiting);"
                    " rejoin to resync",
                    limit="session_backlog",
                    allowed=self.capacity + self.backlog,
                    actual=len(self.items) + 1,
                    retry_after_ms=0,
                )
            )
            return
        self.items.append(update)
        self.ready.set()

    def take(self) -> pb.SessionUpdate | bytes:
        update = self.items.popleft()
        if len(self.items) < self.capacity:
            self._room.set()
        return update

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.items.clear()  # not sent: the session ends with the error
        self._room.set()
        self.ready.set()

    def finish(self) -> None:
        self.finished = True
        self.ready.set()

    def abandon(self) -> None:
        """The call is already over (grpc ended it): end without sending anything more."""
        self.abandoned = True
        self.items.clear()
        self.finish()


class Session:
    """The state of one CollaborativeSession stream."""

    def __init__(self, service: SessionService):
        self.service = service
        self.out = Outbox(SESSION_QUEUE, SESSION_CONTROL_BACKLOG)
        self.joined: dict[bytes, Membership] = {}
        #: Writes in flight, acknowledged in the order they were sent (None: no more).
        self.writes: asyncio.Queue[PendingWrite | None] = asyncio.Queue(SESSION_WRITE_WINDOW)

    def send_nowait(self, update: pb.SessionUpdate) -> None:
        """For small control messages (presence, member events): never block the sender."""
        self.out.put_nowait(update)


class SessionService:
    def __init__(
        self,
        config: GatewayConfig,
        documents: Documents,
        feed: ChangeFeed,
        gateway: MemoryGateway,
        rooms: Rooms,
    ):
        self.config = config
        self.documents = documents
        self.feed = feed
        self.gateway = gateway
        self.rooms = rooms
        self.sessions = 0
        self.shutdown = asyncio.Event()
        self.live: set[Session] = set()
        self._count_waiters: list[tuple[int, asyncio.Future[None]]] = []

    def close(self) -> None:
        """Shutting down: every session ends UNAVAILABLE (its members rejoin elsewhere)."""
        self.shutdown.set()
        for session in list(self.live):
            session.out.fail(ShuttingDown("the gateway is shutting down; rejoin to resume", b""))

    async def open_at_most(self, count: int) -> None:
        """Return once at most ``count`` sessions are open (every ended session has released
        its memberships and its slot)."""
        if self.sessions <= count:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, fut)
        self._count_waiters.append(entry)
        try:
            await fut
        finally:
            self._count_waiters.remove(entry)

    def _ended(self) -> None:
        self.sessions -= 1
        for count, fut in self._count_waiters:
            if self.sessions <= count and not fut.done():
                fut.set_result(None)

    async def CollaborativeSession(
        self, requests: AsyncIterator[pb.SessionMessage], context: Any
    ) -> AsyncIterator[pb.SessionUpdate | bytes]:
        if self.sessions >= self.config.max_sessions:
            refusal: Exception = TooMany(
                f"too many sessions (max_sessions={self.config.max_sessions})"
            )
            await refuse_stream(context, refusal, requests)
        if self.shutdown.is_set():
            refusal = ShuttingDown("the gateway is shutting down; rejoin to resume", b"")
            await refuse_stream(context, refusal, requests)
        self.sessions += 1
        try:  # the count is released however the session ends (issue 9, item 2)
            session = Session(self)
            self.live.add(session)
            try:
                async for item in self._run(session, requests, context):
                    yield item
            finally:
                self.live.discard(session)
        finally:
            self._ended()

    async def _run(
        self, session: Session, requests: AsyncIterator[pb.SessionMessage], context: Any
    ) -> AsyncIterator[pb.SessionUpdate | bytes]:
        loop = asyncio.get_running_loop()
        acker = loop.create_task(self._acks(session))
        reader = loop.create_task(self._read(session, requests, acker))
        sweeper = loop.create_task(self._sweep(session))
        who = caller()
        out = session.out
        try:
            while True:
                if out.error is not None:
                    await abort_for(context, out.error)
                    return
                if out.abandoned:
                    return
                left = who.seconds_left()
                if left is not None and left <= 0:
                    who.check_live()  # raises Unauthenticated: the member rejoins
                if out.items:
                    # Something to send: no wait, so no task (a busy session passes here once
                    # per message it sends).
                    yield out.take()
                    continue
                if out.finished:
                    return
                out.ready.clear()
                # One wait on the outbox's own event, with the token's deadline: no task and
                # no future per message, nothing left pending when the session ends.
                try:
                    async with asyncio.timeout(None if left is None else left + 0.001):
                        await out.ready.wait()
                except TimeoutError:
                    continue  # the loop's check ends the session if the token has expired
        except Unauthenticated as exc:
            await abort_for(context, exc)
        finally:
            for t in (reader, acker, sweeper):
                t.cancel()
            await asyncio.wait({reader, acker, sweeper})
            for t in (reader, acker, sweeper):
                if not t.cancelled():
                    t.exception()  # retrieved: a task's failure already reached the outbox
            for m in list(session.joined.values()):
                await self._leave(session, m)

    async def _read(
        self,
        session: Session,
        requests: AsyncIterator[pb.SessionMessage],
        acker: asyncio.Task[None],
    ) -> None:
        try:
            async for msg in requests:
                undecodable: object = msg  # app._parse hands over a BadRequest instead
                if isinstance(undecodable, BadRequest):
                    await session.out.put(_error_update(0, b"", undecodable))
                    continue
                try:
                    await self._handle(session, msg)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:
                    node = getattr(getattr(msg, msg.WhichOneof("kind") or "join"), "node_id", b"")
                    await session.out.put(_error_update(msg.seq, node, exc))
        except Exception as exc:
            # The request stream itself failed (the client's connection broke, a message over
            # the size limit): grpc has ended the call with its own status; nothing is left to
            # send or acknowledge, and it is no gateway fault.
            log.debug("session request stream ended: %r", exc)
            session.out.abandon()
            return
        # The client half-closed: every write read so far is acknowledged (or refused) before
        # the stream ends OK. (asyncio.wait: neither cancels the acker nor swallows a cancel
        # of this task.)
        await session.writes.put(None)
        await asyncio.wait({acker})
        session.out.finish()

    async def _acks(self, session: Session) -> None:
        """Acknowledge the session's writes in the order they were sent, once durable."""
        while (item := await session.writes.get()) is not None:
            seq, m, fut = item
            try:
                result: WriteResult = await fut
                stored = result.stored
                diff, update = _fit(
                    stored.diff_bson if stored else b"",
                    stored.update if stored else b"",
                    self.config,
                )
                reply = pb.SessionUpdate(
                    ack=pb.Ack(
                        seq=seq,
                        node_id=m.node_id,
                        version=result.version,
                        vector_clock=pb.VectorClock(counters=result.clock),
                        diff_bson=diff,
                        update=update,
                    )
                )
            except Exception as exc:  # the write's error, or a bug building the Ack: reported
                reply = _error_update(seq, m.node_id, exc)
            await session.out.put(reply)

    async def _handle(self, session: Session, msg: pb.SessionMessage) -> None:
        kind = msg.WhichOneof("kind")
        for m in session.joined.values():
            m.last_seen = time.monotonic()
        if kind == "join":
            await self._join(session, msg.seq, msg.join)
        elif kind == "leave":
            node_id = self.gateway.node_id(msg.leave.node_id)
            joined = session.joined.get(node_id)
            if joined is None:
                raise BadRequest(f"not joined to {quote(node_id)}")
            await self._leave(session, joined)
        elif kind == "diff":
            m = self._member(session, msg.diff.node_id)
            diff_bson = msg.diff.diff_bson  # once: each read of a bytes field copies it
            if not diff_bson:
                raise BadRequest("diff_bson is empty")
            caller().require_write(m.node_id, len(diff_bson))  # joined = may read
            ctx = clock_of(msg.diff.vector_clock) if msg.diff.vector_clock.counters else None
            write = Write(diff=diff_bson, context=ctx, actor=m.actor, origin=m.member_id)
            await self._write(session, msg.seq, m, write)
        elif kind == "update":
            m = self._member(session, msg.update.node_id)
            update = msg.update.update  # once: each read of a bytes field copies it
            if not update:
                raise BadRequest("update is empty")
            caller().require_write(m.node_id, len(update))
            write = Write(update=update, actor=m.actor, origin=m.member_id)
            await self._write(session, msg.seq, m, write)
        elif kind == "presence":
            m = self._member(session, msg.presence.node_id)
            m.presence = _checked_presence(msg.presence.state_bson)
            self._broadcast(m, pb.SessionUpdate(presence=m.presence_update(not m.presence)))
            self._share_presence(m)
        else:
            raise BadRequest("empty session message")

    def _member(self, session: Session, raw: bytes) -> Membership:
        node_id = self.gateway.node_id(raw)
        m = session.joined.get(node_id)
        if m is None:
            raise BadRequest(f"join {quote(node_id)} before sending to it")
        return m

    async def _write(self, session: Session, seq: int, m: Membership, write: Write) -> None:
        """Queue the write to its document; the acker sends its Ack once it is durable."""
        host = await self.documents.host(m.node_id, create=True)
        await session.writes.put((seq, m, host.enqueue(write)))

    async def _join(self, session: Session, seq: int, join: pb.Join) -> None:
        node_id = self.gateway.node_id(join.node_id)
        who = caller()  # joining reads the document; the member acts as the token's subject
        who.require_read(node_id)
        actor = self.gateway.actor(join.actor)  # within max_actor_bytes
        if node_id in session.joined:
            raise BadRequest(f"already joined {quote(node_id)}")
        presence = _checked_presence(join.presence_bson)
        host = await self.documents.host(node_id, create=True)
        state_vector, want_snapshot = bytes(join.state_vector), join.want_snapshot

        def sync(r: Replica) -> tuple[Any, ...]:
            update = r.update_since(state_vector) if state_vector else r.encode_state()
            snap = r.snapshot() if want_snapshot else b""
            return update, r.state_vector(), r.version, r.clock(), snap, host.last_seq

        update, sv, version, clock, snap, last_seq = await host.submit(Call(sync))
        if len(update) + len(snap) > _echo_budget(self.config):
            snap = b""  # too big beside the state: the client reads it with ReadSnapshot
        m = Membership(session, node_id, f"{actor}#{uuid.uuid4().hex[:12]}", actor, presence)
        others = [o.presence_update() for o in host.members.values() if isinstance(o, Membership)]
        room = self.rooms.room(node_id, host)
        others += _websocket_presence(room, node_id)
        session.joined[node_id] = m
        host.members[m.member_id] = m
        await session.out.put(
            pb.SessionUpdate(
                joined=pb.Joined(
                    seq=seq,
                    node_id=node_id,
                    version=version,
                    vector_clock=pb.VectorClock(counters=clock),
                    update=update,
                    state_vector=sv,
                    snapshot_bson=snap,
                    member_id=m.member_id,
                    members=others,
                )
            )
        )
        self._broadcast(
            m,
            pb.SessionUpdate(
                member=pb.MemberEvent(
                    node_id=node_id, member_id=m.member_id, actor=actor, joined=True
                )
            ),
        )
        # Into the room's fan-out from the position of the state it was just sent: changes up
        # to it are skipped; if the room already fanned out past it (while the Joined waited
        # for room in the queue), the member starts behind and is caught up first.
        room = self.rooms.room(node_id, host)  # again: it may have emptied during the put
        codec = room.codec("grpc", lambda _: GrpcCodec(self.config, node_id))
        core = Member(
            m.member_id,
            actor,
            codec,
            _Sink(session.out),
            since=last_seq,
            owner=m,
            on_behind=lambda pos: self._fell_behind(m, pos),
        )
        m.core, m.room = core, room
        room.join(core)
        if room.position > last_seq:
            room.fall_behind(core, last_seq)
        if presence:
            self._broadcast(m, pb.SessionUpdate(presence=m.presence_update()))
            self._share_presence(m)

    def _fell_behind(self, m: Membership, pos: int) -> None:
        """The member's queue was full when the room fanned out a change: it keeps only its
        position and catches up on its own (waiting for room in its queue) until it rejoins."""
        if m.follower_task is None or m.follower_task.done():
            m.follower_task = asyncio.get_running_loop().create_task(self._catch_up(m, pos))

    async def _catch_up(self, m: Membership, pos: int) -> None:
        """Other writers' changes to this document, in commit order, from position ``pos``,
        until the member is back in the room's fan-out."""
        follower = self.feed.follow(m.node_id, None)
        limit = self.config.batch_events
        try:
            await self._forward_from(m, follower, pos, limit)
        except Exception as exc:
            # A member must never go mute: its session ends with the error's status (its
            # document's history was compacted past it: OUT_OF_RANGE; it rejoins and resyncs).
            m.session.out.fail(exc)
        finally:
            self.feed.unfollow(follower)

    async def _forward_from(self, m: Membership, follower: Follower, pos: int, limit: int) -> None:
        """Forward entries after ``pos`` until caught up with the room (then back in its
        fan-out); raises what stops it (Compacted, a store error)."""
        while True:
            follower.wake.clear()
            entries, pos = await next_entries(self.feed, self.documents.store, follower, pos, limit)
            if not entries:
                # Caught up: back into the fan-out, with no await since the read (gap-free).
                if m.room is not None and m.core is not None and m.room.rejoin(m.core, pos):
                    return
                await follower.wake.wait()
                continue
            for e in entries:
                pos = e.seq
                if e.origin == m.member_id:
                    continue
                change = e.message(True)
                change.diff_bson, change.update = _fit(change.diff_bson, change.update, self.config)
                await m.session.out.put(pb.SessionUpdate(change=change))

    async def _leave(self, session: Session, m: Membership) -> None:
        session.joined.pop(m.node_id, None)
        if m.room is not None and m.core is not None:
            m.room.leave(m.core)  # its presence leaves the WebSocket members' awareness too
        if m.follower_task is not None:
            m.follower_task.cancel()
            # asyncio.wait: a forwarder's own failure (already in the outbox) is not raised
            # here, so the memberships after this one are still released.
            await asyncio.wait({m.follower_task})
        host = self.documents.hosts.get(m.node_id)
        if host is not None:
            host.members.pop(m.member_id, None)
            host.last_used = time.monotonic()
        if m.presence:
            self._broadcast(m, pb.SessionUpdate(presence=m.presence_update(removed=True)))
        self._broadcast(
            m,
            pb.SessionUpdate(
                member=pb.MemberEvent(
                    node_id=m.node_id, member_id=m.member_id, actor=m.actor, joined=False
                )
            ),
        )

    def _broadcast(self, sender: Membership, update: pb.SessionUpdate) -> None:
        host = self.documents.hosts.get(sender.node_id)
        if host is None:
            return
        for other in list(host.members.values()):
            if isinstance(other, Membership) and other is not sender:
                other.session.send_nowait(update)

    async def _sweep(self, session: Session) -> None:
        """Remove the presence of memberships silent past the TTL."""
        ttl = self.config.presence_ttl_s
        while True:
            await asyncio.sleep(max(0.02, ttl / 4))
            now = time.monotonic()
            for m in list(session.joined.values()):
                if m.presence and now - m.last_seen > ttl:
                    m.presence = b""
                    self._broadcast(m, pb.SessionUpdate(presence=m.presence_update(removed=True)))
                    self._share_presence(m)

    def _share_presence(self, m: Membership) -> None:
        """The member's presence as an awareness state of the room's WebSocket members."""
        if m.room is not None and m.core is not None:
            m.room.set_state(m.core, awareness_client(m.member_id), state_of_bson(m.presence))


class _Sink:
    """A gRPC membership's side of the room: changes if its session's queue has room (else it
    falls behind), presence as control messages."""

    __slots__ = ("out",)

    def __init__(self, out: Outbox):
        self.out = out

    def offer(self, frame: bytes) -> bool:
        return self.out.offer(frame)

    def put(self, frame: bytes) -> None:
        self.out.put_nowait(frame)

    def abort(self) -> None:
        self.out.fail(Unavailable("the document's change follower failed; rejoin to resync"))


class GrpcCodec:
    """SessionUpdates of a room's events, encoded once for all its gRPC members."""

    def __init__(self, config: GatewayConfig, node_id: bytes):
        self.config = config
        self.node_id = node_id

    def change(self, entry: Any) -> bytes | None:
        change = entry.message(True)
        change.diff_bson, change.update = _fit(change.diff_bson, change.update, self.config)
        data: bytes = pb.SessionUpdate(change=change).SerializeToString()
        return data

    def awareness(
        self, update: bytes, entries: Sequence[AwarenessEntry], owner: Member | None
    ) -> bytes | None:
        """A WebSocket member's awareness as a PresenceUpdate (a gRPC member's own presence
        reaches the gRPC members directly)."""
        if owner is None or isinstance(owner.owner, Membership) or not entries:
            return None
        e = entries[-1]
        data: bytes = pb.SessionUpdate(
            presence=_presence_of(owner, e.state if not e.removed else None, self.node_id)
        ).SerializeToString()
        return data


def _presence_of(owner: Member, state: str | None, node_id: bytes) -> pb.PresenceUpdate:
    return pb.PresenceUpdate(
        node_id=node_id,
        member_id=owner.member_id,
        actor=owner.actor,
        state_bson=b"" if state is None else bson_of_state(state),
        removed=state is None,
    )


def _websocket_presence(room: Room, node_id: bytes) -> list[pb.PresenceUpdate]:
    """The awareness states of the room's WebSocket members, for a joining gRPC member."""
    return [
        _presence_of(room.owners[client], e.state, node_id)
        for client, e in room.states.items()
        if not isinstance(room.owners[client].owner, Membership)
    ]


def _fit(diff: bytes, update: bytes, config: GatewayConfig) -> tuple[bytes, bytes]:
    """A change's diff and update, as much of them as one message can carry: a message over
    max_message_bytes would end the member's whole session. Members keep replicas, so the
    update is kept first (without either, the member resyncs by rejoining)."""
    budget = _echo_budget(config)
    if len(diff) + len(update) > budget:
        diff = b""
        if len(update) > budget:
            update = b""
    return diff, update


def _checked_presence(data: bytes) -> bytes:
    if not data:
        return b""
    if len(data) > 64 * 1024:
        raise BadRequest("presence state is over 64 KiB")
    try:
        bson.decode(data)
    except Exception:
        # In the project's words, with the byte offset (not pymongo's text).
        raise BadRequest(
            f"presence state is not a BSON document: {malformed(data, DEFAULT_MAX_DEPTH)}"
        ) from None
    return bytes(data)


__all__ = ["SessionService"]
