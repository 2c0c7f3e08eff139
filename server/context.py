"""Per-call context variables shared by the layers of the gateway's call pipeline and its handlers.

Each gRPC call runs in its own asyncio task (the layers and the handler share one context), so
these variables hold the current call's facts for anything that runs inside it:

* :data:`principal` — who the call acts for (a verified token's ``sub``; ``""`` when the call is
  unauthenticated). The security layer sets it; the observability layer
  (:mod:`.observability`) reads it for the access log, metrics and traces.
* :data:`peer` — the connection's peer (``ipv4:127.0.0.1:53412``), set by the observability
  layer.
* :data:`request_id` — the call's request id (the request's ``request_id``, the
  ``x-request-id`` header, or a generated one), set by the observability layer; every log line
  written during the call carries it.

Values are plain strings and never secrets: tokens and payloads do not go here.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["peer", "principal", "request_id"]

principal: ContextVar[str] = ContextVar("virtualdom.principal", default="")
peer: ContextVar[str] = ContextVar("virtualdom.peer", default="")
request_id: ContextVar[str] = ContextVar("virtualdom.request_id", default="")
