"""The call observer: the access log, metrics and traces of every call.

One layer of the call pipeline (:class:`CallObserver`, outermost, so it also sees calls that
the security layer refuses; server/pipeline.py) measures every call of every service and feeds:

* the **access log**: one structured line per unary call and per stream end, on the
  ``virtualdom.access`` logger — method, node id (or prefix; the documents a session joined),
  principal, peer, status code, duration, request/response bytes and messages, request id.
  Payloads (diffs, snapshots, updates, presence) and metadata (tokens) are never logged: only
  the fields above are read from a request. Formatting: server/logs.py.
* **metrics** (server/metrics.py, ``metrics_address``).
* **traces** (server/tracing.py, ``tracing = "console" | "otlp"``, the optional ``otel`` extra).

:class:`Observability` holds the three for one gateway. The names that lived here before the
split (``JsonFormatter``, ``TextFormatter``, ``configure_logging``, ``Metrics``, ``Tracer``,
``split_address``) are still importable from this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc

from . import context as callctx
from .addresses import split_address, url_host
from .config import GatewayConfig
from .logs import JsonFormatter, TextFormatter, configure_logging
from .metrics import Metrics
from .pipeline import Handler, Layer
from .tracing import Tracer

if TYPE_CHECKING:
    from .app import Gateway

__all__ = [
    "CallObserver",
    "JsonFormatter",
    "Metrics",
    "Observability",
    "TextFormatter",
    "Tracer",
    "configure_logging",
    "split_address",
]

ACCESS = logging.getLogger("virtualdom.access")
log = logging.getLogger("virtualdom.observability")

#: Health checks and reflection are logged at DEBUG when they succeed (probes run every few
#: seconds and would drown the access log).
QUIET_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
#: Status codes that mean the gateway failed (logged at ERROR); others are the caller's doing.
SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)
MAX_LOGGED_ID = 256


# -- per-call state ------------------------------------------------------------------------------


class CallInfo:
    """What the call observer learns about one call (never payloads)."""

    __slots__ = (
        "code",
        "fallback_id",
        "kind",
        "method",
        "msgs_in",
        "msgs_out",
        "node_id",
        "node_ids",
        "peer",
        "prefix",
        "principal",
        "req_bytes",
        "request_id",
        "resp_bytes",
        "started",
    )

    def __init__(self, method: str, kind: str, peer: str):
        self.method = method
        self.kind = kind
        self.peer = peer
        self.node_id = ""
        self.node_ids: list[str] = []
        self.prefix: str | None = None
        self.principal = ""
        self.request_id = ""
        #: The generated request id, used when neither a header nor the request gives one.
        self.fallback_id = ""
        self.req_bytes = 0
        self.resp_bytes = 0
        self.msgs_in = 0
        self.msgs_out = 0
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()

    @property
    def short_method(self) -> str:
        return self.method.lstrip("/")

    @property
    def server_error(self) -> bool:
        """The call failed by the gateway's doing (logged at ERROR, an error span)."""
        return self.code in SERVER_ERRORS

    def learn(self, request: Any) -> None:
        """Note the request's node id / prefix / request id (only those fields are read)."""
        if not hasattr(request, "DESCRIPTOR"):
            return  # e.g. the BadRequest of an undecodable message
        fields = request.DESCRIPTOR.fields_by_name
        try:
            if "join" in fields and request.WhichOneof("kind") == "join":
                self._node(request.join.node_id)
            elif "prefix" in fields and request.WhichOneof("target") == "prefix":
                self.prefix = _show(request.prefix)
            elif "node_id" in fields:
                self._node(request.node_id)
            if not self.request_id and "request_id" in fields:
                rid = request.request_id or (
                    request.metadata.get("request_id", "") if "metadata" in fields else ""
                )
                if rid:
                    self.request_id = _show(rid.encode())
                    callctx.request_id.set(self.request_id)
        except (AttributeError, ValueError, TypeError):  # an unexpected message shape
            return

    def _node(self, raw: bytes) -> None:
        node = _show(raw)
        if not node:
            return
        if self.kind == "unary" or self.method.endswith("/SubscribeChanges"):
            self.node_id = node
        elif node not in self.node_ids and len(self.node_ids) < 32:
            self.node_ids.append(node)
            self.node_id = self.node_id or node

    def fields(self, seconds: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "code": self.code.name,
            "duration_ms": round(seconds * 1000, 3),
            "node_id": self.node_id,
        }
        if self.prefix is not None:
            out["prefix"] = self.prefix
        if len(self.node_ids) > 1:
            out["node_ids"] = self.node_ids
        out.update(
            principal=self.principal,
            peer=self.peer,
            request_id=self.request_id,
            request_bytes=self.req_bytes,
            response_bytes=self.resp_bytes,
        )
        if self.kind != "unary":
            out.update(messages_in=self.msgs_in, messages_out=self.msgs_out)
        return out


_CURRENT: ContextVar[CallInfo | None] = ContextVar("virtualdom.call", default=None)


def _show(raw: bytes) -> str:
    return bytes(raw[:MAX_LOGGED_ID]).decode("utf-8", errors="replace")


# Generated request ids: a random prefix per process and a counter (16 hex digits, like the
# uuid4 prefix they replace, which cost a getrandom() system call per call).
_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)


def _next_call_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFFFF:08x}"


def _request_id_header(metadata: Iterable[tuple[str, Any]] | None) -> str:
    for k, v in metadata or ():
        if k == "x-request-id" and isinstance(v, str):
            return "".join(c for c in v[:128] if c.isprintable())
    return ""


def _identity(data: Any) -> Any:
    return data


def _counting_deserializer(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deser(data: bytes) -> Any:
        message = deserialize(data)
        call = _CURRENT.get()
        if call is not None:
            call.req_bytes += len(data)
            call.msgs_in += 1
            call.learn(message)
        return message

    return deser


def _counting_serializer(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def ser(message: Any) -> bytes:
        data = serialize(message)
        call = _CURRENT.get()
        if call is not None:
            call.resp_bytes += len(data)
            call.msgs_out += 1
        return data

    return ser


# -- the call layers -------------------------------------------------------------------------------


class CallObserver:
    """Access log + metrics + traces for every call: the outermost layer of the call pipeline
    (server/pipeline.py), so it sees every call, refused ones too."""

    def __init__(self, obs: Observability):
        self.obs = obs

    def wrap(self, method: str, handler: Handler) -> Handler:
        deser = handler.request_deserializer or _identity
        ser = handler.response_serializer or _identity
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary, deser, ser, "unary")
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary, None, ser, "client_stream"),
                request_deserializer=_counting_deserializer(deser),
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream, deser, "server_stream"),
                response_serializer=_counting_serializer(ser),
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, handler.stream_stream, None, "bidi_stream"),
                request_deserializer=_counting_deserializer(deser),
                response_serializer=_counting_serializer(ser),
            )
        return handler

    def _begin(
        self, method: str, kind: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[CallInfo, Any]:
        call = CallInfo(method, kind, context.peer() or "")
        metadata = context.invocation_metadata()
        call.request_id = _request_id_header(metadata)
        if not call.request_id:
            call.fallback_id = _next_call_id()
        _CURRENT.set(call)
        callctx.peer.set(call.peer)
        callctx.request_id.set(call.request_id or call.fallback_id)
        span = self.obs.tracer.start(call, metadata) if self.obs.tracer is not None else None
        if kind != "unary" and self.obs.metrics is not None:
            self.obs.metrics.open_streams.labels(call.short_method).inc()
        return call, span

    def _finish(
        self,
        call: CallInfo,
        span: Any,
        context: grpc.aio.ServicerContext[Any, Any],
        exc: BaseException | None,
    ) -> None:
        seconds = time.perf_counter() - call.started
        call.code = _status(context, exc)
        if not call.principal:
            # Set by the security layer inside this call's task (every call has a task of its
            # own, so what the inner layers set is still there when the call ends).
            call.principal = _caller_subject()
        if not call.request_id:
            call.request_id = call.fallback_id
        self.obs.record(call, seconds)
        if span is not None and self.obs.tracer is not None:
            self.obs.tracer.end(span, call)

    def _unary(
        self,
        method: str,
        behaviour: Callable[..., Any],
        deser: Callable[[bytes], Any] | None,
        ser: Callable[[Any], bytes],
        kind: str,
    ) -> Callable[..., Awaitable[bytes]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            call, span = self._begin(method, kind, context)
            error: BaseException | None = None
            try:
                if deser is not None:  # a unary request arrives as bytes: decode it here
                    call.req_bytes = len(request)
                    call.msgs_in = 1
                    request = deser(request)
                    call.learn(request)
                response = behaviour(request, context)
                if inspect.isawaitable(response):
                    response = await response
                data = ser(response)
                call.resp_bytes = len(data)
                call.msgs_out = 1
                return data
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._finish(call, span, context, error)

        return unary

    def _stream(
        self,
        method: str,
        behaviour: Callable[..., Any],
        deser: Callable[[bytes], Any] | None,
        kind: str,
    ) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(behaviour):
            # The reader/writer API (context.write), e.g. the health service's Watch.
            async def writer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
                call, span = self._begin(method, kind, context)
                error: BaseException | None = None
                try:
                    if deser is not None:
                        call.req_bytes, call.msgs_in = len(request), 1
                        request = deser(request)
                        call.learn(request)
                    await behaviour(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    self._finish(call, span, context, error)

            return writer

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            call, span = self._begin(method, kind, context)
            error: BaseException | None = None
            try:
                if deser is not None:
                    call.req_bytes, call.msgs_in = len(request), 1
                    request = deser(request)
                    call.learn(request)
                items: AsyncIterator[Any] = _aiter(behaviour(request, context))
                async with contextlib.aclosing(items):  # type: ignore[type-var]
                    async for item in items:
                        yield item
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._finish(call, span, context, error)

        return stream


async def _aiter(result: Any) -> AsyncIterator[Any]:
    """A stream behaviour's responses, whether it is an async generator or a sync one."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        for item in result:
            yield item


def _status(
    context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None
) -> grpc.StatusCode:
    code: grpc.StatusCode | None = context.code()
    if exc is None or isinstance(exc, grpc.aio.AbortError):
        return code if code is not None else grpc.StatusCode.OK
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return code if code is not None else grpc.StatusCode.UNKNOWN


def _caller_subject() -> str:
    """The subject the security layer verified for the current call ("" when none)."""
    try:
        from .auth import current_caller
    except ImportError:  # pragma: no cover - the security module is optional here
        return ""
    who = current_caller().get(None)
    subject = getattr(who, "subject", None)
    return subject if isinstance(subject, str) else ""


# -- together ------------------------------------------------------------------------------------


class Observability:
    """The gateway's access log, metrics and tracer, built from its config."""

    def __init__(self, config: GatewayConfig):
        self.config = config
        self.access_log = bool(getattr(config, "access_log", True))
        self.metrics: Metrics | None = Metrics()
        tracing = getattr(config, "tracing", "none") or "none"
        self.tracer: Tracer | None = Tracer(tracing) if tracing != "none" else None
        #: The bound port of the metrics endpoint (None: not serving).
        self.metrics_port: int | None = None
        #: Metric children per (method, status code), see record().
        self._children: dict[tuple[str, grpc.StatusCode], tuple[Any, ...]] = {}

    def layers(self, *others: Layer) -> list[Layer]:
        """The call pipeline's layers, outermost first: the call observer (it sees every call,
        refused ones too), then ``others`` (security)."""
        return [CallObserver(self).wrap, *others]

    def start(self, gateway: Gateway) -> None:
        """Watch the gateway's state; serve /metrics when ``metrics_address`` is set."""
        assert self.metrics is not None
        self.metrics.watch(gateway)
        if gateway.store is not None:
            gateway.store.on_stats = self.metrics.on_commit
        address = getattr(self.config, "metrics_address", "")
        if address:
            self.metrics_port = self.metrics.serve(address)
            host = split_address(address)[0]
            log.info("metrics on http://%s:%d/metrics", url_host(host), self.metrics_port)

    def record(self, call: CallInfo, seconds: float) -> None:
        m = self.metrics
        if m is not None:
            key = (call.method, call.code)
            children = self._children.get(key)
            if children is None:
                # labels() looks its child up under a lock on every call: do it once per
                # (method, code) pair (a few dozen of them).
                method = call.short_method
                children = self._children[key] = (
                    m.rpcs.labels(method, call.code.name),
                    m.latency.labels(method, call.code.name),
                    m.received.labels(method),
                    m.sent.labels(method),
                    m.open_streams.labels(method),
                )
            rpcs, latency, received, sent, open_streams = children
            rpcs.inc()
            latency.observe(seconds)
            received.inc(call.req_bytes)
            sent.inc(call.resp_bytes)
            if call.kind != "unary":
                open_streams.dec()
        if not self.access_log:
            return
        if call.server_error:
            level = logging.ERROR
        elif call.code == grpc.StatusCode.OK and call.method.startswith(QUIET_SERVICES):
            level = logging.DEBUG
        else:
            level = logging.INFO
        if ACCESS.isEnabledFor(level):
            fields = call.fields(seconds)
            msg = f"{call.short_method} {call.code.name} {fields['duration_ms']:.1f}ms"
            shown = ("method", "code", "duration_ms")
            # Logger.log would first walk the stack for the caller's file and line (a tenth of
            # the line's cost), which an access-log line does not show.
            record = ACCESS.makeRecord(
                ACCESS.name,
                level,
                "",
                0,
                msg,
                (),
                None,
                extra={"fields": fields, "in_message": shown},
            )
            ACCESS.handle(record)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.tracer is not None:
            self.tracer.close()
