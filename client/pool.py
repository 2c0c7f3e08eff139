"""A small pool of grpc.aio channels, used round-robin.

Each channel is its own HTTP/2 connection (a local subchannel pool keeps grpc from sharing one
connection between channels to the same target), so large transfers on one do not hold up
calls on the others. Keepalive pings detect dead connections; reconnect backoff follows the
client's retry policy so a restarted gateway is found again quickly.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import grpc

from virtualdom.v1 import gateway_pb2 as pb

from .retry import RetryPolicy

__all__ = ["SERVICE", "ChannelPool", "Endpoint", "channel_options"]

SERVICE = "virtualdom.v1.MemoryGateway"
MiB = 1024 * 1024


def channel_options(
    *,
    max_message_bytes: int,
    keepalive_s: float | None,
    keepalive_timeout_s: float,
    retry: RetryPolicy,
    extra: Sequence[tuple[str, Any]] = (),
) -> list[tuple[str, Any]]:
    """The channel arguments the client uses (``extra`` ones override them)."""
    opts: dict[str, Any] = {
        "grpc.max_send_message_length": max_message_bytes,
        "grpc.max_receive_message_length": max_message_bytes,
        # Own connection per channel: the pool is pointless if channels share one.
        "grpc.use_local_subchannel_pool": 1,
        # Find a restarted gateway again on the client's own backoff schedule.
        "grpc.initial_reconnect_backoff_ms": max(20, int(retry.initial_backoff * 1000)),
        "grpc.min_reconnect_backoff_ms": max(20, int(retry.initial_backoff * 1000)),
        "grpc.max_reconnect_backoff_ms": max(100, int(retry.max_backoff * 1000)),
    }
    if keepalive_s:
        opts.update(
            {
                "grpc.keepalive_time_ms": int(keepalive_s * 1000),
                "grpc.keepalive_timeout_ms": int(keepalive_timeout_s * 1000),
                "grpc.keepalive_permit_without_calls": 1,
                "grpc.http2.max_pings_without_data": 0,
            }
        )
    opts.update(dict(extra))
    return list(opts.items())


class Endpoint:
    """One channel and the gateway's four methods on it."""

    def __init__(self, channel: grpc.aio.Channel):
        self.channel = channel
        self.write_diff: grpc.aio.UnaryUnaryMultiCallable[
            pb.WriteDiffRequest, pb.WriteDiffResponse
        ] = channel.unary_unary(
            f"/{SERVICE}/WriteDiff",
            request_serializer=pb.WriteDiffRequest.SerializeToString,
            response_deserializer=pb.WriteDiffResponse.FromString,
        )
        self.read_snapshot: grpc.aio.UnaryUnaryMultiCallable[
            pb.ReadSnapshotRequest, pb.ReadSnapshotResponse
        ] = channel.unary_unary(
            f"/{SERVICE}/ReadSnapshot",
            request_serializer=pb.ReadSnapshotRequest.SerializeToString,
            response_deserializer=pb.ReadSnapshotResponse.FromString,
        )
        self.subscribe_changes: grpc.aio.UnaryStreamMultiCallable[
            pb.SubscribeRequest, pb.ChangeEvent
        ] = channel.unary_stream(
            f"/{SERVICE}/SubscribeChanges",
            request_serializer=pb.SubscribeRequest.SerializeToString,
            response_deserializer=pb.ChangeEvent.FromString,
        )
        self.collaborative_session: grpc.aio.StreamStreamMultiCallable[
            pb.SessionMessage, pb.SessionUpdate
        ] = channel.stream_stream(
            f"/{SERVICE}/CollaborativeSession",
            request_serializer=pb.SessionMessage.SerializeToString,
            response_deserializer=pb.SessionUpdate.FromString,
        )


class ChannelPool:
    """``size`` channels to ``target``; :meth:`next` hands them out round-robin.

    Example::

        pool = ChannelPool("127.0.0.1:50051", size=2, options=channel_options(...))
        pool.open()                      # inside the event loop that will use it
        endpoint = pool.next()
        await pool.close()
    """

    def __init__(
        self,
        target: str,
        *,
        size: int = 2,
        options: Sequence[tuple[str, Any]] = (),
        compression: grpc.Compression | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ):
        if size < 1:
            raise ValueError("pool size must be >= 1")
        self.target = target
        self.size = size
        self.options = list(options)
        self.compression = compression
        #: TLS / token credentials (None: plaintext); see :mod:`.security`.
        self.credentials = credentials
        self._endpoints: list[Endpoint] = []
        self._turn = itertools.count()

    @property
    def is_open(self) -> bool:
        return bool(self._endpoints)

    def open(self) -> None:
        """Create the channels (they connect lazily, on first use)."""
        if self._endpoints:
            return
        self._endpoints = [Endpoint(self._channel()) for _ in range(self.size)]

    def _channel(self) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(
                self.target, options=self.options, compression=self.compression
            )
        return grpc.aio.secure_channel(
            self.target, self.credentials, options=self.options, compression=self.compression
        )

    def next(self) -> Endpoint:
        """The next channel, round-robin."""
        if not self._endpoints:
            raise RuntimeError("the client is not open: use `async with GatewayClient(...)`")
        return self._endpoints[next(self._turn) % len(self._endpoints)]

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until every channel is connected (TimeoutError after ``timeout`` seconds)."""
        waits = [e.channel.channel_ready() for e in self._endpoints]
        await asyncio.wait_for(asyncio.gather(*waits), timeout)

    async def close(self, grace: float | None = None) -> None:
        """Close every channel (calls still running are cancelled after ``grace`` seconds)."""
        endpoints, self._endpoints = self._endpoints, []
        for e in endpoints:
            await e.channel.close(grace)
