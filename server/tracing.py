"""OpenTelemetry tracing of RPCs (``tracing = "console" | "otlp"``, the optional ``otel``
extra): one server span per call, a child of the caller's span when it sent W3C
``traceparent`` metadata. opentelemetry is imported only when a tracer is made, so the gateway
runs without the extra.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .observability import CallInfo

__all__ = ["Tracer"]


class Tracer:
    """Server spans for RPCs, exported to the console or by OTLP (OTEL_EXPORTER_OTLP_* env)."""

    def __init__(self, exporter: str):
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
        if call.server_error:
            span.set_status(Status(StatusCode.ERROR, call.code.name))
        span.end()

    def close(self) -> None:
        self.provider.shutdown()
