"""GatewayClient: the async Python client of the MemoryGateway."""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import bson
import grpc
from bson.codec_options import CodecOptions

from virtualdom.v1 import gateway_pb2 as pb

from .codec import DEFAULT_CODEC_OPTIONS, Diff, encode_diff, node_bytes
from .errors import ResourceExhausted, error_from_rpc
from .models import Snapshot, WriteResult
from .pool import ChannelPool, Endpoint
from .pool import channel_options as make_channel_options
from .retry import RetryPolicy
from .security import TokenSource, channel_credentials
from .session import Session
from .subscription import Subscription

__all__ = ["GatewayClient", "MiB"]

MiB = 1024 * 1024
T = TypeVar("T")

_COMPRESSION: dict[str, grpc.Compression] = {
    "gzip": grpc.Compression.Gzip,
    "deflate": grpc.Compression.Deflate,
    "none": grpc.Compression.NoCompression,
}


class GatewayClient:
    """An async client of one MemoryGateway, over a small pool of gRPC channels.

    Example::

        async with GatewayClient("127.0.0.1:50051") as client:
            w = await client.write("notes/1", [{"op": "set", "path": "title", "value": "Hi"}])
            snap = await client.read("notes/1")
            assert snap.document == {"title": "Hi"} and snap.version == w.version

    Arguments:
        target: the gateway's ``host:port``.
        pool_size: channels (HTTP/2 connections) used round-robin.
        keepalive_s: seconds between keepalive pings (None/0 disables them; the gateway refuses
            pings more often than every 5 s). ``keepalive_timeout_s``: how long to wait for the
            ping's answer before the connection counts as dead.
        compression: request compression: ``"gzip"``, ``"deflate"``, a ``grpc.Compression`` or
            None (the gateway chooses the compression of its responses).
        max_message_bytes: largest message sent or received (the default fits 100 MB
            documents, like the gateway's).
        retry: the :class:`RetryPolicy` for idempotent calls and stream reconnects.
        timeout: default deadline in seconds of each unary attempt (None: no deadline).
        codec_options: how BSON decodes (see :mod:`virtualdom.client.codec`).
        channel_options: extra gRPC channel arguments.
        tls, root_certificates, certificate_chain, private_key: TLS (None = TLS when
            certificates are given; ``tls=True`` alone trusts the system's CAs) and the client
            certificate and key (PEM bytes) for mTLS.
        token: a bearer token, or a function returning the current one (asked before each
            call), sent as ``authorization: Bearer ...``. See :mod:`virtualdom.client.security`.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        pool_size: int = 2,
        keepalive_s: float | None = 20.0,
        keepalive_timeout_s: float = 20.0,
        compression: grpc.Compression | str | None = None,
        max_message_bytes: int = 128 * MiB,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS,
        channel_options: Sequence[tuple[str, Any]] = (),
        tls: bool | None = None,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        token: TokenSource | None = None,
    ):
        self.target = target
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = timeout
        self.codec_options = codec_options
        if isinstance(compression, str):
            try:
                compression = _COMPRESSION[compression.lower()]
            except KeyError:
                raise ValueError(f"unknown compression {compression!r}") from None
        self.compression = compression
        self._pool = ChannelPool(
            target,
            size=pool_size,
            options=make_channel_options(
                max_message_bytes=max_message_bytes,
                keepalive_s=keepalive_s,
                keepalive_timeout_s=keepalive_timeout_s,
                retry=self.retry,
                extra=channel_options,
            ),
            compression=compression,
            credentials=channel_credentials(
                target,
                tls=tls,
                root_certificates=root_certificates,
                certificate_chain=certificate_chain,
                private_key=private_key,
                token=token,
            ),
        )
        self._streams: weakref.WeakSet[Subscription | Session] = weakref.WeakSet()

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> GatewayClient:
        self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def open(self) -> None:
        """Create the channels (call inside the event loop that uses the client)."""
        self._pool.open()

    async def close(self, grace: float | None = None) -> None:
        """Close the subscriptions and sessions still open, then the channels (unary calls
        still running are cancelled after ``grace`` seconds)."""
        for stream in list(self._streams):
            if isinstance(stream, Subscription):
                await stream.aclose()
            else:
                await stream.close(graceful=False)
        await self._pool.close(grace)

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until every channel of the pool is connected."""
        await self._pool.ready(timeout)

    # -- unary calls ---------------------------------------------------------------------------

    async def write(
        self,
        node_id: str | bytes,
        ops: Diff,
        *,
        context: Mapping[str, int] | None = None,
        request_id: str | None = None,
        expected_version: int | None = None,
        actor: str | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> WriteResult:
        """Apply a diff to a document, durably (a new ``node_id`` creates the document).

        ``ops`` is a list of ops (sent as ``{"ops": ops}``), a whole diff document
        (``{"ops": [...]}`` or ``{"update": <bytes>}``) or its BSON bytes. ``context`` is the
        vector clock the diff was made against (None: the current state). ``request_id`` makes
        the write idempotent; when retries are enabled and none is given, a uuid4 is generated
        so a retried write is replayed, not applied twice. ``expected_version`` makes the write
        conditional (:class:`VersionMismatch` otherwise, carrying ``current_version``).

        Example::

            r = await client.write("doc", [{"op": "inc", "path": "views", "by": 1}],
                                   expected_version=7, metadata={"why": "page view"})
            print(r.version, r.clock, r.diff, r.replayed)
        """
        if request_id is None and self.retry.enabled:
            request_id = uuid.uuid4().hex
        request = pb.WriteDiffRequest(
            node_id=node_bytes(node_id),
            diff_bson=encode_diff(ops, self.codec_options),
            metadata=dict(metadata or {}),
            request_id=request_id or "",
            actor=actor or "",
        )
        if context:
            request.vector_clock.counters.update(context)
        if expected_version is not None:
            request.expected_version = expected_version
        response = await self._call(
            lambda e, t: e.write_diff(request, timeout=t),
            idempotent=bool(request_id),
            timeout=timeout,
        )
        return WriteResult.from_pb(response, request.request_id, self.codec_options)

    async def write_update(
        self,
        node_id: str | bytes,
        update: bytes,
        *,
        request_id: str | None = None,
        expected_version: int | None = None,
        actor: str | None = None,
        metadata: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> WriteResult:
        """Apply a raw CRDT update (Yjs v1 bytes) to a document: ``write`` of
        ``{"update": update}``.

        Example::

            r = await client.write_update("doc", ydoc.get_update(remote_state_vector))
        """
        return await self.write(
            node_id,
            bson.encode({"update": bytes(update)}),
            request_id=request_id,
            expected_version=expected_version,
            actor=actor,
            metadata=metadata,
            timeout=timeout,
        )

    async def read(
        self,
        node_id: str | bytes,
        *,
        version: int | None = None,
        path: str | Sequence[str | int] | None = None,
        include_state: bool = False,
        timeout: float | None = None,
    ) -> Snapshot:
        """Read a document: the latest version, or a retained past ``version``
        (:class:`HistoryCompacted` if it is gone), or only the value at ``path`` (dotted string
        or list of segments; :attr:`Snapshot.value` holds it). :class:`NotFound` if the
        document does not exist.

        Example::

            snap = await client.read("doc")
            title = (await client.read("doc", path="meta.title")).value
        """
        dotted = _dotted(path)
        response = await self._read(node_id, version, dotted, include_state, timeout)
        return Snapshot.from_pb(response, dotted, self.codec_options)

    async def read_raw(
        self,
        node_id: str | bytes,
        *,
        version: int | None = None,
        path: str | Sequence[str | int] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Like :meth:`read`, but return the snapshot's BSON bytes as stored, undecoded."""
        response = await self._read(node_id, version, _dotted(path), False, timeout)
        return bytes(response.snapshot_bson)

    async def _read(
        self,
        node_id: str | bytes,
        version: int | None,
        path: str | None,
        include_state: bool,
        timeout: float | None,
    ) -> pb.ReadSnapshotResponse:
        request = pb.ReadSnapshotRequest(
            node_id=node_bytes(node_id), path=path or "", include_state=include_state
        )
        if version is not None:
            request.version = version
        return await self._call(
            lambda e, t: e.read_snapshot(request, timeout=t), idempotent=True, timeout=timeout
        )

    async def _call(
        self,
        invoke: Callable[[Endpoint, float | None], Awaitable[T]],
        *,
        idempotent: bool,
        timeout: float | None,
    ) -> T:
        """One unary call, retried with backoff on retryable codes when idempotent."""
        policy = self.retry
        deadline = timeout if timeout is not None else self.timeout
        attempt = 0
        while True:
            try:
                return await invoke(self._pool.next(), deadline)
            except grpc.aio.AioRpcError as err:
                attempt += 1
                error = error_from_rpc(err)
                if (
                    not idempotent
                    or attempt >= policy.max_attempts
                    or not policy.retryable(err.code(), err.details() or "", error.reason)
                ):
                    raise error from err
                delay = policy.backoff(attempt - 1)
                if isinstance(error, ResourceExhausted):  # a rate limit says when to come back
                    delay = max(delay, error.retry_after_ms / 1000)
            await asyncio.sleep(delay)

    # -- streams -------------------------------------------------------------------------------

    def subscribe(
        self,
        node_id: str | bytes | None = None,
        prefix: str | bytes | None = None,
        *,
        from_version: int | None = None,
        resume_token: bytes | None = None,
        send_snapshot: bool = False,
        include_update: bool = False,
        progress: bool = False,
        heartbeat_ms: int = 0,
    ) -> Subscription:
        """Follow one document (``node_id``) or every document under ``prefix`` ("" = all).

        Start: ``from_version=v`` (single document: changes after version v; 0 = its whole
        history), ``resume_token`` (the :attr:`Change.resume_token` of the last event seen), or
        neither (changes from now on). ``send_snapshot`` first yields a :class:`SnapshotEvent`
        per document. ``include_update`` adds the Yjs update to each change. ``progress`` also
        yields the gateway's :class:`Progress` heartbeats (every ``heartbeat_ms``, 0 = the
        gateway's default).

        The stream survives disconnects and gateway restarts: see :class:`Subscription`.

        Example::

            async with client.subscribe(prefix="projects/42/", send_snapshot=True) as sub:
                async for event in sub:
                    ...
        """
        sub = Subscription(
            self._pool,
            self.retry,
            self.codec_options,
            node_id=node_bytes(node_id) if node_id is not None else None,
            prefix=node_bytes(prefix) if prefix is not None else None,
            from_version=from_version,
            resume_token=resume_token,
            send_snapshot=send_snapshot,
            include_update=include_update,
            heartbeat_ms=heartbeat_ms,
            progress=progress,
        )
        self._streams.add(sub)
        return sub

    def session(self, *, close_timeout: float = 5.0) -> Session:
        """A collaborative session (one bidirectional stream); use it with ``async with``.

        Example::

            async with client.session() as s:
                await s.join("notes/1", actor="alice")
                ack = await s.send_diff("notes/1", [{"op": "set", "path": "x", "value": 1}])
        """
        session = Session(self._pool.next(), self.codec_options, close_timeout=close_timeout)
        self._streams.add(session)
        return session


def _dotted(path: str | Sequence[str | int] | None) -> str | None:
    if path is None or isinstance(path, str):
        return path or None
    return ".".join(str(p) for p in path)
