"""What every HTTP API call goes through, as a gRPC call goes through the call pipeline
(server/pipeline.py): authentication with the same verifier (``Authorization: Bearer``), the
caller in the same context variable the operations read, the same access log and metrics
(:meth:`Observability.record`), and errors mapped by the one table (:func:`~..errors.http_error`)
to an HTTP status and a JSON body ``{code, message, reason, ...}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from virtualdom.engine import LimitExceeded

from .. import context as callctx
from ..auth import current_caller
from ..errors import Unavailable, code_of, http_error
from ..observability import CallInfo

if TYPE_CHECKING:
    from ..app import Gateway

__all__ = ["HttpCalls", "json_response", "read_body"]

log = logging.getLogger("virtualdom.http")

#: An API handler: the request and the call's log record in, a response out.
Endpoint = Callable[[Request, CallInfo], Awaitable[Response]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # The trailing newline: curl's output of one call ends its line.
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n",
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def peer_of(request: Request) -> str:
    """The client in gRPC's peer spelling ("ipv4:127.0.0.1:5123"), so that rate limits and
    stream caps key HTTP callers exactly as gRPC ones."""
    if request.client is None:
        return "unix:"
    host, port = request.client.host, request.client.port
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes: a declared
    Content-Length is checked before anything is read, a chunked body while it arrives."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise LimitExceeded(
            f"the body is {declared} bytes, over max_message_bytes ({limit})",
            "max_message_bytes",
            limit,
            int(declared),
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise LimitExceeded(
                f"the body is over max_message_bytes ({limit})", "max_message_bytes", limit, size
            )
        chunks.append(chunk)
    return b"".join(chunks)


class HttpCalls:
    """Wraps API endpoints in authentication, the access log and the error table."""

    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def endpoint(
        self, verb: str, template: str, fn: Endpoint
    ) -> Callable[[Request], Awaitable[Response]]:
        method = f"{verb} {template}"  # the access log's and metrics' method name

        async def handle(request: Request) -> Response:
            gw = self.gateway
            call = CallInfo(method, "unary", peer_of(request))
            rid = request.headers.get("x-request-id", "")
            call.request_id = "".join(c for c in rid[:128] if c.isprintable())
            callctx.peer.set(call.peer)
            callctx.request_id.set(call.request_id)
            try:
                if gw.service is None:
                    raise Unavailable("the gateway is starting or stopping; retry")
                auth = request.headers.getlist("authorization")
                who = gw.security.authenticate([("authorization", a) for a in auth], call.peer)
                current_caller().set(who)
                call.principal = who.subject or ""
                response = await fn(request, call)
                call.code = code_of(None)
            except asyncio.CancelledError as exc:
                call.code = code_of(exc)
                self._record(call)
                raise
            except Exception as exc:
                response = self._error(exc, call)
            call.resp_bytes = len(response.body)
            self._record(call)
            return response

        return handle

    def _error(self, exc: Exception, call: CallInfo) -> Response:
        status, body = http_error(exc, callctx.request_id.get())
        call.code = code_of(exc)
        if status == 500:
            log.error("internal error in %s", call.method, exc_info=exc)
        headers: dict[str, str] = {}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="virtualdom"'
        retry_ms = body.get("retry_after_ms")
        if isinstance(retry_ms, int) and retry_ms > 0:
            headers["Retry-After"] = str(max(1, -(-retry_ms // 1000)))
        return json_response(body, status, headers)

    def _record(self, call: CallInfo) -> None:
        self.gateway.observability.record(call, time.perf_counter() - call.started)
