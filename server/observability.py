"""Observability: the access log, Prometheus metrics and (optional) OpenTelemetry tracing.

One layer of the call pipeline (:class:`CallObserver`, outermost, so it also sees calls that
the security layer refuses; server/pipeline.py) measures every call of every service:

* the **access log**: one structured line per unary call and per stream end, on the
  ``virtualdom.access`` logger — method, node id (or prefix; the documents a session joined),
  principal, peer, status code, duration, request/response bytes and messages, request id.
  Payloads (diffs, snapshots, updates, presence) and metadata (tokens) are never logged: only
  the fields above are read from a request.
* **metrics** (:class:`Metrics`, ``metrics_address``): RPC counts and latency histograms by
  method and status code, bytes in/out, open streams; from the gateway's state at each scrape:
  loaded documents, open subscriptions, sessions and memberships, feed head, subscriber lag; from
  the store's commit hook: commit (fsync) latency and batch size.
* **traces** (``tracing = "console" | "otlp"``, the optional ``otel`` extra): one server span per
  call, a child of the caller's span when it sent W3C ``traceparent`` metadata.

Logging format (``log_format``): ``text`` (human) or ``json`` (one object per line, with the
call's ``request_id`` on every line written during a call); see :func:`configure_logging`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import inspect
import itertools
import json
import logging
import math
import os
import re
import socket
import socketserver
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import context as callctx
from . import errors
from .config import GatewayConfig
from .pipeline import Handler, Layer

if TYPE_CHECKING:
    from .app import Gateway

__all__ = [
    "CallObserver",
    "JsonFormatter",
    "Metrics",
    "Observability",
    "TextFormatter",
    "configure_logging",
    "split_address",
]

ACCESS = logging.getLogger("virtualdom.access")
log = logging.getLogger("virtualdom.observability")

#: Health checks and reflection are logged at DEBUG when they succeed (probes run every few
#: seconds and would drown the access log).
QUIET_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
#: Status codes that mean the gateway failed (logged at ERROR); others are the caller's doing.
SERVER_ERRORS = errors.SERVER_FAULTS
MAX_LOGGED_ID = 256


# -- logging -------------------------------------------------------------------------------------


# The last whole second formatted, and its text (one tuple, replaced whole: threads log too).
_UTC_SECOND: list[tuple[int, str]] = [(-1, "")]


def _utc(created: float) -> str:
    # Formatted once per second: the access log writes a line per call.
    frac, whole = math.modf(created)
    micros = round(frac * 1e6)  # as datetime.fromtimestamp rounds
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    second = int(whole)
    cached = _UTC_SECOND[0]
    if cached[0] != second:
        t = _dt.datetime.fromtimestamp(second, _dt.UTC)
        cached = _UTC_SECOND[0] = (second, t.strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{cached[1]}{micros // 1000:03d}Z"


_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')


def _json_value(v: Any) -> str:
    """``json.dumps(v, ensure_ascii=False, default=str)``, without json's machinery for the
    plain values of an access-log line (a call's line has a dozen of them)."""
    if isinstance(v, str):
        if _NEEDS_ESCAPE.search(v) is None:
            return f'"{v}"'
    elif v is True or v is False or v is None:
        return "true" if v is True else "false" if v is False else "null"
    elif type(v) is int:
        return str(v)
    return json.dumps(v, ensure_ascii=False, default=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the call's
    ``request_id`` (when logged inside a call), the record's structured ``fields`` and ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = callctx.request_id.get()
        if rid:
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2026-01-01T12:00:00.000Z INFO virtualdom.access: message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc(record.created)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            shown = getattr(record, "in_message", ())  # already in the message text
            extra = " ".join(f"{k}={_json_value(v)}" for k, v in fields.items() if k not in shown)
            head, sep, tail = line.partition("\n")  # keep a traceback after the fields
            line = f"{head} {extra}{sep}{tail}"
        return line


_HANDLER_MARK = "_virtualdom_handler"


def configure_logging(level: str = "INFO", fmt: str = "text", stream: Any = None) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) as ``fmt``
    (``text`` or ``json``). Calling it again replaces the handler it installed."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_MARK, False):
            root.removeHandler(h)
            h.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # grpc's own DEBUG lines (one per call) would bury everything else.
    logging.getLogger("grpc").setLevel(max(logging.INFO, root.level))


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
        self.code = errors.OK
        self.started = time.perf_counter()

    @property
    def short_method(self) -> str:
        return self.method.lstrip("/")

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
        return code if code is not None else errors.OK
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return errors.DEADLINE_EXCEEDED
        return errors.CANCELLED
    return code if code is not None else errors.UNKNOWN


def _caller_subject() -> str:
    """The subject the security layer verified for the current call ("" when none)."""
    try:
        from .auth import current_caller
    except ImportError:  # pragma: no cover - the security module is optional here
        return ""
    who = current_caller().get(None)
    subject = getattr(who, "subject", None)
    return subject if isinstance(subject, str) else ""


# -- metrics -------------------------------------------------------------------------------------


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) -> (host, port); ValueError when malformed."""
    host, sep, port_s = address.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{address!r}: put an IPv6 host in brackets, e.g. [::1]:9464")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise ValueError(f"{address!r}: port {port} is out of range")
    return host, port


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HTTPServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _GatewayCollector(Collector):
    """Gauges read from the gateway's state at scrape time."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self.gateway
        hosts = list(gw.documents.hosts.values()) if gw.documents is not None else []
        yield GaugeMetricFamily(
            "virtualdom_documents_loaded", "Documents loaded in memory.", value=len(hosts)
        )
        members = sum(len(h.members) for h in hosts)
        yield GaugeMetricFamily(
            "virtualdom_session_members", "Session memberships (joined documents).", members
        )
        subs = gw.service.subscribers if gw.service is not None else 0
        yield GaugeMetricFamily(
            "virtualdom_subscriptions_open", "Open SubscribeChanges streams.", value=subs
        )
        sessions = gw.sessions.sessions if gw.sessions is not None else 0
        yield GaugeMetricFamily(
            "virtualdom_sessions_open", "Open CollaborativeSession streams.", value=sessions
        )
        feed = gw.feed
        head = feed.head
        yield GaugeMetricFamily(
            "virtualdom_feed_head_seq", "Position of the last committed change.", value=head
        )
        followers = feed.followers()
        lags = [max(0, head - f.position) for f in followers]
        yield GaugeMetricFamily(
            "virtualdom_followers",
            "Change-feed followers (subscriptions and session memberships).",
            value=len(followers),
        )
        yield GaugeMetricFamily(
            "virtualdom_subscriber_lag_max",
            "Largest subscriber lag: feed head seq minus the follower's position (changes).",
            value=max(lags, default=0),
        )
        yield GaugeMetricFamily(
            "virtualdom_subscriber_lag_sum", "Sum of all followers' lags (changes).", sum(lags)
        )
        yield GaugeMetricFamily(
            "virtualdom_subscribers_lagging", "Followers behind the feed head.",
            value=sum(1 for lag in lags if lag > 0),
        )  # fmt: skip


class Metrics:
    """The gateway's Prometheus metrics, in a registry of its own (one per gateway)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpcs = Counter(
            "virtualdom_rpc_requests", "RPCs handled, by method and status code.",
            ["method", "code"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "virtualdom_rpc_duration_seconds",
            "RPC duration (a stream's whole life), by method and status code.",
            ["method", "code"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                     10, 30, 60, 300, 3600),
        )  # fmt: skip
        self.received = Counter(
            "virtualdom_rpc_received_bytes", "Request message bytes received, by method.",
            ["method"], registry=r,
        )  # fmt: skip
        self.sent = Counter(
            "virtualdom_rpc_sent_bytes", "Response message bytes sent, by method.",
            ["method"], registry=r,
        )  # fmt: skip
        self.open_streams = Gauge(
            "virtualdom_open_streams", "Streaming RPCs in progress, by method.", ["method"],
            registry=r,
        )  # fmt: skip
        self.commit_seconds = Histogram(
            "virtualdom_store_commit_seconds", "Store commit (fsync) latency.", registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
        )  # fmt: skip
        self.commit_changes = Histogram(
            "virtualdom_store_commit_changes", "Changes per store commit (group commit size).",
            registry=r, buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
        )  # fmt: skip
        self._http: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._collector: _GatewayCollector | None = None

    def on_commit(self, seconds: float, changes: int) -> None:
        """The store's commit hook (called from its writer thread)."""
        self.commit_seconds.observe(seconds)
        self.commit_changes.observe(changes)

    def watch(self, gateway: Gateway) -> None:
        if self._collector is None:
            self._collector = _GatewayCollector(gateway)
            self.registry.register(self._collector)

    def serve(self, address: str) -> int:
        """Serve ``/metrics`` over HTTP on ``address`` (port 0: any); returns the bound port."""
        host, port = split_address(address)
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
            0
        ][0]
        server_class = type("_MetricsServer", (_HTTPServer,), {"address_family": family})
        self._http = make_server(
            host, port, make_wsgi_app(self.registry), server_class, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05},
            name="metrics-http", daemon=True,
        )  # fmt: skip
        self._thread.start()
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None


# -- tracing (optional: the "otel" extra) --------------------------------------------------------


class Tracer:
    """Server spans for RPCs, exported to the console or by OTLP (OTEL_EXPORTER_OTLP_* env)."""

    def __init__(self, exporter: str):
        import os

        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        attrs = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "virtualdom"}
        self.provider = TracerProvider(resource=Resource.create(attrs))
        processor: SpanProcessor
        if exporter == "console":
            processor = SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout))
        elif exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            processor = BatchSpanProcessor(OTLPSpanExporter())
        else:
            raise ValueError(f"unknown tracing exporter {exporter!r}")
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("virtualdom.server")
        self.propagator = TraceContextTextMapPropagator()

    def start(self, call: CallInfo, metadata: Any) -> Any:
        from opentelemetry.trace import SpanKind

        carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
        parent = self.propagator.extract(carrier) if "traceparent" in carrier else None
        service, _, method = call.short_method.partition("/")
        return self.tracer.start_span(
            call.short_method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
        )

    def end(self, span: Any, call: CallInfo) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("rpc.grpc.status_code", call.code.value[0])
        if call.node_id:
            span.set_attribute("virtualdom.node_id", call.node_id)
        if call.prefix is not None:
            span.set_attribute("virtualdom.prefix", call.prefix)
        if call.principal:
            span.set_attribute("enduser.id", call.principal)
        span.set_attribute("virtualdom.request_id", call.request_id)
        span.set_attribute("rpc.request.size", call.req_bytes)
        span.set_attribute("rpc.response.size", call.resp_bytes)
        if call.code in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, call.code.name))
        span.end()

    def close(self) -> None:
        self.provider.shutdown()


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
            log.info("metrics on http://%s:%d/metrics", _url_host(host), self.metrics_port)

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
        if call.code in SERVER_ERRORS:
            level = logging.ERROR
        elif call.code == errors.OK and call.method.startswith(QUIET_SERVICES):
            level = logging.DEBUG
        else:
            level = logging.INFO
        if ACCESS.isEnabledFor(level):
            fields = call.fields(seconds)
            msg = f"{call.short_method} {call.code.name} {fields['duration_ms']:.1f}ms"
            shown = ("method", "code", "duration_ms")
            # Logger.log would first walk the stack for the caller's file and line (a tenth of
            # the line's cost), which an access-log line does not show.
            record = ACCESS.makeRecord(ACCESS.name, level, "", 0, msg, (), None,
                                       extra={"fields": fields, "in_message": shown})  # fmt: skip
            ACCESS.handle(record)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        if self.tracer is not None:
            self.tracer.close()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
