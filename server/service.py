"""The MemoryGateway handlers: convert the request, call the domain, convert the result.

Errors are not mapped here: they propagate to :func:`rpc_errors`, which asks the single table in
:mod:`.errors` for the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from virtualdom.engine import FutureVersion, LimitExceeded, Replica, validate_clock
from virtualdom.engine.diff import parse_path
from virtualdom.v1 import gateway_pb2 as pb

from . import context as callctx
from .auth import caller
from .config import GatewayConfig
from .documents import Documents, Write, WriteResult
from .errors import (
    BadRequest,
    Compacted,
    ForeignToken,
    NotFound,
    ShuttingDown,
    TokenBeyondHead,
    TooMany,
    internal_message,
    status_of,
)
from .feed import ChangeFeed, Entry, Follower, parse_resume_token
from .store import Store, StoredChange

log = logging.getLogger("virtualdom.service")
T = TypeVar("T")


async def abort_for(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    """Abort the RPC with the status the error table gives ``exc`` (INTERNAL if none)."""
    mapped = status_of(exc)
    if mapped is None:
        # A bug: the traceback goes to the log (its lines carry the request id), the client
        # gets the request id to quote, never the exception's text.
        log.error("internal error", exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, internal_message(callctx.request_id.get()))
    assert mapped is not None
    code, message, detail = mapped
    packed = any_pb2.Any()
    packed.Pack(detail)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=[packed])
    await context.abort_with_status(rpc_status.to_status(status))  # type: ignore[attr-defined]


#: How long an early refusal of a client-streaming call waits for the client's first message.
EARLY_REFUSAL_WAIT_S = 1.0


async def refuse_stream(
    context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, requests: AsyncIterator[Any]
) -> None:
    """Abort a call whose client may be writing its first request as the refusal goes out
    (a bad token, a cap reached before the handler read anything): read that first message,
    then abort. grpc.aio's client reports a write that fails because the server already ended
    the call as INTERNAL "Internal error from Core", overwriting the status the server sent
    (grpc/grpc#36066): 3 to 10 in 100 refusals reached clients that way. Once the server has
    read the message, the client's write of it has completed and the status goes through."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(EARLY_REFUSAL_WAIT_S):
            await anext(aiter(requests))
    await abort_for(context, exc)


def rpc_errors(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: Any) -> T:
        try:
            if isinstance(request, BadRequest):  # undecodable request bytes (app._parse)
                raise request
            return await fn(self, request, context)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:
            await abort_for(context, exc)
            raise

    return wrapper


def stream_errors(
    fn: Callable[..., AsyncIterator[T]],
) -> Callable[..., AsyncIterator[T]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: Any) -> AsyncIterator[T]:
        try:
            if isinstance(request, BadRequest):  # undecodable request bytes (app._parse)
                raise request
            async for item in fn(self, request, context):
                yield item
        except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            await abort_for(context, exc)

    return wrapper


def clock_of(msg: pb.VectorClock) -> dict[str, int]:
    clock: dict[str, int] = validate_clock(dict(msg.counters))
    return clock


class MemoryGateway:
    """The servicer. Handlers hold no state of their own: documents, store and feed do."""

    def __init__(self, config: GatewayConfig, store: Store, documents: Documents, feed: ChangeFeed):
        self.config = config
        self.store = store
        self.documents = documents
        self.feed = feed
        self.subscribers = 0
        self.sessions = 0
        self.shutdown = asyncio.Event()

    # -- request checks --------------------------------------------------------------------------

    def node_id(self, raw: bytes, what: str = "node_id") -> bytes:
        if not raw:
            raise BadRequest(f"{what} is empty")
        if len(raw) > self.config.max_node_id_bytes:
            raise BadRequest(
                f"{what} is {len(raw)} bytes, over the limit of {self.config.max_node_id_bytes}"
            )
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{what} must be UTF-8") from None
        return bytes(raw)

    def actor(self, requested: str) -> str:
        """The actor a write or a session member acts as (the caller's, see
        :meth:`~.auth.Caller.actor_for`), within ``max_actor_bytes``."""
        limit = self.config.max_actor_bytes
        _limited("max_actor_bytes", limit, requested, "actor")
        actor = caller().actor_for(requested)
        _limited("max_actor_bytes", limit, actor, "actor")
        return actor

    # -- unary -----------------------------------------------------------------------------------

    @rpc_errors
    async def WriteDiff(self, request: pb.WriteDiffRequest, context: Any) -> pb.WriteDiffResponse:
        node_id = self.node_id(request.node_id)
        # Read once: each read of a bytes field of a protobuf message copies it (100 MB each
        # for a 100 MB document).
        diff_bson = request.diff_bson
        if not diff_bson:
            raise BadRequest("diff_bson is empty")
        who = caller()  # the token's subject is the actor; grants and rate limits apply
        actor = self.actor(request.actor)
        request_id = request.request_id or request.metadata.get("request_id", "")
        rid_bytes = _limited(
            "max_request_id_bytes", self.config.max_request_id_bytes, request_id, "request_id"
        )
        metadata = dict(request.metadata)
        meta_bytes = sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())
        _check("max_metadata_bytes", self.config.max_metadata_bytes, meta_bytes, "metadata")
        context_clock = clock_of(request.vector_clock) if request.vector_clock.counters else None
        # Checked (and refused) before charging: what is stored with the change and sent to
        # every subscriber counts in the byte rate, not only the diff.
        who.require_write(node_id, len(diff_bson) + meta_bytes + len(actor.encode()) + rid_bytes)
        write = Write(
            diff=diff_bson,
            context=context_clock,
            actor=actor,
            metadata=metadata,
            request_id=request_id,
            expected_version=(
                request.expected_version if request.HasField("expected_version") else None
            ),
        )
        host = await self.documents.host(node_id, create=True)
        result: WriteResult = await host.submit(write)
        return write_response(result, _echo_budget(self.config))

    @rpc_errors
    async def ReadSnapshot(
        self, request: pb.ReadSnapshotRequest, context: Any
    ) -> pb.ReadSnapshotResponse:
        node_id = self.node_id(request.node_id)
        caller().require_read(node_id)  # any version: a past one is as secret as the latest
        version = request.version if request.HasField("version") else None
        path = parse_path(request.path, "path") if request.path else None
        include_state = request.include_state
        host = await self.documents.host(node_id, create=False)

        def read(r: Replica) -> pb.ReadSnapshotResponse:
            v = r.version if version is None else version
            snap = r.snapshot(version=version, path=path)
            clock = r.clock() if v == r.version else r.clock_at(v)
            state = r.encode_state() if include_state and v == r.version else b""
            return pb.ReadSnapshotResponse(
                snapshot_bson=snap, version=v, vector_clock=pb.VectorClock(counters=clock),
                state=state,
            )  # fmt: skip

        response: pb.ReadSnapshotResponse = await host.read(read)
        return response

    # -- change streams --------------------------------------------------------------------------

    @stream_errors
    async def SubscribeChanges(
        self, request: pb.SubscribeRequest, context: Any
    ) -> AsyncIterator[Any]:
        if self.subscribers >= self.config.max_subscribers:
            raise TooMany(f"too many subscribers (max_subscribers={self.config.max_subscribers})")
        target = request.WhichOneof("target")
        if target is None:
            raise BadRequest("set node_id or prefix")
        node_id = self.node_id(request.node_id) if target == "node_id" else None
        prefix = bytes(request.prefix) if target == "prefix" else None
        if prefix is not None and len(prefix) > self.config.max_node_id_bytes:
            raise BadRequest("prefix is longer than max_node_id_bytes")
        if node_id is not None:
            caller().require_read(node_id)
        # A prefix wider than the caller's read grants: only the readable nodes are sent.
        visible = caller().read_filter(prefix) if prefix is not None else None
        start = request.WhichOneof("start")
        heartbeat = (request.heartbeat_ms or self.config.heartbeat_ms) / 1000
        if request.heartbeat_ms and request.heartbeat_ms < 50:
            raise BadRequest("heartbeat_ms must be >= 50")
        include_update = request.include_update
        self.subscribers += 1
        follower = self.feed.follow(node_id, prefix)
        try:
            # Everything committed after `pos` (and matching) is still to be delivered.
            pos = self.feed.head
            skip: dict[bytes, int] = {}  # node -> version already covered by its snapshot
            if request.send_snapshot:
                snaps = []
                nodes = (
                    [node_id] if node_id is not None else await self.store.node_ids(prefix or b"")
                )
                if visible is not None:
                    nodes = [n for n in nodes if visible(n)]
                for n in nodes:
                    try:
                        snaps.append(await self._snapshot_event(n))
                    except NotFound:
                        if node_id is not None:
                            raise
                for s in snaps:
                    skip[s.node_id] = s.version
                if node_id is not None and start is None:
                    pos = min(pos, parse_resume_token(snaps[0].resume_token)[0])
                for i in range(0, len(snaps), 64):
                    yield pb.ChangeEvent(snapshots=snaps[i : i + 64])
            if start == "from_version":
                if node_id is None:
                    raise BadRequest("from_version is for node_id subscriptions; use resume_token")
                async for batch in self._replay_node(node_id, request.from_version):
                    pos = batch[-1].seq
                    # With send_snapshot, the snapshot already holds versions up to its own.
                    fresh = [e for e in batch if e.change.version > skip.get(node_id, 0)]
                    for message in self._messages(fresh, include_update):
                        yield message
            elif start == "resume_token":
                pos = self._position(request.resume_token)
                oldest = await self.store.oldest_seq(node_id, prefix or b"")
                if pos < oldest:
                    raise Compacted(
                        f"the resume token is older than the retained log; resync from a"
                        f" snapshot (oldest position {oldest})",
                        0,
                        self.feed.token(oldest),
                    )
            async for item in self._follow(follower, pos, skip, include_update, heartbeat, visible):
                yield item
        finally:
            self.feed.unfollow(follower)
            self.subscribers -= 1

    def _position(self, token: bytes) -> int:
        """The log position a resume token names, if this store issued it: a token of another
        store, or past the head, would make the stream skip changes it never saw."""
        try:
            seq, store_id = parse_resume_token(token)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        # An 8-byte token (gateways before store ids) names no store: only the head is checked.
        if store_id is not None and store_id != self.feed.store_id:
            raise ForeignToken(
                "the resume token was issued by another store (another database, or this one"
                " reset or restored from a backup); resync from a snapshot"
            )
        head = self.feed.head
        if seq > head:
            raise TokenBeyondHead(
                f"the resume token is at log position {seq}, past the head {head}: this store"
                f" never issued it; resync from a snapshot (the detail's token is the head)",
                position=seq, head=head, head_token=self.feed.token(head),
            )  # fmt: skip
        return seq

    async def _snapshot_event(self, node_id: bytes) -> pb.SnapshotEvent:
        host = await self.documents.host(node_id, create=False)

        def snap(r: Replica) -> pb.SnapshotEvent:
            return pb.SnapshotEvent(
                node_id=node_id, version=r.version, vector_clock=pb.VectorClock(counters=r.clock()),
                snapshot_bson=r.snapshot(), resume_token=self.feed.token(host.last_seq),
            )  # fmt: skip

        event: pb.SnapshotEvent = await host.read(snap)
        return event

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
        pos: int,
        skip: dict[bytes, int],
        include_update: bool,
        heartbeat: float,
        visible: Callable[[bytes], bool] | None = None,
    ) -> AsyncIterator[Any]:
        limit = self.config.batch_events
        who = caller()
        while not self.shutdown.is_set():
            who.check_live()
            follower.wake.clear()
            entries, pos = await self.next_entries(follower, pos, limit)
            if entries:
                last = entries[-1].seq
                if skip:
                    entries = [
                        e for e in entries if e.change.version > skip.get(e.change.node_id, 0)
                    ]
                if visible is not None:  # after `last`: filtered-out changes still advance
                    entries = [e for e in entries if visible(e.change.node_id)]
                pos = last
                if entries:
                    for message in self._messages(entries, include_update):
                        yield message
                continue
            left = who.seconds_left()
            timeout = heartbeat if left is None else min(heartbeat, left + 0.001)
            # One wait on the follower's own event, with a deadline: no task per wake-up
            # (each of a write's subscribers passes here once per write). Shutdown sets every
            # follower's event (close_streams).
            try:
                async with asyncio.timeout(timeout):
                    await follower.wake.wait()
                woken = True
            except TimeoutError:
                woken = False
            if not woken and left is not None and left < heartbeat:
                continue  # woken for the token's expiry: the loop's check ends the stream
            if not woken:
                yield pb.ChangeEvent(
                    progress=pb.Progress(
                        resume_token=self.feed.token(pos), timestamp_us=int(time.time() * 1e6)
                    )
                )
        # Shutting down: end with a status that tells the client where to resume from.
        raise ShuttingDown(
            "the gateway is shutting down; resume from the token", self.feed.token(pos)
        )

    def close_streams(self) -> None:
        """Shutting down: every change stream ends with a resumable status."""
        self.shutdown.set()
        for f in self.feed.followers():
            f.wake.set()

    async def next_entries(
        self, follower: Follower, pos: int, limit: int
    ) -> tuple[list[Entry], int]:
        """The follower's next committed entries after ``pos``: from the feed window, or from
        the store when ``pos`` fell out of it. With none, also the position to wait from (past
        what was scanned). Shared by change streams and session members."""
        while True:
            head = self.feed.head
            entries = self.feed.read(pos, follower, limit)
            if entries is None:
                # Fell out of the in-memory window: catch up from the store.
                rows = await self._stored_after(pos, follower, limit)
                if rows:
                    return [self.feed.entry(c) for c in rows], pos
                pos = max(pos, self.feed.window_start())
                continue
            return entries, pos if entries else max(pos, head)

    async def _stored_after(self, pos: int, follower: Follower, limit: int) -> list[StoredChange]:
        oldest = await self.store.oldest_seq(follower.node_id, follower.prefix or b"")
        if pos < oldest:
            raise Compacted(
                "this subscriber fell behind compacted history; resync from a snapshot",
                0,
                self.feed.token(oldest),
            )
        if follower.node_id is not None:
            # The query matches node_id as a prefix ("doc" also finds "doc/child"): when a full
            # page holds only other documents, read on from its end. (Returning [] made the
            # caller jump to the window start, skipping this document's older changes.)
            while True:
                rows = await self.store.changes_after(pos, follower.node_id, limit * 4)
                mine = [c for c in rows if c.node_id == follower.node_id][:limit]
                if mine or len(rows) < limit * 4:
                    return mine
                pos = rows[-1].seq
        return await self.store.changes_after(pos, follower.prefix or b"", limit)

    @staticmethod
    def _encode(entries: list[Entry], include_update: bool) -> bytes:
        return b"".join(e.encoded_field(include_update) for e in entries)

    def _messages(self, entries: list[Entry], include_update: bool) -> Iterator[bytes]:
        """The entries as stream messages, in order, each under max_message_bytes: a batch
        of big changes is split, and a change too big to send with its update goes without it
        (one message over the cap fails the stream, and its every retry)."""
        budget = _echo_budget(self.config)
        chunk: list[bytes] = []
        size = 0
        for e in entries:
            field = e.encoded_field(include_update)
            if include_update and len(field) > budget:
                field = e.encoded_field(False)
            if chunk and size + len(field) > budget:
                yield b"".join(chunk)
                chunk, size = [], 0
            chunk.append(field)
            size += len(field)
        if chunk:
            yield b"".join(chunk)


def _check(limit: str, allowed: int, actual: int, what: str) -> None:
    if actual > allowed:
        raise LimitExceeded(
            f"{what} is {actual} bytes, over the limit {limit}={allowed}", limit, allowed, actual
        )


def _limited(limit: str, allowed: int, text: str, what: str) -> int:
    """``text``'s size in UTF-8 bytes, checked against ``allowed`` (the proto counts bytes:
    64 emoji are 64 characters but 256 bytes)."""
    size = len(text.encode())
    _check(limit, allowed, size, what)
    return size


def _echo_budget(config: GatewayConfig) -> int:
    """Bytes of changes one response or stream message may carry (the rest is headroom)."""
    return max(config.max_message_bytes - 64 * 1024, config.max_message_bytes // 2)


def write_response(result: WriteResult, budget: int | None = None) -> pb.WriteDiffResponse:
    stored = result.stored
    diff = stored.diff_bson if stored else b""
    update = stored.update if stored else b""
    # The write is durable: a response too big to send (a 100 MB write's diff plus update is
    # 200 MB) must not turn it into an error. Drop the update, then the diff, to fit.
    if budget is not None and len(diff) + len(update) > budget:
        update = b""
        if len(diff) > budget:
            diff = b""
    return pb.WriteDiffResponse(
        success=True,
        new_version=result.version,
        vector_clock=pb.VectorClock(counters=result.clock),
        effective_diff_bson=diff,
        replayed=result.replayed,
        update=update,
    )


__all__ = ["MemoryGateway"]
