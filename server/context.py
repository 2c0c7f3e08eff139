"""Per-call context variables shared by the layers of the gateway's call pipeline and its handlers.

Each gRPC call runs in its own asyncio task (the layers and the handler share one context), so
these variables hold the current call's facts for anything that runs inside it:

* :data:`peer` — the connection's peer (``ipv4:127.0.0.1:53412``), set by the observability
  layer.
* :data:`request_id` — the call's request id (the request's ``request_id``, the
  ``x-request-id`` header, or a generated one), set by the observability layer; every log line
  written during the call carries it.

Values are plain strings and never secrets: tokens and payloads do not go here. Who the call
acts for is the security layer's :func:`~.auth.current_caller` (the access log reads its
subject at the end of the call).
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["peer", "request_id"]

peer: ContextVar[str] = ContextVar("virtualdom.peer", default="")
request_id: ContextVar[str] = ContextVar("virtualdom.request_id", default="")
