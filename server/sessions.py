"""Collaborative sessions: the bidirectional stream of editors working on documents together.

A session joins documents. For each, it gets what it lacks (Yjs sync step 2 against the state
vector it sent) and the server's state vector (step 1, so it can send what the server lacks),
then: its diffs and updates go through the document's actor and are acknowledged with their
version once durable; other members' changes (and WriteDiff's) arrive from the change feed in
commit order, never its own; presence is broadcast to the other members and removed when the
member leaves, disconnects or stays silent past the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import bson
import grpc

from virtualdom.engine import Replica, quote
from virtualdom.engine.bson_errors import malformed
from virtualdom.engine.values import DEFAULT_MAX_DEPTH
from virtualdom.v1 import gateway_pb2 as pb

from . import context as callctx
from .auth import caller
from .config import GatewayConfig
from .documents import Call, DocumentHost, Documents, Write, WriteResult
from .errors import BadRequest, ShuttingDown, Unauthenticated, internal_message, status_of
from .feed import ChangeFeed
from .service import MemoryGateway, _echo_budget, abort_for, clock_of

log = logging.getLogger("virtualdom.sessions")


def _error_update(seq: int, node_id: bytes, exc: Exception) -> pb.SessionUpdate:
    """A member's failed message as a SessionError, through the one status table."""
    mapped = status_of(exc)
    retry_after_ms = 0
    if mapped is None:
        log.error("session message failed", exc_info=exc)
        # Never the exception's text (internals): the request id its traceback is logged under.
        code, message = grpc.StatusCode.INTERNAL, internal_message(callctx.request_id.get())
    else:
        code, message, detail = mapped
        retry_after_ms = detail.retry_after_ms
    return pb.SessionUpdate(
        error=pb.SessionError(
            seq=seq, code=code.value[0], message=message, node_id=node_id,
            retry_after_ms=retry_after_ms,
        )
    )  # fmt: skip


@dataclass(eq=False)
class Membership:
    """One session's presence in one document."""

    session: Session
    node_id: bytes
    member_id: str
    actor: str
    presence: bytes = b""
    last_seen: float = field(default_factory=time.monotonic)
    follower_task: asyncio.Task[None] | None = None

    def presence_update(self, removed: bool = False) -> pb.PresenceUpdate:
        return pb.PresenceUpdate(
            node_id=self.node_id, member_id=self.member_id, actor=self.actor,
            state_bson=b"" if removed else self.presence, removed=removed,
        )  # fmt: skip


#: Writes of one session queued to their documents and not yet acknowledged: the reader goes on
#: reading while they wait for their commit, so a member that pipelines its edits gets them
#: committed together (group commit) instead of one commit per edit. Beyond this many, the
#: reader waits for the oldest acknowledgement (and the client's sends back up).
SESSION_WRITE_WINDOW = 256

#: A queued write: the message's seq, its membership and the actor's future.
PendingWrite = tuple[int, "Membership", "asyncio.Future[WriteResult]"]


class Session:
    """The state of one CollaborativeSession stream."""

    def __init__(self, service: SessionService):
        self.service = service
        # Bounded: a slow client makes its change followers wait (they only keep a position).
        self.out: asyncio.Queue[pb.SessionUpdate | None] = asyncio.Queue(maxsize=1024)
        self.joined: dict[bytes, Membership] = {}
        #: Writes in flight, acknowledged in the order they were sent (None: no more).
        self.writes: asyncio.Queue[PendingWrite | None] = asyncio.Queue(SESSION_WRITE_WINDOW)

    def send_nowait(self, update: pb.SessionUpdate) -> None:
        """For small control messages (presence, member events): never block the sender."""
        try:
            self.out.put_nowait(update)
        except asyncio.QueueFull:
            # Control messages must not be lost: queue them from a task instead.
            asyncio.get_running_loop().create_task(self.out.put(update))


class SessionService:
    def __init__(
        self, config: GatewayConfig, documents: Documents, feed: ChangeFeed, gateway: MemoryGateway
    ):
        self.config = config
        self.documents = documents
        self.feed = feed
        self.gateway = gateway
        self.sessions = 0
        self.shutdown = asyncio.Event()

    async def CollaborativeSession(
        self, requests: AsyncIterator[pb.SessionMessage], context: Any
    ) -> AsyncIterator[pb.SessionUpdate]:
        if self.sessions >= self.config.max_sessions:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many sessions (max_sessions={self.config.max_sessions})",
            )
        self.sessions += 1
        session = Session(self)
        acker = asyncio.get_running_loop().create_task(self._acks(session))
        reader = asyncio.get_running_loop().create_task(self._read(session, requests, acker))
        sweeper = asyncio.get_running_loop().create_task(self._sweep(session))
        stop = asyncio.get_running_loop().create_task(self.shutdown.wait())
        who = caller()
        try:
            while True:
                left = who.seconds_left()
                if not stop.done() and (left is None or left > 0) and not session.out.empty():
                    # Something to send: no wait, so no task (a busy session passes here once
                    # per message it sends).
                    item = session.out.get_nowait()
                else:
                    get = asyncio.ensure_future(session.out.get())
                    done, _ = await asyncio.wait(
                        {get, stop}, timeout=left, return_when="FIRST_COMPLETED"
                    )
                    if get not in done:
                        get.cancel()
                        err: Exception = ShuttingDown(
                            "the gateway is shutting down; rejoin to resume", b""
                        )
                        if not done:  # the token expired: the session ends, the member rejoins
                            try:
                                who.check_live()
                            except Unauthenticated as exc:
                                err = exc
                            else:
                                continue
                        await abort_for(context, err)
                        return
                    item = get.result()
                if item is None:
                    return
                yield item
        finally:
            stop.cancel()
            reader.cancel()
            acker.cancel()
            sweeper.cancel()
            for t in (reader, acker, sweeper):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            for m in list(session.joined.values()):
                await self._leave(session, m)
            self.sessions -= 1

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
                    await session.out.put(
                        pb.SessionUpdate(
                            error=pb.SessionError(
                                code=grpc.StatusCode.INVALID_ARGUMENT.value[0],
                                message=str(undecodable),
                            )
                        )
                    )
                    continue
                try:
                    await self._handle(session, msg)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:
                    node = getattr(getattr(msg, msg.WhichOneof("kind") or "join"), "node_id", b"")
                    await session.out.put(_error_update(msg.seq, node, exc))
        finally:
            task = asyncio.current_task()
            if task is None or not task.cancelling():  # cancelled: the session is over anyway
                # Every write read so far is acknowledged (or refused) before the stream ends.
                # (asyncio.wait: neither cancels the acker nor swallows a cancel of this task.)
                await session.writes.put(None)
                await asyncio.wait({acker})
                await session.out.put(None)

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
        others = [o for o in host.members.values() if isinstance(o, Membership)]
        session.joined[node_id] = m
        host.members[m.member_id] = m
        await session.out.put(
            pb.SessionUpdate(
                joined=pb.Joined(
                    seq=seq, node_id=node_id, version=version,
                    vector_clock=pb.VectorClock(counters=clock), update=update, state_vector=sv,
                    snapshot_bson=snap, member_id=m.member_id,
                    members=[o.presence_update() for o in others],
                )
            )
        )  # fmt: skip
        self._broadcast(
            m,
            pb.SessionUpdate(
                member=pb.MemberEvent(
                    node_id=node_id, member_id=m.member_id, actor=actor, joined=True
                )
            ),
        )
        if presence:
            self._broadcast(m, pb.SessionUpdate(presence=m.presence_update()))
        m.follower_task = asyncio.get_running_loop().create_task(self._forward(m, host, last_seq))

    async def _forward(self, m: Membership, host: DocumentHost, pos: int) -> None:
        """Other writers' changes to this document, in commit order, from position ``pos``."""
        follower = self.feed.follow(m.node_id, None)
        limit = self.config.batch_events
        try:
            while True:
                follower.wake.clear()
                entries, pos = await self.gateway.next_entries(follower, pos, limit)
                if not entries:
                    await follower.wake.wait()
                    continue
                for e in entries:
                    pos = e.seq
                    if e.origin == m.member_id:
                        continue
                    change = e.message(True)
                    change.diff_bson, change.update = _fit(
                        change.diff_bson, change.update, self.config
                    )
                    await m.session.out.put(pb.SessionUpdate(change=change))
        finally:
            self.feed.unfollow(follower)

    async def _leave(self, session: Session, m: Membership) -> None:
        session.joined.pop(m.node_id, None)
        if m.follower_task is not None:
            m.follower_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await m.follower_task
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
