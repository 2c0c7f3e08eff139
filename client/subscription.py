"""Resumable change streams (SubscribeChanges).

A :class:`Subscription` is an async iterator of :class:`SnapshotEvent`, :class:`Change` and
(optionally) :class:`Progress` events. When the stream breaks (the gateway restarts, the
connection drops: UNAVAILABLE and the other retryable codes) it reconnects with backoff and
continues right after the last event it delivered: from the last version for a single document,
from the last resume token for a prefix (the gateway's shutdown status carries one). Changes it
already delivered are dropped if the gateway sends them again, so every document's versions
arrive once each, in order, with no gap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Any

import grpc
from bson.codec_options import CodecOptions

from virtualdom.v1 import gateway_pb2 as pb

from .errors import GatewayError, Unavailable, error_from_rpc
from .models import Change, Progress, SnapshotEvent, SubscriptionEvent
from .pool import ChannelPool
from .retry import RetryPolicy

__all__ = ["Subscription"]

_Call = grpc.aio.UnaryStreamCall[pb.SubscribeRequest, pb.ChangeEvent]


class Subscription:
    """An async iterator over one document's or one prefix's changes; see
    :meth:`GatewayClient.subscribe`.

    Example::

        async with client.subscribe("projects/42/spec", from_version=0) as sub:
            async for event in sub:
                if isinstance(event, Change):
                    print(event.version, event.diff)

    Closing it (leaving the ``async with``, ``await sub.aclose()`` or breaking out of an
    ``async for`` over it) cancels the stream. :attr:`last_version` and :attr:`resume_token` say
    where it is, to persist and pass back as ``from_version`` / ``resume_token`` later.

    Gap-freedom starts at the requested start (``from_version``, ``resume_token`` or
    ``send_snapshot``); a subscription "from now" is covered from its first event or heartbeat.
    """

    def __init__(
        self,
        pool: ChannelPool,
        retry: RetryPolicy,
        codec_options: CodecOptions[Any],
        *,
        node_id: bytes | None,
        prefix: bytes | None,
        from_version: int | None = None,
        resume_token: bytes | None = None,
        send_snapshot: bool = False,
        include_update: bool = False,
        heartbeat_ms: int = 0,
        progress: bool = False,
        timeout: float | None = None,
    ):
        if (node_id is None) == (prefix is None):
            raise ValueError("give exactly one of node_id and prefix")
        if from_version is not None and resume_token is not None:
            raise ValueError("give at most one of from_version and resume_token")
        if from_version is not None and node_id is None:
            raise ValueError("from_version is for single-document subscriptions; use resume_token")
        if from_version is not None and from_version < 0:
            raise ValueError("from_version must be >= 0")
        self._pool = pool
        self._retry = retry
        self._opts = codec_options
        self._node = node_id
        self._prefix = prefix
        self._send_snapshot = send_snapshot
        self._include_update = include_update
        self._heartbeat_ms = heartbeat_ms
        self._progress = progress
        self._timeout = timeout
        self._initial_version = from_version
        self._initial_token = resume_token
        # Where the stream is: the last delivered version (single document) / log position.
        self._last_version: int | None = from_version
        self._token: bytes | None = resume_token
        # Per-document versions delivered (prefix subscriptions): drops replays after a resume.
        self._seen: dict[bytes, int] = {}
        # False until the initial snapshots are known to be complete.
        self._snapshots_done = not send_snapshot
        self._call: _Call | None = None
        self._closing = asyncio.Event()
        self._gen = self._run()
        self._busy = False
        #: How many times the stream was re-established.
        self.reconnects = 0

    # -- position ------------------------------------------------------------------------------

    @property
    def last_version(self) -> int | None:
        """The version of the last event delivered (single-document subscriptions)."""
        return self._last_version

    @property
    def resume_token(self) -> bytes | None:
        """The log position the stream is at (resume a prefix subscription from it)."""
        return self._token

    # -- iteration -----------------------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SubscriptionEvent:
        self._busy = True
        try:
            return await self._gen.__anext__()
        finally:
            self._busy = False

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: cancel the stream (an ``async for`` waiting in another task ends)."""
        self._closing.set()
        if self._call is not None:
            self._call.cancel()
        if not self._busy:  # else the waiting __anext__ sees the cancelled call and ends
            await self._gen.aclose()

    # -- internals -----------------------------------------------------------------------------

    def _request(self) -> pb.SubscribeRequest:
        req = pb.SubscribeRequest(
            include_update=self._include_update, heartbeat_ms=self._heartbeat_ms
        )
        if self._node is not None:
            req.node_id = self._node
        else:
            assert self._prefix is not None
            req.prefix = self._prefix
        if not self._snapshots_done:
            # Start (again) as asked: the snapshots already delivered are filtered out.
            req.send_snapshot = True
            if self._initial_version is not None:
                req.from_version = self._initial_version
            elif self._initial_token is not None:
                req.resume_token = self._initial_token
        elif self._node is not None and self._last_version is not None:
            req.from_version = self._last_version
        elif self._token is not None:
            req.resume_token = self._token
        return req

    def _seen_version(self, node: bytes) -> int | None:
        if self._node is not None:
            return self._last_version
        return self._seen.get(node)

    def _mark(self, node: bytes, version: int) -> None:
        if self._node is not None:
            self._last_version = version
        else:
            self._seen[node] = version

    def _events(self, msg: pb.ChangeEvent) -> list[SubscriptionEvent]:
        out: list[SubscriptionEvent] = []
        for s in msg.snapshots:
            node = bytes(s.node_id)
            seen = self._seen_version(node)
            if seen is not None and s.version <= seen:
                continue
            self._mark(node, s.version)
            out.append(SnapshotEvent.from_pb(s, self._opts))
            if self._node is not None:
                self._snapshots_done = True
        for c in msg.changes:
            node = bytes(c.node_id)
            self._token = bytes(c.resume_token)
            self._snapshots_done = True
            seen = self._seen_version(node)
            if seen is not None and c.version <= seen:
                continue  # delivered before the stream was resumed
            self._mark(node, c.version)
            out.append(Change.from_pb(c, self._opts))
        if msg.HasField("progress"):
            self._token = bytes(msg.progress.resume_token)
            self._snapshots_done = True
            if self._progress:
                out.append(Progress.from_pb(msg.progress))
        return out

    def _resumable(self, code: grpc.StatusCode, details: str, reason: str) -> bool:
        if self._retry.retryable(code, details, reason):
            return True
        # A server that stops past its grace period cancels the streams still open.
        return code == grpc.StatusCode.CANCELLED and not self._closing.is_set()

    async def _run(self) -> AsyncGenerator[SubscriptionEvent, None]:
        failures = 0
        limit = self._retry.stream_max_attempts
        while not self._closing.is_set():
            call: _Call = self._pool.next().subscribe_changes(
                self._request(), timeout=self._timeout
            )
            self._call = call
            try:
                async for msg in call:
                    failures = 0
                    for event in self._events(msg):
                        yield event
                return  # the gateway ended the stream normally
            except asyncio.CancelledError:
                if self._closing.is_set():
                    return
                raise
            except grpc.aio.AioRpcError as err:
                if self._closing.is_set():
                    return
                error: GatewayError = error_from_rpc(err)
                if not self._resumable(err.code(), err.details() or "", error.reason):
                    raise error from err
                if isinstance(error, Unavailable) and error.resume_token:
                    # The gateway's shutdown status: everything up to the token was sent.
                    self._token = error.resume_token
                    self._snapshots_done = True
                if limit is not None and failures >= limit:
                    raise error from err
                delay = self._retry.backoff(failures)
                failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                self.reconnects += 1
            finally:
                call.cancel()
                self._call = None
