"""The MemoryGateway handlers: convert the request, call the domain, convert the result.

Errors are not mapped here: they propagate to :func:`rpc_errors` (SubscribeChanges catches them
itself), which asks the single table in :mod:`.errors` for the status (:func:`abort_for`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from virtualdom.engine import validate_clock
from virtualdom.engine.diff import parse_path
from virtualdom.v1 import gateway_pb2 as pb

from .auth import caller
from .changestream import (
    Changes,
    ChangeStreams,
    Progress,
    Snapshot,
    Snapshots,
    StreamRequest,
)
from .config import GatewayConfig
from .documents import Documents, WriteResult
from .errors import BadRequest, status_for
from .feed import ChangeFeed
from .operations import Operations, WriteCall
from .store import Store

log = logging.getLogger("virtualdom.service")
T = TypeVar("T")


async def abort_for(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    """Abort the RPC with the status the error table gives ``exc`` (INTERNAL naming the
    request id if none), and its ErrorDetail."""
    code, message, detail = status_for(exc)
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
        #: The unary operations, shared with the other transports (REST, Connect).
        self.ops = Operations(config, store, documents)
        #: The change streams (the transport-independent core).
        self.streams = ChangeStreams(config, store, documents, feed)

    # -- request checks --------------------------------------------------------------------------

    def node_id(self, raw: bytes, what: str = "node_id") -> bytes:
        return self.ops.node_id(raw, what)

    def actor(self, requested: str) -> str:
        """The actor a write or a session member acts as (:meth:`Operations.actor`)."""
        return self.ops.actor(requested)

    # -- unary: convert, call the shared operation (server/operations.py), convert -------------

    @rpc_errors
    async def WriteDiff(self, request: pb.WriteDiffRequest, context: Any) -> pb.WriteDiffResponse:
        result = await self.ops.write(
            WriteCall(
                node_id=request.node_id,
                # Read once: each read of a bytes field of a protobuf message copies it (100 MB
                # each for a 100 MB document).
                diff_bson=request.diff_bson,
                actor=request.actor,
                request_id=request.request_id,
                metadata=dict(request.metadata),
                context=clock_of(request.vector_clock) if request.vector_clock.counters else None,
                expected_version=(
                    request.expected_version if request.HasField("expected_version") else None
                ),
            )
        )
        return write_response(result, _echo_budget(self.config))

    @rpc_errors
    async def ReadSnapshot(
        self, request: pb.ReadSnapshotRequest, context: Any
    ) -> pb.ReadSnapshotResponse:
        snap = await self.ops.read(
            request.node_id,
            version=request.version if request.HasField("version") else None,
            path=parse_path(request.path, "path") if request.path else None,
            include_state=request.include_state,
        )
        return pb.ReadSnapshotResponse(
            snapshot_bson=snap.snapshot_bson,
            version=snap.version,
            vector_clock=pb.VectorClock(counters=snap.clock),
            state=snap.state,
        )

    # -- change streams: convert, call the core (changestream.py), convert -------------------

    @property
    def subscribers(self) -> int:
        return self.streams.subscribers

    async def SubscribeChanges(
        self, request: pb.SubscribeRequest, context: Any
    ) -> AsyncIterator[Any]:
        # Errors are handled here rather than by a wrapping generator (stream_errors): every
        # delivery to every subscriber passes through each generator layer twice.
        try:
            async for message in self.change_messages(request):
                yield message
        except (grpc.aio.AbortError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            await abort_for(context, exc)

    async def change_messages(
        self, request: pb.SubscribeRequest
    ) -> AsyncGenerator[bytes | pb.ChangeEvent, None]:
        """The stream's ChangeEvent messages (a batch of changes as their encoded bytes), from
        the change-stream core; failures raise domain errors. Shared by the gRPC handler and
        the Connect/gRPC-Web one (server/http/connect.py), which map them to their statuses."""
        undecodable: object = request  # app._parse hands over a BadRequest instead
        if isinstance(undecodable, BadRequest):
            raise undecodable
        budget = _echo_budget(self.config)
        async for event in self.streams.open(stream_request(request), caller()):
            if type(event) is Changes:
                entries = event.entries
                if len(entries) == 1:  # a live subscriber's usual batch: nothing to split
                    field = entries[0].encoded_field(event.include_update)
                    if len(field) <= budget:
                        yield field
                        continue
                for message in wire_messages(event, budget):
                    yield message
            elif type(event) is Progress:
                yield pb.ChangeEvent(
                    progress=pb.Progress(
                        resume_token=event.resume_token, timestamp_us=event.timestamp_us
                    )
                )
            else:
                assert isinstance(event, Snapshots)
                yield pb.ChangeEvent(snapshots=[snapshot_pb(s) for s in event.items])

    def close_streams(self) -> None:
        """Shutting down: every change stream ends with a resumable status."""
        self.streams.close()


def stream_request(request: pb.SubscribeRequest) -> StreamRequest:
    """A SubscribeRequest as the change-stream core's request."""
    target = request.WhichOneof("target")
    start = request.WhichOneof("start")
    return StreamRequest(
        node_id=request.node_id if target == "node_id" else None,
        prefix=request.prefix if target == "prefix" else None,
        from_version=request.from_version if start == "from_version" else None,
        resume_token=request.resume_token if start == "resume_token" else None,
        send_snapshot=request.send_snapshot,
        include_update=request.include_update,
        heartbeat_ms=request.heartbeat_ms,
    )


def snapshot_pb(s: Snapshot) -> pb.SnapshotEvent:
    return pb.SnapshotEvent(
        node_id=s.node_id,
        version=s.version,
        vector_clock=pb.VectorClock(counters=s.clock),
        snapshot_bson=s.snapshot_bson,
        resume_token=s.resume_token,
    )


def wire_messages(event: Changes, budget: int) -> Iterator[bytes]:
    """The changes as ChangeEvent messages, in order, each under ``budget`` bytes: a batch of
    big changes is split, and a change too big to send with its update goes without it (one
    message over the cap fails the stream, and its every retry). Each change is encoded once
    for every subscriber (``Entry.encoded_field``): a message is their concatenation."""
    include_update = event.include_update
    chunk: list[bytes] = []
    size = 0
    for e in event.entries:
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
