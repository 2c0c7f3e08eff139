"""The change-stream protocol, independent of any transport.

A change stream delivers, for one document (``node_id``) or every document under a ``prefix``
the caller may read: optionally a snapshot of each first, then the stored changes after a version
(``from_version``, catch-up) or after a log position (``resume_token``), then every change
committed from then on (live follow), in commit order, each exactly once; heartbeats
(:class:`Progress`, with a resume token) while nothing happens; an error when the history it
needs was compacted (:class:`~.errors.Compacted`), when the caller's token expires
(:class:`~.errors.Unauthenticated`) or when the gateway shuts down (:class:`~.errors.ShuttingDown`,
with the token to resume from). A slow consumer costs no memory: the stream keeps a position and
reads from the feed's window, or from the store once it fell out of it.

Two layers, in the spirit of h11 and pycrdt's ``_sync``:

* :class:`StreamState` — the rules, with no I/O: where the stream stands, what of a batch of
  committed entries it delivers (snapshot coverage, read grants), when a resume is compacted.
* :class:`ChangeStreams` — the async driver: validates a :class:`StreamRequest`, reads the store
  and the feed, waits, and yields domain events (:class:`Snapshots`, :class:`Changes`,
  :class:`Progress`); failures are raised as domain errors (the transport asks
  :mod:`.errors` for their status).

A transport converts its request to a :class:`StreamRequest`, iterates :meth:`ChangeStreams.open`
and converts each event. :class:`Changes` carries the feed's :class:`~.feed.Entry` objects, whose
protobuf encoding is cached on the entry: a transport that sends protobuf encodes each change
once for all its subscribers (``Entry.encoded_field``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from virtualdom.engine import FutureVersion, Replica

from .auth import Caller
from .config import GatewayConfig
from .documents import Documents
from .errors import (
    BadRequest,
    Compacted,
    ForeignToken,
    NotFound,
    ShuttingDown,
    TokenBeyondHead,
    TooMany,
)
from .feed import ChangeFeed, Entry, Follower, parse_resume_token, resume_token
from .requests import checked_node_id
from .store import Store, StoredChange

#: Snapshots sent per event (each event is one transport message).
SNAPSHOTS_PER_EVENT = 64

# -- requests and events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """What a client asks of a change stream (one of ``node_id`` and ``prefix``; at most one
    of ``from_version`` and ``resume_token``)."""

    node_id: bytes | None = None
    prefix: bytes | None = None
    from_version: int | None = None
    resume_token: bytes | None = None
    send_snapshot: bool = False
    include_update: bool = False
    #: 0: the gateway's default (``heartbeat_ms``).
    heartbeat_ms: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A document's state when the stream started; its changes up to ``version`` are not sent."""

    node_id: bytes
    version: int
    clock: dict[str, int]
    snapshot_bson: bytes
    #: The log position the snapshot covers, and its token.
    seq: int
    resume_token: bytes = b""


@dataclass(frozen=True, slots=True)
class Snapshots:
    items: list[Snapshot]


class Changes(NamedTuple):
    """Committed changes, in commit order (the feed's entries: encode with ``encoded_field``).
    (A tuple: one is made per delivery to each subscriber, and a tuple is the cheapest.)"""

    entries: list[Entry]
    include_update: bool


@dataclass(frozen=True, slots=True)
class Progress:
    """Nothing new up to ``seq`` (a heartbeat): resume from its token."""

    seq: int
    timestamp_us: int
    resume_token: bytes


StreamEvent = Snapshots | Changes | Progress


# -- the rules (no I/O) -------------------------------------------------------------------------


@dataclass(slots=True)
class StreamState:
    """Where one stream stands: everything committed after ``pos`` that matches (and is not
    covered by a snapshot, and the caller may read) is still to be delivered."""

    pos: int
    #: For a prefix wider than the caller's read grants: which documents it may see.
    visible: Callable[[bytes], bool] | None = None
    #: node -> version already covered by its snapshot.
    skip: dict[bytes, int] = field(default_factory=dict)
    #: The store's id, in every token this stream hands out (b"": tokens without one).
    store_id: bytes = b""

    def token(self, seq: int) -> bytes:
        return resume_token(seq, self.store_id)

    def covered(self, snaps: list[Snapshot], rewind: bool) -> None:
        """Snapshots were sent: their versions are not sent again. ``rewind`` (one document,
        no start): follow from the snapshot's own position, so nothing committed between the
        snapshot and the stream's start is lost."""
        for s in snaps:
            self.skip[s.node_id] = s.version
        if rewind and snaps:
            self.pos = min(self.pos, snaps[0].seq)

    def replayed(self, batch: list[Entry]) -> list[Entry]:
        """A batch of one document's stored changes (catch-up): what of it to send."""
        self.pos = batch[-1].seq
        skip = self.skip
        if not skip:
            return batch
        return [e for e in batch if e.change.version > skip.get(e.change.node_id, 0)]

    def resume(self, token: bytes, oldest: int, head: int) -> None:
        """Continue after a resume token, if this store issued it: a token of another store,
        or past the ``head``, would make the stream skip changes it never saw. ``oldest``:
        every matching change after this position is still in the log."""
        try:
            pos, store_id = parse_resume_token(token)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        # An 8-byte token (gateways before store ids) names no store: only the head is checked.
        if store_id is not None and store_id != self.store_id:
            raise ForeignToken(
                "the resume token was issued by another store (another database, or this one"
                " reset or restored from a backup); resync from a snapshot"
            )
        if pos > head:
            raise TokenBeyondHead(
                f"the resume token is at log position {pos}, past the head {head}: this store"
                f" never issued it; resync from a snapshot (the detail's token is the head)",
                position=pos,
                head=head,
                head_token=self.token(head),
            )
        if pos < oldest:
            raise Compacted(
                f"the resume token is older than the retained log; resync from a"
                f" snapshot (oldest position {oldest})",
                0,
                self.token(oldest),
            )
        self.pos = pos

    def take(self, entries: list[Entry]) -> list[Entry]:
        """A batch of committed entries read after ``pos``: what of it to send. The position
        moves past the whole batch (changes filtered out still advance it)."""
        self.pos = entries[-1].seq
        skip, visible = self.skip, self.visible
        if skip:
            entries = [e for e in entries if e.change.version > skip.get(e.change.node_id, 0)]
        if visible is not None:
            entries = [e for e in entries if visible(e.change.node_id)]
        return entries

    def progress(self, now_us: int) -> Progress:
        return Progress(self.pos, now_us, self.token(self.pos))

    def shutting_down(self) -> ShuttingDown:
        message = "the gateway is shutting down; resume from the token"
        return ShuttingDown(message, self.token(self.pos))


@dataclass(frozen=True, slots=True)
class _Plan:
    """A validated request."""

    node_id: bytes | None
    prefix: bytes | None
    visible: Callable[[bytes], bool] | None
    heartbeat_s: float


def plan(request: StreamRequest, config: GatewayConfig, who: Caller) -> _Plan:
    """Check a request against the limits and the caller's grants (raises the error to send)."""
    if (request.node_id is None) == (request.prefix is None):
        raise BadRequest("set node_id or prefix")
    if request.from_version is not None and request.resume_token is not None:
        raise BadRequest("set at most one of from_version and resume_token")
    node_id = checked_node_id(request.node_id, config) if request.node_id is not None else None
    prefix = bytes(request.prefix) if request.prefix is not None else None
    if prefix is not None and len(prefix) > config.max_node_id_bytes:
        raise BadRequest("prefix is longer than max_node_id_bytes")
    if node_id is not None:
        who.require_read(node_id)
    # A prefix wider than the caller's read grants: only the readable nodes are sent.
    visible = who.read_filter(prefix) if prefix is not None else None
    if request.heartbeat_ms and request.heartbeat_ms < 50:
        raise BadRequest("heartbeat_ms must be >= 50")
    if request.from_version is not None and node_id is None:
        raise BadRequest("from_version is for node_id subscriptions; use resume_token")
    heartbeat = (request.heartbeat_ms or config.heartbeat_ms) / 1000
    return _Plan(node_id, prefix, visible, heartbeat)


# -- the driver ----------------------------------------------------------------------------------


class ChangeStreams:
    """Every change stream of the gateway: opens them, counts them, ends them at shutdown."""

    def __init__(self, config: GatewayConfig, store: Store, documents: Documents, feed: ChangeFeed):
        self.config = config
        self.store = store
        self.documents = documents
        self.feed = feed
        self.subscribers = 0
        self.shutdown = asyncio.Event()

    def close(self) -> None:
        """Shutting down: every change stream ends with a resumable status."""
        self.shutdown.set()
        for f in self.feed.followers():
            f.wake.set()

    async def open(self, request: StreamRequest, who: Caller) -> AsyncIterator[StreamEvent]:
        """The stream's events, until it fails (a domain error) or the consumer stops."""
        if self.subscribers >= self.config.max_subscribers:
            raise TooMany(f"too many subscribers (max_subscribers={self.config.max_subscribers})")
        p = plan(request, self.config, who)
        self.subscribers += 1
        follower = self.feed.follow(p.node_id, p.prefix)
        try:
            state = StreamState(self.feed.head, p.visible, store_id=self.feed.store_id)
            if request.send_snapshot:
                snaps = await self._snapshots(p)
                start = request.from_version is None and request.resume_token is None
                state.covered(snaps, rewind=p.node_id is not None and start)
                for i in range(0, len(snaps), SNAPSHOTS_PER_EVENT):
                    yield Snapshots(snaps[i : i + SNAPSHOTS_PER_EVENT])
            if request.from_version is not None:
                assert p.node_id is not None  # plan() checked
                async for batch in self._replay_node(p.node_id, request.from_version):
                    fresh = state.replayed(batch)
                    if fresh:
                        yield Changes(fresh, request.include_update)
            elif request.resume_token is not None:
                oldest = await self.store.oldest_seq(p.node_id, p.prefix or b"")
                state.resume(request.resume_token, oldest, self.feed.head)
            async for event in self._follow(follower, state, request.include_update, p, who):
                yield event
        finally:
            self.feed.unfollow(follower)
            self.subscribers -= 1

    async def _snapshots(self, p: _Plan) -> list[Snapshot]:
        nodes = [p.node_id] if p.node_id is not None else await self.store.node_ids(p.prefix or b"")
        if p.visible is not None:
            nodes = [n for n in nodes if p.visible(n)]
        snaps = []
        for n in nodes:
            try:
                snaps.append(await self._snapshot(n))
            except NotFound:
                if p.node_id is not None:
                    raise
        return snaps

    async def _snapshot(self, node_id: bytes) -> Snapshot:
        host = await self.documents.host(node_id, create=False)

        def snap(r: Replica) -> Snapshot:
            seq = host.last_seq
            return Snapshot(node_id, r.version, r.clock(), r.snapshot(), seq, self.feed.token(seq))

        snapshot: Snapshot = await host.read(snap)
        return snapshot

    async def _replay_node(self, node_id: bytes, after_version: int) -> AsyncIterator[list[Entry]]:
        """A document's stored changes after a version, in batches (catch-up)."""
        oldest = await self.store.oldest_version(node_id)
        if after_version < oldest:
            raise Compacted(
                f"versions up to {oldest} of this document were compacted; resync from a"
                f" snapshot (oldest resumable version {oldest})",
                oldest,
            )
        host = await self.documents.host(node_id, create=after_version == 0)
        current = await host.read(lambda r: r.version)
        if after_version > current:
            raise FutureVersion(
                f"from_version {after_version} is past the latest version {current}", current
            )
        v = after_version
        while True:
            rows = await self.store.changes_of(node_id, v, self.config.batch_events)
            if not rows:
                return
            yield [self.feed.entry(c) for c in rows]
            v = rows[-1].version

    async def _follow(
        self,
        follower: Follower,
        state: StreamState,
        include_update: bool,
        p: _Plan,
        who: Caller,
    ) -> AsyncIterator[StreamEvent]:
        limit = self.config.batch_events
        heartbeat = p.heartbeat_s
        while not self.shutdown.is_set():
            who.check_live()
            follower.wake.clear()
            entries, pos = await next_entries(self.feed, self.store, follower, state.pos, limit)
            if entries:
                fresh = state.take(entries)
                if fresh:
                    yield Changes(fresh, include_update)
                continue
            state.pos = pos
            left = who.seconds_left()
            timeout = heartbeat if left is None else min(heartbeat, left + 0.001)
            # One wait on the follower's own event, with a deadline: no task per wake-up
            # (each of a write's subscribers passes here once per write). Shutdown sets every
            # follower's event (close).
            try:
                async with asyncio.timeout(timeout):
                    await follower.wake.wait()
                woken = True
            except TimeoutError:
                woken = False
            if not woken and left is not None and left < heartbeat:
                continue  # woken for the token's expiry: the loop's check ends the stream
            if not woken:
                yield state.progress(int(time.time() * 1e6))
        # Shutting down: end with a status that tells the client where to resume from.
        raise state.shutting_down()


# -- reading a follower's entries (change streams and session members) ---------------------------


async def next_entries(
    feed: ChangeFeed, store: Store, follower: Follower, pos: int, limit: int
) -> tuple[list[Entry], int]:
    """The follower's next committed entries after ``pos``: from the feed window, or from the
    store when ``pos`` fell out of it. With none, also the position to wait from (past what was
    scanned). Shared by change streams and session members."""
    while True:
        head = feed.head
        entries = feed.read(pos, follower, limit)
        if entries is None:
            # Fell out of the in-memory window: catch up from the store.
            rows = await _stored_after(feed, store, pos, follower, limit)
            if rows:
                return [feed.entry(c) for c in rows], pos
            pos = max(pos, feed.window_start())
            continue
        return entries, pos if entries else max(pos, head)


async def _stored_after(
    feed: ChangeFeed, store: Store, pos: int, follower: Follower, limit: int
) -> list[StoredChange]:
    # Judged for the follower's own documents: another document's pruned history must not
    # fail it (a session member went mute that way: issue 9, item 1).
    oldest = await store.oldest_seq(follower.node_id, follower.prefix or b"")
    if pos < oldest:
        raise Compacted(
            "this subscriber fell behind compacted history; resync from a snapshot",
            0,
            feed.token(oldest),
        )
    if follower.node_id is not None:
        # The query matches node_id as a prefix ("doc" also finds "doc/child"): when a full
        # page holds only other documents, read on from its end. (Returning [] made the
        # caller jump to the window start, skipping this document's older changes.)
        while True:
            rows = await store.changes_after(pos, follower.node_id, limit * 4)
            mine = [c for c in rows if c.node_id == follower.node_id][:limit]
            if mine or len(rows) < limit * 4:
                return mine
            pos = rows[-1].seq
    return await store.changes_after(pos, follower.prefix or b"", limit)


__all__ = [
    "ChangeStreams",
    "Changes",
    "Progress",
    "Snapshot",
    "Snapshots",
    "StreamEvent",
    "StreamRequest",
    "StreamState",
    "next_entries",
    "plan",
]
