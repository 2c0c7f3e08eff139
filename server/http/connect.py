"""WriteDiff, ReadSnapshot and SubscribeChanges for browsers: the Connect protocol and gRPC-Web
(binary and JSON), served by the ``connectrpc`` package on the HTTP port, no proxy.

``connectrpc`` does the protocols (framing, envelopes, end-of-stream messages, timeouts,
compression, content-type negotiation); this module only gives it the three methods. Each one
authenticates the call from its ``Authorization: Bearer`` header with the gateway's verifier,
puts the caller in the same context variable the gRPC security layer sets, runs the very
handler the gRPC port runs (:class:`~..service.MemoryGateway`'s method without its gRPC error
wrapper: convert, call the core, convert), and turns a domain error into a Connect error with
the status and ``ErrorDetail`` of the one table. Streams take a slot of the principal's and the
peer's stream caps, as on gRPC. Each call writes one access-log line (method
``connect:/virtualdom.v1.MemoryGateway/<Method>``).

``CollaborativeSession`` (bidirectional) is not offered here: uvicorn speaks HTTP/1.1, where
neither protocol has full duplex; browsers use the WebSocket endpoints for sessions.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf.message import Message
from protobuf.wkt import Any as AnyPb

from virtualdom.v1 import gateway_pb2 as pb

from .. import context as callctx
from ..auth import current_caller
from ..errors import Unavailable, code_of, internal_message, status_of
from ..observability import CallInfo
from ..service import MemoryGateway
from .calls import log as http_log

if TYPE_CHECKING:
    from ..app import Gateway

__all__ = ["SERVICE", "connect_app", "method_info"]

SERVICE = "virtualdom.v1.MemoryGateway"
DETAIL_TYPE = "type.googleapis.com/virtualdom.v1.ErrorDetail"
log = logging.getLogger("virtualdom.connect")
REQ = TypeVar("REQ")
RES = TypeVar("RES")

# The gRPC port's handlers without their gRPC error wrapper (rpc_errors, which aborts a grpc.aio
# context; for streams, the messages the gRPC handler sends): they raise the domain errors this
# module maps itself.
_WRITE = MemoryGateway.WriteDiff.__wrapped__  # type: ignore[attr-defined]
_READ = MemoryGateway.ReadSnapshot.__wrapped__  # type: ignore[attr-defined]


def _SUBSCRIBE(service: MemoryGateway, request: Any, _context: Any) -> AsyncGenerator[Any, None]:
    return service.change_messages(request)


class _PassThroughBinary:
    """The protobuf binary codec, letting through the pre-encoded ``bytes`` a change stream
    yields (each change is encoded once for all its subscribers)."""

    _inner = google_protobuf_binary_codec()

    def name(self) -> str:
        return "proto"

    def encode(self, message: Message | bytes) -> bytes:
        return message if isinstance(message, bytes) else self._inner.encode(message)

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        return self._inner.decode(data, message_class)


class _PassThroughJson:
    """The protobuf JSON codec; pre-encoded stream messages are ChangeEvents."""

    _inner = google_protobuf_json_codec()

    def name(self) -> str:
        return "json"

    def encode(self, message: Message | bytes) -> bytes:
        if isinstance(message, bytes):
            message = pb.ChangeEvent.FromString(message)
        encoded: bytes = self._inner.encode(message)
        return encoded

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        return self._inner.decode(data, message_class)


def method_info(
    name: str, req: type[REQ], res: type[RES], stream: StreamType
) -> MethodInfo[REQ, RES]:
    """A method of the service, as connectrpc's servers and clients describe it."""
    level = IdempotencyLevel.NO_SIDE_EFFECTS if name != "WriteDiff" else IdempotencyLevel.UNKNOWN
    return MethodInfo(
        name=name,
        service_name=SERVICE,
        input=req,
        output=res,
        idempotency_level=level,
        stream_type=stream,
    )


def connect_error(exc: BaseException) -> ConnectError:
    """The Connect error of a domain error, from the one table (code, message, ErrorDetail);
    an unexpected exception is INTERNAL with the request id only (its text may hold anything)."""
    mapped = status_of(exc)
    if mapped is None:
        return ConnectError(Code.INTERNAL, internal_message(callctx.request_id.get()))
    code, message, detail = mapped
    any_detail = AnyPb(type_url=DETAIL_TYPE, value=detail.SerializeToString())
    return ConnectError(Code(code.name.lower()), message, [ErrorDetail(any_detail)])


def _peer(ctx: RequestContext[Any, Any]) -> str:
    """The client in gRPC's peer spelling (rate limits and caps key callers by it)."""
    addr = ctx.client_address or ""
    host, _, port = addr.rpartition(":")
    if not host:
        return "unix:"
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


class _Calls:
    """Authentication, access log and errors around the three methods."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def _service(self) -> MemoryGateway:
        service = self.gateway.service
        if service is None:
            raise Unavailable("the gateway is starting or stopping; retry")
        return service

    def _begin(self, name: str, kind: str, request: Any, ctx: RequestContext[Any, Any]) -> CallInfo:
        call = CallInfo(f"connect:/{SERVICE}/{name}", kind, _peer(ctx))
        rid = ctx.request_headers.get("x-request-id", "")
        call.request_id = "".join(c for c in rid[:128] if c.isprintable())
        callctx.peer.set(call.peer)
        callctx.request_id.set(call.request_id)
        call.req_bytes = request.ByteSize()
        call.msgs_in = 1
        call.learn(request)
        return call

    def _authenticate(self, call: CallInfo, ctx: RequestContext[Any, Any]) -> Any:
        auth = ctx.request_headers.getall("authorization")
        who = self.gateway.security.authenticate([("authorization", a) for a in auth], call.peer)
        current_caller().set(who)
        call.principal = who.subject or ""
        return who

    def _end(self, call: CallInfo, exc: BaseException | None) -> None:
        call.code = code_of(exc)
        if exc is not None and status_of(exc) is None and call.code.name == "INTERNAL":
            http_log.error("internal error in %s", call.method, exc_info=exc)
        self.gateway.observability.record(call, time.perf_counter() - call.started)

    def unary(
        self, name: str, handler: Callable[[MemoryGateway, Any, Any], Awaitable[Any]]
    ) -> Callable[[Any, RequestContext[Any, Any]], Awaitable[Any]]:
        async def call_it(request: Any, ctx: RequestContext[Any, Any]) -> Any:
            call = self._begin(name, "unary", request, ctx)
            error: BaseException | None = None
            try:
                service = self._service()
                self._authenticate(call, ctx)
                response = await handler(service, request, None)
                call.resp_bytes = response.ByteSize()
                call.msgs_out = 1
                return response
            except ConnectError:
                raise
            except BaseException as exc:
                error = exc
                if isinstance(exc, Exception):
                    raise connect_error(exc) from None
                raise
            finally:
                self._end(call, error)

        return call_it

    def server_stream(
        self, name: str, handler: Callable[[MemoryGateway, Any, Any], AsyncGenerator[Any, None]]
    ) -> Callable[[Any, RequestContext[Any, Any]], AsyncIterator[Any]]:
        async def stream(request: Any, ctx: RequestContext[Any, Any]) -> AsyncIterator[Any]:
            call = self._begin(name, "server_stream", request, ctx)
            error: BaseException | None = None
            release: Callable[[], None] | None = None
            try:
                service = self._service()
                who = self._authenticate(call, ctx)
                release = self.gateway.security.slots.acquire(who.key, who.peer)
                async with contextlib.aclosing(handler(service, request, None)) as items:
                    async for item in items:
                        call.msgs_out += 1
                        call.resp_bytes += len(item) if isinstance(item, bytes) else item.ByteSize()
                        yield item
            except ConnectError:
                raise
            except BaseException as exc:
                error = exc
                if isinstance(exc, Exception):
                    raise connect_error(exc) from None
                raise
            finally:
                if release is not None:
                    release()
                self._end(call, error)

        return stream


class _MemoryGatewayConnect(ConnectASGIApplication[_Calls]):
    @property
    def path(self) -> str:
        return f"/{SERVICE}"


def _endpoints(calls: _Calls) -> Mapping[str, Any]:
    unary, stream = StreamType.UNARY, StreamType.SERVER_STREAM
    write = method_info("WriteDiff", pb.WriteDiffRequest, pb.WriteDiffResponse, unary)
    read = method_info("ReadSnapshot", pb.ReadSnapshotRequest, pb.ReadSnapshotResponse, unary)
    sub = method_info("SubscribeChanges", pb.SubscribeRequest, pb.ChangeEvent, stream)
    return {
        f"/{SERVICE}/WriteDiff": Endpoint.unary(write, calls.unary("WriteDiff", _WRITE)),
        f"/{SERVICE}/ReadSnapshot": Endpoint.unary(read, calls.unary("ReadSnapshot", _READ)),
        f"/{SERVICE}/SubscribeChanges": Endpoint.server_stream(
            sub, calls.server_stream("SubscribeChanges", _SUBSCRIBE)
        ),
    }


def connect_app(gateway: Gateway) -> ConnectASGIApplication[Any]:
    """The ASGI app serving the three methods at ``/virtualdom.v1.MemoryGateway/<Method>``."""
    return _MemoryGatewayConnect(
        service=_Calls(gateway),
        endpoints=_endpoints,
        # The same cap as a gRPC message (connectrpc answers resource_exhausted beyond it).
        read_max_bytes=gateway.config.max_message_bytes,
        codecs=[_PassThroughBinary(), _PassThroughJson()],
    )
