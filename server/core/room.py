"""The members of one document, on any transport: fan-out of committed changes and presence.

A :class:`Room` exists while a document has members. It follows the change feed for its
document with ONE follower (not one per member) and hands each committed change to every member
but the one that wrote it, encoded once per transport (:class:`Codec`) for all the members of
that transport. Presence is kept the way y-protocols' awareness keeps it — one state per client
id with a clock — so a join costs the others nothing until it sets a state, and a change of
state is one small delta for everyone.

Sending never blocks the room and starts no task: each member has a :class:`Sink` (a
WebSocket's :class:`Outbox`, drained by one writer task for the whole connection; a gRPC
session's queue). A sink that is full refuses the change: its member falls behind, keeping only
its feed position, and its transport catches it up from the feed (and the store) on its own,
then puts it back with :meth:`Room.rejoin` — as etcd's watchers go from "synced" to "unsynced"
and back. A WebSocket's outbox never refuses: past its limit it ends the connection (the
client resyncs on reconnect).

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

__all__ = ["Codec", "Committed", "Member", "Outbox", "Room", "Rooms", "Sink"]

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

    def awareness(
        self, update: bytes, entries: Sequence[AwarenessEntry], owner: Member | None
    ) -> bytes | None:
        """An awareness update (y-protocols encoding, and decoded: ``entries``) set by
        ``owner`` (None: several, or nobody's) as this transport's frame (None: nothing)."""


class Sink(Protocol):
    """Where a member's frames go."""

    def offer(self, frame: bytes) -> bool:
        """Queue a change; False when full (the member falls behind)."""

    def put(self, frame: bytes) -> None:
        """Queue a control frame (presence); the sink's own policy bounds it."""

    def abort(self) -> None:
        """End the member: the room cannot serve it any more (its follower failed)."""


class Outbox:
    """A member's frames waiting to be sent, in order; drained by one writer task."""

    __slots__ = ("_waiter", "closed", "items", "limit", "overflowed")

    def __init__(self, limit: int = OUTBOX_LIMIT):
        self.items: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.overflowed = False
        self.limit = limit

    def offer(self, frame: bytes) -> bool:
        self.put(frame)
        return True  # never refused: past the limit the connection ends instead

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

    def abort(self) -> None:
        self.overflowed = True
        self.close()

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
    outbox: Sink
    #: May write (the caller's grant); a read-only member's edits are refused, not applied.
    writable: bool = True
    #: Awareness client ids whose states this member set (removed when it leaves).
    clients: set[int] = field(default_factory=set)
    last_seen: float = field(default_factory=time.monotonic)
    #: Changes up to this feed position are not sent (the member's sync already had them).
    since: int = 0
    #: Called with the member's position when its sink refused a change (it fell behind and
    #: is out of the fan-out until :meth:`Room.rejoin`); None: nobody catches it up.
    on_behind: Callable[[int], None] | None = None
    #: The transport's own object for this member (the gRPC session's Membership).
    owner: Any = None


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
        #: Feed position of the last change fanned out.
        self.position: int = host.last_seq
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
        # A document with members stays loaded (a transport may have registered it already).
        self.host.members.setdefault(m.member_id, m)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._follow(self.position), name=f"room:{self.node_id[:64]!r}"
            )

    def rejoin(self, m: Member, pos: int) -> bool:
        """Put a member that fell behind back into the fan-out, caught up to feed position
        ``pos``. Call it right after reading the feed up to ``pos`` (no await between): True
        when that is gap-free (the room has not fanned out past ``pos``); else the caller
        catches up further first."""
        if m.member_id not in self.members or pos < self.position:
            return False
        m.since = pos
        self.groups.setdefault(m.codec, {})[m.member_id] = m
        return True

    def fall_behind(self, m: Member, pos: int) -> None:
        """Take ``m`` out of the fan-out at feed position ``pos``; its ``on_behind`` catches it
        up (and calls :meth:`rejoin`)."""
        group = self.groups.get(m.codec)
        if group is not None:
            group.pop(m.member_id, None)
            if not group:
                del self.groups[m.codec]
        if m.on_behind is not None:
            m.on_behind(pos)

    def leave(self, m: Member) -> None:
        if self.members.pop(m.member_id, None) is None:
            return
        group = self.groups.get(m.codec)
        if group is not None:
            group.pop(m.member_id, None)
            if not group:
                del self.groups[m.codec]
        if self.host.members.get(m.member_id) is m:
            self.host.members.pop(m.member_id, None)
        self.host.last_used = time.monotonic()
        gone = [c for c in m.clients if self.owners.get(c) is m]
        if gone:
            removed = []
            for c in gone:
                old = self.states.pop(c)
                del self.owners[c]
                removed.append(AwarenessEntry(c, old.clock + 1, "null"))
            self._broadcast_awareness(encode_awareness(removed), removed, m)
        if not self.members:
            self.rooms.drop(self)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    # -- awareness -------------------------------------------------------------------------------

    def awareness(self, m: Member, entries: Sequence[AwarenessEntry], raw: bytes) -> None:
        """Apply an awareness update from ``m`` (y-protocols applyAwarenessUpdate's rules:
        a newer clock wins; a removal at the same clock wins) and pass on what changed to
        everyone (as y-websocket's server does, the sender included). Providers echo the
        states they receive: those change nothing and go no further."""
        m.last_seen = time.monotonic()
        applied: list[AwarenessEntry] = []
        for e in entries:
            cur = self.states.get(e.client)
            if cur is not None and not (
                cur.clock < e.clock or (cur.clock == e.clock and e.removed and not cur.removed)
            ):
                continue
            if cur is None and e.removed:
                continue  # nothing to remove
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
            applied.append(e)
        if not applied:
            return
        update = raw if len(applied) == len(entries) else encode_awareness(applied)
        self._broadcast_awareness(update, applied, m)

    def set_state(self, m: Member, client: int, state: str | None) -> None:
        """Set (or remove: None) the awareness state of ``m``'s client ``client`` from a
        transport without awareness of its own (a gRPC member's presence), for the others."""
        m.last_seen = time.monotonic()
        cur = self.states.get(client)
        if state is None and cur is None:
            return
        # y-protocols takes a new client's state only with a clock above 0.
        entry = AwarenessEntry(client, (cur.clock + 1) if cur else 1, state or "null")
        if state is None:
            self.states.pop(client, None)
            self.owners.pop(client, None)
            m.clients.discard(client)
        else:
            self.states[client] = entry
            self.owners[client] = m
            m.clients.add(client)
        self._broadcast_awareness(encode_awareness([entry]), [entry], m)

    def awareness_snapshot(self) -> bytes | None:
        """Every current state as one awareness update (for a member that just joined)."""
        if not self.states:
            return None
        return encode_awareness(list(self.states.values()))

    def _broadcast_awareness(
        self, update: bytes, entries: Sequence[AwarenessEntry], owner: Member | None
    ) -> None:
        # To members that fell behind too (presence is not in the feed).
        by_codec: dict[Codec, list[Member]] = {}
        for other in self.members.values():
            by_codec.setdefault(other.codec, []).append(other)
        for codec, group in by_codec.items():
            frame = codec.awareness(update, entries, owner)
            if frame is None:
                continue
            for other in group:
                other.outbox.put(frame)

    # -- changes ---------------------------------------------------------------------------------

    async def _follow(self, pos: int) -> None:
        try:
            async for batch in self.rooms.changes(self.node_id, pos):
                for entry in batch:
                    self._fan_out(entry)
                    self.position = entry.seq
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: members would silently stop getting changes
            log.exception("room follower of %r failed; disconnecting its members", self.node_id)
            for m in list(self.members.values()):
                m.outbox.abort()

    def _fan_out(self, entry: Any) -> None:
        origin, seq = entry.origin, entry.seq
        behind: list[Member] = []
        for codec, group in self.groups.items():
            frame: bytes | None = None
            for m in group.values():
                if m.member_id == origin or seq <= m.since:
                    continue
                if frame is None:
                    frame = codec.change(entry)  # once for all of this transport's members
                    if frame is None:
                        break
                if not m.outbox.offer(frame):
                    behind.append(m)
        for m in behind:
            self.fall_behind(m, seq - 1)


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
