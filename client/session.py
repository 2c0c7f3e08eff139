"""Collaborative sessions (the CollaborativeSession bidirectional stream).

One :class:`Session` is one stream. The client numbers its messages (``seq``) and matches the
gateway's answers to them: :meth:`Session.join` returns the :class:`Joined`, :meth:`send_diff`
and :meth:`send_update` return the :class:`Ack` once the change is durable (a failed message
raises its typed :class:`GatewayError`). Everything else the gateway sends — other members'
changes, presence and member events, errors of messages nobody awaits — comes out of the
session's async iterator, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import grpc
from bson.codec_options import CodecOptions

from virtualdom.v1 import gateway_pb2 as pb

from .codec import Diff, encode, encode_diff, node_bytes
from .errors import GatewayError, SessionClosed, error_from_rpc
from .models import (
    Ack,
    Change,
    Joined,
    MemberEvent,
    PresenceUpdate,
    SessionErrorEvent,
    SessionEvent,
    error_for_session,
)
from .pool import Endpoint

__all__ = ["Session"]

_Call = grpc.aio.StreamStreamCall[pb.SessionMessage, pb.SessionUpdate]


class _End:
    """Queued after the last event: the stream ended (``error`` None = normally)."""

    def __init__(self, error: GatewayError | None):
        self.error = error


class Session:
    """A collaborative editing session; use it through :meth:`GatewayClient.session`.

    Example::

        async with client.session() as s:
            joined = await s.join("notes/1", actor="alice", presence={"name": "Alice"})
            print(joined.document, joined.members)
            ack = await s.send_diff("notes/1", [{"op": "set", "path": "title", "value": "Hi"}])
            print("durable at version", ack.version)
            async for event in s:          # other members' changes, presence, member events
                if isinstance(event, Change):
                    print(event.actor, event.diff)

    Incoming events are buffered without bound, so an unread iterator never holds up acks; read
    it (or leave the session) to keep memory flat.

    A session does not outlive its stream: when the gateway stops, the iterator raises
    :class:`ShuttingDown` (pending acks fail with it too). Open a new session and join again,
    passing the state vector of your replica so only what is missing is exchanged.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        codec_options: CodecOptions[Any],
        *,
        timeout: float | None = None,
        close_timeout: float = 5.0,
    ):
        self._endpoint = endpoint
        self._close_timeout = close_timeout
        self._opts = codec_options
        self._timeout = timeout
        self._call: _Call | None = None
        self._reader: asyncio.Task[None] | None = None
        self._seq = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._events: asyncio.Queue[SessionEvent | _End] = asyncio.Queue()
        self._write_lock = asyncio.Lock()
        self._ended: GatewayError | None = None
        self._closing = False
        self._done = False
        #: This session's member id in each joined document.
        self.member_ids: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> Session:
        """Start the stream (``async with`` does this)."""
        if self._call is None:
            self._call = self._endpoint.collaborative_session(None, timeout=self._timeout)
            self._reader = asyncio.get_running_loop().create_task(self._read(self._call))
        return self

    async def __aenter__(self) -> Session:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(graceful=exc is None)

    async def close(self, graceful: bool = True) -> None:
        """End the session. ``graceful``: half-close and let the gateway finish (it removes this
        session's memberships and presence); otherwise cancel the stream at once."""
        call, reader = self._call, self._reader
        if call is None or reader is None:
            return
        self._closing = True
        if graceful and not reader.done():
            try:
                async with self._write_lock:
                    await call.done_writing()
                await asyncio.wait_for(asyncio.shield(reader), self._close_timeout)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError):
                pass
        call.cancel()
        if not reader.done():
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        self._fail_pending(SessionClosed("the session is closed"))

    # -- requests ------------------------------------------------------------------------------

    async def join(
        self,
        node_id: str | bytes,
        state_vector: bytes = b"",
        *,
        actor: str = "",
        presence: Mapping[str, Any] | None = None,
        want_snapshot: bool = True,
    ) -> Joined:
        """Join a document (created on its first write). ``state_vector`` is the client
        replica's Yjs state vector (empty: send the whole state in ``Joined.update``)."""
        msg = pb.SessionMessage(
            join=pb.Join(
                node_id=node_bytes(node_id),
                state_vector=state_vector,
                actor=actor,
                presence_bson=encode(presence, self._opts) if presence else b"",
                want_snapshot=want_snapshot,
            )
        )
        joined: Joined = await (await self._request(msg))
        self.member_ids[joined.node_id] = joined.member_id
        return joined

    async def post_diff(
        self,
        node_id: str | bytes,
        diff: Diff,
        *,
        context: Mapping[str, int] | None = None,
    ) -> asyncio.Future[Ack]:
        """Send a diff without waiting: returns the future of its :class:`Ack` (pipelining)."""
        msg = pb.SessionMessage(
            diff=pb.SessionDiff(
                node_id=node_bytes(node_id),
                diff_bson=encode_diff(diff, self._opts),
                vector_clock=pb.VectorClock(counters=dict(context or {})),
            )
        )
        return await self._request(msg)

    async def send_diff(
        self,
        node_id: str | bytes,
        diff: Diff,
        *,
        context: Mapping[str, int] | None = None,
    ) -> Ack:
        """Send a diff (ops list, diff document or BSON) to a joined document and wait until
        it is durable. ``context`` is the vector clock the diff was made against."""
        return await (await self.post_diff(node_id, diff, context=context))

    async def post_update(self, node_id: str | bytes, update: bytes) -> asyncio.Future[Ack]:
        """Send a raw Yjs v1 update without waiting: returns the future of its :class:`Ack`."""
        msg = pb.SessionMessage(
            update=pb.SessionCrdtUpdate(node_id=node_bytes(node_id), update=update)
        )
        return await self._request(msg)

    async def send_update(self, node_id: str | bytes, update: bytes) -> Ack:
        """Send a raw Yjs v1 update (sync step 2 or an edit) and wait until it is durable."""
        return await (await self.post_update(node_id, update))

    async def set_presence(self, node_id: str | bytes, state: Mapping[str, Any] | None) -> int:
        """Broadcast this member's presence (None clears it). The gateway does not acknowledge
        presence; an error arrives from the iterator as a :class:`SessionErrorEvent` with the
        returned seq."""
        raw = encode(state, self._opts) if state else b""
        msg = pb.SessionMessage(presence=pb.Presence(node_id=node_bytes(node_id), state_bson=raw))
        return await self._send(msg)

    async def leave(self, node_id: str | bytes) -> int:
        """Leave a document (unacknowledged, like :meth:`set_presence`; returns the seq)."""
        node = node_bytes(node_id)
        self.member_ids.pop(node.decode("utf-8", errors="surrogateescape"), None)
        return await self._send(pb.SessionMessage(leave=pb.Leave(node_id=node)))

    # -- incoming ------------------------------------------------------------------------------

    def __aiter__(self) -> Session:
        return self

    async def __anext__(self) -> SessionEvent:
        """The next incoming event; the iteration ends when the stream ends (raising the
        stream's error if it failed, e.g. :class:`ShuttingDown`)."""
        if self._done:
            raise StopAsyncIteration
        item = await self._events.get()
        if isinstance(item, _End):
            self._done = True
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    # -- internals -----------------------------------------------------------------------------

    async def _send(self, msg: pb.SessionMessage, answer: asyncio.Future[Any] | None = None) -> int:
        """Number and write a message; ``answer`` is registered under its seq before the write
        (the answer may come back before ``write`` returns)."""
        call = self._call
        if call is None:
            raise RuntimeError("the session is not open: use `async with client.session()`")
        if self._ended is not None:
            raise SessionClosed(f"the session has ended: {self._ended.message}")
        async with self._write_lock:
            seq = next(self._seq)
            msg.seq = seq
            if answer is not None:
                self._pending[seq] = answer
            try:
                await call.write(msg)
            except BaseException as exc:
                self._pending.pop(seq, None)
                if isinstance(exc, grpc.aio.AioRpcError | asyncio.InvalidStateError):
                    raise await self._write_failed(exc) from exc
                raise
        return seq

    async def _write_failed(self, exc: BaseException) -> GatewayError:
        """The error for a write to a stream that has ended: the stream's own status (a
        refused session raises Unauthenticated, not SessionClosed), read by the reader task
        (a write can fail before the status has been read)."""
        reader = self._reader
        if self._ended is None and reader is not None and not reader.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(reader), self._close_timeout)
        if self._ended is not None and not isinstance(self._ended, SessionClosed):
            return self._ended
        if isinstance(exc, grpc.aio.AioRpcError) and exc.code() != grpc.StatusCode.INTERNAL:
            return error_from_rpc(exc)
        ended = self._ended.message if self._ended else "the stream has ended"
        return SessionClosed(f"the session has ended: {ended}")

    async def _request(self, msg: pb.SessionMessage) -> asyncio.Future[Any]:
        """Send a message whose answer is awaited; returns the answer's future."""
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._send(msg, answer)
        return answer

    def _resolve(self, seq: int, value: Any = None, error: GatewayError | None = None) -> bool:
        fut = self._pending.pop(seq, None)
        if fut is None or fut.done():
            return False
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(value)
        return True

    def _fail_pending(self, error: GatewayError) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # never "exception was never retrieved" if nobody awaits it

    async def _read(self, call: _Call) -> None:
        error: GatewayError | None = None
        try:
            async for upd in call:
                self._dispatch(upd)
        except grpc.aio.AioRpcError as err:
            if not self._closing:
                error = error_from_rpc(err)
        except asyncio.CancelledError:
            if not self._closing:
                raise
        finally:
            # Closed here: the iterator just ends; a failed stream raises its error from it.
            self._ended = error or SessionClosed("the session is closed")
            self._fail_pending(self._ended)
            self._events.put_nowait(_End(error))

    def _dispatch(self, upd: pb.SessionUpdate) -> None:
        kind = upd.WhichOneof("kind")
        o = self._opts
        if kind == "joined":
            self._resolve(upd.joined.seq, Joined.from_pb(upd.joined, o))
        elif kind == "ack":
            self._resolve(upd.ack.seq, Ack.from_pb(upd.ack, o))
        elif kind == "error":
            err = error_for_session(upd.error)
            if not self._resolve(upd.error.seq, error=err):
                self._events.put_nowait(SessionErrorEvent.from_pb(upd.error))
        elif kind == "change":
            self._events.put_nowait(Change.from_pb(upd.change, o))
        elif kind == "presence":
            self._events.put_nowait(PresenceUpdate.from_pb(upd.presence, o))
        elif kind == "member":
            self._events.put_nowait(MemberEvent.from_pb(upd.member))
