"""The change feed: committed changes in global log order, for subscribers and sessions.

Like etcd's watchable store: the store's commit hook publishes every committed change here in seq
order, into a bounded in-memory window; each follower keeps only its position (a seq) and reads
from the window, or from the store when it has fallen out of the window. Writers never wait for
followers, and a slow follower costs no memory beyond its position: it just reads older entries
from disk until it catches up.

Each change is encoded to protobuf once; a batch for a stream message is the concatenation of
the encoded changes (``repeated Change changes = 1`` on the wire), so fan-out to many
subscribers does not re-encode anything.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import bson

from virtualdom.engine.yencode import varuint
from virtualdom.v1 import gateway_pb2 as pb

from .store import StoredChange


def clock_pb(clock_bson: bytes) -> pb.VectorClock:
    return pb.VectorClock(counters={k: int(v) for k, v in bson.decode(clock_bson).items()})


#: The first byte of a resume token that names its store.
TOKEN_FORMAT = 1


def resume_token(seq: int, store_id: bytes = b"") -> bytes:
    """An opaque position in the log: a format byte, the store's id (8 bytes) and the seq
    (8 bytes, big-endian). Without a store id (a feed used on its own), the seq alone: the
    format of gateways before store ids, still accepted (see parse_resume_token)."""
    if not store_id:
        return seq.to_bytes(8, "big")
    return bytes((TOKEN_FORMAT,)) + store_id + seq.to_bytes(8, "big")


def parse_resume_token(token: bytes) -> tuple[int, bytes | None]:
    """A token's seq and store id (None for an old 8-byte token, which names no store)."""
    if len(token) == 17 and token[0] == TOKEN_FORMAT:
        return int.from_bytes(token[9:], "big"), bytes(token[1:9])
    if len(token) == 8:
        return int.from_bytes(token, "big"), None
    raise ValueError(f"a resume token is 17 bytes as returned in events, got {len(token)}")


#: A change whose diff and update reach this many bytes together is kept whole in the window
#: only until every follower of its document has taken it (see ChangeFeed.read).
LARGE_CHANGE_BYTES = 1 << 20


@dataclass(slots=True)
class Entry:
    """One committed change, with its encodings cached."""

    change: StoredChange
    origin: str = ""
    _with_update: bytes | None = None
    _without_update: bytes | None = None
    #: The diff and update (and their encodings) were dropped: read the change from the store.
    hollow: bool = False
    #: The store the change is in (for its resume token).
    store_id: bytes = b""

    @property
    def seq(self) -> int:
        return self.change.seq

    @property
    def large(self) -> bool:
        c = self.change
        return len(c.diff_bson) + len(c.update) >= LARGE_CHANGE_BYTES

    def hollowed(self) -> Entry:
        """This entry without its payload, a new object: a follower may hold this one in a
        batch it has yet to encode and send, and the StoredChange is the writer's (its
        response may still be using it)."""
        change = dataclasses.replace(self.change, diff_bson=b"", update=b"")
        return Entry(change, self.origin, hollow=True, store_id=self.store_id)

    def message(self, include_update: bool) -> pb.Change:
        c = self.change
        return pb.Change(
            node_id=c.node_id,
            version=c.version,
            vector_clock=clock_pb(c.clock_bson),
            diff_bson=c.diff_bson,
            update=c.update if include_update else b"",
            actor=c.actor,
            timestamp_us=c.timestamp_us,
            metadata=c.metadata,
            resume_token=resume_token(c.seq, self.store_id),
        )

    def encoded_field(self, include_update: bool) -> bytes:
        """This change as field 1 of a ChangeEvent (tag, length, bytes), encoded once."""
        if include_update:
            if self._with_update is None:
                self._with_update = _field1(self.message(True).SerializeToString())
            return self._with_update
        if self._without_update is None:
            self._without_update = _field1(self.message(False).SerializeToString())
        return self._without_update


def _field1(payload: bytes) -> bytes:
    # Field 1, wire type 2 (length-delimited): the length is a protobuf varint, which is
    # lib0's unsigned varint byte for byte.
    return b"\x0a" + varuint(len(payload)) + payload


@dataclass(eq=False)
class Follower:
    """A registration to be woken when a matching change is published."""

    node_id: bytes | None
    prefix: bytes | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: The seq up to which this follower has taken every matching change (for the lag metric:
    #: feed head minus position); updated by :meth:`ChangeFeed.read`.
    position: int = 0

    def matches(self, node_id: bytes) -> bool:
        if self.node_id is not None:
            return node_id == self.node_id
        return self.prefix is not None and node_id.startswith(self.prefix)


class ChangeFeed:
    """A bounded window of recent committed changes, in seq order.

    A large change (a 100 MB document written by one ``replace`` is a 100 MB diff and a 228 MB
    update) is not kept whole for as long as it stays in the window: once no registered
    follower of its document still has to take it (at once, when there is none), its payload
    is dropped, and a follower that reaches it later (a resume token, a session catching up)
    reads it from the store, as it would a change older than the window.
    """

    def __init__(self, capacity: int = 20_000):
        self.capacity = capacity
        #: The store's id, put in resume tokens (set when the store opens).
        self.store_id = b""
        self._seqs: list[int] = []
        self._entries: list[Entry] = []
        self.head = 0
        self._by_node: dict[bytes, set[Follower]] = {}
        self._by_prefix: set[Follower] = set()
        #: Called with each published batch (a shared store's gateways: their loaded replicas
        #: take other gateways' changes, server/documents.py ``on_published``).
        self.listeners: list[Callable[[list[Entry]], None]] = []
        #: Large entries still whole, with the followers that have yet to take them.
        self._large: list[tuple[Entry, set[Follower]]] = []

    def token(self, seq: int) -> bytes:
        """The resume token of log position ``seq`` of this feed's store."""
        return resume_token(seq, self.store_id)

    def entry(self, change: StoredChange) -> Entry:
        """An entry for a change read from the store."""
        return Entry(change, store_id=self.store_id)

    def set_head(self, seq: int) -> None:
        self.head = max(self.head, seq)

    def publish(self, changes: list[StoredChange]) -> None:
        entries = [Entry(c, c.origin, store_id=self.store_id) for c in changes]
        for e in entries:
            self._seqs.append(e.seq)
            self._entries.append(e)
            self.head = max(self.head, e.seq)
        if len(self._entries) > 2 * self.capacity:
            drop = len(self._entries) - self.capacity
            del self._seqs[:drop]
            del self._entries[:drop]
            if self._large:
                # Out of the window: its followers take it from the store now (the window no
                # longer holds it; a follower holding it in a batch keeps it until sent).
                start = self.window_start()
                self._large = [(e, w) for e, w in self._large if e.seq > start]
        for e in entries:
            for f in self._by_node.get(e.change.node_id, ()):
                f.wake.set()
        if self._by_prefix:
            for f in self._by_prefix:
                if any(f.matches(e.change.node_id) for e in entries):
                    f.wake.set()
        for listener in self.listeners:
            listener(entries)
        for e in entries:
            if e.large:
                # Its followers now: the only ones that will take it from the window (a later
                # one starts at the head, or from an older position through the store).
                waiting = set(self._by_node.get(e.change.node_id, ()))
                waiting.update(f for f in self._by_prefix if f.matches(e.change.node_id))
                if waiting:
                    self._large.append((e, waiting))
                else:
                    self._hollow_out(e)

    def _taken(self, follower: Follower, after: int | None) -> None:
        """``follower`` has taken every change up to ``after`` (None: it left): hollow out the
        large entries no follower still waits for."""
        keep = []
        for e, waiting in self._large:
            if follower in waiting and (after is None or after >= e.seq):
                waiting.discard(follower)
            if waiting:
                keep.append((e, waiting))
            else:
                self._hollow_out(e)
        self._large = keep

    def _hollow_out(self, e: Entry) -> None:
        """Replace ``e`` in the window by its payload-less copy (``e`` itself is left whole for
        whoever holds it)."""
        i = bisect.bisect_left(self._seqs, e.seq)
        if i < len(self._seqs) and self._entries[i] is e:
            self._entries[i] = e.hollowed()

    def window_start(self) -> int:
        """Entries with seq > this are all in the window (when it is not empty)."""
        return self._seqs[0] - 1 if self._seqs else self.head

    def read(self, after: int, follower: Follower, limit: int) -> list[Entry] | None:
        """Matching entries with seq > ``after``; None when ``after`` is older than the window,
        or when the first matching entry is a hollowed-out large one (the caller reads from
        the store in both cases)."""
        follower.position = after
        if self._large:
            self._taken(follower, after)
        if after < self.window_start():
            return None
        i = bisect.bisect_right(self._seqs, after)
        out: list[Entry] = []
        entries = self._entries
        while i < len(entries) and len(out) < limit:
            e = entries[i]
            if follower.matches(e.change.node_id):
                if e.hollow:
                    if not out:
                        return None
                    break  # the entries before it now; it comes from the store next time
                out.append(e)
            i += 1
        if not out:
            follower.position = max(after, self.head)  # nothing more for it: caught up
        return out

    def follow(self, node_id: bytes | None, prefix: bytes | None) -> Follower:
        f = Follower(node_id, prefix, position=self.head)
        if node_id is not None:
            self._by_node.setdefault(node_id, set()).add(f)
        else:
            self._by_prefix.add(f)
        return f

    def followers(self) -> list[Follower]:
        """Every registered follower (a copy; safe to call from another thread)."""
        out = list(self._by_prefix)
        for group in list(self._by_node.values()):
            out.extend(list(group))
        return out

    def unfollow(self, f: Follower) -> None:
        if f.node_id is not None:
            s = self._by_node.get(f.node_id)
            if s is not None:
                s.discard(f)
                if not s:
                    del self._by_node[f.node_id]
        else:
            self._by_prefix.discard(f)
        if self._large:
            self._taken(f, None)
