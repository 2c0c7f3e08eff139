"""The members of one document, on any transport: fan-out of committed changes and presence.

A :class:`Room` exists while a document has members. It follows the change feed for its
document with ONE follower (not one per member) and hands each committed change to every member
but the one that wrote it, encoded once per transport (:class:`Codec`) for all the members of
that transport. Presence is kept the way y-protocols' awareness keeps it — one state per client
id with a clock — so a join costs the others nothing until it sets a state, and a change of
state is one small delta for everyone.

Sending never blocks the room and starts no task: each member has an :class:`Outbox` that its
transport drains with one writer task for the whole connection; a member whose outbox overflows
is too slow to keep up and is told to go (its transport closes it; it resyncs on reconnect).

No transport, no grpc, no protobuf here: the transports (server/yws.py, server/hocuspocus.py;
the gRPC session next) convert their frames, call this, and convert back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .ywire import AwarenessEntry, encode_awareness

__all__ = ["Codec", "Committed", "Member", "Outbox", "Room", "Rooms"]

log = logging.getLogger("virtualdom.rooms")

#: Frames queued for one member before it counts as too slow and is disconnected.
OUTBOX_LIMIT = 4096


class Committed(Protocol):
    """What the room needs of a committed change (server/feed.py's Entry)."""

    @property
    def seq(self) -> int: ...

    origin: str


class Codec(Protocol):
    """How one transport encodes what a room sends: one instance per transport and room, so
    each frame is built once for all of that transport's members."""

    def change(self, entry: Any) -> bytes | None:
        """A committed change as this transport's frame (None: nothing to send)."""

    def awareness(self, update: bytes) -> bytes | None:
        """An awareness update (y-protocols encoding) as this transport's frame."""


class Outbox:
    """A member's frames waiting to be sent, in order; drained by one writer task."""

    __slots__ = ("_waiter", "closed", "items", "limit", "overflowed")

    def __init__(self, limit: int = OUTBOX_LIMIT):
        self.items: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.overflowed = False
        self.limit = limit

    def put(self, frame: bytes) -> None:
        if self.closed:
            return
        if len(self.items) >= self.limit:
            # Too slow: stop queueing (memory stays bounded) and let the writer end it.
            self.overflowed = True
            self.close()
            return
        self.items.append(frame)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def close(self) -> None:
        self.closed = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def get(self) -> bytes | None:
        """The next frame; None once closed and drained (or overflowed)."""
        while not self.items:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.overflowed:
            return None
        return self.items.popleft()


@dataclass(eq=False)
class Member:
    """One connection's membership of one document."""

    member_id: str
    actor: str
    codec: Codec
    outbox: Outbox
    #: May write (the caller's grant); a read-only member's edits are refused, not applied.
    writable: bool = True
    #: Awareness client ids whose states this member set (removed when it leaves).
    clients: set[int] = field(default_factory=set)
    last_seen: float = field(default_factory=time.monotonic)


#: Yields batches of committed changes of one document from a feed position, forever.
ChangeStream = Callable[[bytes, int], AsyncIterator[Sequence[Any]]]


class Room:
    """The members of one document."""

    def __init__(self, rooms: Rooms, node_id: bytes, host: Any):
        self.rooms = rooms
        self.node_id = node_id
        #: The document's DocumentHost (server/documents.py): writes and reads go through it.
        self.host = host
        self.members: dict[str, Member] = {}
        #: Members by codec: a committed change is encoded once per codec.
        self.groups: dict[Codec, dict[str, Member]] = {}
        #: Awareness: client id -> its latest entry, and the member that set it.
        self.states: dict[int, AwarenessEntry] = {}
        self.owners: dict[int, Member] = {}
        #: Per-room codecs of transports whose frames name the document (Hocuspocus).
        self.codecs: dict[Any, Codec] = {}
        self._task: asyncio.Task[None] | None = None

    def codec(self, key: Any, make: Callable[[Any], Codec]) -> Codec:
        """This room's codec for ``key`` (made once), shared by its members of a transport."""
        c = self.codecs.get(key)
        if c is None:
            c = self.codecs[key] = make(key)
        return c

    # -- membership ------------------------------------------------------------------------------

    def join(self, m: Member) -> None:
        """Registered at once: every change committed from now on reaches ``m``; its sync
        (which reads the document after this) may overlap them, which Yjs merges harmlessly."""
        self.members[m.member_id] = m
        self.groups.setdefault(m.codec, {})[m.member_id] = m
        self.host.members[m.member_id] = m  # a document with members stays loaded
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._follow(self.host.last_seq), name=f"room:{self.node_id[:64]!r}"
            )

    def leave(self, m: Member) -> None:
        if self.members.pop(m.member_id, None) is None:
            return
        group = self.groups.get(m.codec)
        if group is not None:
            group.pop(m.member_id, None)
            if not group:
                del self.groups[m.codec]
        self.host.members.pop(m.member_id, None)
        self.host.last_used = time.monotonic()
        gone = [c for c in m.clients if self.owners.get(c) is m]
        if gone:
            removed = []
            for c in gone:
                old = self.states.pop(c)
                del self.owners[c]
                removed.append(AwarenessEntry(c, old.clock + 1, "null"))
            self._broadcast_awareness(encode_awareness(removed), None)
        if not self.members:
            self.rooms.drop(self)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    # -- awareness -------------------------------------------------------------------------------

    def awareness(self, m: Member, entries: Sequence[AwarenessEntry], raw: bytes) -> None:
        """Apply an awareness update from ``m`` (y-protocols applyAwarenessUpdate's rules:
        a newer clock wins; a removal at the same clock wins) and pass it on to everyone."""
        m.last_seen = time.monotonic()
        for e in entries:
            cur = self.states.get(e.client)
            if cur is not None and not (
                cur.clock < e.clock or (cur.clock == e.clock and e.removed and not cur.removed)
            ):
                continue
            owner = self.owners.get(e.client)
            if owner is not None and owner is not m:
                owner.clients.discard(e.client)
            if e.removed:
                self.states.pop(e.client, None)
                self.owners.pop(e.client, None)
                m.clients.discard(e.client)
            else:
                self.states[e.client] = e
                self.owners[e.client] = m
                m.clients.add(e.client)
        # y-websocket's server relays to every connection, the sender's included.
        self._broadcast_awareness(raw, None)

    def awareness_snapshot(self) -> bytes | None:
        """Every current state as one awareness update (for a member that just joined)."""
        if not self.states:
            return None
        return encode_awareness(list(self.states.values()))

    def _broadcast_awareness(self, update: bytes, skip: Member | None) -> None:
        for codec, group in self.groups.items():
            frame = codec.awareness(update)
            if frame is None:
                continue
            for other in group.values():
                if other is not skip:
                    other.outbox.put(frame)

    # -- changes ---------------------------------------------------------------------------------

    async def _follow(self, pos: int) -> None:
        try:
            async for batch in self.rooms.changes(self.node_id, pos):
                for entry in batch:
                    self._fan_out(entry)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: members would silently stop getting changes
            log.exception("room follower of %r failed; disconnecting its members", self.node_id)
            for m in list(self.members.values()):
                m.outbox.overflowed = True
                m.outbox.close()

    def _fan_out(self, entry: Any) -> None:
        origin = entry.origin
        for codec, group in self.groups.items():
            frame: bytes | None = None
            for m in group.values():
                if m.member_id == origin:
                    continue
                if frame is None:
                    frame = codec.change(entry)
                    if frame is None:
                        break
                m.outbox.put(frame)


class Rooms:
    """The rooms of a gateway, one per document with members."""

    def __init__(self, changes: ChangeStream):
        self.changes = changes
        self.rooms: dict[bytes, Room] = {}

    def room(self, node_id: bytes, host: Any) -> Room:
        """The room of a loaded document (made on first use)."""
        r = self.rooms.get(node_id)
        if r is None or r.host is not host:
            if r is not None:  # the host was unloaded and reloaded: a new room
                r.stop()
            r = self.rooms[node_id] = Room(self, node_id, host)
        return r

    def drop(self, room: Room) -> None:
        if self.rooms.get(room.node_id) is room:
            del self.rooms[room.node_id]
        room.stop()

    def close(self) -> None:
        for r in list(self.rooms.values()):
            r.stop()
        self.rooms.clear()
